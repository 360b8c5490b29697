"""Uncertainty and the study's claims: the interval arithmetic against hand-computed cases,
and claims that hold, are contradicted, are inconclusive or are not comparable, on
constructed predictions."""
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT
from reprozoo import stats
from reprozoo.config import ConfigError, load_config
from reprozoo.report.build import report
from reprozoo.report.verdicts import verdict

CIFAR = {"name": "cifar10", "kind": "cifar10", "paper_dataset": True}
DIGITS = {"name": "digits", "kind": "digits", "paper_dataset": False}


# ------------------------------------------------------------------ intervals

def test_bootstrap_interval_of_an_accuracy_matches_the_binomial_by_hand():
    """77% of 5,000 images: se = sqrt(0.77 x 0.23 / 5000) = 0.595 points, so +/- 1.17 at 95%."""
    correct = np.r_[np.ones(3850), np.zeros(1150)]
    found = stats.interval([77.0], [correct], seed=3407, scale=100)
    assert found.se_images == pytest.approx(0.595, rel=0.05) and found.sd_seeds is None
    assert found.half_width == pytest.approx(1.96 * 0.595, rel=0.05)
    assert found.contains(77.33) and not found.contains(75.0) and found.source == "test images"
    assert stats.interval([77.0], [correct], seed=3407, scale=100) == found  # seeded: the same numbers


def test_images_and_seeds_combine_in_quadrature():
    """se_images 0.6 and seeds 76, 78 (sd 1.414): se = sqrt(0.36 + 2) = 1.536, half-width 3.011."""
    found = stats.combine(77.0, 0.6, [76.0, 78.0])
    assert found.sd_seeds == pytest.approx(2 ** 0.5)
    assert (found.low, found.high) == pytest.approx((77 - 3.0109, 77 + 3.0109), abs=1e-3)
    assert found.source == "test images + seeds"
    assert stats.combine(77.0, None, [77.0]).low is None  # one seed, no predictions: no interval


def test_an_interval_wider_than_the_tolerance_is_inconclusive():
    """120 images at 50%: +/- 8.9 points, 17.9% of the reported 50: the 5% rule cannot decide."""
    correct = np.r_[np.ones(60), np.zeros(60)]
    wide = stats.interval([50.0], [correct], seed=0, scale=100)
    assert verdict(51.0, 50.0, interval=wide).startswith("inconclusive (95% interval ±1")
    narrow = stats.combine(51.0, 0.5, [51.0])
    assert verdict(51.0, 50.0, interval=narrow) == "reproduced"
    assert verdict(51.0, 50.0, "dataset digits", interval=wide) == "not comparable (dataset digits)"


def test_mcnemar_by_hand():
    """10 discordant images, 9 to 1: two-sided exact p = 2 x (1 + 10) / 1024 = 0.0215."""
    assert stats.mcnemar(9, 1) == pytest.approx(22 / 1024)
    assert stats.mcnemar(0, 0) == 1.0


# ------------------------------------------------------------------ claims on constructed runs

def _run(root, model, seed, correct, lr=1e-3, setting=(), source="tuned"):
    d = root / f"{model}-{seed}"
    d.mkdir(parents=True)
    correct = np.asarray(correct, bool)
    actual = np.array([str(i % 10) for i in range(len(correct))])
    predicted = np.where(correct, actual, [str((i + 1) % 10) for i in range(len(correct))])
    pd.DataFrame({"actual": actual, "predicted": predicted}).to_csv(d / "p.csv", index=False)
    accuracy = 100 * correct.mean()
    (d / "m.json").write_text(json.dumps({"accuracy": accuracy, "loss": 1.0, "extra": {}, "images": len(correct)}))
    (d / "r.json").write_text(json.dumps({"params": 1, "seed": seed, "duration_s": 1.0, "hardware": "CPU",
                                          "setting_deviations": list(setting)}))
    (d / "b.json").write_text(json.dumps({"lr": lr, "epochs": 1, "source": source}))
    pd.DataFrame({"epoch": [1], "train_loss": [1.0], "test_loss": [1.0], "test_accuracy": [accuracy],
                  "seconds": [1]}).to_csv(d / "h.csv", index=False)
    return model, [d / "m.json", d / "r.json", d / "b.json", d / "h.csv", d / "p.csv"]


def _report(tmp_path, runs, claims, dataset=CIFAR, ablations=None):
    models = [m for m, _ in runs]
    files = [f for _, f in runs]
    paths = [[f[i] for f in files] for i in range(5)]
    report(dataset, {}, models, *paths[:4], tmp_path / "c.csv", tmp_path / "c.md", tmp_path / "fig" / "accuracy.png",
           predictions_paths=paths[4], study={"claims": claims}, ablations=ablations)
    return pd.read_csv(tmp_path / "claims.csv").set_index("claim")


N = 2000
rng = np.random.default_rng(0)
BASE = rng.random(N)
STRONG, WEAK = BASE < 0.80, BASE < 0.70
TWIN = STRONG.copy()  # STRONG with 20 right answers made wrong and 20 wrong ones right: as accurate
TWIN[np.flatnonzero(STRONG)[:20]], TWIN[np.flatnonzero(~STRONG)[:20]] = False, True


def test_a_claim_that_holds_one_contradicted_and_one_inconclusive(tmp_path):
    runs = [_run(tmp_path, "cnn", 1, STRONG, lr=2e-4), _run(tmp_path, "mlp", 1, WEAK, lr=5e-5),
            _run(tmp_path, "vit_tiny", 1, TWIN, lr=1.5e-4)]
    claims = [{"id": "holds", "says": "cnn above mlp", "check": "accuracy_above", "above": ["cnn"], "below": ["mlp"]},
              {"id": "wrong", "says": "mlp above cnn", "check": "accuracy_above", "above": ["mlp"], "below": ["cnn"]},
              {"id": "unsure", "says": "vit above cnn", "check": "accuracy_above", "above": ["vit_tiny"],
               "below": ["cnn"]},
              {"id": "alike", "says": "vit like cnn", "check": "accuracy_similar", "models": ["vit_tiny", "cnn"],
               "margin": 5},
              {"id": "far", "says": "mlp like cnn", "check": "accuracy_similar", "models": ["mlp", "cnn"],
               "margin": 2},
              {"id": "lr", "says": "cnn lr above mlp", "check": "lr_above", "above": ["cnn"], "below": ["mlp"]},
              {"id": "lr_close", "says": "cnn lr above vit", "check": "lr_above", "above": ["cnn"],
               "below": ["vit_tiny"]},
              {"id": "theory", "says": "a theory", "check": "untestable", "why": "no measurement of it"}]
    found = _report(tmp_path, runs, claims)["verdict"].to_dict()
    assert found == {"holds": "supported", "wrong": "contradicted", "unsure": "inconclusive", "alike": "supported",
                     "far": "contradicted", "lr": "supported", "lr_close": "inconclusive",
                     "theory": "not testable (no measurement of it)"}
    evidence = _report(tmp_path / "again", runs, claims)["evidence"]
    diff = 100 * (STRONG.mean() - WEAK.mean())
    assert evidence["holds"].startswith(f"cnn − mlp: {diff:+.2f} points [") and "McNemar p = " in evidence["holds"]
    assert "(20/20 images only one gets right)" in evidence["unsure"]
    md = (tmp_path / "c.md").read_text()
    assert "## The study's claims" in md and "- **theory**: a theory. Why not: no measurement of it." in md


def test_claims_are_not_comparable_off_the_papers_dataset_or_setting_or_when_a_model_did_not_run(tmp_path):
    runs = [_run(tmp_path, "cnn", 1, STRONG), _run(tmp_path, "mlp", 1, WEAK),
            _run(tmp_path, "vit_b16_probe", 1, STRONG, setting=["backbone weights='none' (paper 'IMAGENET1K_V1')"]),
            _run(tmp_path, "vit_tiny", 1, STRONG, setting=["patch_size=8 (paper 2)"]),
            _run(tmp_path, "vit_tiny_heads3", 1, WEAK, setting=["heads=3 (paper 8)"])]
    claims = [{"id": "probe", "says": "probe above mlp", "check": "accuracy_above", "above": ["vit_b16_probe"],
               "below": ["mlp"]},
              {"id": "gone", "says": "resnet above cnn", "check": "accuracy_above", "above": ["resnet18"],
               "below": ["cnn"]},
              {"id": "heads", "says": "8 heads above 3", "check": "accuracy_above", "above": ["vit_tiny"],
               "below": ["vit_tiny_heads3"]}]
    ablations = {"vit_tiny_heads3": {"base": "vit_tiny", "set": {"args": {"heads": 3}}}}
    found = _report(tmp_path, runs, claims, ablations=ablations)
    assert found.loc["probe", "verdict"] == "not comparable (setting of vit_b16_probe)"
    assert "McNemar" in found.loc["probe", "evidence"]  # shown, for information
    assert found.loc["gone", "verdict"] == "not comparable (resnet18 did not run)"
    # the ablation's own change (heads) is its point; the base's patch size is not the paper's
    assert found.loc["heads", "verdict"] == "not comparable (setting of vit_tiny)"
    on_digits = _report(tmp_path / "digits", runs[:2], claims[:1] + [
        {"id": "cnn", "says": "cnn above mlp", "check": "accuracy_above", "above": ["cnn"], "below": ["mlp"]}],
        dataset=DIGITS)
    assert on_digits.loc["cnn", "verdict"] == "not comparable (dataset digits)"  # never supported off CIFAR-10
    assert on_digits.loc["probe", "verdict"] == "not comparable (vit_b16_probe did not run; dataset digits)"


def test_seeds_must_agree_for_a_claim_to_hold(tmp_path):
    """Seed 1 strongly for, seed 2 slightly against: pooled McNemar is significant, but not every seed agrees."""
    against = BASE < 0.785
    runs = [_run(tmp_path, "cnn", 1, STRONG), _run(tmp_path, "cnn", 2, WEAK),
            _run(tmp_path, "mlp", 1, WEAK), _run(tmp_path, "mlp", 2, against)]
    claims = [{"id": "c", "says": "cnn above mlp", "check": "accuracy_above", "above": ["cnn"], "below": ["mlp"]}]
    assert _report(tmp_path, runs, claims).loc["c", "verdict"] == "inconclusive"


def test_reports_intervals_from_predictions(tmp_path):
    runs = [_run(tmp_path, "cnn", 1, STRONG)]
    _report(tmp_path, runs, [])
    verdicts = pd.read_csv(tmp_path / "verdicts.csv").set_index(["model", "metric"])
    p = STRONG.mean()
    half = 196 * np.sqrt(p * (1 - p) / N)
    row = verdicts.loc[("cnn", "accuracy")]
    assert row["interval_high"] - row["interval_low"] == pytest.approx(2 * half, rel=0.08)
    assert row["interval_from"] == "test images"
    table = pd.read_csv(tmp_path / "c.csv").iloc[0]
    assert table["accuracy_low"] == pytest.approx(row["interval_low"])
    assert "| accuracy 95%" in (tmp_path / "c.md").read_text()


# ------------------------------------------------------------------ the config's claims

def test_the_study_config_lists_claims_of_every_kind(study_cfg):
    claims = study_cfg["study"]["claims"]
    assert {c["check"] for c in claims} == {"accuracy_above", "accuracy_similar", "lr_above", "untestable"}
    names = set(study_cfg["models"])
    for c in claims:
        assert set(c.get("above", []) + c.get("below", []) + c.get("models", [])) <= names, c["id"]
    ids = {c["id"] for c in claims}
    assert {"finetuned_above_scratch", "heads3_below_heads8", "probe_above_scratch", "mlp_weakest"} <= ids


def test_a_bad_claim_is_one_line(tmp_path):
    """Claims are the study's record (config/study.yaml), checked against its schema before any job."""
    record = yaml.safe_load((ROOT / "config/study.yaml").read_text())
    record["claims"] = [{"id": "x", "says": "y", "check": "accuracy_above", "above": ["cnn"]}]
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(record))
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"study": str(tmp_path / "study.yaml")}))
    with pytest.raises(ConfigError, match="key 'claims.0': 'below' is a required property"):
        load_config(ROOT / "config.yaml", path)
