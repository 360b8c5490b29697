"""The benchmarks as CPU smoke tests: each runs at a tiny size, and the ratios it prints are its own."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BIN, ROOT, TINY_MLP, copy_workflow


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
    default = re.search(r"protocol.threads 1 \(jobs side by side\):\s+([\d.]+) s\s+1\.00x$", out.stdout, re.M)
    every = re.search(r"protocol.threads 2 \(one heavy job at a time\):\s+([\d.]+) s\s+([\d.]+)x$", out.stdout, re.M)
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


# A stand-in for nvidia-smi: the card's name, and with -l a sample every 0.1 s of utilisation and memory.
FAKE_SMI = """#!/usr/bin/env bash
case "$*" in
    *-l*) i=0; while :; do echo "2026/12/06 10:00:00.000, $((i * 37 % 101)), $((1000 + 7 * i))"; i=$((i + 1)); sleep 0.1; done;;
    *name*) echo "Stand-in GPU";;
esac
"""


@pytest.mark.slow
def test_gpu_session_reports_the_whole_studys_wall_time_and_the_cards_use(tmp_path):
    """benchmarks/gpu/session.sh's `tuned` step as a device call runs it, rehearsed on CPU with a stand-in
    nvidia-smi: the whole-study line, the utilisation summary of the samples it took, and a second call on
    the same machine that reports the finished study, not a rerun. The study is narrowed to its first jobs
    (STUDY_TARGETS): what is checked is the kit, not the pipeline."""
    (tmp_path / "wf").mkdir()
    work = copy_workflow(tmp_path / "wf")
    shutil.copytree(ROOT / "benchmarks", work / "benchmarks", ignore=shutil.ignore_patterns("measured", "__pycache__"))
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text(FAKE_SMI)
    (fake / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}", "DEVICE": "cpu",
           "DATASET": "digits", "TUNED_CONFIGS": " ".join(TINY_MLP), "CORES": "2", "GPU_JOBS": "1",
           "STATE": str(tmp_path / "state"), "STUDY_TARGETS": "results/digits/split-seed3407.json"}

    def call(out: Path) -> subprocess.CompletedProcess:
        out.mkdir()
        result = subprocess.run(["bash", "benchmarks/gpu/session.sh", "tuned"], cwd=work, env={**env, "OUT": str(out)},
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result

    first = call(tmp_path / "out1")
    line = re.compile(r"^Whole tuned study, measured: (\d+) min (\d+) s on one Stand-in GPU "
                      r"\(set-up (\d+) s, Snakemake (\d+) s\)$", re.M)
    whole = line.search((tmp_path / "out1/tuned.txt").read_text())
    assert whole, first.stdout
    assert 60 * int(whole[1]) + int(whole[2]) == int(whole[3]) + int(whole[4]) and int(whole[4]) > 0
    samples = [row.split(", ") for row in (tmp_path / "out1/gpu-util.csv").read_text().splitlines()]
    utilisation, memory = [int(s[1]) for s in samples], [int(s[2]) for s in samples]
    summary = re.search(r"GPU utilisation over this call \((\d+) samples, every 2 s\): mean (\d+)%, max (\d+)%; "
                        r"memory used at most (\d+) MiB", first.stdout)
    assert summary and int(summary[1]) == len(samples) > 10, first.stdout
    assert abs(int(summary[2]) - sum(utilisation) / len(utilisation)) <= 0.5
    assert (int(summary[3]), int(summary[4])) == (max(utilisation), max(memory))
    assert summary[0] in (tmp_path / "out1/timings.md").read_text()
    assert (work / "results/digits/split-seed3407.json").is_file() and not (work / "results/digits/tune").exists()

    second = call(tmp_path / "out2")  # the machine still warm: the study is not run again
    assert "the tuned study finished in an earlier call on this machine" in second.stdout
    assert line.search((tmp_path / "out2/tuned.txt").read_text())[0] == whole[0]


PLANNED = """| model | hparams | search | tune_s | train_s | epochs |
|:--|:--|:--|--:|--:|--:|
| a | tuned | concurrent | 600 | 600 | 5 |
| b | paper | | 0 | 240 | 2 |
| c | tuned | concurrent | 1200 | 1200 | 5 |
"""


def test_the_card_plan_schedules_tune_then_train_chains_on_every_slot(tmp_path):
    """benchmarks/cards.py on a table worked by hand: tunes take 5 training epochs (a, c measured; b gets 5
    x 120 s), so the chains are a 10+10, b 10+4, c 20+20 minutes. One slot runs them one after another (74);
    two run c on one and a, b, a's and b's training on the other (40, c's chain); four cannot beat c's chain."""
    (tmp_path / "timings.md").write_text(PLANNED)
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cards.py"), "--timings", tmp_path / "timings.md",
                          "--slots", "1", "--cards", "1", "2", "4"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "unmeasured tunes at 5.0 to 5.0 training epochs; 1 jobs per card" in out.stdout
    assert "the longest chain (tune, then train) 40.0 to 40.0 min" in out.stdout
    for cards, minutes, speedup in (("1", "74.0", "1.00"), ("2", "40.0", "1.85"), ("4", "40.0", "1.85")):
        assert re.search(rf"^  {cards} card\(s\):\s+{minutes} to\s+{minutes} min\s+{speedup}x one card$",
                         out.stdout, re.M), out.stdout
