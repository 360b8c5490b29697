"""Each stage is declared once (reprozoo/stages.py). Its function takes what the declaration
passes, its CLI parses what its rule runs, and its rule's files are the declared ones; dvc.yaml
runs the same commands (tests/test_dvc.py, test_dvc_stages_are_the_snakemake_jobs)."""
import importlib
import inspect
import json
import shlex
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, copy_workflow
from reprozoo import cli
from reprozoo.config import CONFIG_VALUES, SECTIONS
from reprozoo.stages import PATHS, STAGES


@pytest.mark.parametrize("name", STAGES)
def test_the_function_takes_what_the_declaration_passes(name):
    stage = STAGES[name]
    assert set(stage.files()) <= set(PATHS) and set(stage.optional) <= set(stage.files())
    assert stage.section in (None, *SECTIONS) and set(stage.from_config) <= set(CONFIG_VALUES)
    module, function = stage.run.split(":")
    params = inspect.signature(getattr(importlib.import_module(module), function)).parameters
    passed = ([f"{f}_path" for f in stage.inputs + stage.outputs]
              + [f"{f}_paths" for f in stage.each_run + stage.each_model]
              + list(stage.options) + list(stage.from_config) + ["device"] * stage.compute)
    assert set(passed) <= set(params), f"{stage.run} lacks {sorted(set(passed) - set(params))}"
    required = [p for p, spec in params.items() if spec.default is inspect.Parameter.empty]
    assert set(required[bool(stage.section):]) <= set(passed), f"{stage.run}: required but not declared"


@pytest.fixture(scope="module")
def demo_jobs(tmp_path_factory):
    """Every job of the demo's DAG as Snakemake would run it (rule, wildcards, files, command)."""
    work = copy_workflow(tmp_path_factory.mktemp("declared"))
    shutil.copy2(ROOT / "params.yaml", work / "params.yaml")  # the experiment file: named on every command
    out = subprocess.run([sys.executable, "-c", "import json; from reprozoo.dvc import snakemake_jobs; "
                          "print(json.dumps(snakemake_jobs(['config/demo.yaml'])))"],
                         cwd=work, capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_every_rule_runs_its_declared_command_with_its_declared_files(demo_jobs):
    parser = cli.build_parser()
    assert {job["cmd"].split()[3] for job in demo_jobs} == set(STAGES)  # every stage has a rule, in the demo
    for job in demo_jobs:
        argv = shlex.split(job["cmd"])
        assert argv[:3] == ["python", "-m", "reprozoo"] and argv[-3::2] == [">", "2>&1"], job["rule"]
        args = parser.parse_args(argv[3:-3])
        stage = STAGES[args.stage]
        paths = {f: [p for p in (v if isinstance(v, list) else [v]) if p is not None]
                 for f in stage.files() for v in [getattr(args, f)]}
        declared_in = {p for f in stage.files() if f not in stage.outputs for p in paths[f]}
        assert {p for f in stage.outputs for p in paths[f]} <= set(job["output"]), job["rule"]
        # every input file but the code is a declared one
        assert {f for f in job["input"] if not f.endswith(".py")} == declared_in, job["rule"]
        if stage.section:
            assert getattr(args, f"{stage.section}_name") == job["wildcards"][stage.section]
            assert args.config == ["config.yaml", "config/demo.yaml"] and args.experiments == "params.yaml"
        assert "{" not in job["cmd"]  # no config JSON on any command line
