"""tune / train / evaluate / report on the bundled digits, with tiny budgets."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import run_cli, tiny_model_cfg, write_imagefolder
from reprozoo.engine import pick_device
from reprozoo.evaluate import evaluate
from reprozoo.report.build import report
from reprozoo.report.verdicts import deviation, parse_duration
from reprozoo.train import train
from reprozoo.tune import TuneError, tune

CPU = torch.device("cpu")


def test_tune_writes_trials_and_best(demo_cfg, digits_npz, digits_split, tmp_path):
    cfg = tiny_model_cfg(demo_cfg, "mlp", tune={"max_evals": 3, "max_epochs": 4, "patience": 2})
    best = tune(cfg, digits_npz, digits_split, tmp_path / "trials.csv", tmp_path / "best.json", CPU)
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert len(trials) == 3 and set(trials["status"]) == {"ok"}
    assert list(trials.columns[:8]) == ["trial", "lr", "status", "best_epoch", "best_val_loss",
                                        "best_val_accuracy", "epochs_run", "seconds"]
    lo, hi = np.exp(cfg["tune"]["lr_log_range"])
    assert trials["lr"].between(lo, hi).all()
    winner = trials.loc[trials["best_val_loss"].idxmin()]
    assert best == json.loads((tmp_path / "best.json").read_text())
    assert best["source"] == "tuned" and best["lr"] == pytest.approx(winner["lr"])
    assert best["epochs"] == winner["best_epoch"] and 1 <= best["epochs"] <= 4


def test_tune_is_seeded(demo_cfg, digits_npz, digits_split, tmp_path):
    cfg = tiny_model_cfg(demo_cfg, "mlp")
    a = tune(cfg, digits_npz, digits_split, tmp_path / "a.csv", tmp_path / "a.json", CPU)
    b = tune(cfg, digits_npz, digits_split, tmp_path / "b.csv", tmp_path / "b.json", CPU)
    assert a == b


def test_diverging_trial_is_recorded_and_search_goes_on(demo_cfg, digits_npz, digits_split, tmp_path, monkeypatch):
    import reprozoo.engine as engine

    calls = {"n": 0}
    real = engine.Runner.train_epoch

    def flaky(self, *args, **kwargs):  # the first trial's first epoch blows up
        calls["n"] += 1
        if calls["n"] == 1:
            raise engine.Diverged("training loss is nan")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(engine.Runner, "train_epoch", flaky)
    cfg = tiny_model_cfg(demo_cfg, "mlp", tune={"max_evals": 3})
    best = tune(cfg, digits_npz, digits_split, tmp_path / "t.csv", tmp_path / "b.json", CPU)
    trials = pd.read_csv(tmp_path / "t.csv")
    assert trials["status"].tolist() == ["fail", "ok", "ok"]
    assert "nan" in trials["error"][0] and best["failed_trials"] == 1 and best["trial"] in (2, 3)


def test_real_divergence_at_absurd_lr_fails_cleanly(demo_cfg, digits_npz, digits_split, tmp_path):
    cfg = tiny_model_cfg(demo_cfg, "mlp", tune={"max_evals": 2, "lr_log_range": [80, 81]})  # lr ~ 1e35: overflows
    with pytest.raises(TuneError, match="all 2 trials diverged"):
        tune(cfg, digits_npz, digits_split, tmp_path / "t.csv", tmp_path / "b.json", CPU)
    assert pd.read_csv(tmp_path / "t.csv")["status"].tolist() == ["fail", "fail"]
    assert not (tmp_path / "b.json").exists()


def test_hparams_paper_skips_tuning(demo_cfg, digits_npz, digits_split, tmp_path):
    cfg = tiny_model_cfg(demo_cfg, "cnn", hparams="paper", lr=1.99e-4, epochs=16)
    best = tune(cfg, digits_npz, digits_split, tmp_path / "t.csv", tmp_path / "b.json", CPU)
    assert best == {"source": "paper", "lr": 1.99e-4, "epochs": 16}
    assert pd.read_csv(tmp_path / "t.csv").empty


@pytest.fixture(scope="module")
def trained_cnn(demo_cfg, digits_npz, digits_split, tmp_path_factory):
    out = tmp_path_factory.mktemp("cnn")
    (out / "best.json").write_text(json.dumps({"source": "tuned", "lr": 2e-3, "epochs": 3}))
    cfg = tiny_model_cfg(demo_cfg, "cnn")
    run = train(cfg, digits_npz, digits_split, out / "best.json", out / "weights.pt", out / "history.csv",
                out / "run.json", CPU)
    return cfg, out, run


def test_train_outputs(trained_cnn):
    cfg, out, run = trained_cnn
    history = pd.read_csv(out / "history.csv")
    assert history.columns.tolist() == ["epoch", "train_loss", "test_loss", "test_accuracy", "seconds"]
    assert history["epoch"].tolist() == [1, 2, 3]
    assert history["test_accuracy"].iloc[-1] > 80  # digits: chance is 10%
    assert run["params"] == 1_147_914 and run["epochs"] == 3 and run["seed"] == 3407
    for key in ("duration_s", "device", "hardware", "torch", "git_revision", "train_images"):
        assert key in run
    state = torch.load(out / "weights.pt", weights_only=True)
    assert all(t.device.type == "cpu" for t in state.values())


def test_same_config_same_history_on_cpu(trained_cnn, digits_npz, digits_split, tmp_path):
    cfg, out, _ = trained_cnn
    train(cfg, digits_npz, digits_split, out / "best.json", tmp_path / "w.pt", tmp_path / "h.csv",
          tmp_path / "r.json", CPU)
    cols = ["epoch", "train_loss", "test_loss", "test_accuracy"]
    pd.testing.assert_frame_equal(pd.read_csv(out / "history.csv")[cols], pd.read_csv(tmp_path / "h.csv")[cols],
                                  check_exact=True)


def test_evaluate_metrics_and_confusion(trained_cnn, digits_npz, tmp_path):
    cfg, out, run = trained_cnn
    m = evaluate(cfg, digits_npz, out / "weights.pt", tmp_path / "m.json", tmp_path / "c.csv", CPU)
    assert m["accuracy"] == pytest.approx(run["final_test_accuracy"], abs=1e-4)
    cm = pd.read_csv(tmp_path / "c.csv", index_col=0)
    assert cm.shape == (10, 10) and cm.values.sum() == 360
    assert np.trace(cm.values) / 360 * 100 == pytest.approx(m["accuracy"])
    per_class = np.diag(cm.values) / cm.values.sum(axis=1) * 100
    assert list(m["per_class_accuracy"].values()) == pytest.approx(per_class, abs=1e-3)


def test_evaluate_extra_imagefolder_test_set(trained_cnn, digits_npz, tmp_path):
    cfg, out, _ = trained_cnn
    root = write_imagefolder(tmp_path / "extra", classes=[str(d) for d in range(10)], per_class=(1, 2))
    evaluate(cfg, digits_npz, out / "weights.pt", tmp_path / "m.json", tmp_path / "c.csv", CPU, {"noise": root})
    extra = json.loads((tmp_path / "m.json").read_text())["extra"]["noise"]
    assert extra["images"] == 20 and 0 <= extra["accuracy"] <= 100


def test_evaluate_rejects_weights_of_another_model(trained_cnn, digits_npz, tmp_path, demo_cfg):
    _, out, _ = trained_cnn
    result = run_cli("evaluate", "--model-json", json.dumps(tiny_model_cfg(demo_cfg, "mlp")), "--data", digits_npz,
                     "--weights", out / "weights.pt", "--metrics", tmp_path / "m.json", "--confusion",
                     tmp_path / "c.csv")
    assert result.returncode == 2
    assert "weights do not fit model" in result.stderr and "Traceback" not in result.stderr


def test_deviation_from_known_numbers():
    assert deviation(55.1, 54.44) == pytest.approx((0.66, 1.2123, "ok"), abs=1e-3)
    points, percent, flag = deviation(70.0, 77.33)
    assert points == pytest.approx(-7.33) and percent == pytest.approx(-9.4788, abs=1e-3) and flag == "DEVIATES"
    assert deviation(80.0, None) == (None, None, "no reported value")
    assert parse_duration("2m51s") == 171 and parse_duration("265m") == 15900 and parse_duration("") is None


def test_report_table_and_figures(trained_cnn, digits_npz, tmp_path):
    cfg, out, run = trained_cnn
    evaluate(cfg, digits_npz, out / "weights.pt", tmp_path / "m.json", tmp_path / "c.csv", CPU)
    dataset = {"name": "cifar10", "kind": "cifar10", "paper_dataset": True}
    papers = {"cnn": {"accuracy": 77.33, "loss": 0.7026, "time": "4m7s"}}
    table = report(dataset, papers, ["cnn"], [tmp_path / "m.json"], [out / "run.json"], [out / "best.json"],
                   [out / "history.csv"], tmp_path / "t.csv", tmp_path / "t.md", tmp_path / "fig" / "accuracy.png")
    row = pd.read_csv(tmp_path / "t.csv").iloc[0]
    assert row["model"] == "cnn" and row["params"] == 1_147_914 and row["paper_accuracy"] == 77.33
    acc = json.loads((tmp_path / "m.json").read_text())["accuracy"]
    assert row["diff_points"] == pytest.approx(acc - 77.33, abs=0.01)
    assert row["flag"] == ("DEVIATES" if abs(acc - 77.33) / 77.33 > 0.05 else "ok")
    assert row["hparams"] == "tuned" and row["epochs"] == 3
    md = (tmp_path / "t.md").read_text()
    assert "| cnn" in md and "Not comparable" not in md
    for name in ("curves_cnn", "accuracy"):
        assert (tmp_path / "fig" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / "fig" / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"  # the twin for papers
    assert len(table) == 1


@pytest.mark.gpu
def test_gpu_training_uses_bf16_and_channels_last(demo_cfg, digits_npz, digits_split, tmp_path):
    from reprozoo.engine import Runner
    from reprozoo.models import create_model

    device = pick_device("auto")
    runner = Runner(create_model("cnn"), tiny_model_cfg(demo_cfg, "cnn"), device, lr=1e-3)
    conv = runner.model[0][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    with runner._autocast():
        assert runner.model(runner._inputs(torch.zeros(2, 3, 32, 32, dtype=torch.uint8, device=device))).dtype \
            == torch.bfloat16
