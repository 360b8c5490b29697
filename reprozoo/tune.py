"""`tune`: hyperopt TPE over the learning rate on the study's tuning split.

Each trial trains a fresh model (same seeded init, so only lr differs) for up
to `tune.max_epochs` with early stopping on tune-val loss; the best trial's lr
and best epoch become the final training's lr and epochs. With `hparams: paper` (the
study's reported lr and epochs) or `fixed` (the model's own) no trial runs: best.json
holds those.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from hyperopt import STATUS_FAIL, STATUS_OK, Trials, fmin, tpe
from hyperopt.exceptions import AllTrialsFailed

from reprozoo.data import labelled_mask, model_inputs, read_split
from reprozoo.engine import Diverged, NoProgress, Runner, Tensors, check_progress, fit, seed_everything
from reprozoo.errors import UserError
from reprozoo.io import fmt_duration, write_csv, write_json
from reprozoo.journal import Journal, fingerprint
from reprozoo.models import create_model
from reprozoo import gpus
from reprozoo import trials as concurrent

log = logging.getLogger("reprozoo.tune")
logging.getLogger("hyperopt").setLevel(logging.WARNING)  # its per-draw INFO lines say nothing a person needs

TRIAL_COLUMNS = ["trial", "lr", "status", "best_epoch", "best_val_loss", "best_val_accuracy",
                 "epochs_run", "seconds", "error"]


class TuneError(UserError, RuntimeError):
    pass


def all_failed(name: str, failures: list[Diverged], t: dict) -> str:
    """One line: how the trials failed, the first reason, and what to change."""
    lo, hi = t["lr_log_range"]
    stuck = [e for e in failures if isinstance(e, NoProgress)]
    diverged = len(failures) - len(stuck)
    if not stuck:
        what = f"all {len(failures)} trials diverged"
    elif not diverged:
        what = f"all {len(failures)} trials made no progress"
    else:
        what = f"all {len(failures)} trials failed ({diverged} diverged, {len(stuck)} made no progress)"
    lrs = f"tune.lr_log_range (now [{lo}, {hi}]: lr {math.exp(lo):.3g} to {math.exp(hi):.3g})"
    if diverged or any(e.exploded for e in stuck):   # the loss blew up: the lrs are too high
        fix = f"lower {lrs}"
    else:                                             # at chance: too high to settle, or too few steps to learn
        fix = f"check {lrs} and tune.max_epochs (now {t['max_epochs']})"
    return f"model '{name}': {what} (first: {failures[0]}); {fix}"


def tune(cfg: dict, data_path, split_path, trials_path, best_path, device, features_path=None,
         cores: int | None = None) -> dict:
    if cores is not None and cores < 1:
        raise UserError(f"--cores {cores}: give the number of CPU cores its trials may share (1 or more)")
    if cfg["hparams"] != "tuned":  # the plan gives the lr and epochs (reprozoo/config.py, hparams_plan)
        source = f"paper ({cfg['from']}'s)" if "from" in cfg else cfg["hparams"]
        best = {"source": source, "lr": cfg["lr"], "epochs": cfg["epochs"]}
        log.info("%s: hparams: %s -> lr %.3g, %d epochs (no tuning)", cfg["name"], source, best["lr"], best["epochs"])
        write_csv(trials_path, pd.DataFrame(columns=TRIAL_COLUMNS), index=False)
        write_json(best_path, best)
        return best

    t = cfg["tune"]
    lo, hi = t["lr_log_range"]
    build = (trial_objective, (cfg, data_path, split_path, device, features_path))
    journal = Journal(trials_path, fingerprint(cfg, device, data_path, split_path, features_path))
    done = journal.open(cfg["name"], t["max_evals"])   # {trial: (row, result)} an interrupted run finished
    results = {k: result for k, (_, result) in done.items()}   # every trial's, to tell how failed ones failed

    began, ran = time.perf_counter(), []

    def finished(row: dict, result: dict) -> None:
        results[row["trial"]] = result
        journal.append(row, result)
        ran.append(row["trial"])  # the search's progress: trials done, and the time the rest will take
        elapsed = time.perf_counter() - began
        log.info("%s: %d/%d trials done (%s), ETA %s", cfg["name"], len(results), t["max_evals"],
                 fmt_duration(elapsed), fmt_duration(elapsed / len(ran) * (t["max_evals"] - len(results))))

    rows: list[dict] = []
    failures = None
    try:
        if concurrent.applies(t["max_evals"]):  # every trial is a TPE start-up draw: random search
            lrs = concurrent.startup_lrs((lo, hi), t["max_evals"], cfg["seed"])
            skip = {k - 1: done[k] for k in done if k <= len(lrs) and done[k][0]["lr"] == lrs[k - 1]}
            workers = concurrent.workers_from_env(device, cfg["threads"], cores)
            search = "concurrent: " + concurrent.run(build, rows, lrs, workers, device, done=skip, on_result=finished,
                                                     threads=cfg["threads"])
        else:
            objective, rows = build[0](*build[1])

            def replay_or_train(params: dict) -> dict:
                # TPE is deterministic given its rstate and the history: asked again for a journalled
                # trial's lr, hand back that trial's result; from the first trial not journalled on, train
                trial = done.get(len(rows) + 1)
                if trial is not None and trial[0]["lr"] == float(params["lr"]):
                    rows.append(trial[0])
                    return dict(trial[1])
                result = objective(params)
                finished(rows[-1], result)
                return result

            fmin(replay_or_train, concurrent.search_space((lo, hi)), algo=tpe.suggest, max_evals=t["max_evals"],
                 trials=Trials(), rstate=np.random.default_rng(cfg["seed"]),
                 show_progressbar=sys.stdout.isatty())  # hyperopt draws its bar on stdout
            search = "sequential"
    except AllTrialsFailed:
        failures = [failure(results[r["trial"]]) for r in rows if r["status"] == "fail"]
    finally:
        write_csv(trials_path, pd.DataFrame(rows, columns=TRIAL_COLUMNS), index=False)
        journal.close()
    if failures is not None:
        journal.close(remove=True)  # the search ran to its end (trials.csv says how): nothing to resume
        raise TuneError(all_failed(cfg["name"], failures, t))

    ok = [r for r in rows if r["status"] == "ok"]
    winner = min(ok, key=lambda r: r["best_val_loss"])
    best = {"source": "tuned", "lr": winner["lr"], "epochs": int(winner["best_epoch"]), "trial": winner["trial"],
            "best_val_loss": winner["best_val_loss"], "best_val_accuracy": winner["best_val_accuracy"],
            "max_evals": t["max_evals"], "failed_trials": len(rows) - len(ok)}
    best["search"] = search  # which path ran the trials
    if card := gpus.held():  # and on which card (reprozoo/gpus.py)
        best["card"] = card
    write_json(best_path, best)
    journal.close(remove=True)  # trials.csv and best.json hold it all now
    log.info("%s: best lr %.3g, %d epochs (trial %d)", cfg["name"], best["lr"], best["epochs"], best["trial"])
    return best


def failure(result: dict) -> Diverged:
    """A failed trial's exception, rebuilt from its result (as a worker process or the journal returns it)."""
    if result.get("no_progress"):
        return NoProgress(result["error"], result["exploded"])
    return Diverged(result["error"])


def trial_objective(cfg: dict, data_path, split_path, device, features_path=None):
    """What one tuning trial runs: `(objective, rows)`. `objective({"lr": lr})` trains
    a fresh seeded model, appends its row (numbered len(rows) + 1) to `rows`, logs
    each epoch, and returns hyperopt's result dict (a failed trial's says how it
    failed, see `failure`). Module-level, so that a spawned worker process can
    build its own from the same arguments."""
    arrays = model_inputs(cfg, data_path, features_path)
    split = read_split(split_path, len(arrays["y_train"]), len(arrays["y_test"]))
    labelled = None if cfg.get("labelled_per_class") is None else labelled_mask(
        arrays["y_train"], split["train"], cfg["labelled_per_class"], cfg["seed"], arrays["classes"])
    train = Tensors.from_numpy(arrays["x_train"], arrays["y_train"], device, split["tune_train"], labelled)
    val = Tensors.from_numpy(arrays["x_train"], arrays["y_train"], device, split["tune_val"])
    num_classes = len(arrays["classes"])
    t = cfg["tune"]
    rows: list[dict] = []

    def objective(params: dict) -> dict:
        lr = float(params["lr"])
        generator = seed_everything(cfg["seed"])
        runner = Runner(create_model(cfg["arch"], num_classes, **cfg["args"]), cfg, device, lr)
        row = {"trial": len(rows) + 1, "lr": lr, "error": ""}
        name = f"{cfg['name']} trial {row['trial']}/{t['max_evals']} lr={lr:.2e}"
        start = time.perf_counter()
        epochs: list[dict] = []   # as they finish

        def on_epoch(r: dict) -> None:  # a log line, not a bar: a bar would garble the lines on a terminal
            epochs.append(r)
            left = (t["max_epochs"] - r["epoch"]) * sum(e["seconds"] for e in epochs) / len(epochs)
            log.info("%s epoch %d/%d train loss %.4f val loss %.4f acc %.2f%% (%.1fs, at most %s left)", name,
                     r["epoch"], t["max_epochs"], r["train_loss"], r["val_loss"], r["val_accuracy"], r["seconds"],
                     fmt_duration(left))  # early stopping may end the trial sooner

        try:
            history = fit(runner, train, val, t["max_epochs"], generator, patience=t["patience"], on_epoch=on_epoch)
            best = min(history, key=lambda r: r["val_loss"])  # what the trial reports
            check_progress(best, num_classes, val)
        except Diverged as e:  # NoProgress included: the trial ran, but its best epoch is junk
            ran = isinstance(e, NoProgress)  # ran to its end: keep the numbers that were judged
            judged = best if ran else {}
            row.update(status="fail", best_epoch=judged.get("epoch"), best_val_loss=judged.get("val_loss"),
                       best_val_accuracy=judged.get("val_accuracy"), epochs_run=len(epochs) + (0 if ran else 1),
                       seconds=time.perf_counter() - start, error=str(e))
            rows.append(row)
            log.warning("%s %s: %s", name, "made no progress" if ran else "diverged", e)
            return {"status": STATUS_FAIL, "error": str(e), "no_progress": ran, "exploded": ran and e.exploded}
        row.update(status="ok", best_epoch=best["epoch"], best_val_loss=best["val_loss"],
                   best_val_accuracy=best["val_accuracy"], epochs_run=len(history),
                   seconds=time.perf_counter() - start)
        rows.append(row)
        log.info("%s best epoch %d val loss %.4f acc %.2f%% (%.1fs)", name, best["epoch"], best["val_loss"],
                 best["val_accuracy"], row["seconds"])
        return {"status": STATUS_OK, "loss": best["val_loss"], "best_epoch": best["epoch"]}

    return objective, rows
