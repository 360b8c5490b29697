"""Benchmark: `tune` with its trials one after another (the sequential fmin) vs concurrent.

Runs reprozoo.tune.tune on the bundled digits (or `--data`, a prepared
data.npz such as results/cifar10_jpeg/data.npz), side by side in one run:
sequential (hyperopt's fmin, as `tune` runs above 20 trials) and concurrent (reprozoo.trials with
each of `--workers` processes: forked on CPU, spawned on CUDA). Prints the wall
times, the ratios, and whether the trials' rows agree (lr exactly, val losses
within 1e-5 relative on CPU, 1e-3 on CUDA where bf16 kernels may reorder sums).

    python benchmarks/concurrent_tune.py --model cnn --trials 4 --epochs 2 --workers 2   # CPU
    python benchmarks/concurrent_tune.py --model cnn --trials 20 --epochs 50 --patience 5 \
        --workers 4 8 --device cuda --data results/cifar10_jpeg/data.npz                  # the study's budget
    python benchmarks/concurrent_tune.py --model cnn --trials 20 --epochs 50 --patience 5 --workers \
        --data results/cifar10_jpeg/data.npz --compare-to results/cifar10_jpeg/tune/cnn/trials.csv
                                                 # sequential only, checked against the pipeline's tune
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import reprozoo.trials as concurrent  # noqa: E402
from reprozoo.config import deep_merge, load_config  # noqa: E402
from reprozoo.sections import resolve_model  # noqa: E402
from reprozoo.prepare import prepare, write_split  # noqa: E402
from reprozoo.engine import pick_device  # noqa: E402
from reprozoo.tune import tune  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def agree(a: pd.DataFrame, b: pd.DataFrame, rtol: float) -> tuple[bool, bool]:
    """Two trials tables: the same lrs in the same order, and best val losses within rtol."""
    same_lr = a["lr"].tolist() == b["lr"].tolist()
    return same_lr, same_lr and bool(np.allclose(a["best_val_loss"], b["best_val_loss"], rtol=rtol))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cnn")
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2, help="tune.max_epochs per trial")
    p.add_argument("--patience", type=int, default=0, help="tune.patience (default: --epochs, no early stop)")
    p.add_argument("--workers", type=int, nargs="*", default=[2],
                   help="concurrent worker counts to time (none: the sequential fmin only)")
    p.add_argument("--compare-to", type=Path, metavar="TRIALS_CSV",
                   help="also check the sequential rows against this trials.csv, e.g. the pipeline's own "
                        "tune of the same model, data and budget (it ran concurrently)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data", type=Path, help="a prepared data.npz (default: the bundled digits)")
    args = p.parse_args()
    device = pick_device(args.device)
    cfg = deep_merge(resolve_model(load_config(ROOT / "config.yaml"), args.model),
                     {"tune": {"max_evals": args.trials, "max_epochs": args.epochs,
                               "patience": args.patience or args.epochs}})
    rtol = 1e-3 if device.type == "cuda" else 1e-5
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = args.data or tmp / "data.npz"
        if args.data is None:
            prepare({"name": "digits", "kind": "digits", "image_size": 32}, data)
        write_split(data, tmp / "split.json", cfg["seed"], 0.2, 0.2)
        images = len(np.load(data)["y_train"])
        warm = deep_merge(cfg, {"tune": {"max_evals": 1, "max_epochs": 1, "patience": 1}})
        tune(warm, data, tmp / "split.json", tmp / "warm.csv", tmp / "warm.json", device)  # kernels, caches: untimed
        times, rows = {}, {}
        for way in ["sequential"] + [f"x{w}" for w in args.workers]:
            os.environ["REPROZOO_TUNE_WORKERS"] = way[1:] if way != "sequential" else "1"
            patch = mock.patch.object(concurrent, "applies", lambda n: False) if way == "sequential" \
                else mock.patch.object(concurrent, "applies", concurrent.applies)
            with patch:
                start = time.perf_counter()
                best = tune(cfg, data, tmp / "split.json", tmp / f"{way}.csv", tmp / f"{way}.json", device)
                times[way] = time.perf_counter() - start
            rows[way] = pd.read_csv(tmp / f"{way}.csv")
            same_lr, close = agree(rows["sequential"], rows[way], rtol)
            print(f"{way:10s} {times[way]:8.2f} s   ratio sequential/this {times['sequential'] / times[way]:5.2f} x"
                  f"   search: {best['search']}; same lrs: {same_lr}; val losses within {rtol:g}: {close}; "
                  f"epochs run: {int(rows[way]['epochs_run'].sum())}; best lr {best['lr']:.3g} "
                  f"epochs {best['epochs']}", flush=True)
        if args.compare_to:
            other = pd.read_csv(args.compare_to)
            same_lr, close = agree(rows["sequential"], other, rtol)
            print(f"{str(args.compare_to):10s} same lrs as sequential: {same_lr}; val losses within {rtol:g}: "
                  f"{close}; epochs run: {int(other['epochs_run'].sum())}", flush=True)
    print(f"({args.model}, {args.trials} trials x <= {args.epochs} epochs, patience {cfg['tune']['patience']}, "
          f"{images} train images, device {device}, torch {torch.__version__})")


if __name__ == "__main__":
    main()
