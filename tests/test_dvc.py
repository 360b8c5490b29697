"""DVC: dvc.yaml in DVC's idiom (matrix stages), the same jobs as Snakemake's, `dvc repro`,
experiments, a remote round trip, and Snakemake and DVC taking turns on the same outputs.

Everything runs in a temporary git + DVC repository copied from the workflow,
never in this checkout's own .dvc. End-to-end runs use tests/tiny.yaml through
the same mechanism as the demo: `python -m reprozoo dvc-yaml --configfile tests/tiny.yaml`.
"""
import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from snakemake.benchmark import BenchmarkRecord

from conftest import BIN, ROOT, run_cli, run_snakemake
from reprozoo.config import load_config, run_models
from reprozoo.dvc import stage_order
from reprozoo.benchmark import BENCHMARK_COLUMNS, benchmark, benchmark_seconds, write_benchmark
from reprozoo.errors import UserError
from reprozoo.sections import resolve_model

COPY = ["Snakefile", "rules", "reprozoo", "workflow", "config.yaml", "config", "envs", "profiles", "Makefile",
        "dvc.yaml", "params.yaml", ".dvcignore", "tests/tiny.yaml", "tests/snakemake_jobs.py"]
TINY = "dvc.yaml"
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "TQDM_DISABLE": "1",
       "DVC_NO_ANALYTICS": "1"}


def copy_workflow(work):
    for name in COPY:
        src, dst = ROOT / name, work / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    for cache in work.rglob("__pycache__"):
        shutil.rmtree(cache)
    return work


def sh(*args, cwd, check=True, timeout=900, env=None):
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, env={**ENV, **(env or {})},
                            timeout=timeout)
    if check:
        assert result.returncode == 0, f"{args}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def dvc(*args, cwd, check=True):
    return sh(BIN / "dvc", *args, cwd=cwd, check=check)


def make(target, cwd, env=None):
    return sh("make", "--no-print-directory", target, "DVC_CONFIG=tests/tiny.yaml", f"VENV={BIN.parent}", cwd=cwd,
              env=env)


def changed_stages(work) -> set[str]:
    status = json.loads(dvc("status", "--json", TINY, cwd=work).stdout or "{}")
    return {name.split(":")[-1] for name in status}


def ran_stages(result) -> set[str]:
    return set(re.findall(r"Running stage '(?:[^':]*:)?([^']+)'", result.stdout + result.stderr))


def snakemake_plans(work) -> set[str]:
    """The rules of the jobs `snakemake -n` would run, but the `all` target (empty when nothing)."""
    result = run_snakemake("-n", "--configfile", "tests/tiny.yaml", cwd=work)
    assert result.returncode == 0, result.stderr + result.stdout
    return set(re.findall(r"^(?:local)?rule (\w+):$", result.stdout, re.M)) - {"all"}


def rule_of(stage: str) -> str:
    """The rule a DVC stage runs: `tune@digits-mlp` and `tune-vit_b16_demo@digits-vit_b16_probe` run `tune`."""
    return stage.split("@")[0].split("-")[0]


def dvc_reruns(work) -> set[str]:
    """The stages `dvc repro` would run: those `dvc status` says changed once DVC's resolve stage has written the
    section files, and every stage after them (DVC knows those only by running: its graph says which they are)."""
    import networkx as nx
    from dvc.repo import Repo

    dvc("repro", "--single-item", "resolve", cwd=work)
    changed = changed_stages(work) - {"resolve"}
    with Repo(str(work)) as repo:
        graph = repo.index.graph  # edges from a stage to the stages it depends on
        stages = {s.name: s for s in graph.nodes}
        return changed | {a.name for name in changed for a in nx.ancestors(graph, stages[name])}


def dvc_plans(work) -> set[str]:
    """The rules of the stages `dvc repro` would run (`tune@digits-mlp`: `tune`)."""
    return {rule_of(stage) for stage in dvc_reruns(work)}


def set_config(work, change, file="config.yaml"):
    """Edit config.yaml (or the study's record, config/study.yaml) as a user would."""
    path = work / file
    cfg = yaml.safe_load(path.read_text())
    change(cfg)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def restore_baseline(work):
    """Back to the committed config, record, params.yaml and dvc.lock, with their outputs from the DVC cache."""
    sh("git", "checkout", "--", "config.yaml", "config/study.yaml", "params.yaml", "dvc.lock", cwd=work)
    dvc("checkout", TINY, cwd=work)


def pipeline_stages(work) -> set[str]:
    """Every stage of dvc.yaml as DVC expands it (`tune@digits-mlp`, ...)."""
    return set(dvc("stage", "list", "--name-only", cwd=work).stdout.split())


def output(work, folder, name):
    """results/digits/<folder>/[seed.../]<name>."""
    found = sorted((work / "results/digits" / folder).rglob(name))
    assert len(found) == 1, found
    return found[0]


def model_stages(work, model) -> set[str]:
    """The model's own stages (tune, train, evaluate, ...), the report, and DVC's resolve stage."""
    return {s for s in pipeline_stages(work) if model in s.split("@")[-1].split("-") or rule_of(s) in ("report", "resolve")}


# ------------------------------------------------------------------ generator and CLI (fast)
def test_committed_dvc_yaml_is_generated_and_short():
    result = run_cli("dvc-yaml", "--check")  # for the config files its header records
    assert result.returncode == 0, result.stderr
    assert len((ROOT / "dvc.yaml").read_text().splitlines()) <= 300


def test_demo_dvc_yaml_is_generated(tmp_path):
    work = copy_workflow(tmp_path)
    assert run_cli("dvc-yaml", "--configfile", "config/demo.yaml", cwd=work).returncode == 0
    text = (work / "dvc.yaml").read_text()
    assert "# Config: config.yaml + config/demo.yaml" in text and "foreach" not in text and "matrix:" in text
    assert len(text.splitlines()) <= 300
    assert run_cli("dvc-yaml", "--check", cwd=work).returncode == 0


def _covers(paths: list[str], path: str) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in paths)


@pytest.mark.parametrize("configs", [[], ["config/demo.yaml"], ["tests/tiny.yaml"]], ids=["study", "demo", "tiny"])
def test_dvc_plans_the_snakemake_jobs(tmp_path, configs):
    """DVC's own reading of dvc.yaml (matrix stages expanded) has Snakemake's jobs, commands, inputs and outputs:
    the jobs Snakemake's API lists for a dry run, which are those `snakemake -n --forceall` prints. DVC's one stage
    more, `resolve`, writes the section files that Snakemake writes when it reads the Snakefile."""
    work = copy_workflow(tmp_path)
    assert_same_jobs(work, configs)


def assert_same_jobs(work, configs) -> list[dict]:
    """Generate dvc.yaml in `work` for `configs` and check that DVC reads from it Snakemake's jobs; return them."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    assert run_cli("dvc-yaml", *(a for c in configs for a in ("--configfile", c)), cwd=work).returncode == 0
    sh(BIN / "dvc", "init", "--no-scm", "-q", cwd=work)
    jobs = json.loads(sh(sys.executable, "tests/snakemake_jobs.py", *configs, cwd=work).stdout)
    stages = {s.name: s for s in Repo(str(work)).index.stages if s.path.endswith(TINY)}
    resolve = stages.pop("resolve")
    assert len(stages) == len(jobs) >= 10
    for job in jobs:
        [name] = [n for n, s in stages.items() if _covers([o.def_path for o in s.outs], job["output"][0])]
        stage = stages.pop(name)
        assert rule_of(name) == job["rule"], name
        outs = [o.def_path for o in stage.outs]
        assert all(_covers(outs, f) for f in job["output"]) and all(
            any(_covers([o], f) for f in job["output"]) for o in outs), name  # a folder out: the report's figures
        deps = [d.def_path for d in stage.deps if not isinstance(d, ParamsDependency)]
        assert all(_covers(deps, f) for f in job["input"]) and all(
            any(_covers([d], f) for f in job["input"]) for d in deps), name  # a folder dep: the report's runs
        command = shlex.split(stage.cmd)
        snakemake = shlex.split(job["cmd"])
        assert command[-2:] == ["--benchmark", job["benchmark"]], name
        del command[-2:]  # the job measures itself where Snakemake's `benchmark:` would (rules/common.smk reads it)
        if "--cores" in snakemake:  # a tuning job's cores under Snakemake; DVC runs one stage at a time on them all
            at = snakemake.index("--cores")
            del snakemake[at:at + 2]
        assert command == snakemake, name
    assert stages == {}
    read = {f for job in jobs for f in job["input"] if "/config/" in f}
    assert read and all(_covers([o.def_path for o in resolve.outs], f) for f in read)

    printed = run_snakemake("-n", "--forceall", *(a for c in configs for a in ("--configfile", c)), cwd=work).stdout
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", printed[printed.index("Job stats"):], re.M))
    assert {rule: int(n) for rule, n in counts.items() if rule not in ("all", "total")} == {
        rule: sum(job["rule"] == rule for job in jobs) for rule in {job["rule"] for job in jobs}}
    return jobs


# A per-model stage that feeds the report, as docs/cli.md ("Adding a stage") says to add one: a figure of each
# model's test errors by class, from its predictions.
NEW_MODULE = '''"""Each model's test errors by class: the stage added by tests/test_dvc.py."""
import matplotlib.pyplot as plt
import pandas as pd

from reprozoo.io import save_figure


def errors_figure(cfg, predictions_path, errors_plot_path):
    predictions = pd.read_csv(predictions_path)
    wrong = predictions[predictions.actual != predictions.predicted].actual.value_counts().sort_index()
    fig, ax = plt.subplots()
    ax.bar(wrong.index.astype(str), wrong.values)
    ax.set(xlabel="class", ylabel="test errors")
    save_figure(fig, errors_plot_path)
'''
NEW_DECLARATION = '''
PATHS["errors_plot"] = f"{R}/report/models/errors_{{model}}.png"
STAGES["errors"] = Stage("test errors by class of one model", "model_cfg", DATA_MODEL, inputs=("predictions",),
                         outputs=("errors_plot",), code=("errors_figure.py",))
'''
NEW_CLI_LINES = '''        case "errors":
            from reprozoo.errors_figure import errors_figure as run
'''
NEW_RULE = '''

rule errors:
    """Test errors by class of one trained model."""
    input:
        cfg=PATHS["model_cfg"],
        predictions=study_run("predictions"),
        code=src("errors_figure.py"),
    output:
        errors_plot=PATHS["errors_plot"],
        pdf=pdf_twin(PATHS["errors_plot"]),
    log:
        "logs/{dataset}/errors/{model}.log",
    benchmark:
        "logs/{dataset}/benchmarks/errors/{model}.tsv"
    shell:
        "python -m reprozoo errors --dataset {wildcards.dataset} --model {wildcards.model} --log {log}"
'''


def test_a_new_per_model_stage_takes_four_files(tmp_path):
    """Its module, its declaration in reprozoo/stages.py, its rule in rules/report.smk and the lines of
    reprozoo/cli.py that name its function are all it takes: Snakemake runs it for every model by default,
    DVC plans the same jobs, and the CLI runs it with names only."""
    work = copy_workflow(tmp_path)
    (work / "reprozoo" / "errors_figure.py").write_text(NEW_MODULE)  # a file of the copy only
    with open(work / "reprozoo/stages.py", "a") as f:
        f.write(NEW_DECLARATION)
    with open(work / "rules/report.smk", "a") as f:
        f.write(NEW_RULE)
    cli = (work / "reprozoo/cli.py").read_text()
    (work / "reprozoo/cli.py").write_text(cli.replace("    return run\n", NEW_CLI_LINES + "    return run\n", 1))
    models = run_models(load_config(ROOT / "config.yaml", ROOT / "tests/tiny.yaml"))
    jobs = assert_same_jobs(work, ["tests/tiny.yaml"])
    assert sorted(job["wildcards"]["model"] for job in jobs if job["rule"] == "errors") == sorted(models)
    assert yaml.safe_load((work / "dvc.yaml").read_text())["stages"]["errors"]["matrix"] == {
        "dataset": "${datasets}", "model": "${all_models}"}  # one DVC stage over every model

    predictions = work / "results/digits/eval/mlp/seed3407/predictions.csv"  # what evaluate writes
    predictions.parent.mkdir(parents=True)
    predictions.write_text("actual,predicted,loss\n0,0,0.1\n1,7,2.3\n7,1,1.9\n7,7,0.2\n")
    result = run_cli("errors", "--dataset", "digits", "--model", "mlp", cwd=work)  # the section file of the dry run
    assert result.returncode == 0, result.stderr
    assert (work / "results/digits/report/models/errors_mlp.png").read_bytes()[:4] == b"\x89PNG"
    assert (work / "results/digits/report/models/errors_mlp.pdf").read_bytes()[:5] == b"%PDF-"


def test_section_files_hold_what_snakemake_resolves(tmp_path):
    """A job's command names no config; its section file holds what it resolves to: config.yaml, the override,
    `snakemake --config` values and params.yaml, as DVC's `resolve` stage (the CLI's `resolve`) writes it too."""
    work = copy_workflow(tmp_path)
    (work / "params.yaml").write_text("mlp: {batch_size: 32}\n")
    result = run_snakemake("-n", "-p", "--forceall", "--configfile", "tests/tiny.yaml", "--config", "seed=7",
                           cwd=work)
    assert result.returncode == 0, result.stderr
    tune = next(line.split("Shell command: ")[-1] for line in result.stdout.splitlines()
                if "reprozoo tune " in line and "--model mlp " in line)
    assert tune == "python -m reprozoo tune --dataset digits --model mlp --cores 1 --log logs/digits/tune/mlp.log"
    section = work / "results/digits/config/model-mlp.json"
    written = section.read_text()
    cfg = json.loads(written)["cfg"]
    assert cfg == resolve_model(load_config(work / "config.yaml", work / "tests/tiny.yaml",
                                            experiments=work / "params.yaml", values={"seed": 7}), "mlp")
    assert cfg["seed"] == 7 and cfg["batch_size"] == 32
    section.unlink()
    result = run_cli("resolve", "--config", "config.yaml", "--config", "tests/tiny.yaml", "--experiments",
                     "params.yaml", "--set", '{"seed": 7}', cwd=work)
    assert result.returncode == 0, result.stderr
    assert section.read_text() == written


@pytest.mark.parametrize("argv, message", [
    (["--model", "mlp"], "--model-cfg: give its path, or --dataset to take it from the paths table"),
    (["--config", "config.yaml", "--dataset", "cifar10", "--model", "vgg"], "not written by the config's run"),
    (["--config", "nope.yaml", "--dataset", "cifar10", "--model", "mlp"], "config file nope.yaml: not found"),
], ids=["no-dataset", "unknown-model", "missing-file"])
def test_model_name_errors_are_one_line(tmp_path, argv, message):
    shutil.copy2(ROOT / "config.yaml", tmp_path / "config.yaml")
    (tmp_path / "config").mkdir()
    shutil.copy2(ROOT / "config/study.yaml", tmp_path / "config/study.yaml")  # the study's record it names
    (tmp_path / "workflow").symlink_to(ROOT / "workflow")
    result = run_cli("train", *argv, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("layer, message", [
    ("vgg: {}", "params.yaml: 'vgg' is no model of the config"),
    ("mlp: {paper: {accuracy: 60}}", "params.yaml: 'mlp.paper': reported numbers and verify expectations are the "
                                     "study's record (config/study.yaml)"),
    ("mlp: {verify: {why: x}}", "params.yaml: 'mlp.verify': reported numbers and verify expectations"),
    ("mlp: {batch_size: 0}", "config key 'models.mlp.batch_size'"),
], ids=["unknown-model", "reported-number", "verify", "invalid-value"])
def test_params_yaml_holds_what_a_model_trains_with(tmp_path, layer, message):
    (tmp_path / "params.yaml").write_text(layer + "\n")
    result = run_cli("train", "--config", ROOT / "config.yaml", "--experiments", tmp_path / "params.yaml",
                     "--dataset", "cifar10", "--model", "mlp", cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_params_yaml_is_applied_after_the_config_files(tmp_path):
    (tmp_path / "fixed.yaml").write_text("models: {mlp: {hparams: fixed, lr: 0.001, epochs: 13}}\n")
    (tmp_path / "params.yaml").write_text("mlp: {lr: 0.002}\n")
    cfg = load_config(ROOT / "config.yaml", tmp_path / "fixed.yaml", experiments=tmp_path / "params.yaml")
    model = resolve_model(cfg, "mlp")
    assert (model["hparams"], model["lr"], model["epochs"]) == ("fixed", 0.002, 13)  # epochs: the override's


def test_check_config_checks_and_names_what_params_yaml_sets(tmp_path):
    """An experiment left in params.yaml changes what Snakemake and DVC run: check-config applies it too and
    says what it sets; a bad value in it is the one line check-config gives."""
    work = copy_workflow(tmp_path)
    (work / "params.yaml").write_text("mlp: {hparams: fixed, lr: 1.0e-4, epochs: 3}\ncnn: {}\n")
    result = run_cli("check-config", "config.yaml", "tests/tiny.yaml", cwd=work)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(
        "; params.yaml (the experiment file) sets mlp.hparams=\"fixed\", mlp.lr=0.0001, mlp.epochs=3")
    model = json.loads(run_cli("check-config", "config.yaml", "--model-json", "mlp", cwd=work).stdout)
    assert (model["hparams"], model["lr"], model["epochs"]) == ("fixed", 1e-4, 3)
    (work / "params.yaml").write_text("mlp: {lr: -1}\n")
    result = run_cli("check-config", "config.yaml", cwd=work)
    assert result.returncode == 2 and "models.mlp.lr" in result.stderr, result.stderr
    (work / "params.yaml").write_text("mlp: {}\n")
    assert "params.yaml" not in run_cli("check-config", "config.yaml", "tests/tiny.yaml", cwd=work).stdout


def test_a_model_given_as_json_is_checked_as_the_config_is():
    result = run_cli("evaluate", "--model-json", "{}", "--data", "d", "--weights", "w", "--metrics", "m",
                     "--confusion", "c", "--predictions", "p")
    assert result.returncode == 2 and "reprozoo evaluate: error: config key '--model-json" in result.stderr


# ------------------------------------------------------------------ end to end (one temp repo)
@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory):
    """A git + DVC copy of the workflow with dvc.yaml for tests/tiny.yaml, reproduced once and committed."""
    work = copy_workflow(tmp_path_factory.mktemp("dvc") / "repo")
    sh("git", "init", "-q", cwd=work)
    sh("git", "config", "user.email", "test@reprozoo", cwd=work)
    sh("git", "config", "user.name", "test", cwd=work)
    (work / ".gitignore").write_text("results/\nresources/\nlogs/\n.snakemake/\n__pycache__/\n")
    dvc("init", "-q", cwd=work)
    shutil.copy2(ROOT / ".dvc/config", work / ".dvc/config")  # the offline plots page
    shutil.copytree(ROOT / ".dvc/plots", work / ".dvc/plots")  # the plots' templates
    result = run_cli("dvc-yaml", "--configfile", "tests/tiny.yaml", cwd=work)
    assert result.returncode == 0, result.stderr
    sh("git", "add", "-A", cwd=work)
    sh("git", "commit", "-qm", "workflow", cwd=work)
    start = time.perf_counter()
    repro = dvc("repro", TINY, cwd=work)
    seconds = time.perf_counter() - start
    sh("git", "add", "-A", cwd=work)
    sh("git", "commit", "-qm", "tiny results", cwd=work)
    return work, repro, seconds


@pytest.mark.slow
def test_dvc_repro_runs_every_stage_then_nothing_in_either_engine(dvc_repo):
    work, repro, seconds = dvc_repo
    assert ran_stages(repro) == pipeline_stages(work)
    assert {"resolve", "report@digits"} <= pipeline_stages(work) and len(pipeline_stages(work)) >= 10
    assert (work / "results/digits/report/comparison.csv").read_text().count("\n") == 3  # header + 2 models
    again = dvc("repro", TINY, cwd=work)
    assert ran_stages(again) == set() and "didn't change" in again.stdout
    assert changed_stages(work) == set()
    result = run_snakemake("-n", "--configfile", "tests/tiny.yaml", cwd=work)  # no `make dvc-touch` first
    assert "outputs that DVC made are current" in result.stderr and "Nothing to be done" in result.stdout + result.stderr
    assert snakemake_plans(work) == set()
    # Snakemake's report gives each job DVC ran the time its benchmark file says (the job wrote it: --benchmark)
    measured = {str(f.relative_to(work)): benchmark_seconds(f) for f in (work / "logs").rglob("*.tsv")}
    assert len(measured) == len(pipeline_stages(work) - {"resolve"}) and all(s > 0 for s in measured.values())
    report = run_snakemake("--configfile", "tests/tiny.yaml", "--report", "report.html", cwd=work)
    assert report.returncode == 0, report.stderr[-2000:]
    page = (work / "report.html").read_text()
    shown = json.loads(re.search(r'"description": "Runtimes of jobs\.", "data": \{"values": (\[.*?\])\}', page)[1])
    assert sorted(job["runtime"] for job in shown) == pytest.approx(sorted(measured.values()), abs=0.01)
    # `make dvc-touch` does it by hand (the word on stdin): every output touched again, still nothing to run
    report = work / "results/digits/report/comparison.csv"
    before = report.stat().st_mtime_ns
    make("dvc-touch", cwd=work)
    assert report.stat().st_mtime_ns > before and snakemake_plans(work) == set()
    print(f"dvc repro (tiny) wall time: {seconds:.0f}s")


def left_running(work) -> list[str]:
    """The command lines of the processes at work in `work`: what a command left behind once it returned."""
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/cwd") == os.path.realpath(work):
                left.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
    return left


@pytest.mark.slow
def test_the_look_after_dvc_touches_nothing_on_a_config_error_or_a_change(dvc_repo):
    """DVC's side of the look starts before the Snakefile checks the config: a config error ends the command
    with its one line and DVC's side with it, nothing touched; a config DVC has not run gets Snakemake's own
    plan, nothing touched; back to DVC's config, the next dry run takes DVC's outputs again."""
    work, _, _ = dvc_repo
    report = work / "results/digits/report/comparison.csv"
    before = report.stat().st_mtime_ns
    os.utime(work / "dvc.lock")  # DVC wrote since the last look
    bad = run_snakemake("-n", "--configfile", "tests/tiny.yaml", "--config", "seed=-1", cwd=work)
    assert bad.returncode != 0 and "reprozoo: config key 'seed': -1 is less than the minimum of 0" in bad.stderr
    assert left_running(work) == [] and report.stat().st_mtime_ns == before
    try:
        set_config(work, lambda cfg: cfg["models"]["mlp"]["args"].update(hidden=[96]))
        assert "train" in snakemake_plans(work)  # DVC sees the change: no touch, Snakemake plans by itself
        assert report.stat().st_mtime_ns == before
    finally:
        sh("git", "checkout", "--", "config.yaml", cwd=work)
    os.utime(work / "dvc.lock")
    result = run_snakemake("-n", "--configfile", "tests/tiny.yaml", cwd=work)
    assert "outputs that DVC made are current" in result.stderr, result.stderr[-2000:]
    assert "Nothing to be done" in result.stdout + result.stderr and left_running(work) == []
    assert report.stat().st_mtime_ns > before


@pytest.mark.slow
def test_snakemake_and_dvc_compute_the_same_bytes(dvc_repo, tmp_path):
    """The same config through both engines: Snakemake on 2 cores (two jobs side by side, each tuning job's
    trials one after the other), DVC (one stage at a time, a tuning job's two trials side by side on both
    cores). Every computation runs at protocol.threads, so the numbers are the same to the byte."""
    work, _, _ = dvc_repo
    snakemake = copy_workflow(tmp_path / "snakemake")
    result = run_snakemake("--cores", "2", "--configfile", "tests/tiny.yaml", cwd=snakemake)
    assert result.returncode == 0, result.stderr[-3000:]
    searches = set()
    for model in run_models(load_config(work / "config.yaml", work / "tests/tiny.yaml")):
        for path in (f"results/digits/eval/{model}/seed3407/metrics.json",
                     f"results/digits/eval/{model}/seed3407/predictions.csv",
                     f"results/digits/train/{model}/seed3407/weights.pt", f"results/digits/tune/{model}/trials.csv"):
            if path.endswith("trials.csv"):  # its seconds column is a wall time
                ours, theirs = (pd.read_csv(w / path).drop(columns="seconds") for w in (work, snakemake))
                pd.testing.assert_frame_equal(ours, theirs, check_exact=True)
            else:
                assert (work / path).read_bytes() == (snakemake / path).read_bytes(), path
        searches |= {json.loads((w / f"results/digits/tune/{model}/best.json").read_text())["search"]
                     for w in (work, snakemake)}
    assert searches == {"concurrent: forked x2", "concurrent: in-process"}  # the two engines ran them differently


def columns(text: str) -> int:
    """The width of a command's output, as `wc -L` measures it."""
    return max(map(len, text.splitlines()), default=0)


@pytest.mark.slow
def test_metrics_come_from_one_summary_file_and_fit_a_terminal(dvc_repo):
    work, _, _ = dvc_repo
    shown = json.loads(dvc("metrics", "show", "--json", cwd=work).stdout)
    summary = _find(shown, "results/digits/report/summary.json")
    assert summary == json.loads((work / "results/digits/report/summary.json").read_text())
    assert summary["models"] == 2 and summary["reproduced"] + summary["not_comparable"] == 2  # digits: not CIFAR-10
    accuracies = [json.loads(output(work, f"eval/{m}", "metrics.json").read_text())["accuracy"] for m in ("mlp", "cnn")]
    assert summary["accuracy"] == pytest.approx(sum(accuracies) / 2, abs=0.01)
    assert "metrics.json" not in json.dumps(shown) and "best.json" not in json.dumps(shown)  # one file
    env = {"COLUMNS": "120"}
    table = sh(BIN / "dvc", "metrics", "show", cwd=work, env=env).stdout
    assert "not_comparable" in table and columns(table) <= 120, table
    dag = make("dvc-dag", cwd=work, env={"COLUMNS": "1000"}).stdout
    assert columns(dag) <= 120 and "@" not in dag, dag  # a matrix is one stage
    rows = {name: row for row, line in enumerate(dag.splitlines()) for name in re.findall(r"\| (\w+) \|", line)}
    order = ["resolve", "download", "prepare", "split", "tune", "train", "evaluate", "report"]
    assert set(rows) == {*order, "verify"} and [rows[n] for n in order] == sorted(rows[n] for n in order), dag
    assert rows["resolve"] < rows["verify"] < rows["report"]
    every_job = sh(BIN / "dvc", "dag", "--mermaid", cwd=work, env=env).stdout  # docs/dvc.md: each job, in 120
    assert "report@digits" in every_job and columns(every_job) <= 120


def test_the_stage_order_keeps_the_edges_no_longer_path_implies():
    dot = 'strict digraph {\n"a";\n"b";\n"c";\n"d";\n"a" -> "b";\n"b" -> "c";\n"a" -> "c";\n}\n'
    graph = stage_order(dot)
    assert sorted(graph.edges) == [("a", "b"), ("b", "c")] and sorted(graph) == ["a", "b", "c", "d"]
    with pytest.raises(UserError, match="no graph"):
        stage_order("")


def test_dvc_dag_outside_a_dvc_repository_is_one_line(tmp_path):
    result = run_cli("dvc-dag", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("reprozoo dvc-dag: error: dvc dag: ")
    assert "not inside of a DVC repository" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def _find(tree, path):
    """The metrics of `path` in `dvc metrics show --json` output, whatever its nesting."""
    if isinstance(tree, dict):
        if path in tree:
            return tree[path].get("data", tree[path])
        for value in tree.values():
            found = _find(value, path)
            if found is not None:
                return found
    return None


@pytest.mark.slow
def test_changing_one_model_changes_only_that_models_stages(dvc_repo):
    """What DVC would rerun after an edit of one model's section, once its resolve stage has run. That it
    reruns exactly those stages, and that the old results then check out again, is shown by the experiment
    below, which runs them."""
    work, _, _ = dvc_repo
    try:
        set_config(work, lambda cfg: cfg["models"]["mlp"]["args"].update(hidden=[256, 128]))
        assert changed_stages(work) == {"resolve"}  # what reads the config
        assert dvc_reruns(work) == model_stages(work, "mlp") - {"resolve"}
    finally:
        restore_baseline(work)
    assert changed_stages(work) == set()


@pytest.mark.slow
def test_an_edit_of_the_code_that_writes_the_section_files_reruns_resolve(dvc_repo):
    """Snakemake writes the section files at every DAG build, so an edit of the code that writes them takes
    effect at once; under DVC its resolve stage reruns, and the stages after it only where a section changed."""
    work, _, _ = dvc_repo
    sections = work / "reprozoo/sections.py"
    try:
        sections.write_text(sections.read_text() + "\n# an edit that changes no section file\n")
        assert changed_stages(work) == {"resolve"}
        assert dvc_reruns(work) == set()
    finally:
        sh("git", "checkout", "--", "reprozoo/sections.py", cwd=work)
        restore_baseline(work)
    assert changed_stages(work) == set()


# Edits of config.yaml, and the rules whose jobs each engine then reruns: reported numbers and prose feed
# the report alone, whatever the engine.
RECORD = "config/study.yaml"  # the study's record: what the report compares with
EDITS = {
    "paper-accuracy": (RECORD, lambda rec: rec["models"]["mlp"].update(accuracy=60.0), {"report"}),
    "paper-lr-tuned": (RECORD, lambda rec: rec["models"]["mlp"].update(lr=0.001), {"report"}),  # unused when tuned
    "study": (RECORD, lambda rec: rec.update(title="Another title"), {"report"}),
    "verify": (RECORD, lambda rec: rec["verify"].update(mlp={"why": "an expectation"}), {"verify", "report"}),
    "args": ("config.yaml", lambda cfg: cfg["models"]["mlp"]["args"].update(hidden=[64]),
             {"verify", "tune", "train", "evaluate", "report"}),
}


@pytest.mark.slow
def test_reported_numbers_and_prose_rerun_only_the_report_in_both_engines(dvc_repo):
    """The same edit, the same question to each engine: which jobs would you rerun? (`snakemake -n`,
    `dvc status` after DVC's resolve stage, both as rule names). An architecture edit, for contrast,
    reruns the model's jobs in both."""
    work, _, _ = dvc_repo
    assert snakemake_plans(work) == dvc_plans(work) == set()
    try:
        for what, (file, change, rules) in EDITS.items():
            set_config(work, change, file)
            assert (what, snakemake_plans(work)) == (what, rules)
            assert (what, dvc_plans(work)) == (what, rules)
            sh("git", "checkout", "--", file, cwd=work)
    finally:
        sh("git", "checkout", "--", "config.yaml", RECORD, cwd=work)
    assert snakemake_plans(work) == dvc_plans(work) == set()
    restore_baseline(work)


@pytest.mark.slow
def test_plots_show_renders_each_models_curves_confusion_and_trials_offline(dvc_repo, tmp_path):
    work, _, _ = dvc_repo
    plots = json.loads(dvc("plots", "show", "--json", cwd=work).stdout)["data"]
    models = ("mlp", "cnn")
    ids = {"digits/accuracy", "digits/loss"} | {f"results/digits/eval/{m}/seed3407/predictions.csv" for m in models} | {
        f"results/digits/tune/{m}/trials.csv" for m in models}
    assert set(plots) == ids
    epochs = {m: len(output(work, f"train/{m}", "history.csv").read_text().splitlines()) - 1 for m in models}
    histories = pd.read_csv(work / "results/digits/report/histories.csv")  # what the two curve plots draw
    assert list(histories.columns[:3]) == ["model", "seed", "epoch"] and "seconds" not in histories  # no wall times
    assert histories.groupby("model").size().to_dict() == epochs
    accuracy = plots["digits/accuracy"][0]["content"]
    assert len(accuracy["data"]["values"]) == sum(epochs.values())  # every model's every epoch
    assert {row["model"] for row in accuracy["data"]["values"]} == set(models)
    assert accuracy["encoding"]["color"]["field"] == "model" and accuracy["encoding"]["y"]["title"] == \
        "test accuracy (%)"
    loss = plots["digits/loss"][0]["content"]
    assert {row["field"] for row in loss["data"]["values"]} == {"train_loss", "test_loss"}
    assert len(loss["data"]["values"]) == 2 * sum(epochs.values()) and loss["facet"]["field"] == "model"
    for model in models:
        confusion = plots[f"results/digits/eval/{model}/seed3407/predictions.csv"][0]["content"]
        assert len(confusion["data"]["values"]) == 360 and {"actual", "predicted"} <= set(confusion["data"]["values"][0])
        assert confusion["title"]["text"] == f"digits / {model}, seed 3407: test images by class"
        trials = plots[f"results/digits/tune/{model}/trials.csv"][0]["content"]
        assert len(trials["data"]["values"]) == 2 and trials["encoding"]["x"]["scale"]["type"] == "log"  # max_evals 2
        assert trials["title"] == f"digits / {model}: tuning trials"
    dvc("plots", "show", "-o", tmp_path / "plots", cwd=work)  # .dvc/config names the offline page
    html = (tmp_path / "plots/index.html").read_text()
    assert html.count("vegaEmbed(") >= len(ids)
    assert not re.search(r"<script[^>]+src=", html) and "cdn.jsdelivr" not in html  # nothing to fetch
    drawn = drawn_in_chromium(tmp_path / "plots/index.html", tmp_path)
    assert set(drawn) == {re.sub(r"\W", "_", plot) for plot in ids}, drawn  # every plot in its place, none failed
    assert {m: drawn["digits_accuracy"]["texts"].count(m) for m in models} == {"mlp": 1, "cnn": 1}  # the legend
    assert drawn["digits_accuracy"]["lines"] == len(models) and drawn["digits_loss"]["lines"] == 2 * len(models)
    assert {"epoch", "test accuracy (%)"} <= set(drawn["digits_accuracy"]["texts"])
    assert set(drawn["digits_accuracy"]["texts"]) >= {str(e) for e in range(1, max(epochs.values()) + 1)}
    ticks = drawn["digits_accuracy"]["x_ticks"]  # whole epochs, each once (no 1, 2, 2 from ticks at 1.5)
    assert ticks and all(t.isdigit() for t in ticks) and len(set(ticks)) == len(ticks), ticks
    for model in models:
        assert drawn[f"results_digits_tune_{model}_trials_csv"]["symbols"] == 2
        assert drawn[f"results_digits_eval_{model}_seed3407_predictions_csv"]["rects"] >= 10  # a cell per class seen


def test_a_jobs_benchmark_file_is_snakemakes(tmp_path):
    """What a DVC job writes (`--benchmark`) has Snakemake's columns, and its seconds are read back; a file of a job
    not run here reads as no time."""
    assert list(BENCHMARK_COLUMNS) == BenchmarkRecord.get_header()
    with benchmark(tmp_path / "logs/job.tsv"):
        time.sleep(0.2)
    rows = pd.read_csv(tmp_path / "logs/job.tsv", sep="\t")
    assert list(rows.columns) == list(BENCHMARK_COLUMNS) and len(rows) == 1
    assert 0.2 <= benchmark_seconds(tmp_path / "logs/job.tsv") < 5 and rows["max_rss"][0] > 0
    write_benchmark(tmp_path / "elsewhere.tsv")
    assert benchmark_seconds(tmp_path / "elsewhere.tsv") is None and benchmark_seconds(tmp_path / "missing.tsv") is None


CHROMIUM = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def drawn_in_chromium(page, tmp_path) -> dict[str, dict]:
    """What Debian's Chromium, headless, drew of each plot of a `dvc plots show` page (SVG, .dvc/plots.html):
    per plot div, its texts, the x axis's tick labels and how many lines, points and cells it drew.
    A plot that drew nothing, or failed, is left out. Skips where Chromium is missing, but on CI."""
    browser = shutil.which("chromium")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("CI: no Chromium (.ci/run installs Debian's chromium)")
        pytest.skip("Debian's chromium is not installed")
    dom = sh(browser, *CHROMIUM, f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=20000",
             "--window-size=1400,1000", "--dump-dom", page.as_uri(), cwd=tmp_path, timeout=120).stdout
    drawn = {}
    for plot_id, body in re.findall(r'<div id="(\w+)"[^>]*>(.*?)(?=<div id="\w+"|</body>)', dom, flags=re.S):
        if "plot-error" in body or "<svg" not in body:
            continue
        texts = [t.strip() for t in re.findall(r"<text[^>]*>([^<]*)</text>", body)]
        x_ticks = [t for axis in re.split(r'aria-roledescription="axis"', body)[1:] if axis.startswith(' aria-label="X-axis')
                   for labels in re.findall(r'class="mark-text role-axis-label"[^>]*>(.*?)</g>', axis, flags=re.S)[:1]
                   for t in re.findall(r"<text[^>]*>([^<]*)</text>", labels)]
        drawn[plot_id] = {"texts": texts, "x_ticks": x_ticks,
                          **{kind: len(re.findall(f'<path[^>]*aria-roledescription="{role}"', body))
                             for kind, role in (("lines", "line mark"), ("symbols", "point"), ("rects", "rect mark"))}}
    return drawn


@pytest.mark.slow
def test_params_diff_and_an_experiment_on_one_models_lr(dvc_repo):
    work, _, _ = dvc_repo
    try:
        set_config(work, lambda cfg: cfg["protocol"].update(batch_size=64))
        diff = dvc("params", "diff", cwd=work).stdout
        assert re.search(r"config\.yaml\s+protocol\.batch_size\s+128\s+64", diff), diff
        sh("git", "checkout", "--", "config.yaml", cwd=work)

        config, layer = (work / "config.yaml").read_bytes(), (work / "params.yaml").read_text()
        metrics = output(work, "eval/mlp", "metrics.json")
        before = metrics.read_bytes()
        record = (work / RECORD).read_bytes()
        run = dvc("exp", "run", TINY, "-n", "mlp-fixed-lr", "-S", "params.yaml:++mlp.hparams=fixed",
                  "-S", "params.yaml:++mlp.lr=0.002", "-S", "params.yaml:++mlp.epochs=2", cwd=work)
        assert ran_stages(run) == model_stages(work, "mlp")  # the changed model's stages, nothing else
        assert changed_stages(work) == set() and metrics.read_bytes() != before
        assert json.loads(output(work, "train/mlp", "run.json").read_text())["lr"] == 0.002
        assert snakemake_plans(work) == set()  # Snakemake takes DVC's runs as its own, without a manual step
        assert (work / "config.yaml").read_bytes() == config  # the hand-written config: not a byte changed
        assert (work / RECORD).read_bytes() == record  # nor the study's record
        edited = (work / "params.yaml").read_text()  # the experiment file: mlp's section, nothing else
        assert [line for line in edited.splitlines() if not line.startswith(("mlp:", "  "))] == [
            line for line in layer.splitlines() if not line.startswith("mlp:")]
        assert "mlp:\n  hparams: fixed\n  lr: 0.002\n  epochs: 2\n" in edited
        shown = dvc("exp", "show", "--json", cwd=work).stdout
        assert "mlp-fixed-lr" in shown and "0.002" in shown

        table = make("dvc-exp-show", cwd=work, env={"COLUMNS": "1000"}).stdout  # as wide as it wants
        lines = table.splitlines()[1:]  # after make's echo of the command
        assert max(map(len, lines)) <= 120, table
        for column in ("Experiment", "accuracy", "mlp.hparams", "mlp.lr", "mlp.epochs"):
            assert column in lines[1], column
        assert "mlp-fixed-lr" in table and "…" not in table
        restore_baseline(work)
        dvc("exp", "apply", "mlp-fixed-lr", cwd=work)  # the experiment back into the workspace
        assert json.loads(output(work, "train/mlp", "run.json").read_text())["lr"] == 0.002
        assert snakemake_plans(work) == set()  # after dvc exp apply too
    finally:
        restore_baseline(work)
    assert changed_stages(work) == set()
    assert metrics.read_bytes() == before  # the old results, checked out of the cache
    assert snakemake_plans(work) == set()  # after dvc checkout too


@pytest.mark.slow
def test_a_failed_experiment_says_the_one_command_that_puts_the_workspace_back(dvc_repo):
    """DVC writes `-S` values into params.yaml before the first stage, and leaves them there when a stage
    fails: the next experiment would fail the same way. The failure's line says how to get back."""
    work, _, _ = dvc_repo
    layer = (work / "params.yaml").read_text()
    try:
        run = dvc("exp", "run", TINY, "-S", "params.yaml:++mlp.batch_size=0", cwd=work, check=False)
        assert run.returncode != 0
        back = "git checkout params.yaml dvc.lock && dvc checkout"
        line = next(line for line in (run.stdout + run.stderr).splitlines() if line.startswith("reprozoo resolve: "))
        assert "config key 'models.mlp.batch_size': 0 is less than the minimum of 1" in line, line
        assert line.endswith(f"(this experiment's values stay in params.yaml: `{back}` puts the workspace back)")
        assert back in (ROOT / "README.md").read_text()
        sh("bash", "-c", back, cwd=work)
        assert (work / "params.yaml").read_text() == layer and changed_stages(work) == set()
    finally:
        restore_baseline(work)


@pytest.mark.slow
def test_push_delete_pull_then_neither_engine_recomputes(dvc_repo, tmp_path):
    work, _, _ = dvc_repo
    dvc("remote", "add", "-d", "store", tmp_path / "remote", cwd=work)
    dvc("push", TINY, cwd=work)
    shutil.rmtree(work / "results")
    shutil.rmtree(work / ".dvc/cache")  # so the files really come from the remote
    shutil.rmtree(work / "logs")  # as in a fresh clone: no logs, no benchmark files
    dvc("pull", cwd=work)  # no `make dvc-pull` needed: Snakemake takes DVC's outputs as its own
    assert (work / "results/digits/report/comparison.csv").is_file()
    assert changed_stages(work) == set()
    assert snakemake_plans(work) == set()
    report = work / "logs/digits/benchmarks/report.tsv"  # the report ran elsewhere: NA, and nothing planned for it
    assert report.is_file() and benchmark_seconds(report) is None


@pytest.mark.slow
def test_snakemake_run_then_dvc_commit_leaves_both_engines_clean(dvc_repo):
    work, _, _ = dvc_repo
    set_config(work, lambda cfg: cfg["models"]["mlp"]["args"].update(hidden=[128]))
    assert "train" in snakemake_plans(work)
    result = run_snakemake("--cores", "2", "--configfile", "tests/tiny.yaml", cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    assert changed_stages(work) == model_stages(work, "mlp")
    benchmark = work / "logs/digits/benchmarks/train/mlp/seed3407.tsv"  # older than what dvc commit re-links
    assert benchmark.is_file()
    dvc("commit", "--force", cwd=work)  # records what Snakemake made; `make dvc-commit` does the same
    assert changed_stages(work) == set()
    assert snakemake_plans(work) == set()
