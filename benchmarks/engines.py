"""Benchmark: the same config under Snakemake (`make demo`) and under DVC (`make dvc-demo`), side by side.

Each engine runs in a fresh copy of the workflow, one after the other, on the same machine:

- snakemake --cores C --configfile <override>                      (what `make demo` runs)
- python -m reprozoo dvc-yaml --configfile <override>; dvc repro   (`make dvc-demo`, in a new git + DVC repository)

Prints each wall time, the ratio DVC / Snakemake, and whether every run's metrics.json,
predictions.csv and weights.pt are the same bytes in both. Then, in the DVC copy, Snakemake after
DVC, --repeats times: the first `snakemake -n` (which takes DVC's outputs as Snakemake's own,
rules/dvc.smk) beside a second, plain one, each sample from the state `dvc repro` leaves (DVC's
hash cache current, no .snakemake/); and whether `snakemake --report` gives each job the time its
benchmark file says.

    python benchmarks/engines.py                                # the demo on 2 cores (about 20 minutes)
    python benchmarks/engines.py --configfile tests/tiny.yaml   # a smoke run (about 3 minutes)
    python benchmarks/engines.py --after-dvc DIR                # only the dry runs, where dvc repro ran in DIR
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from reprozoo.config import load_config, run_models  # noqa: E402
from reprozoo.benchmark import benchmark_seconds  # noqa: E402
from reprozoo.sections import seeds  # noqa: E402
from job_threads import copy_workflow  # noqa: E402  (benchmarks/, this script's folder)

COMPARED = ("eval/{model}/seed{seed}/metrics.json", "eval/{model}/seed{seed}/predictions.csv",
            "train/{model}/seed{seed}/weights.pt")


def run(command: list[str], work: Path, says: str = "") -> float:
    """Run `command` in `work` with this venv's tools first on PATH; its wall seconds (exit on failure, or
    when its output lacks `says`)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "TQDM_DISABLE": "1", "DVC_NO_ANALYTICS": "1"}
    start = time.perf_counter()
    result = subprocess.run(command, cwd=work, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if result.returncode != 0 or says not in result.stdout + result.stderr:
        sys.exit(f"engines: {' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return seconds


def snakemake(work: Path, args: argparse.Namespace) -> float:
    return run(["snakemake", "--cores", str(args.cores), "--configfile", args.configfile], work)


def dvc(work: Path, args: argparse.Namespace) -> float:
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.name=b", "-c", "user.email=b@b",
                                                                  "commit", "-qm", "workflow"], ["dvc", "init", "-q"]):
        run(command, work)
    # what `make dvc-demo` times: dvc.yaml, then `dvc repro`
    return run([sys.executable, "-m", "reprozoo", "dvc-yaml", "--configfile", args.configfile], work) + \
        run(["dvc", "repro"], work)


def report_times(work: Path, args: argparse.Namespace) -> tuple[int, int, float]:
    """`snakemake --report`'s job times against the benchmark files: jobs, jobs with a benchmark time, and the
    largest difference between the two (s)."""
    run(["snakemake", "--configfile", args.configfile, "--report", "report.html"], work)
    page = (work / "report.html").read_text()
    shown = json.loads(re.search(r'"description": "Runtimes of jobs\.", "data": \{"values": (\[.*?\])\}', page)[1])
    measured = [s for f in (work / "logs").rglob("benchmarks/**/*.tsv") if (s := benchmark_seconds(f)) is not None]
    runtimes = sorted(job["runtime"] for job in shown)
    return len(runtimes), len(measured), max((abs(a - b) for a, b in zip(runtimes, sorted(measured))), default=0.0)


def dry_runs_after_dvc(work: Path, args: argparse.Namespace) -> tuple[list[float], list[float]]:
    """The first `snakemake -n` after `dvc repro` (it must record DVC's outputs and plan nothing) and a plain
    one after it, --repeats times; before each sample `dvc status` (it must find everything current)
    refreshes DVC's hash cache as `dvc repro` leaves it, and .snakemake/ goes."""
    dry = ["snakemake", "-n", "--configfile", args.configfile]
    firsts, plains = [], []
    for _ in range(args.repeats):
        run(["dvc", "status", "--quiet"], work)
        shutil.rmtree(work / ".snakemake", ignore_errors=True)
        firsts.append(run(dry, work, says="recorded for Snakemake"))
        plains.append(run(dry, work, says="Nothing to be done"))
    return firsts, plains


def spread(seconds: list[float]) -> str:
    return f"median {statistics.median(seconds):.2f} s (min {min(seconds):.2f}, max {max(seconds):.2f})"


def differing(first: Path, second: Path, configfile: str) -> tuple[int, list[str]]:
    """How many files were compared, and those whose bytes differ."""
    cfg = load_config(first / "config.yaml", first / configfile)
    paths = [f"results/{d}/" + p.format(model=m, seed=s) for d in cfg["run"]["datasets"] for m in run_models(cfg)
             for s in seeds(cfg) for p in COMPARED]
    return len(paths), [p for p in paths if (first / p).read_bytes() != (second / p).read_bytes()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cores", type=int, default=2, help="snakemake --cores (DVC runs one stage at a time)")
    p.add_argument("--configfile", default="config/demo.yaml", help="override file, as for snakemake")
    p.add_argument("--repeats", type=int, default=5, help="samples of the dry runs after DVC")
    p.add_argument("--after-dvc", type=Path, metavar="DIR",
                   help="only the dry runs after DVC, in DIR, a copy of the workflow where dvc repro ran")
    args = p.parse_args()
    print(f"config.yaml + {args.configfile}, {os.cpu_count()} cores")
    if args.after_dvc:
        print_dry_runs(*dry_runs_after_dvc(args.after_dvc, args))
        return
    with tempfile.TemporaryDirectory(prefix="engines-") as tmp:
        first, second = copy_workflow(Path(tmp) / "snakemake"), copy_workflow(Path(tmp) / "dvc")
        smk = snakemake(first, args)
        dvc_seconds = dvc(second, args)
        compared, differ = differing(first, second, args.configfile)
        firsts, plains = dry_runs_after_dvc(second, args)
        jobs, benchmarked, worst = report_times(second, args)
    print(f"  snakemake --cores {args.cores}: {smk:7.1f} s  1.00x")
    print(f"  dvc repro:{' ' * (len(str(args.cores)) + 10)}{dvc_seconds:7.1f} s  {dvc_seconds / smk:.2f}x")
    print(f"  metrics.json, predictions.csv, weights.pt: {compared - len(differ)} of {compared} files the same bytes"
          + (f"; differ: {', '.join(differ)}" if differ else ""))
    print_dry_runs(firsts, plains)
    print(f"  snakemake --report after dvc repro: {jobs} jobs, {benchmarked} benchmark files with a time; "
          f"job times differ from them by at most {worst:.2f} s")


def print_dry_runs(firsts: list[float], plains: list[float]) -> None:
    print(f"  snakemake -n after dvc repro, {len(firsts)} samples: the first (records DVC's outputs) {spread(firsts)}; "
          f"a plain one {spread(plains)}; first / plain {statistics.median(firsts) / statistics.median(plains):.2f}x")
    print(f"    first: {', '.join(f'{s:.2f}' for s in firsts)} s; plain: {', '.join(f'{s:.2f}' for s in plains)} s")


if __name__ == "__main__":
    main()
