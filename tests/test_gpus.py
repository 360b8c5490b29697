"""Every card of a GPU workstation (reprozoo/gpus.py), proven on CPU with stand-in cards: a stand-in
nvidia-smi lists them, jobs take slots on them, and CUDA (absent here) would see the chosen card alone."""
from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
from collections import Counter

import pytest

from conftest import ROOT, TINY_MLP, copy_workflow, run_snakemake
from reprozoo import gpus

# nvidia-smi --query-gpu=index,uuid,name --format=csv,noheader, for $FAKE_CARDS cards
FAKE_SMI = """#!/bin/sh
i=0
while [ "$i" -lt "${FAKE_CARDS:-0}" ]; do echo "$i, GPU-stand-in-$i, Stand-in GPU"; i=$((i+1)); done
"""
# A GPU job in miniature: take a slot, say which card it sees, hold the slot until killed.
HOLDER = ("import json, os, time; from reprozoo import gpus; card = gpus.claim(); "
          "print(json.dumps({'card': card, 'visible': os.environ.get('CUDA_VISIBLE_DEVICES')}), flush=True); "
          "time.sleep(600)")


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """stand_in(n, slots): n stand-in cards of `slots` slots each, a fresh slot folder, no preset."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(FAKE_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setattr(gpus, "_held", {})  # this process holds no slot yet, and forgets those it takes

    def make(n: int, slots: int = 1) -> None:
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("FAKE_CARDS", str(n))
        monkeypatch.setenv(gpus.SLOTS_ENV, str(slots))
        monkeypatch.setenv(gpus.DIR_ENV, str(tmp_path / "slots"))
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    yield make
    if "fd" in gpus._held:
        os.close(gpus._held["fd"])


class Holders:
    """Processes that each take a slot and hold it; killed at the end however the test ends."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self.procs.append(proc)
        return proc

    @staticmethod
    def card(proc: subprocess.Popen, timeout: float = 20) -> dict | None:
        """What the process printed once it held a slot, or None if it is still waiting after `timeout` s."""
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        return json.loads(proc.stdout.readline()) if ready else None

    def stop(self):
        for proc in self.procs:
            proc.kill()
            proc.wait()


@pytest.fixture
def holders():
    made = Holders()
    yield made
    made.stop()


@pytest.mark.parametrize("n", [1, 2, 4])
def test_jobs_fill_every_slot_of_every_card_then_wait_and_kill_9_frees_a_slot(stand_in, holders, n):
    stand_in(n, slots=2)
    procs = [holders.start() for _ in range(2 * n)]
    seen = [holders.card(p) for p in procs]
    assert all(s is not None for s in seen)
    assert Counter(s["card"]["uuid"] for s in seen) == {f"GPU-stand-in-{i}": 2 for i in range(n)}  # no card over
    assert all(s["visible"] == s["card"]["uuid"] for s in seen)  # each job sees its card alone, as cuda:0
    waiting = holders.start()
    assert holders.card(waiting, timeout=2) is None  # every slot taken: it waits
    victim = procs[-1]
    os.kill(victim.pid, signal.SIGKILL)  # the OS releases its flock
    victim.wait()
    took = holders.card(waiting)
    assert took is not None and took["card"]["uuid"] == seen[-1]["card"]["uuid"]


def test_the_first_job_on_each_card_comes_before_a_second_on_any(stand_in, holders):
    stand_in(4, slots=3)
    cards = [holders.card(holders.start())["card"] for _ in range(5)]  # one after another
    assert [c["index"] for c in cards] == ["0", "1", "2", "3", "0"]
    assert [c["slot"] for c in cards] == [0, 0, 0, 0, 1] and {c["slots"] for c in cards} == {3}


@pytest.mark.parametrize("preset, chosen", [("2", "GPU-stand-in-2"),
                                            ("GPU-stand-in-3,GPU-stand-in-1", "GPU-stand-in-1"),
                                            ("1,3", "GPU-stand-in-1")], ids=["slurm-index", "uuids", "indices"])
def test_a_scheduler_or_users_choice_of_cards_is_kept(stand_in, monkeypatch, preset, chosen):
    stand_in(4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", preset)  # as SLURM, Apptainer or the user set it
    card = gpus.claim()
    assert card["uuid"] == chosen and os.environ["CUDA_VISIBLE_DEVICES"] == chosen


@pytest.mark.parametrize("case", ["mig", "cpu", "cuda:1", "no-nvidia-smi"])
def test_nothing_is_chosen_where_there_is_nothing_to_choose(stand_in, monkeypatch, case):
    stand_in(2)
    if case == "mig":  # MIG instances: nvidia-smi's card list does not name them; the preset stays
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-4f2a")
    if case == "no-nvidia-smi":  # a CPU machine
        monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert gpus.claim(case if case.startswith(("cpu", "cuda")) else "auto") is None
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == ("MIG-4f2a" if case == "mig" else None)


def test_a_bad_slot_count_is_one_line(stand_in, monkeypatch):
    stand_in(1)
    monkeypatch.setenv(gpus.SLOTS_ENV, "0")
    with pytest.raises(gpus.UserError, match=r"REPROZOO_GPU_SLOTS='0': give the number of jobs a card may hold"):
        gpus.claim()


@pytest.mark.slow
def test_a_run_counts_every_slot_of_every_card_and_records_each_jobs_card(stand_in, tmp_path):
    """Snakemake on 2 stand-in cards of 1 slot: at most 2 GPU jobs at a time, and the tuning and training
    records name the card their job held (it ran on the CPU: CUDA saw no device)."""
    stand_in(2, slots=3)
    (tmp_path / "work").mkdir()
    work = copy_workflow(tmp_path / "work")
    (work / "slots.yaml").write_text("gpu_slots: 1\n")  # the config's value, over the environment's
    result = run_snakemake("results/digits/train/mlp/seed3407/run.json", "--cores", "2",
                           "--configfile", *TINY_MLP, "slots.yaml", cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r'Provided resources: .*gpu=(Resource\("gpu", )?2\b', result.stdout + result.stderr)
    best = json.loads((work / "results/digits/tune/mlp/best.json").read_text())
    run = json.loads((work / "results/digits/train/mlp/seed3407/run.json").read_text())
    for record in (best, run):
        assert record["card"]["uuid"] in {"GPU-stand-in-0", "GPU-stand-in-1"} and record["card"]["slots"] == 1
    assert run["device"] == "cpu"
    log = (work / "logs/digits/train/mlp/seed3407.log").read_text()
    assert f"GPU: card {run['card']['index']} (Stand-in GPU, {run['card']['uuid']}), slot 1 of 1" in log
