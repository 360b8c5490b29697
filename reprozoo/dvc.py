"""dvc.yaml from the Snakemake workflow: `python -m reprozoo dvc-yaml [--configfile override.yaml]`.

The Snakefile is the one definition of the DAG. This module asks Snakemake for
every job it would run (`--forceall`) and writes one DVC stage per job, with
the job's input files as `deps` (plus the image folders the job reads, from
reprozoo.config.image_folders, which the Snakefile gives Snakemake as the job's
`params.trees`: Snakemake sees their content through that digest, DVC through
hashing the folders), its output files as `outs` (`metrics.json`, tune's
`best.json` and the report's `summary.json` as `metrics`) and its shell command.
The command is the one Snakemake runs (rules/common.smk derives it from the stage's
declaration in reprozoo/stages.py: config files and section names, no config
content), rewritten in three ways only:

- the split's fractions come from config.yaml through `vars`, unless an override
  file sets them.
- `--threads N` becomes `--threads 0` (torch's default: DVC runs one stage at a
  time, and the file must not depend on the machine it was written on).
- the `all` target (no command) is dropped.

How the jobs are listed: through Snakemake's public interfaces only. A dry run
(`snakemake --forceall --dry-run`, through the documented Python API,
`snakemake.api`) reports each job to the logger plugins as a JOB_INFO event,
whose fields are its rule, wildcards, input and output files and shell command
(snakemake-interface-logger-plugins: the versioned interface logger plugins are
written against). This module registers a plugin of its own, in-process, that
keeps those fields, and orders the jobs as Snakemake's DAG does. Not chosen:
parsing the text of `snakemake -n -p` (made for people: files joined with ", ",
layout free to change between releases); `--detailed-summary` (its shell command
is the one recorded for an existing output, none for a job not yet run); dvc.yaml
by hand as foreach/matrix stages (a second definition of every path, input
function and per-model dependency of rules/, in another language, held in line
only by a test). No public interface lists a job's params; the one the stages
need beyond the command, the image folders, both engines take from one function.

Params: DVC reruns what Snakemake reruns. Snakemake reruns a job when its params
change, the config section and values the stage resolves (rules/common.smk,
stage_params), DVC a stage when a config key it declares as `params` does, so a
stage declares the keys its section and values are made of. For a model's stages (verify,
tune, train, evaluate, attention, samples) that is what resolve_model reads:
each key of `models.NAME` but `paper` and `verify` (for an ablation, its base's,
and `ablations.NAME.base` and `.set`), the reported `paper.lr` and
`paper.epochs` only under `hparams: paper`, `protocol` but `split`, `seed`, its
backbone. Reported numbers and prose (`paper:`, `study:`) are thus parameters of
no training stage: editing them reruns the report alone, in both engines. The
report declares every key of the sections it shows, the study and the dataset.
Keys are declared one by one (`models.mlp.arch`, `models.mlp.args`, ...): DVC can
track a key only where it exists, so a key added to a model section is tracked
once dvc.yaml is regenerated (`--check` fails until then), as is a switch to
`hparams: paper`.

params.yaml is the file built for `dvc exp run -S`: one section per model,
`mlp: {}`, merged into `models.mlp` after the config files by Snakemake
(rules/common.smk) and by every DVC stage (`--experiments params.yaml`), and
declared section by section (`params.yaml: mlp`, as a whole, so that keys an
experiment adds count). DVC rewrites the file it edits (comments but the header,
flow style and quoting are lost: ruamel), which is why experiments go there and
never into the hand-written config.yaml; the short keys (`mlp.paper.lr`) keep
`dvc exp show` narrow. The generator creates the file, adds a section for a new
model and keeps what the others hold.

Plots: each model's training curves (history.csv: train and test loss, test
accuracy per epoch), confusion matrix (predictions.csv, one row per test image,
DVC's `confusion` template) and tuning trials (trials.csv: validation loss
against lr), declared as top-level `plots:` with ids `<dataset>/<model>/<plot>`.

There is one dvc.yaml, at the repository root, for one configuration at a time:
the study by default, the demo after `--configfile config/demo.yaml`. Two
configurations cannot share a repository's DVC pipeline because some outputs
(results/verify/) do not depend on the dataset. The header records the config
files, and `--check` compares the file with a fresh generation for those.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import yaml

from reprozoo.config import EXPERIMENTS, ConfigError, _read_yaml, image_folders, load_config, resolve_model
from reprozoo.stages import STAGES

BASE_CONFIG = "config.yaml"
CONFIG_LINE = "# Config: "
HEADER = """\
# Generated from the Snakemake workflow by `{command}`: do not edit.
# tests/test_dvc.py fails when this file is stale (`python -m reprozoo dvc-yaml --check`).
""" + CONFIG_LINE + "{configs}\n"
# Values the CLI gets on the command line that come straight from config.yaml.
SPLIT_VARS = {"--tune-fraction": "protocol.split.tune_fraction", "--val-fraction": "protocol.split.val_fraction"}
# A model's keys that reach the report or verify alone, not the section resolve_model hands the stages.
NOT_TRAINING = ("paper", "verify")
METRICS = {"metrics.json", "best.json", "summary.json"}
LAYER_HEADER = """\
# The experiment file (README "DVC"): one section per model, merged into models.<name> after
# config.yaml (and its override) by Snakemake and by every DVC stage. `dvc exp run -S
# params.yaml:++mlp.<key>=...` edits this file (in its own layout); config.yaml is never touched.
"""
# Top-level plots, per output file name: (plot, properties); `y` names columns of that file.
PLOTS = {
    "history.csv": [("loss", {"template": "linear", "x": "epoch", "y": ["train_loss", "test_loss"]}),
                    ("accuracy", {"template": "linear", "x": "epoch", "y": ["test_accuracy"]})],
    "predictions.csv": [("confusion", {"template": "confusion", "x": "predicted", "y": ["actual"]})],
    "trials.csv": [("trials", {"template": "scatter", "x": "lr", "y": ["best_val_loss"]})],
}

DVC_YAML = Path("dvc.yaml")
PLUGIN = "reprozoo-dvc"  # the logger plugin that lists Snakemake's jobs (_job_recorder)


def recorded_overrides(path: Path = DVC_YAML) -> list[str]:
    """The override files an existing dvc.yaml was generated for (its `# Config:` line)."""
    for line in path.read_text().splitlines() if path.is_file() else []:
        if line.startswith(CONFIG_LINE):
            return line[len(CONFIG_LINE):].split(" + ")[1:]
    raise ConfigError(f"{path}: no '{CONFIG_LINE.strip()}' line; regenerate it with `python -m reprozoo dvc-yaml`")


def snakemake_jobs(configfiles: list[str]) -> list[dict]:
    """Every job of `snakemake --forceall` in the working directory, in DAG order: rule, wildcards, files, command."""
    try:
        jobs = _dry_run(configfiles)
    except (ConfigError, SystemExit):
        raise
    except Exception as e:  # the workflow itself does not load: one line, as for config errors
        raise ConfigError(f"Snakemake: {str(e).strip().splitlines()[0]}") from None
    return _toposorted(jobs)


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
                                  "output": [str(f) for f in record.output], "cmd": record.shellcmd})

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
                raise ConfigError(f"rule {job['rule']}: no shell command, so no DVC stage")
            continue  # a target rule such as `all`
        listed.append(job)
    return listed


_MISSING = object()


def _get(data: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return _MISSING
        data = data[part]
    return data


def _has(data: dict, dotted: str) -> bool:
    return _get(data, dotted) is not _MISSING


def missing_sections(overrides: list[str]) -> list[str]:
    """The models of config.yaml + overrides that params.yaml has no section for (all of them, without the file)."""
    cfg = load_config(BASE_CONFIG, *overrides)
    layer = _read_yaml(EXPERIMENTS) if Path(EXPERIMENTS).is_file() else {}
    return [m for m in cfg["models"] if m not in cfg.get("ablations", {}) and m not in layer]


def add_sections(names: list[str]) -> None:
    """Give params.yaml an empty section for each of `names`, keeping what the others hold (creating the file)."""
    layer = _read_yaml(EXPERIMENTS) if Path(EXPERIMENTS).is_file() else {}
    layer.update({name: {} for name in names})
    Path(EXPERIMENTS).write_text(LAYER_HEADER + yaml.safe_dump(layer, sort_keys=False))


class _Pipeline:
    """Turns Snakemake jobs into DVC stages for config.yaml + overrides + params.yaml."""

    def __init__(self, overrides: list[str]):
        self.configs = [BASE_CONFIG, *overrides]
        self.raw = {f: _read_yaml(f) for f in self.configs}
        self.layer = _read_yaml(EXPERIMENTS)
        self.cfg = load_config(*self.configs, experiments=EXPERIMENTS)
        # `${key}` for values only config.yaml sets (vars cannot merge override files).
        self.vars = {key for key in SPLIT_VARS.values() if not any(_has(self.raw[f], key) for f in overrides)}

    def params(self, keys: list[str]) -> list[dict]:
        """`params:` entries: each key from every config file that sets it (DVC needs the key to exist); from
        params.yaml, the whole section of each model those keys belong to (so that keys it gains count too)."""
        keys = list(dict.fromkeys(keys))
        entries = [{f: present} for f in self.configs if (present := [k for k in keys if _has(self.raw[f], k)])]
        models = dict.fromkeys(k.split(".")[1] for k in keys if k.startswith("models."))
        if sections := [m for m in models if m in self.layer]:
            entries.append({EXPERIMENTS: sections})
        return entries

    def subkeys(self, section: str) -> list[str]:
        """`section.<key>` for each key the section has in some config file (e.g. models.mlp.arch, ...)."""
        found = [_get(self.raw[f], section) for f in self.configs]
        return [f"{section}.{k}" for k in dict.fromkeys(k for data in found if isinstance(data, dict) for k in data)]

    def section_keys(self, name: str) -> list[str]:
        """Every key of models.NAME, or for an ablation of its base model's section and of ablations.NAME.
        Key by key, as the model's stages track them: DVC merges overlapping keys' lists when it shows params."""
        ablation = self.cfg.get("ablations", {}).get(name)
        if ablation:
            return self.subkeys(f"models.{ablation['base']}") + self.subkeys(f"ablations.{name}")
        return self.subkeys(f"models.{name}")

    def model_keys(self, name: str) -> list[str]:
        """The config keys resolve_model(cfg, name) is made of: no reported numbers, no verifier expectations."""
        ablation = self.cfg.get("ablations", {}).get(name)
        base = ablation["base"] if ablation else name
        keys = [k for k in self.subkeys(f"models.{base}") if k.split(".")[2] not in NOT_TRAINING]
        if ablation:
            keys += [f"ablations.{name}.base", f"ablations.{name}.set"]
        resolved = resolve_model(self.cfg, name)
        paper = f"ablations.{name}" if ablation and "from" not in resolved["paper"] else f"models.{base}"
        keys += [f"{paper}.paper.{k}" for k in ("lr", "epochs") if k in resolved["paper"]]  # hparams: paper
        keys += [f"protocol.{k}" for k in self.cfg["protocol"] if k != "split"]
        if "backbone" in resolved:
            keys.append(f"backbones.{resolved['backbone']['name']}")
        return keys + ["seed"]

    def stage_keys(self, stage: str, name: str | None, models: list[str]) -> list[str]:
        """The config keys of what a job of `stage` reads from the config: its section `name` and its
        `from_config` values (reprozoo/stages.py)."""
        declared = STAGES[stage]
        keys = {"model": lambda: self.model_keys(name), "dataset": lambda: [f"datasets.{name}"],
                "backbone": lambda: [f"backbones.{name}", "protocol.normalize"],
                None: lambda: []}[declared.section]()
        for value in declared.from_config:
            if value == "expect":  # verify's expectations (an ablation has none)
                keys.append(f"models.{name}.verify")
            elif value == "extra_tests":
                keys += ["extra_test"] * ("extra_test" in self.cfg)
            else:  # the report's papers, study and ablations: whole sections, not just `paper`: a model's
                # change reaches the report anyway (through its metrics), and this way `dvc status` lists it at once
                keys += [k for m in dict.fromkeys(models) for k in self.section_keys(m)] + ["study"]
        return list(dict.fromkeys(keys))

    def stage(self, job: dict) -> tuple[str, dict]:
        tokens = shlex.split(job["cmd"])
        if tokens[:3] != ["python", "-m", "reprozoo"] or tokens[3] not in STAGES:
            raise ConfigError(f"rule {job['rule']}: command does not start with 'python -m reprozoo <stage>'")
        wildcards, declared = job["wildcards"], STAGES[tokens[3]]
        models = tokens[tokens.index("--models") + 1:] if "--models" in tokens else []
        models = models[:next((k for k, t in enumerate(models) if t.startswith("--") or t == ">"), len(models))]
        keys = self.stage_keys(tokens[3], wildcards.get(declared.section), models)
        cmd, i = tokens[:4], 4
        while i < len(tokens):
            option, value = tokens[i], tokens[i + 1] if i + 1 < len(tokens) else None
            if option == "--threads":
                cmd += [option, "0"]
            elif option in SPLIT_VARS and SPLIT_VARS[option] in self.vars:
                key = SPLIT_VARS[option]
                expected = self.cfg["protocol"]["split"][key.split(".")[-1]]
                if value != str(expected):
                    raise ConfigError(f"rule {job['rule']}: {option} {value} is not {key} ({expected})")
                cmd += [option, "${" + key + "}"]
            else:
                cmd.append(option)
                i += 1
                continue
            i += 2
        files = [a for f in self.configs for a in ("--config", f)] + ["--experiments", EXPERIMENTS]
        if (declared.section or declared.from_config) and cmd[4:4 + len(files)] != files:
            raise ConfigError(f"rule {job['rule']}: its command does not start with {' '.join(files)}")

        deps = job["input"] + image_folders(self.cfg, job["rule"], wildcards)
        ours = {"${" + key + "}" for key in SPLIT_VARS.values()}
        for token in [*cmd, *deps]:
            if "${" in token and token not in ours:  # DVC would substitute it
                raise ConfigError(f"rule {job['rule']}: '{token}' contains '${{', which DVC would read as "
                                  "a variable; rename that path or config value")

        def quote(token: str) -> str:  # the rule's log redirection stays shell syntax
            return token if token in ours or token in (">", "2>&1") else shlex.quote(token)

        stage = {"cmd": " ".join(quote(t) for t in cmd)}
        if ">" in cmd:  # DVC, unlike Snakemake, does not make the log's folder
            stage["cmd"] = f"mkdir -p {shlex.quote(str(Path(cmd[cmd.index('>') + 1]).parent))} && {stage['cmd']}"
        if deps:
            stage["deps"] = deps
        if keys:
            stage["params"] = self.params(keys)
        metrics = [f for f in job["output"] if Path(f).name in METRICS]
        outs = [f for f in job["output"] if f not in metrics]
        if outs:
            stage["outs"] = outs
        if metrics:
            stage["metrics"] = metrics
        return "-".join([job["rule"], *wildcards.values()]), stage


def plots(jobs: list[dict]) -> list[dict]:
    """Top-level `plots:`, per model (all its seeds in one plot) in PLOTS order: id `<dataset>/<model>/<plot>`."""
    files: dict[tuple, dict[str, list[str]]] = {}  # (dataset, model) -> file name -> paths
    for job in jobs:
        for out in job["output"]:
            if Path(out).name in PLOTS:
                run = (job["wildcards"]["dataset"], job["wildcards"]["model"])
                files.setdefault(run, {}).setdefault(Path(out).name, []).append(out)
    return [{"/".join([*run, plot]): {**{k: v for k, v in props.items() if k != "y"},
                                      "y": {path: list(props["y"]) for path in found[name]}}}
            for run, found in files.items() for name in PLOTS if name in found for plot, props in PLOTS[name]]


def render(overrides: list[str]) -> str:
    """The dvc.yaml text for config.yaml + overrides + params.yaml (run in the repository root)."""
    pipeline = _Pipeline(overrides)
    jobs = snakemake_jobs(overrides)  # Snakemake applies params.yaml itself (rules/common.smk)
    stages = dict(pipeline.stage(job) for job in jobs)
    body: dict = {}
    used = sorted(pipeline.vars & {k for k in SPLIT_VARS.values()
                                   if any("${" + k + "}" in s["cmd"] for s in stages.values())})
    if used:
        body["vars"] = [f"{BASE_CONFIG}:" + ",".join(sorted({k.split(".")[0] for k in used}))]
    body["stages"] = stages
    body["plots"] = plots(jobs)
    command = " ".join(["python -m reprozoo dvc-yaml", *(f"--configfile {o}" for o in overrides)])
    header = HEADER.format(command=command, configs=" + ".join(pipeline.configs))
    return header + yaml.safe_dump(body, sort_keys=False, width=10_000)


def write_dvc_yaml(overrides: list[str], check: bool = False) -> Path:
    """Write dvc.yaml for config.yaml + overrides (first giving params.yaml a section for each new model);
    with check, compare it with a fresh generation for the config files it records."""
    path = DVC_YAML
    if check:
        overrides = overrides or recorded_overrides(path)
    command = " ".join(["python -m reprozoo dvc-yaml", *(f"--configfile {o}" for o in overrides)])
    missing = missing_sections(overrides)
    if check and missing:
        raise ConfigError(f"{EXPERIMENTS}: no section for model '{missing[0]}': run `{command}`")
    if missing:  # all of them when there is no params.yaml
        add_sections(missing)
    text = render(overrides)
    if check and path.read_text() != text:
        raise ConfigError(f"{path} is stale (the Snakemake workflow or config changed): run `{command}`")
    if not check:
        path.write_text(text)
    return path
