"""Benchmark: the pipeline at the config's one thread per computation vs every heavy job on all cores.

Runs the same Snakemake pipeline twice, one run after the other, each in a fresh
copy of the workflow: first as configured (protocol.threads: 1, so that jobs run
side by side; a tuning job's trials side by side on half of --cores, `tune_cores()`
in rules/common.smk), then with an override setting protocol.threads to --cores, which
gives cache_features, tune, train and evaluate every core (one heavy job at a
time; the thread count changes the numbers in their low digits). Prints each
run's wall time and the ratio.

    python benchmarks/job_threads.py                          # the demo on 2 cores (about 12 minutes)
    python benchmarks/job_threads.py --cores 4 --configfile tests/tiny.yaml
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ["Snakefile", "rules", "reprozoo", "workflow", "config.yaml", "params.yaml", "config", "envs",
            "profiles", "tests/tiny.yaml", "Makefile", ".dvcignore", ".gitignore"]


def copy_workflow(work: Path) -> Path:
    """A runnable copy of the workflow in `work` (benchmarks/engines.py uses it too)."""
    for name in WORKFLOW:
        src, dst = ROOT / name, work / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    return work


def timed_run(args: argparse.Namespace, threads: int) -> float:
    """The pipeline's wall time with every computation at `threads` torch threads (protocol.threads)."""
    with tempfile.TemporaryDirectory(prefix="job-threads-") as tmp:
        work = copy_workflow(Path(tmp))
        (work / "threads.yaml").write_text(f"protocol:\n  threads: {threads}\n")
        command = [str(Path(sys.executable).parent / "snakemake"), "--cores", str(args.cores), *args.targets,
                   "--configfile", args.configfile, "threads.yaml"]
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               "TQDM_DISABLE": "1"}
        start = time.perf_counter()
        result = subprocess.run(command, cwd=work, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - start
        if result.returncode != 0:
            sys.exit(f"job_threads: {' '.join(command[1:])} failed:\n{result.stderr[-3000:]}")
        return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--configfile", default="config/demo.yaml", help="override file, as for snakemake")
    p.add_argument("targets", nargs="*", help="Snakemake targets (default: the whole pipeline)")
    args = p.parse_args()
    default = timed_run(args, 1)
    every_core = timed_run(args, args.cores)
    what = " ".join([f"--cores {args.cores}", *args.targets, f"--configfile {args.configfile}"])
    print(f"snakemake {what}")
    print(f"  protocol.threads 1 (jobs side by side): {default:7.1f} s  1.00x")
    print(f"  protocol.threads {args.cores} (one heavy job at a time): {every_core:7.1f} s  {every_core / default:.2f}x")


if __name__ == "__main__":
    main()
