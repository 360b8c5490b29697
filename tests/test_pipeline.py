"""The Snakemake workflow: dry runs, lint, the demo end to end, and what reruns."""
import os
import re

import pandas as pd
import pytest
import yaml

from conftest import run_snakemake

STUDY_MODELS = ["mlp", "cnn", "resnet18", "resnet18_pretrained", "vit_tiny", "vit_b16_probe", "patch_lstm",
                "vae", "acgan"]


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


def model_jobs(model: str, dataset: str = "digits", seed: int = 3407) -> set[tuple[str, str]]:
    """A model's own jobs (tune, verify, train + evaluate per seed, attention for ViTs) plus the report."""
    jobs = {("tune", f"dataset={dataset}, model={model}"), ("verify", f"dataset={dataset}, model={model}"),
            ("train", f"dataset={dataset}, model={model}, seed={seed}"),
            ("evaluate", f"dataset={dataset}, model={model}, seed={seed}"),
            ("report", f"dataset={dataset}"), ("all", "")}
    if model.startswith("vit_tiny"):
        jobs.add(("attention", f"dataset={dataset}, model={model}"))
    if model.startswith(("vae", "acgan")):
        jobs.add(("samples", f"dataset={dataset}, model={model}"))
    return jobs


def test_dry_run_of_the_study_plans_every_stage():
    jobs = planned_jobs(run_snakemake("-n", "--forceall"))
    rules = {rule for rule, _ in jobs}
    assert rules == {"download", "prepare", "split", "cache_features", "tune", "verify", "train", "evaluate",
                     "attention", "samples", "report", "all"}
    trained = STUDY_MODELS + ["vae_4000", "acgan_4000", "cnn_nobn", "vit_tiny_heads3", "vit_tiny_patch4", "resnet18_noresidual"]
    assert {w for r, w in jobs if r == "train"} == {f"dataset=cifar10, model={m}, seed=3407" for m in trained}
    assert {w for r, w in jobs if r == "verify"} == {f"dataset=cifar10, model={m}" for m in trained}
    assert ("split", "dataset=cifar10, seed=3407") in jobs
    # the frozen backbone runs once per dataset, in its own job
    assert {(r, w) for r, w in jobs if r == "cache_features"} == {
        ("cache_features", "dataset=cifar10, backbone=vit_b16_in1k")}


@pytest.mark.parametrize("extra", [[], ["--configfile", "config/demo.yaml"]], ids=["study", "demo"])
def test_lint_is_clean(extra):
    result = run_snakemake("--lint", *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr


@pytest.mark.slow
def test_demo_table_lists_every_model_well_above_chance(demo_run, demo_cfg, study_cfg):
    from reprozoo.sections import resolve_model
    from reprozoo.models import count_parameters, create_model

    work, seconds = demo_run
    table = pd.read_csv(work / "results/digits/report/comparison.csv")
    assert table["model"].tolist() == STUDY_MODELS
    assert (table["accuracy"] > 50).all(), table  # 10 classes: chance is 10%
    params = dict(zip(table["model"], table["params"]))
    for m in ("mlp", "cnn", "resnet18", "vit_b16_probe"):  # the paper's parameters in the demo too
        assert params[m] == study_cfg["study"]["models"][m]["params"], m
    for m in ("vit_tiny", "patch_lstm"):  # patch size 8 in the demo
        cfg = resolve_model(demo_cfg, m)
        assert params[m] == count_parameters(create_model(cfg["arch"], **cfg["args"])), m
    assert set(table["hparams"]) == {"tuned"}
    settings = dict(zip(table["model"], table["setting"]))
    assert settings["vit_b16_probe"] == "backbone image_size=32 (paper 224); backbone weights='none' (paper 'IMAGENET1K_V1')"
    assert settings["resnet18_pretrained"] == "stem='imagenet' (paper 'cifar'); weights='none' (paper 'IMAGENET1K_V1')"
    assert settings["resnet18"] == "stem_stride=2 (paper 1)"
    assert settings["mlp"] == "paper's"
    md = (work / "results/digits/report/comparison.md").read_text()
    assert "Not comparable" in md and all(f"| {m} " in md for m in table["model"])
    figures = ["figures/accuracy.png", "models/attention_vit_tiny.png", "models/attention_vit_tiny_heads3.png",
               "models/samples_vae.png", "models/samples_acgan.png"]  # models/: the figures a model declares
    for png in figures + [f"figures/{kind}_{m}.png" for m in STUDY_MODELS for kind in ("curves", "confusion")]:
        assert (work / "results/digits/report" / png).stat().st_size > 10_000, png
        assert (work / "results/digits/report" / png).with_suffix(".pdf").read_bytes()[:5] == b"%PDF-", png
    ablations = pd.read_csv(work / "results/digits/report/ablations.csv")
    assert ablations["variant"].tolist() == ["cnn_nobn", "vit_tiny_heads3"]
    assert ablations.set_index("variant").loc["vit_tiny_heads3", "paper_accuracy"] == 69.17
    verification = pd.read_csv(work / "results/digits/report/verification.csv")
    assert verification["passed"].all() and len(verification) == 11
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
def test_one_offline_html_report_holds_every_figure_and_table(demo_run):
    work, _ = demo_run
    result = run_snakemake("--configfile", "config/demo.yaml", "--report", "results/report.html", cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    html = (work / "results/report.html").read_text()
    for name in ("comparison.csv", "verdicts.csv", "claims.csv", "ablations.csv", "verification.csv",
                 "accuracy.png", "attention_vit_tiny.png", "confusion_patch_lstm.png", "curves_vit_b16_probe.png",
                 "samples_vae.png", "samples_acgan.png"):
        assert name in html, name
    assert "every reproduced number beside the reported one" in html  # the Snakefile's report: front page


@pytest.mark.slow
def test_changing_one_model_section_reruns_only_that_model(demo_run):
    work, _ = demo_run
    config = work / "config.yaml"
    original = config.read_text()
    try:
        cfg = yaml.safe_load(original)
        cfg["models"]["cnn"]["args"]["dropout"] = 0.3
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        assert _dry(work) == model_jobs("cnn") | model_jobs("cnn_nobn")  # the ablation builds on cnn's section

        cfg = yaml.safe_load(original)  # retuning the probe's head never recomputes the features
        cfg["models"]["vit_b16_probe"]["tune"] = {"max_evals": 3}
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        assert _dry(work) == model_jobs("vit_b16_probe")

        cfg = yaml.safe_load(original)  # a generative model's jobs include its sample grid
        cfg["models"]["vae"]["args"]["alpha"] = 10.0
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        assert _dry(work) == model_jobs("vae")

    finally:
        config.write_text(original)
    record = work / "config/study.yaml"
    reported = record.read_text()
    try:  # a reported number lives in the study's record and only feeds the report
        edited = reported.replace("  mlp:\n    accuracy: 54.44\n", "  mlp:\n    accuracy: 55.0\n")
        assert edited != reported
        record.write_text(edited)
        assert _dry(work) == {("report", "dataset=digits"), ("all", "")}
    finally:
        record.write_text(reported)
    assert _dry(work) == set()


@pytest.mark.slow
def test_editing_a_model_source_file_reruns_only_that_model(demo_run):
    work, _ = demo_run
    source = work / "reprozoo/models/mlp.py"
    original, stat = source.read_text(), source.stat()
    try:  # a real edit: Snakemake 9 ignores a newer file whose checksum is unchanged
        source.write_text(original + "\n# an edit\n")
        assert _dry(work) == model_jobs("mlp")
    finally:
        source.write_text(original)
        os.utime(source, (stat.st_atime, stat.st_mtime))
    assert _dry(work) == set()
