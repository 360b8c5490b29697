"""Every job Snakemake would run, with its rule, wildcards, files and shell command, through its
public API: a dry run (`--forceall`) whose JOB_INFO events a logger plugin of our own keeps
(snakemake-interface-logger-plugins). The tests compare these jobs with the CLI's reading of
their commands and with DVC's reading of dvc.yaml. Run it in the workflow's folder:
`python tests/snakemake_jobs.py [override.yaml ...]` prints them as JSON.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

PLUGIN = "reprozoo-jobs"


def snakemake_jobs(configfiles: list[str]) -> list[dict]:
    """Every job of `snakemake --forceall` in the working directory, in DAG order: rule, wildcards, files, command."""
    return _toposorted(_dry_run(configfiles))


def _dry_run(configfiles: list[str]) -> list[dict]:
    """`snakemake --forceall --dry-run` through the public API; the jobs its JOB_INFO events describe."""
    import logging

    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (ConfigSettings, DAGSettings, ExecutionSettings, OutputSettings,
                                          ResourceSettings)

    logging.getLogger("snakemake").propagate = False  # its progress lines are not ours to print
    with SnakemakeApi(OutputSettings(dryrun=True, log_handler_settings={PLUGIN: _job_recorder()})) as api:
        workflow = api.workflow(resource_settings=ResourceSettings(cores=1),
                                config_settings=ConfigSettings(configfiles=[Path(f) for f in configfiles]),
                                snakefile=Path("Snakefile"), workdir=Path.cwd())
        workflow.dag(DAGSettings(forceall=True)).execute_workflow(
            executor="dryrun", execution_settings=ExecutionSettings(lock=False, ignore_incomplete=True))
        recorders = [h for h in api.get_log_handlers() if hasattr(h, "jobs")]
    return recorders[0].jobs  # complete once the API has closed (and flushed) its log queue


def _job_recorder():
    """The settings of logger plugin PLUGIN, registered on first use: it keeps each JOB_INFO event's fields."""
    from dataclasses import dataclass
    from types import SimpleNamespace

    from snakemake_interface_logger_plugins.base import LogHandlerBase
    from snakemake_interface_logger_plugins.common import LogEvent
    from snakemake_interface_logger_plugins.registry import LoggerPluginRegistry
    from snakemake_interface_logger_plugins.settings import LogHandlerSettingsBase

    @dataclass
    class LogHandlerSettings(LogHandlerSettingsBase):
        pass

    class LogHandler(LogHandlerBase):
        # In the terminal's place (a dry run would print every job there), printing nothing.
        writes_to_stream, writes_to_file, needs_rulegraph = True, False, False
        has_filter = has_formatter = True  # none needed: it reads fields, not text

        def __post_init__(self) -> None:
            self.jobs: list[dict] = []

        def emit(self, record) -> None:
            if getattr(record, "event", None) == LogEvent.JOB_INFO:
                self.jobs.append({"rule": record.rule_name, "wildcards": dict(record.wildcards),
                                  "input": [str(f) for f in record.input],
                                  "output": [str(f) for f in record.output], "cmd": record.shellcmd,
                                  "benchmark": str(record.benchmark) if record.benchmark else None})

    registry = LoggerPluginRegistry()  # a no-op when registered already
    registry.register_plugin(f"snakemake_logger_plugin_{PLUGIN.replace('-', '_')}",
                             SimpleNamespace(LogHandler=LogHandler, LogHandlerSettings=LogHandlerSettings))
    return registry.get_plugin(PLUGIN).settings_cls()


def _toposorted(jobs: list[dict]) -> list[dict]:
    """Snakemake's toposorted levels (a job after every job making one of its inputs), each level by rule and
    wildcards; without the target rule (`all`: no command)."""
    made_by = {f: i for i, job in enumerate(jobs) for f in job["output"]}
    levels: dict[int, int] = {}

    def level(i: int) -> int:
        if i not in levels:
            levels[i] = max((level(made_by[f]) + 1 for f in jobs[i]["input"] if f in made_by), default=0)
        return levels[i]

    order = sorted(range(len(jobs)), key=lambda i: (level(i), jobs[i]["rule"], sorted(jobs[i]["wildcards"].items())))
    listed = []
    for job in (jobs[i] for i in order):
        if not job["cmd"]:
            if job["output"]:
                raise ValueError(f"rule {job['rule']}: no shell command")
            continue  # a target rule such as `all`
        listed.append(job)
    return listed




if __name__ == "__main__":
    print(json.dumps(snakemake_jobs(sys.argv[1:])))
