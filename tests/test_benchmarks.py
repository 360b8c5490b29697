"""The benchmarks as CPU smoke tests: each runs at a tiny size, and the ratios it prints are its own."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_seed_loop_benchmark_prints_images_per_second_and_ratios():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "seed_loop.py"), "--models", "mlp",
                          "--images", "160", "--test-images", "32", "--trials", "2", "--epochs", "1",
                          "--device", "cpu", "--threads", "1"],
                         capture_output=True, text=True, timeout=240, cwd=ROOT / "tests")
    assert out.returncode == 0, out.stderr
    lines = {}
    for m in re.finditer(r"^(\w+)\s+(tune|final)\s+study\s+([\d.]+) images/s\s+ours\s+([\d.]+) images/s\s+"
                         r"ratio ours/study\s+([\d.]+) x$", out.stdout, re.M):
        model, stage, study, ours, ratio = m.groups()
        lines[(model, stage)] = float(study), float(ours), float(ratio)
    assert set(lines) == {("mlp", "tune"), ("mlp", "final")}, out.stdout
    for study, ours, ratio in lines.values():
        assert study > 0 and ours > 0
        assert abs(ratio - ours / study) <= 0.01 + 0.01 * ratio   # the printed ratio is the measured one


def test_seed_loop_times_concurrent_trials_as_tune_runs_them():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "seed_loop.py"), "--models", "mlp",
                          "--images", "160", "--test-images", "32", "--trials", "2", "--epochs", "1",
                          "--device", "cpu", "--threads", "2", "--workers", "2"],
                         capture_output=True, text=True, timeout=240, cwd=ROOT / "tests")
    assert out.returncode == 0, out.stderr
    line = re.search(r"^mlp\s+tune\s+study\s+([\d.]+) images/s\s+ours\s+([\d.]+) images/s\s+"
                     r"ratio ours/study\s+([\d.]+) x\s+\(trials forked x2\)$", out.stdout, re.M)
    assert line, out.stdout
    study, ours, ratio = map(float, line.groups())
    assert abs(ratio - ours / study) <= 0.01 + 0.01 * ratio


def test_job_threads_benchmark_times_both_thread_settings_and_prints_the_ratio():
    """benchmarks/job_threads.py on the lightest job of tests/tiny.yaml (download): both runs finish, the ratio
    is theirs."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "job_threads.py"), "--configfile",
                          "tests/tiny.yaml", "resources/digits/manifest.json"],
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("snakemake --cores 2 resources/digits/manifest.json --configfile tests/tiny.yaml")
    default = re.search(r"rules' threads \(half the cores per heavy job\):\s+([\d.]+) s\s+1\.00x$", out.stdout, re.M)
    every = re.search(r"--set-threads cache_features=2 tune=2 train=2 evaluate=2:\s+([\d.]+) s\s+([\d.]+)x$",
                      out.stdout, re.M)
    assert default and every, out.stdout
    first, second, ratio = float(default.group(1)), float(every.group(1)), float(every.group(2))
    assert first > 0 and second > 0
    # the printed ratio is the measured one: within what rounding the seconds to 0.1 s (and it to 0.01) allows
    assert (second - 0.05) / (first + 0.05) - 0.005 <= ratio <= (second + 0.05) / (first - 0.05) + 0.005


def test_concurrent_tune_benchmark_times_both_paths_and_checks_their_rows(tmp_path):
    """benchmarks/concurrent_tune.py on digits: sequential fmin and 2 forked workers, the ratio printed is
    theirs, the rows agree (one thread on both paths); --compare-to checks another trials table (here one
    with other lrs: no match)."""
    other = tmp_path / "trials.csv"
    other.write_text("trial,lr,best_val_loss,epochs_run\n0,0.5,1.0,1\n")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "concurrent_tune.py"), "--model", "mlp",
                          "--trials", "2", "--epochs", "1", "--workers", "2", "--compare-to", str(other)],
                         capture_output=True, text=True, timeout=240,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})  # one thread on both paths: equal rows
    assert out.returncode == 0, out.stderr
    times = {}
    for m in re.finditer(r"^(sequential|x2)\s+([\d.]+) s\s+ratio sequential/this\s+([\d.]+) x\s+search: (.+?); "
                         r"same lrs: (\w+); val losses within 1e-05: (\w+); epochs run: 2;", out.stdout, re.M):
        way, seconds, ratio, search, same_lr, close = m.groups()
        times[way] = float(seconds), float(ratio)
        assert (same_lr, close) == ("True", "True"), m.group(0)
        assert search == ("sequential" if way == "sequential" else "concurrent: forked x2")
    assert set(times) == {"sequential", "x2"}, out.stdout
    # the printed ratio is the measured one: within what rounding the seconds to 0.01 s (and it to 0.01) allows
    (seq, _), (conc, ratio) = times["sequential"], times["x2"]
    assert (seq - 0.005) / (conc + 0.005) - 0.005 <= ratio <= (seq + 0.005) / (conc - 0.005) + 0.005
    assert re.search(rf"^{re.escape(str(other))} same lrs as sequential: False; ", out.stdout, re.M), out.stdout
