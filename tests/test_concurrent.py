"""Concurrent tuning trials (reprozoo.trials) against the sequential fmin path, on CPU."""
import functools
import json

import pandas as pd
import pytest
import torch

import reprozoo.trials as concurrent
from conftest import tiny_model_cfg
from reprozoo.tune import TuneError, tune

CPU = torch.device("cpu")
COLUMNS = ["trial", "lr", "status", "best_epoch", "best_val_loss", "best_val_accuracy", "epochs_run", "error"]


def _tune(cfg, npz, split, out, tag):
    best = tune(cfg, npz, split, out / f"{tag}.csv", out / f"{tag}.json", CPU)
    return best, pd.read_csv(out / f"{tag}.csv")


@pytest.fixture
def sequential(monkeypatch):
    """Force the sequential fmin path (what tune did before the concurrent path existed)."""
    def use():
        monkeypatch.setattr(concurrent, "applies", lambda max_evals: False)
    return use


def test_startup_is_hyperopt_default():
    from hyperopt import tpe
    import inspect
    assert concurrent.STARTUP_TRIALS == inspect.signature(tpe.suggest).parameters["n_startup_jobs"].default == 20
    assert concurrent.applies(20) and not concurrent.applies(21)


@pytest.mark.parametrize("workers, start", [("1", None), ("2", None), ("2", "spawn")])
def test_concurrent_trials_match_sequential(demo_cfg, digits_npz, digits_split, tmp_path, monkeypatch,
                                            sequential, workers, start):
    """start=spawn: the CUDA path (workers that rebuild the objective from tune's arguments), run on CPU."""
    # cnn: BN and dropout, so the random streams and batch statistics must line up too
    cfg = tiny_model_cfg(demo_cfg, "cnn", tune={"max_evals": 3, "max_epochs": 2, "patience": 1})
    monkeypatch.setenv("REPROZOO_TUNE_WORKERS", workers)
    if start:
        monkeypatch.setattr(concurrent, "run", functools.partial(concurrent.run, start=start))
    threads = torch.get_num_threads()
    torch.set_num_threads(int(workers))  # each forked worker gets 1 thread; the sequential run too
    try:
        best_c, rows_c = _tune(cfg, digits_npz, digits_split, tmp_path, "concurrent")
        torch.set_num_threads(1)
        sequential()
        best_s, rows_s = _tune(cfg, digits_npz, digits_split, tmp_path, "sequential")
    finally:
        torch.set_num_threads(threads)
    assert best_s["search"] == "sequential" and best_c["search"].startswith("concurrent")
    assert ("forked x2" in best_c["search"]) == (workers == "2" and start is None)
    assert ("spawned x2 on cpu" in best_c["search"]) == (start == "spawn")
    assert rows_c["lr"].tolist() == rows_s["lr"].tolist()        # the same draws, exactly
    assert rows_c["trial"].tolist() == [1, 2, 3] and list(rows_c.columns) == list(rows_s.columns)
    pd.testing.assert_frame_equal(rows_c[COLUMNS], rows_s[COLUMNS], check_exact=False, rtol=1e-5, atol=1e-6)
    assert (best_c["lr"], best_c["epochs"], best_c["trial"]) == (best_s["lr"], best_s["epochs"], best_s["trial"])
    assert best_c["best_val_loss"] == pytest.approx(best_s["best_val_loss"], rel=1e-5)


def test_startup_lrs_are_the_sequential_draws(demo_cfg, digits_npz, digits_split, tmp_path, sequential):
    cfg = tiny_model_cfg(demo_cfg, "mlp", tune={"max_evals": 4, "max_epochs": 1})
    sequential()
    _, rows = _tune(cfg, digits_npz, digits_split, tmp_path, "s")
    lrs = concurrent.startup_lrs(cfg["tune"]["lr_log_range"], 4, cfg["seed"])
    assert lrs == rows["lr"].tolist()
    assert concurrent.startup_lrs(cfg["tune"]["lr_log_range"], 4, cfg["seed"] + 1) != lrs


def test_above_startup_count_stays_sequential(demo_cfg, digits_npz, digits_split, tmp_path, monkeypatch):
    monkeypatch.setattr(concurrent, "STARTUP_TRIALS", 2)   # so that 3 evaluations exceed it, cheaply
    cfg = tiny_model_cfg(demo_cfg, "mlp", tune={"max_evals": 3, "max_epochs": 1})
    best, rows = _tune(cfg, digits_npz, digits_split, tmp_path, "t")
    assert best["search"] == "sequential" and len(rows) == 3
    with pytest.raises(ValueError, match="start-up"):
        concurrent.startup_lrs(cfg["tune"]["lr_log_range"], 3, cfg["seed"])


@pytest.mark.parametrize("workers", ["1", "2"])
def test_failed_trial_is_recorded_the_same(demo_cfg, digits_npz, digits_split, tmp_path, monkeypatch, workers):
    import reprozoo.engine as engine

    cfg = tiny_model_cfg(demo_cfg, "mlp", tune={"max_evals": 3})
    doomed = concurrent.startup_lrs(cfg["tune"]["lr_log_range"], 3, cfg["seed"])[1]
    real = engine.Runner.train_epoch

    def flaky(self, *args, **kwargs):  # trial 2 blows up, wherever it runs
        if self.optimizers[0].param_groups[0]["lr"] == doomed:
            raise engine.Diverged("training loss is nan")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(engine.Runner, "train_epoch", flaky)
    monkeypatch.setenv("REPROZOO_TUNE_WORKERS", workers)
    best, rows = _tune(cfg, digits_npz, digits_split, tmp_path, "t")
    assert rows["status"].tolist() == ["ok", "fail", "ok"] and "nan" in rows["error"][1]
    assert best["failed_trials"] == 1 and best["trial"] in (1, 3)


def test_all_trials_failing_is_a_tune_error(demo_cfg, digits_npz, digits_split, tmp_path, monkeypatch):
    import reprozoo.engine as engine

    def always(self, *args, **kwargs):
        raise engine.Diverged("training loss is nan")

    monkeypatch.setattr(engine.Runner, "train_epoch", always)
    monkeypatch.setenv("REPROZOO_TUNE_WORKERS", "2")
    cfg = tiny_model_cfg(demo_cfg, "mlp", tune={"max_evals": 2})
    with pytest.raises(TuneError, match="all 2 trials"):
        tune(cfg, digits_npz, digits_split, tmp_path / "t.csv", tmp_path / "b.json", CPU)
    assert pd.read_csv(tmp_path / "t.csv")["status"].tolist() == ["fail", "fail"]


def test_bad_worker_count(monkeypatch):
    monkeypatch.setenv("REPROZOO_TUNE_WORKERS", "0")
    with pytest.raises(ValueError, match="at least 1"):
        concurrent.workers_from_env()
