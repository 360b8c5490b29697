"""One study at a time in a folder: what a second command beside a running one may do.

Snakemake takes its own lock only after the Snakefile is read, and the Snakefile writes the
section files (reprozoo/sections.py) while it is read; DVC releases its repository lock while a
stage's command runs; neither knows a stage started by hand. So every command that writes this
folder's `results/` takes `results/.run.lock` with flock(2), which the operating system releases
when the process ends, however it ends (kill -9 included):

- a Snakemake run (its main process) takes it exclusively for its whole life; its jobs inherit
  REPROZOO_RUN and take nothing;
- a stage started by hand or by DVC shares it for its life;
- a dry run (or a check) that would change section files takes it exclusively while it writes
  them, and nothing when it would change nothing.

Writers take turns on `results/.sections.lock` (held for milliseconds). A command that cannot
take what it needs is refused before it writes anything, with one line naming who holds the
folder. Between its stages DVC holds its repository lock (.dvc/tmp/lock), and while a stage runs
its rwlock file names the stage's outputs: a run beside a DVC run is refused from those.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path

from reprozoo.errors import UserError

LOCK = Path("results/.run.lock")
WRITING = Path("results/.sections.lock")
RUN_ENV = "REPROZOO_RUN"   # set by the Snakemake run that holds LOCK; its jobs inherit it
DVC_STAGE_ENV = "DVC_STAGE"  # set by DVC for each stage command it runs
TURN_S = 30  # s a writer waits for another one's turn

_held: list[int] = []  # descriptors whose locks this process keeps until it ends


class Busy(UserError):
    """Another run uses this folder."""


def open_lock(path: Path) -> int | None:
    """A descriptor of the lock file (created on demand), or None where results/ cannot hold one."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
    for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):  # flock works on a read-only descriptor too
        with contextlib.suppress(OSError):
            return os.open(path, flags, 0o666)
    return None


def try_lock(fd: int, operation: int) -> bool:
    """flock without waiting: True when taken, False when another process holds it."""
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def holders(path: Path) -> str:
    """Who holds a lock on `path`, from /proc/locks (Linux): 'pid 12: snakemake --cores 2 ...'."""
    try:
        inode = os.stat(path).st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return "another process"
    pids = sorted({int(f[4]) for f in (line.split() for line in lines)
                   if len(f) > 5 and f[5].rsplit(":", 1)[-1] == str(inode) and f[4].isdigit()} - {os.getpid()})
    return ", ".join(f"pid {pid}: {_command(pid)}" for pid in pids) or "another process"


def _command(pid: int) -> str:
    """A process's command line as typed: `snakemake --cores 2 ...`, not the interpreter's path."""
    try:
        argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return "ended"
    if len(argv) > 1 and os.path.basename(argv[0]).startswith("python") and not argv[1].startswith("-"):
        argv = argv[1:]  # a script run by its interpreter: snakemake, dvc
    text = " ".join([os.path.basename(argv[0]), *argv[1:]]) if argv else "?"
    return text if len(text) <= 80 else text[:77] + "..."


def dvc_busy(root: Path = Path(".")) -> str | None:
    """What a DVC command is doing in this repository now, or None: it holds the repository lock
    (between stages; zc.lockfile's flock), or its rwlock names a running stage's outputs."""
    tmp = root / ".dvc" / "tmp"
    lock = tmp / "lock"
    if lock.is_file():
        with contextlib.suppress(OSError), open(lock, "a") as f:
            if not try_lock(f.fileno(), fcntl.LOCK_EX):
                return f"a dvc command holds {lock} ({holders(lock)})"
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    try:
        writes = json.loads((tmp / "rwlock").read_text()).get("write", {})
    except (OSError, ValueError, AttributeError):
        return None
    for path, info in sorted(writes.items()):
        with contextlib.suppress(KeyError, TypeError, ValueError, ProcessLookupError, PermissionError):
            os.kill(int(info["pid"]), 0)
            return f"dvc is running a stage that writes {path} (pid {info['pid']}: {info.get('cmd', '')[:60]})"
    return None


def changed(files: dict[str, str]) -> list[str]:
    """Those of `files` (path -> text) whose text differs from what is there."""
    def same(path: str, text: str) -> bool:
        try:  # not a regular file (a FIFO would block the read): replaced by the write
            return os.path.isfile(path) and Path(path).read_text() == text
        except (OSError, UnicodeDecodeError):
            return False

    return [path for path, text in files.items() if not same(path, text)]


def _refusal(role: str, paths: list[str], who: str) -> str:
    if role == "check":
        more = f" and {len(paths) - 1} more" if len(paths) > 1 else ""
        return (f"a run is going on in this folder ({who}): this config would change the settings it reads "
                f"({paths[0]}{more}); wait for it to end, or use its config")
    what = "the section files it reads" if paths else "the files it reads and writes"
    return f"a run is going on in this folder ({who}) and this command would change {what}; wait for it to end"


def _take_turn(fd: int) -> None:
    """Writers take turns on WRITING: each holds it for the milliseconds of a write."""
    deadline = time.monotonic() + TURN_S
    while not try_lock(fd, fcntl.LOCK_EX):
        if time.monotonic() > deadline:
            raise Busy(f"{WRITING} has been held for {TURN_S} s by {holders(WRITING)}, which writes section files; "
                       "wait for it to end")
        time.sleep(0.05)


def begin(role: str, files: dict[str, str], write) -> list[str]:
    """Take this folder for a command and write those of `files` (path -> text) that differ from
    what is there, with `write(path, text)`; return their paths. `role`: 'run' (a Snakemake run:
    exclusive, kept), 'stage' (shared, kept) or 'check' (exclusive while writing, nothing kept).
    Raises Busy, having written nothing, when another command holds what the role needs."""
    if role == "check" and not changed(files):
        return []
    guard = open_lock(WRITING)
    try:
        if guard is not None:
            _take_turn(guard)
        paths = changed(files)
        fd = open_lock(LOCK)
        if fd is None:  # results/ cannot hold the lock file: nothing can be written there either
            for path in paths:
                write(path, files[path])  # its one-line error names the file
            return paths
        exclusive = role == "run" or bool(paths)
        if not try_lock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH):
            who = holders(LOCK)
            os.close(fd)
            raise Busy(_refusal(role, paths, who))
        try:
            dvc = (role != "check" or paths) and not os.environ.get(DVC_STAGE_ENV) and dvc_busy()
            if dvc:
                raise Busy(_refusal(role, paths, dvc))
            for path in paths:
                write(path, files[path])
        except BaseException:
            os.close(fd)
            raise
        if role == "check":
            os.close(fd)
        else:
            if role == "stage" and exclusive:
                fcntl.flock(fd, fcntl.LOCK_SH)  # while the turn is held, so no writer slips in between
            _held.append(fd)
        return paths
    finally:
        if guard is not None:
            os.close(guard)
