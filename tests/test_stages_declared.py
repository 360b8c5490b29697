"""Each rule reads on its own (rules/*.smk) and runs `python -m reprozoo <stage>` with names only;
the CLI takes every path from the paths table (reprozoo/stages.py). These tests check that the
two agree: the files a rule declares are those its command reads and writes, and each stage's
function takes what its section file and declaration give it. dvc.yaml runs the same commands
(tests/test_dvc.py, test_dvc_plans_the_snakemake_jobs)."""
import inspect
import json
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, copy_workflow
from reprozoo import arguments, cli
from reprozoo.config import load_config
from reprozoo.sections import TRACKS, section_files
from reprozoo.stages import JSON_SECTIONS, PATHS, STAGES, benchmark_of, log_of


def _section_of(stage, files: dict) -> dict:
    pattern = re.escape(PATHS[stage.section]).replace(r"\{", "{").replace(r"\}", "}")
    regex = re.sub(r"{\w+}", r"[^/]+", pattern)
    return next(content for path, content in files.items() if re.fullmatch(regex, path))


@pytest.mark.parametrize("name", STAGES)
def test_the_function_takes_what_the_declaration_and_its_section_file_give(name):
    stage = STAGES[name]
    assert set(stage.files()) <= set(PATHS) and set(stage.optional) <= set(stage.files())
    assert stage.section in PATHS and set(stage.names) <= {"dataset", "model", "backbone", "seed"}
    assert all((ROOT / "reprozoo" / c).is_file() for c in stage.code)
    function = cli.stage_function(name)  # what the CLI runs for it
    params = inspect.signature(function).parameters
    section = _section_of(stage, section_files(load_config(ROOT / "config.yaml", ROOT / "config/demo.yaml")))
    given = set(section) - {TRACKS, "runs"} | ({"models"} if stage.each_run else set())
    passed = ([f"{f}_path" for f in stage.inputs + stage.outputs]
              + [f"{f}_paths" for f in stage.each_run + stage.each_model]
              + list(stage.options) + ["device"] * stage.compute)
    assert set(passed) | given <= set(params), f"{name} lacks {sorted(set(passed) | given - set(params))}"
    required = {p for p, spec in params.items() if spec.default is inspect.Parameter.empty}
    assert required <= set(passed) | given | {"seed"}, f"{name}: required but not given"
    if stage.section in JSON_SECTIONS:  # `--model-json` stands for the section file's main argument
        assert JSON_SECTIONS[stage.section][1] in given


@pytest.fixture(scope="module")
def demo_jobs(tmp_path_factory):
    """Every job of the demo's DAG as Snakemake would run it (rule, wildcards, files, command), and the folder."""
    work = copy_workflow(tmp_path_factory.mktemp("declared"))
    shutil.copy2(ROOT / "tests/snakemake_jobs.py", work / "tests/snakemake_jobs.py")
    out = subprocess.run([sys.executable, "tests/snakemake_jobs.py", "config/demo.yaml"], cwd=work,
                         capture_output=True, text=True, check=True).stdout
    return work, json.loads(out)


def test_every_rule_declares_the_files_its_command_reads_and_writes(demo_jobs, monkeypatch):
    work, jobs = demo_jobs
    monkeypatch.chdir(work)  # the section files the dry run wrote, and relative paths
    parser = cli.build_parser()
    assert {job["cmd"].split()[3] for job in jobs} == set(STAGES)  # every stage has a rule, in the demo
    for job in jobs:
        argv = shlex.split(job["cmd"])
        assert argv[:3] == ["python", "-m", "reprozoo"] and argv[-2] == "--log", job["rule"]
        assert not any(a.startswith("--") and a[2:].replace("-", "_") in PATHS for a in argv), job["cmd"]
        args = parser.parse_args(argv[3:])
        stage = STAGES[args.stage]
        kwargs = arguments.stage_arguments(args, stage, cli.stage_function(args.stage))
        paths = {f: kwargs.get(f"{f}_path", kwargs.get(f"{f}_paths")) for f in stage.files()}
        paths = {f: [p for p in (v if isinstance(v, list) else [v]) if p is not None] for f, v in paths.items()}
        section = arguments._fill(stage.section, {**job["wildcards"], "seed": kwargs.get("seed")}, stage)
        read = {section} | {p for f in stage.files() if f not in stage.outputs for p in paths[f]}
        code = {f for f in job["input"] if f.endswith(".py")}
        assert set(job["input"]) - code == read, job["rule"]
        assert code == {f"reprozoo/{c}" for c in stage.code}, job["rule"]  # dvc.yaml's code deps come from these
        assert argv[-1] == log_of(args.stage).format(**job["wildcards"]), job["rule"]
        assert job["benchmark"] == benchmark_of(args.stage).format(**job["wildcards"]), job["rule"]  # DVC's too
        assert {p for f in stage.outputs for p in paths[f]} <= set(job["output"]), job["rule"]
        assert "{" not in job["cmd"] and len(job["cmd"]) < 200  # no config JSON, no list of files
