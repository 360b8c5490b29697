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
- workers > 1 on CPU: one forked process per trial, `workers` at a time, each
  with `torch.set_num_threads(threads)` (a forked child that keeps the parent's
  OpenMP threads hung here). On CPU the thread count changes the reduction
  order: histories match the sequential path run at the same thread count; at
  another count they drift apart in the low digits, which can change the winner
  between two near-tied trials. So every trial runs at the config's
  `protocol.threads`, and the number side by side changes only the time;
- workers > 1 on CUDA: `workers` spawned processes share the card (fork is
  impossible once CUDA is initialised). Each builds its own objective once, from
  the same arguments (`rebuild`), holds its own copy of the tuning split on the
  card, and takes trials one after another. Small models leave an H100 mostly
  idle between kernel launches; several processes fill those gaps.

The number of workers comes from the environment variable
REPROZOO_TUNE_WORKERS; unset, it is on CPU as many as the job's cores hold at
`protocol.threads` each (`tune --cores`, by default every core the process may
use: Snakemake gives a tuning job half its cores; DVC, which runs one stage at a
time, all of them), and
`CUDA_WORKERS` on a GPU (chosen with benchmarks/concurrent_tune.py, docs/speed.md).
"""
from __future__ import annotations

import contextlib
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


# Trials at a time on one GPU when REPROZOO_TUNE_WORKERS is unset: 4 fill the card's idle gaps
# between small kernels, and more gave no more on an H100 (docs/speed.md)
CUDA_WORKERS = 4


def workers_from_env(device: torch.device | None = None, threads: int = 1, cores: int | None = None) -> int:
    """Trials side by side: REPROZOO_TUNE_WORKERS where set; else CUDA_WORKERS on a GPU, and on CPU the trials
    of `threads` threads each that `cores` hold (none given: one at a time)."""
    cpu = max(1, (cores or threads) // threads)
    default = CUDA_WORKERS if device is not None and device.type == "cuda" else cpu
    value = os.environ.get("REPROZOO_TUNE_WORKERS", str(default))
    try:
        workers = int(value)
    except ValueError:
        raise ValueError(f"REPROZOO_TUNE_WORKERS must be an integer, not '{value}'") from None
    if workers < 1:
        raise ValueError(f"REPROZOO_TUNE_WORKERS must be at least 1, not {workers}")
    return workers


def search_space(lr_log_range) -> dict:
    """The study's search space, the one both paths search: lr log-uniform over [e^lo, e^hi]."""
    lo, hi = lr_log_range
    return {"lr": hp.loguniform("lr", lo, hi)}


def startup_lrs(lr_log_range, max_evals: int, seed: int) -> list[float]:
    """The lrs `fmin(tpe.suggest, rstate=default_rng(seed))` gives its first `max_evals` trials."""
    if max_evals > STARTUP_TRIALS:
        raise ValueError(f"max_evals {max_evals} > {STARTUP_TRIALS} start-up trials: the draws depend on losses")
    lrs: list[float] = []

    def record(params: dict) -> dict:
        lrs.append(float(params["lr"]))
        return {"status": STATUS_OK, "loss": 0.0}  # never read: TPE is still drawing from the prior

    fmin(record, search_space(lr_log_range), algo=tpe.suggest, max_evals=max_evals, trials=Trials(),
         rstate=np.random.default_rng(seed), show_progressbar=False)
    return lrs


# what a worker process needs; set in the parent just before a fork, or in a spawned worker's initializer
_JOB: dict = {}


def _one_trial(i: int) -> tuple[int, dict, dict]:
    """In a worker: run trial i (0-based) through the objective."""
    objective, rows, lrs, threads = _JOB["objective"], _JOB["rows"], _JOB["lrs"], _JOB["threads"]
    torch.set_num_threads(threads)
    rows[:] = [None] * i   # the objective numbers its row len(rows) + 1
    result = objective({"lr": lrs[i]})
    return i, rows[-1], result


def _spawned(build: tuple, lrs: list[float], threads: int, log_level: int) -> None:
    """A spawned worker's initializer: log as the parent does (to the stderr it inherits: the stage's
    --log), build the objective (data on the card) once."""
    logging.basicConfig(level=log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        handlers=[logging.StreamHandler()], force=True)
    objective, rows = build[0](*build[1])
    _JOB.update(objective=objective, rows=rows, lrs=lrs, threads=threads)


def run(build: tuple, rows: list, lrs: list[float], workers: int = 1, device: torch.device | None = None,
        start: str | None = None, done: dict | None = None, on_result: Callable | None = None,
        threads: int | None = None) -> str:
    """Train one trial per lr; append their rows to `rows` in trial order.

    `build` = (function, args): function(*args) returns (objective, rows), as
    reprozoo.tune.trial_objective does. It runs where the trials run: in this
    process (workers == 1), once before forking, or once in each spawned worker, so
    a spawning parent never loads the data itself. `start` picks how workers start:
    "fork" (the CPU default) or "spawn" (the CUDA default; on CPU for tests).
    `done` maps trial indices (0-based) to the (row, result) of trials that already
    ran (a resumed tune's journal): they are not run again. `on_result(row, result)`
    is called in this process as each trial finishes (tune journals it there).
    `threads`: torch's CPU threads in each trial (default: this process's).
    Returns how the trials ran ("in-process", "forked xN" or "spawned xN on <device>").
    Raises hyperopt's AllTrialsFailed when no trial succeeded, as `fmin` does."""
    start = start or ("spawn" if device is not None and device.type == "cuda" else "fork")
    finished = dict(done or {})
    todo = [i for i in range(len(lrs)) if i not in finished]
    workers = min(workers, len(lrs))
    threads = threads or torch.get_num_threads()
    spawn = workers > 1 and start == "spawn"
    how = "in-process" if workers <= 1 else f"spawned x{workers} on {device.type}" if spawn else f"forked x{workers}"
    try:
        with contextlib.ExitStack() as stack:
            stack.callback(_JOB.clear)
            if todo and not spawn:  # the objective lives in this process (forked children copy it)
                objective, made = build[0](*build[1])
                _JOB.update(objective=objective, rows=made, lrs=lrs, threads=threads)
            if workers <= 1 or not todo:
                trials = map(_one_trial, todo)
            else:
                pool_args = dict(initializer=_spawned, initargs=(build, lrs, threads, log.getEffectiveLevel())) \
                    if spawn else dict(maxtasksperchild=1)
                pool = stack.enter_context(mp.get_context(start).Pool(min(workers, len(todo)), **pool_args))
                trials = pool.imap_unordered(_one_trial, todo, chunksize=1)  # each as it finishes
            for i, row, result in trials:
                finished[i] = row, result
                if on_result is not None:
                    on_result(row, result)
    finally:  # what ran, even when a trial crashed
        rows.extend(finished[i][0] for i in sorted(finished))
    if not any(result.get("status") == STATUS_OK for _, result in finished.values()):
        raise AllTrialsFailed
    return how
