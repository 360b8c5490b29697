"""Progress and resume (issue 12): per-epoch log lines without progress-bar junk in
files and pipes, and a killed tune that resumes from its journal to the result of
an uninterrupted run, on both search paths."""
import errno
import functools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

import reprozoo.engine as engine
import reprozoo.trials as concurrent
from conftest import ROOT, tiny_model_cfg
from reprozoo.errors import DiskFull
from reprozoo.journal import Journal, fingerprint
from reprozoo.io import fmt_duration
from reprozoo.train import train
from reprozoo.tune import tune

CPU = torch.device("cpu")
# the concurrent path (4 start-up draws, ~0.2 s a trial) and the sequential one (21 trials: the last is TPE's)
CONCURRENT = {"max_evals": 4, "max_epochs": 3, "patience": 3}
SEQUENTIAL = {"max_evals": 21, "max_epochs": 1, "patience": 1}


def mlp(demo_cfg, **tune_cfg) -> dict:
    return tiny_model_cfg(demo_cfg, "mlp", batch_size=64, tune=tune_cfg)


def tune_command(cfg, data, split, out) -> list[str]:
    return [sys.executable, "-m", "reprozoo", "tune", "--model-json", json.dumps(cfg), "--data", str(data), "--split",
            str(split), "--trials", str(out / "trials.csv"), "--best", str(out / "best.json"), "--device", "cpu",
            "--cores", "1", "--log", str(out / "tune.log")]


def env() -> dict:
    """The environment of a rule's job: no TQDM_DISABLE (conftest sets it), default workers (in-process at --cores 1)."""
    return {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", "REPROZOO_TUNE_WORKERS")}


def reference(cfg, data, split, out) -> tuple[dict, pd.DataFrame]:
    """An uninterrupted tune, in this process at the CLI's one thread (the same numbers, measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tune(cfg, data, split, out / "trials.csv", out / "best.json", CPU, cores=1)
    finally:
        torch.set_num_threads(threads)
    return outputs(out)


def outputs(out) -> tuple[dict, pd.DataFrame]:
    """best.json, and trials.csv without its wall-clock column."""
    return json.loads((out / "best.json").read_text()), pd.read_csv(out / "trials.csv").drop(columns="seconds")


def journalled(path) -> int:
    """Finished trials in a journal (a last line cut short by the kill does not count)."""
    lines = path.read_text().splitlines()[1:] if path.exists() else []
    return sum(1 for line in lines if line.endswith("}}"))


def epoch_lines(text: str, total: int, max_epochs: int) -> list[tuple[int, int]]:
    """(trial, epoch) of each per-epoch line of a tune's log, in order."""
    line = (rf"reprozoo.tune INFO mlp trial (\d+)/{total} lr=\S+ epoch (\d+)/{max_epochs} train loss [\d.]+ "
            rf"val loss [\d.]+ acc [\d.]+% \([\d.]+s, at most \d+m\d\ds left\)$")
    return [(int(k), int(e)) for k, e in re.findall(line, text, re.M)]


def no_bars(*texts: str) -> None:
    for text in texts:
        assert "\x1b[" not in text and "\r" not in text


# ------------------------------------------------------------------ progress in the logs

def test_train_logs_every_epoch_with_an_eta(demo_cfg, digits_npz, digits_split, tmp_path, caplog):
    (tmp_path / "best.json").write_text(json.dumps({"source": "paper", "lr": 2e-3, "epochs": 2}))
    with caplog.at_level(logging.INFO, logger="reprozoo.train"):
        train(tiny_model_cfg(demo_cfg, "mlp", args={"hidden": [32]}), digits_npz, digits_split, tmp_path / "best.json",
              tmp_path / "w.pt", tmp_path / "h.csv", tmp_path / "r.json", CPU)
    epochs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [m.split()[1] for m in epochs] == ["1/2", "2/2"]
    assert all(" test acc " in m and ", ETA " in m for m in epochs) and epochs[-1].endswith("ETA 0m00s)")
    assert [fmt_duration(s) for s in (0.4, 45, 80, 7500)] == ["0m00s", "0m45s", "1m20s", "125m00s"]


# ------------------------------------------------------------------ kill -9 and resume

@pytest.mark.parametrize("budget, kill_after", [(CONCURRENT, 1), (SEQUENTIAL, 8)], ids=["concurrent", "sequential"])
def test_a_killed_tune_resumes_to_the_uninterrupted_result(demo_cfg, digits_npz, digits_split, tmp_path, budget,
                                                           kill_after):
    cfg = mlp(demo_cfg, **budget)
    total = budget["max_evals"]
    best, trials = reference(cfg, digits_npz, digits_split, tmp_path / "uninterrupted")

    out = tmp_path / "killed"
    out.mkdir()
    journal = out / "trials.journal.jsonl"
    command = tune_command(cfg, digits_npz, digits_split, out)
    with open(out / "stdout", "w") as stdout, open(out / "stderr", "w") as stderr:
        proc = subprocess.Popen(command, cwd=ROOT, env=env(), stdout=stdout, stderr=stderr)
        deadline = time.monotonic() + 120
        while journalled(journal) < kill_after and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, (out / "stderr").read_text()[-3000:]
    finished = journalled(journal)
    assert kill_after <= finished < total and not (out / "best.json").exists()
    killed = (out / "tune.log").read_text()  # the killed run's log: the rerun replaces it

    result = subprocess.run(command, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    log = (out / "tune.log").read_text()
    no_bars(result.stdout, result.stderr, log, (out / "stdout").read_text(), killed)   # pipes and files
    # everything went to the logs (--log), nothing to the terminal: it succeeded
    assert result.stdout == result.stderr == (out / "stdout").read_text() == (out / "stderr").read_text() == ""

    # a line per epoch of each trial, in the killed run's log and the resumed run's
    epochs = [(k, e) for k, n in zip(trials["trial"], trials["epochs_run"]) for e in range(1, n + 1)]
    before = [ke for ke in epoch_lines(killed, total, budget["max_epochs"]) if ke[0] <= finished]
    assert before == [ke for ke in epochs if ke[0] <= finished]
    assert epoch_lines(log, total, budget["max_epochs"]) == [ke for ke in epochs if ke[0] > finished]
    assert log.count(f"mlp: resuming tune: {finished} of {total} trials already finished (trials.journal.jsonl)") == 1
    assert log.count(" best epoch ") == total - finished   # the journalled trials did not train again
    assert f"mlp trial {finished + 1}/{total} lr=" in log and f"mlp trial {finished}/{total} lr=" not in log
    resumed_best, resumed_trials = outputs(out)
    assert resumed_best == best
    pd.testing.assert_frame_equal(resumed_trials, trials)
    assert not journal.exists()


def test_trials_journalled_by_forked_workers_resume_in_spawned_ones(demo_cfg, digits_npz, digits_split, tmp_path,
                                                                   monkeypatch, caplog):
    """The worker paths: the parent journals what forked workers finish before one crashes,
    and spawned workers (the CUDA path, here on CPU) run only the trials left."""
    cfg = mlp(demo_cfg, **CONCURRENT)
    best, trials = reference(cfg, digits_npz, digits_split, tmp_path / "uninterrupted")
    last = concurrent.startup_lrs(cfg["tune"]["lr_log_range"], 4, cfg["seed"])[-1]
    real = engine.Runner.train_epoch

    def crash_on_the_last(self, *args, **kwargs):
        if self.optimizers[0].param_groups[0]["lr"] == last:
            raise RuntimeError("pulled the plug")
        return real(self, *args, **kwargs)

    out = tmp_path / "workers"
    monkeypatch.setenv("REPROZOO_TUNE_WORKERS", "2")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # each worker gets 1 thread, as the reference had
    try:
        monkeypatch.setattr(engine.Runner, "train_epoch", crash_on_the_last)
        with pytest.raises(RuntimeError, match="pulled the plug"):
            tune(cfg, digits_npz, digits_split, out / "trials.csv", out / "best.json", CPU)
        finished = journalled(out / "trials.journal.jsonl")
        assert 2 <= finished <= 3   # trials 1 and 2 end before 4 starts; 3 may or may not have

        monkeypatch.setattr(engine.Runner, "train_epoch", real)
        monkeypatch.setattr(concurrent, "run", functools.partial(concurrent.run, start="spawn"))
        with caplog.at_level(logging.INFO, logger="reprozoo.tune"):
            resumed = tune(cfg, digits_npz, digits_split, out / "trials.csv", out / "best.json", CPU)
    finally:
        torch.set_num_threads(threads)
    assert f"mlp: resuming tune: {finished} of 4 trials already finished (trials.journal.jsonl)" in caplog.text
    assert resumed["search"] == "concurrent: spawned x2 on cpu"
    resumed_best, resumed_trials = outputs(out)
    assert {**resumed_best, "search": best["search"]} == best
    pd.testing.assert_frame_equal(resumed_trials, trials)


# ------------------------------------------------------------------ journals that must not be used

@pytest.mark.parametrize("written_for", ["itself", "another config", "another split", "no fingerprint"])
def test_only_a_journal_of_the_same_inputs_is_replayed(demo_cfg, digits_npz, digits_split, tmp_path, caplog,
                                                       written_for):
    """A journal that claims trial 1 reached val loss 1e-4: replayed (best is trial 1, not
    trained) only when its fingerprint is this tune's; otherwise every trial trains."""
    from reprozoo.prepare import write_split

    cfg = mlp(demo_cfg, max_evals=2, max_epochs=2, patience=2)
    other_split = tmp_path / "split-seed1.json"
    write_split(digits_npz, other_split, 1, 0.2, 0.2)
    inputs = {"itself": (cfg, digits_split), "another config": ({**cfg, "batch_size": 32}, digits_split),
              "another split": (cfg, other_split), "no fingerprint": None}[written_for]
    header = {"fingerprint": fingerprint(inputs[0], CPU, digits_npz, inputs[1])} if inputs else {"trial": 0}
    lr = concurrent.startup_lrs(cfg["tune"]["lr_log_range"], 2, cfg["seed"])[0]
    fake = {"trial": 1, "lr": lr, "error": "", "status": "ok", "best_epoch": 1, "best_val_loss": 1e-4,
            "best_val_accuracy": 100.0, "epochs_run": 1, "seconds": 0.5}
    out = tmp_path / "out"
    out.mkdir()
    journal = Journal(out / "trials.csv", {}).path
    journal.write_text(json.dumps(header) + "\n" + json.dumps({"row": fake, "result": {
        "status": "ok", "loss": 1e-4, "best_epoch": 1}}) + "\n")

    with caplog.at_level(logging.INFO, logger="reprozoo.tune"):
        best, trials = reference(cfg, digits_npz, digits_split, out)
    if written_for == "itself":  # the control: this journal is used when it is this tune's
        assert best["trial"] == 1 and best["best_val_loss"] == 1e-4
        assert trials["best_val_loss"].tolist()[0] == 1e-4 and "resuming tune: 1 of 2" in caplog.text
    else:
        assert trials["best_val_loss"].tolist()[0] > 1e-3 and "resuming tune" not in caplog.text
        why = "it has no fingerprint" if inputs is None else f"it was written for {written_for}"
        assert f"mlp: not resuming from trials.journal.jsonl: {why}; starting over" in caplog.text
        clean, clean_trials = reference(cfg, digits_npz, digits_split, tmp_path / "clean")
        assert best == clean
        pd.testing.assert_frame_equal(trials, clean_trials)
    assert not journal.exists()


def test_a_full_disk_while_journalling_is_one_line(demo_cfg, digits_npz, digits_split, tmp_path, monkeypatch):
    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    cfg = mlp(demo_cfg, max_evals=2, max_epochs=1, patience=1)
    with pytest.raises(DiskFull, match=r"^\S+/trials.journal.jsonl: no space left on device \(or quota exceeded\) "
                                       r"while recording a finished trial: free space under "):
        tune(cfg, digits_npz, digits_split, tmp_path / "trials.csv", tmp_path / "best.json", CPU)
    assert not (tmp_path / "best.json").exists()
