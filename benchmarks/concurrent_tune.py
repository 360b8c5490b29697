"""Benchmark: `tune` with its trials one after another (the sequential fmin) vs concurrent.

Runs reprozoo.tune.tune twice on the bundled digits, side by side in one run:
sequential (hyperopt's fmin, as before) and concurrent (reprozoo.trials with
`--workers` forked processes). Prints both wall times, their ratio, and whether
the trials' rows agree (lr exactly, val losses within 1e-5 relative).

    python benchmarks/concurrent_tune.py --model cnn --trials 4 --epochs 2 --workers 2   # CPU
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

import reprozoo.trials as concurrent  # noqa: E402
from reprozoo.config import deep_merge, load_config, resolve_model  # noqa: E402
from reprozoo.data import prepare, write_split  # noqa: E402
from reprozoo.engine import pick_device  # noqa: E402
from reprozoo.tune import tune  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cnn")
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    device = pick_device(args.device)
    cfg = deep_merge(resolve_model(load_config(ROOT / "config.yaml"), args.model),
                     {"tune": {"max_evals": args.trials, "max_epochs": args.epochs, "patience": args.epochs},
                      "batch_size": 128})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prepare({"name": "digits", "kind": "digits", "image_size": 32}, tmp / "data.npz")
        write_split(tmp / "data.npz", tmp / "split.json", cfg["seed"], 0.2, 0.2)
        times, rows = {}, {}
        for way in ("sequential", "concurrent"):
            os.environ["REPROZOO_TUNE_WORKERS"] = str(args.workers)
            patch = mock.patch.object(concurrent, "applies", lambda n: False) if way == "sequential" \
                else mock.patch.object(concurrent, "applies", concurrent.applies)
            with patch:
                start = time.perf_counter()
                best = tune(cfg, tmp / "data.npz", tmp / "split.json", tmp / f"{way}.csv", tmp / f"{way}.json", device)
                times[way] = time.perf_counter() - start
            rows[way] = pd.read_csv(tmp / f"{way}.csv")
            print(f"{way:10s} {times[way]:8.2f} s   search: {best['search']}")
    same_lr = rows["sequential"]["lr"].tolist() == rows["concurrent"]["lr"].tolist()
    close = np.allclose(rows["sequential"]["best_val_loss"], rows["concurrent"]["best_val_loss"], rtol=1e-5)
    print(f"ratio sequential / concurrent: {times['sequential'] / times['concurrent']:.2f} x "
          f"({args.model}, {args.trials} trials x {args.epochs} epochs, {args.workers} workers, device {device})")
    print(f"same lrs: {same_lr}; val losses within 1e-5: {close}")


if __name__ == "__main__":
    main()
