"""The Snakemake workflow: dry runs, lint, the demo end to end, and what reruns."""
import os
import re
import shutil
import time

import pandas as pd
import pytest
import yaml

from conftest import ROOT, run_snakemake

WORKFLOW_FILES = ["Snakefile", "rules", "reprozoo", "workflow", "config.yaml", "config", "envs", "profiles"]


def planned_jobs(result) -> set[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run plans."""
    assert result.returncode == 0, result.stderr + result.stdout
    jobs = set()
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", result.stdout):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if head:
            wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.M)
            jobs.add((head.group(1), wildcards.group(1) if wildcards else ""))
    return jobs


def model_jobs(model: str, dataset: str = "digits") -> set[tuple[str, str]]:
    return {(rule, f"dataset={dataset}, model={model}") for rule in ("tune", "train", "evaluate")} | {
        ("report", f"dataset={dataset}"), ("all", "")}


def test_dry_run_of_the_study_plans_every_stage():
    jobs = planned_jobs(run_snakemake("-n", "--forceall"))
    rules = {rule for rule, _ in jobs}
    assert rules == {"download", "prepare", "split", "tune", "train", "evaluate", "report", "all"}
    assert {w for r, w in jobs if r == "train"} == {f"dataset=cifar10, model={m}" for m in ("mlp", "cnn", "resnet18")}
    assert ("split", "dataset=cifar10, seed=3407") in jobs


@pytest.mark.parametrize("extra", [[], ["--configfile", "config/demo.yaml"]], ids=["study", "demo"])
def test_lint_is_clean(extra):
    result = run_snakemake("--lint", *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo, run end to end in a copy of the workflow."""
    work = tmp_path_factory.mktemp("demo")
    for name in WORKFLOW_FILES:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, work / name)
    for cache in work.rglob("__pycache__"):
        shutil.rmtree(cache)
    start = time.perf_counter()
    result = run_snakemake("--cores", "2", "--configfile", "config/demo.yaml", cwd=work)
    assert result.returncode == 0, result.stderr[-5000:]
    return work, time.perf_counter() - start


@pytest.mark.slow
def test_demo_table_lists_every_model_well_above_chance(demo_run):
    work, seconds = demo_run
    table = pd.read_csv(work / "results/digits/report/comparison.csv")
    assert table["model"].tolist() == ["mlp", "cnn", "resnet18"]
    assert (table["accuracy"] > 50).all(), table  # 10 classes: chance is 10%
    assert table["params"].tolist() == [1_707_274, 1_147_914, 11_173_962]
    assert set(table["hparams"]) == {"tuned"}
    md = (work / "results/digits/report/comparison.md").read_text()
    assert "Not comparable" in md and all(f"| {m} " in md for m in table["model"])
    for png in ("accuracy.png", "curves_mlp.png", "curves_cnn.png", "curves_resnet18.png"):
        assert (work / "results/digits/report/figures" / png).stat().st_size > 10_000
    for stage in ("download", "prepare", "report"):
        assert (work / f"logs/digits/{stage}.log").stat().st_size > 0
    print(f"demo wall time: {seconds:.0f}s")


def _dry(work):
    return planned_jobs(run_snakemake("-n", "--configfile", "config/demo.yaml", cwd=work))


@pytest.mark.slow
def test_nothing_to_do_after_the_demo(demo_run):
    work, _ = demo_run
    assert _dry(work) == set()


@pytest.mark.slow
def test_changing_one_model_section_reruns_only_that_model(demo_run):
    work, _ = demo_run
    config = work / "config.yaml"
    original = config.read_text()
    try:
        cfg = yaml.safe_load(original)
        cfg["models"]["cnn"]["args"]["dropout"] = 0.3
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        assert _dry(work) == model_jobs("cnn")

        cfg = yaml.safe_load(original)
        cfg["models"]["mlp"]["paper"]["accuracy"] = 55.0  # a reported number only feeds the report
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        assert _dry(work) == {("report", "dataset=digits"), ("all", "")}
    finally:
        config.write_text(original)
    assert _dry(work) == set()


@pytest.mark.slow
def test_editing_a_model_source_file_reruns_only_that_model(demo_run):
    work, _ = demo_run
    source = work / "reprozoo/models/mlp.py"
    stat = source.stat()
    try:
        future = time.time() + 60
        os.utime(source, (future, future))
        assert _dry(work) == model_jobs("mlp")
    finally:
        os.utime(source, (stat.st_atime, stat.st_mtime))
    assert _dry(work) == set()
