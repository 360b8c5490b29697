"""Which card a GPU job runs on: every card of a workstation at work, none overbooked.

Snakemake counts GPU jobs (`resources: gpu=1`) but assigns no device (its issue #281), so
without help every job lands on the first card. A GPU job (cache-features, tune, train,
evaluate) therefore takes a slot itself before CUDA starts: the cards are those
`nvidia-smi` lists, narrowed to what a scheduler, a container or the user already chose
(`CUDA_VISIBLE_DEVICES`, by index or UUID); a card holds at most `slots` jobs
(REPROZOO_GPU_SLOTS, which the Snakefile sets from the config's `gpu_slots`). Slots are
filled slot by slot across the cards (the first job on each card before a second on any),
and the job then sees only its card, as `cuda:0` (`CUDA_VISIBLE_DEVICES=<its UUID>`).

A slot is an flock on a file in one folder per machine (/tmp/reprozoo-gpu-slots, or
REPROZOO_GPU_SLOTS_DIR): held by the job's own process, released by the operating system
when it ends however it ends (kill -9 included), shared by every checkout and user on the
machine. No daemon, nothing to clean by hand. A job that finds every slot taken waits.
Without nvidia-smi, with `--device cpu`, or when the preset names devices nvidia-smi
does not list (MIG instances), nothing is chosen and nothing changes.
"""
from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import time
from pathlib import Path

from reprozoo import runlock
from reprozoo.errors import UserError

SLOTS_ENV, DIR_ENV = "REPROZOO_GPU_SLOTS", "REPROZOO_GPU_SLOTS_DIR"
DEFAULT_SLOTS = 3  # three GPU jobs shared one H100 well (benchmarks/measured/h100-2026-11-24)
DEFAULT_DIR = "/tmp/reprozoo-gpu-slots"
WAIT_SECONDS = 0.5
log = logging.getLogger("reprozoo.gpus")

_held: dict = {}  # the card this process holds a slot on, and the open lock file that holds it


def cards() -> list[dict]:
    """The cards this job may use: nvidia-smi's, in its order, narrowed to CUDA_VISIBLE_DEVICES where set.
    Empty without nvidia-smi, or when the preset names devices that nvidia-smi does not list."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid,name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = [dict(zip(("index", "uuid", "name"), (f.strip() for f in line.split(",", 2))))
             for line in out.splitlines() if line.count(",") >= 2]
    preset = os.environ.get("CUDA_VISIBLE_DEVICES")
    if preset is None:
        return found
    chosen = [d.strip() for d in preset.split(",") if d.strip()]
    kept = [c for c in found if c["index"] in chosen or c["uuid"] in chosen]
    return kept if len(kept) == len(chosen) else []  # MIG ids or unknown names: keep the preset as it is


def slots() -> int:
    value = os.environ.get(SLOTS_ENV, str(DEFAULT_SLOTS))
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"{SLOTS_ENV}={value!r}: give the number of jobs a card may hold (1 or more)")
    return int(value)


def _try(path: Path) -> int | None:
    """The open, flocked lock file at `path`, or None when another process holds it."""
    fd = runlock.open_lock(path)
    if fd is None:
        raise UserError(f"{path}: cannot open a GPU slot's lock file (set {DIR_ENV} to a writable folder)")
    if runlock.try_lock(fd, fcntl.LOCK_EX):
        return fd
    os.close(fd)
    return None


def claim(device: str = "auto") -> dict | None:
    """Take a slot on a card for this process (waiting while all are taken) and show the job that card alone;
    the card, or None where there is nothing to choose (a CPU job, no nvidia-smi, a preset this cannot read)."""
    if device == "cpu" or device.startswith("cuda:") or _held:
        return _held.get("card")
    found = cards()
    if not found:
        return None
    per_card = slots()
    folder = Path(os.environ.get(DIR_ENV, DEFAULT_DIR))
    folder.mkdir(parents=True, exist_ok=True)
    if folder.stat().st_uid == os.getuid():
        folder.chmod(0o1777)  # one folder for every user of the machine, as /tmp
    waited = None
    while True:
        for slot in range(per_card):  # slot 0 of every card before slot 1 of any
            for card in found:
                fd = _try(folder / f"{card['uuid']}.slot{slot}")
                if fd is not None:
                    os.environ["CUDA_VISIBLE_DEVICES"] = card["uuid"]  # read by CUDA when it starts, after this
                    _held.update(card={**card, "slot": slot, "slots": per_card}, fd=fd)
                    log.info("GPU: card %s (%s, %s), slot %d of %d%s", card["index"], card["name"], card["uuid"],
                             slot + 1, per_card, f", after waiting {time.monotonic() - waited:.0f}s" if waited else "")
                    return _held["card"]
        if waited is None:
            waited = time.monotonic()
            log.info("GPU: all %d slots of %d card(s) are taken (%s); waiting for one", per_card * len(found),
                     len(found), folder)
        time.sleep(WAIT_SECONDS)


def held() -> dict | None:
    """The card this process holds a slot on (index, UUID, name, slot), for its records."""
    return _held.get("card")
