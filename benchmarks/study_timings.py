"""Per-model timings of a finished pipeline run, read from its artifacts and logs.

For each model trained on `--dataset`: tune wall seconds (first to last line of
its tune log; 0 under hparams: paper), how the trials ran (best.json `search`),
final-training seconds (run.json `duration_s`, test evaluation after every epoch
included), training images per second (training-set images x epochs / those
seconds) and the test accuracy.

    python benchmarks/study_timings.py --dataset cifar10_jpeg        # in the run's folder
"""
from __future__ import annotations

import argparse
import json
import re
from datetime import datetime
from pathlib import Path

import pandas as pd

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def log_span(path: Path) -> float:
    """Seconds from the first to the last time-stamped line of a log (0 if fewer than two)."""
    if not path.is_file():
        return 0.0
    stamps = [datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
              for m in map(STAMP.match, path.read_text(errors="replace").splitlines()) if m]
    return (stamps[-1] - stamps[0]).total_seconds() if len(stamps) > 1 else 0.0


def timings(root: Path, dataset: str) -> pd.DataFrame:
    rows = []
    for run_path in sorted((root / "results" / dataset / "train").glob("*/seed*/run.json")):
        model, run = run_path.parts[-3], json.loads(run_path.read_text())
        best = json.loads((root / "results" / dataset / "tune" / model / "best.json").read_text())
        images = run["train_images"]
        rows.append({"model": model, "hparams": run["hparams"], "search": best.get("search", ""),
                     "tune_s": round(log_span(root / "logs" / dataset / "tune" / f"{model}.log"), 1),
                     "train_s": run["duration_s"], "epochs": run["epochs"],
                     "train_images_per_s": round(images * run["epochs"] / run["duration_s"]),
                     "test_accuracy": round(run["final_test_accuracy"], 2), "device": run.get("hardware", "")})
    return pd.DataFrame(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True)
    p.add_argument("--root", type=Path, default=Path("."), help="the run's folder (holds results/ and logs/)")
    args = p.parse_args()
    table = timings(args.root, args.dataset)
    if table.empty:
        raise SystemExit(f"study_timings: no results/{args.dataset}/train/*/seed*/run.json under {args.root}")
    print(table.to_markdown(index=False))


if __name__ == "__main__":
    main()
