"""Concurrent tuning trials: the study's TPE search is random search.

hyperopt's `tpe.suggest` draws its first `n_startup_jobs` trials (20 by default)
at random from the prior and ignores every loss until then. With `max_evals` at
or below that count, which is the study's case (TPE, 20 evaluations), no trial
depends on another: the lrs are known before any trial runs, and the trials can
run at the same time.

`startup_lrs` draws exactly the lrs that the sequential `fmin` draws (same
space, same `rstate`, an objective that only records the lr). `run` trains the
trials, in trial order, each through the very objective `tune` uses, so seeding,
early stopping and failure rows are those of the sequential path:

- workers == 1: in this process, one after another (bit-identical to `fmin`);
- workers > 1: one forked process per trial, `workers` at a time, each with
  `torch.set_num_threads(parent's // workers)` (a forked child that keeps the
  parent's OpenMP threads hung here). On CPU the thread count changes the
  reduction order: histories match the sequential path run at the same thread
  count; at another count they drift by ~1e-3 after two epochs (measured). Fork needs the parent to be free of CUDA;
  the data tensors of a CUDA tune live there already, so on CUDA `run` keeps
  one process (a GPU session measures and enables a spawn path, see README).

The number of workers comes from the environment variable
REPROZOO_TUNE_WORKERS (default 1, so results on CPU are unchanged).
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
from typing import Callable

import numpy as np
import torch
from hyperopt import STATUS_OK, Trials, fmin, hp, tpe
from hyperopt.exceptions import AllTrialsFailed

log = logging.getLogger("reprozoo.tune")

# hyperopt.tpe.suggest's default: trials drawn from the prior before TPE models the losses
STARTUP_TRIALS = tpe._default_n_startup_jobs


def applies(max_evals: int) -> bool:
    """True when every trial is a start-up trial, i.e. the search is random search."""
    return max_evals <= STARTUP_TRIALS


def workers_from_env() -> int:
    value = os.environ.get("REPROZOO_TUNE_WORKERS", "1")
    try:
        workers = int(value)
    except ValueError:
        raise ValueError(f"REPROZOO_TUNE_WORKERS must be an integer, not '{value}'") from None
    if workers < 1:
        raise ValueError(f"REPROZOO_TUNE_WORKERS must be at least 1, not {workers}")
    return workers


def startup_lrs(lr_log_range, max_evals: int, seed: int) -> list[float]:
    """The lrs `fmin(tpe.suggest, rstate=default_rng(seed))` gives its first `max_evals` trials."""
    if max_evals > STARTUP_TRIALS:
        raise ValueError(f"max_evals {max_evals} > {STARTUP_TRIALS} start-up trials: the draws depend on losses")
    lo, hi = lr_log_range
    lrs: list[float] = []

    def record(params: dict) -> dict:
        lrs.append(float(params["lr"]))
        return {"status": STATUS_OK, "loss": 0.0}  # never read: TPE is still drawing from the prior

    fmin(record, {"lr": hp.loguniform("lr", lo, hi)}, algo=tpe.suggest, max_evals=max_evals, trials=Trials(),
         rstate=np.random.default_rng(seed), show_progressbar=False)
    return lrs


# what a forked worker needs; set in the parent just before the pool forks
_JOB: dict = {}


def _one_trial(i: int) -> tuple[dict, dict]:
    """In a forked worker: run trial i (0-based) through the parent's objective."""
    objective, rows, lrs, threads = _JOB["objective"], _JOB["rows"], _JOB["lrs"], _JOB["threads"]
    torch.set_num_threads(threads)
    rows[:] = [None] * i   # the objective numbers its row len(rows) + 1
    result = objective({"lr": lrs[i]})
    return rows[-1], result


def run(objective: Callable[[dict], dict], rows: list, lrs: list[float], workers: int = 1,
        device: torch.device | None = None) -> str:
    """Train one trial per lr with `objective`; append their rows to `rows` in trial order.

    Returns how the trials ran ("in-process" or "forked xN"). Raises hyperopt's
    AllTrialsFailed when no trial succeeded, as `fmin` does."""
    if workers > 1 and device is not None and device.type == "cuda":
        log.warning("concurrent trials: fork is impossible once CUDA is initialised; running them in-process")
        workers = 1
    workers = min(workers, len(lrs))
    if workers <= 1:
        results = [objective({"lr": lr}) for lr in lrs]
        how = "in-process"
    else:
        threads = max(1, torch.get_num_threads() // workers)
        _JOB.update(objective=objective, rows=rows, lrs=lrs, threads=threads)  # fork copies them
        try:
            with mp.get_context("fork").Pool(workers, maxtasksperchild=1) as pool:
                done = pool.map(_one_trial, range(len(lrs)), chunksize=1)
        finally:
            _JOB.clear()
        for row, _ in done:
            rows.append(row)
        results = [r for _, r in done]
        how = f"forked x{workers}"
    if not any(r.get("status") == STATUS_OK for r in results):
        raise AllTrialsFailed
    return how
