"""The tune journal: finished trials, kept so that an interrupted tune resumes from them.

Each finished trial (ok or failed) is one JSON line, `{"row": ..., "result": ...}`,
appended, flushed and fsynced as it comes back, in `<trials stem>.journal.jsonl`
beside trials.csv (`results/<dataset>/tune/<model>/trials.journal.jsonl`). It is
no declared output on purpose: Snakemake and DVC delete a job's outputs before
they rerun it, and a sibling file survives. tune deletes it once best.json and
trials.csv are written.

The first line is a fingerprint of what the trials' results depend on: the
model's resolved config section, the data, split and features files (size +
sha256), the code that trains (engine, objectives, tune, the model's files) and
the device type. A journal with another fingerprint, or none, is ignored and
replaced: trials are replayed only into the run they came from.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from pathlib import Path

from reprozoo.architectures import model_sources
from reprozoo.errors import DiskFull
from reprozoo.io import write_text

log = logging.getLogger("reprozoo.tune")

CODE = ["engine.py", "objectives.py", "tune.py", "trials.py"]   # besides the model's own files


def _sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fingerprint(cfg: dict, device, data_path, split_path, features_path=None) -> dict:
    """What a trial's result depends on, part by part (so a log line can say which part changed)."""
    files = {"data": data_path, "split": split_path, "features": features_path}
    code = [*model_sources(cfg["arch"]), *(Path(__file__).parent / name for name in CODE)]
    return {"config": hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest(),
            **{k: f"{os.path.getsize(p)} bytes, sha256 {_sha256(p)}" if p and os.path.isfile(p) else None
               for k, p in files.items()},  # a missing file: the stage's own check says so, in one line
            "code": hashlib.sha256(" ".join(map(_sha256, code)).encode()).hexdigest(), "device": device.type}


class Journal:
    """`open` reads what an earlier run of the same tune finished; `append` records each trial as it
    finishes (the file is started over at the first one); `close(remove=True)` once the outputs are written."""

    def __init__(self, trials_path, fingerprint: dict):
        trials_path = Path(trials_path)
        self.path = trials_path.with_name(trials_path.stem + ".journal.jsonl")
        self.fingerprint = fingerprint
        self.done: dict[int, tuple[dict, dict]] = {}
        self.file = None

    def _read(self) -> tuple[dict[int, tuple[dict, dict]], str | None]:
        """(finished trials by number, why the journal is not used, or None)."""
        if not self.path.exists():
            return {}, None
        lines = self.path.read_text(errors="replace").splitlines()
        try:
            header = json.loads(lines[0])["fingerprint"]
            changed = [k for k in self.fingerprint if header.get(k) != self.fingerprint[k]]
        except (IndexError, ValueError, KeyError, TypeError, AttributeError):
            return {}, "it has no fingerprint"
        if changed:
            return {}, f"it was written for another {', '.join(changed)}"
        done = {}
        for line in lines[1:]:
            try:
                entry = json.loads(line)
                done[entry["row"]["trial"]] = (entry["row"], entry["result"])
            except (ValueError, KeyError, TypeError):
                break  # a line cut short by a kill: the trial reruns
        return done, None

    def open(self, name: str, total: int) -> dict[int, tuple[dict, dict]]:
        """The trials an earlier run of the same tune finished: `{trial number: (row, result)}`."""
        self.done, why = self._read()
        if self.done:
            log.info("%s: resuming tune: %d of %d trials already finished (%s)", name, len(self.done), total,
                     self.path.name)
        elif why:
            log.info("%s: not resuming from %s: %s; starting over", name, self.path.name, why)
        return self.done

    def append(self, row: dict, result: dict) -> None:
        """One finished trial, on disk before the next one is reported."""
        if self.file is None:  # start the journal over with the trials kept (dropping a line a kill cut short)
            lines = [{"fingerprint": self.fingerprint}, *({"row": r, "result": x} for r, x in self.done.values())]
            write_text(self.path, "".join(json.dumps(line) + "\n" for line in lines))
            self.file = open(self.path, "a")
        try:
            self.file.write(json.dumps({"row": row, "result": result}) + "\n")
            self.file.flush()
            os.fsync(self.file.fileno())
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(f"{self.path}: no space left on device (or quota exceeded) while recording a "
                               f"finished trial: free space under {self.path.parent}/ and rerun (the trials "
                               f"recorded before are kept)") from None
            raise

    def close(self, remove: bool = False) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        if remove:
            self.path.unlink(missing_ok=True)
