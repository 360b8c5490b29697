# After DVC ran stages: Snakemake takes DVC's outputs as its own, without a manual step.
#
# DVC decides by content hashes, Snakemake by timestamps and its records (params, code, inputs,
# times). `dvc repro`, `dvc exp run`, `dvc exp apply`, `dvc checkout` and `dvc pull` leave outputs
# that Snakemake would plan again. So when DVC has written outputs since the last look (a stamp in
# .snakemake/), the main process asks DVC for its status and, beside it, runs `snakemake --touch
# --forceall` with the same config; when DVC says every stage is current, the touch puts the
# outputs' timestamps in DAG order and records every job for Snakemake, and each job's record takes
# its real time from its benchmark file. When DVC sees changes nothing is touched: Snakemake decides
# by itself. Both are this process forked (a fresh interpreter would spend longer importing
# Snakemake or DVC than either takes to answer). DVC's side starts before common.smk writes the
# section files and loads DVC meanwhile; it asks for the status once they are written (DVC
# compares them) and gives its word to the touch, which waits for it with its DAG built.
# workflow/Snakefile calls the three steps; docs/dvc.md has the user's side.
import atexit
import functools
import json
import os
import signal
import sys
import tempfile
from importlib.util import find_spec
from pathlib import Path
from typing import NamedTuple

import snakemake.cli
import snakemake.executors.touch
import snakemake.io
import yaml

from reprozoo.benchmark import benchmark_seconds, write_benchmark
from reprozoo.schema import LOADER

# Set in the touch only: the file descriptor it reads DVC's word from ("touch", or anything else to
# leave without touching). `make dvc-touch` runs one by hand: REPROZOO_DVC_TOUCH=0, the word on stdin.
DVC_TOUCH = "REPROZOO_DVC_TOUCH"
DVC_CHANGED = 3  # the touch's exit status when DVC sees changes: nothing was touched
DVC_SEEN = Path(".snakemake/reprozoo-dvc-seen")  # newer than every output DVC wrote: nothing to look at
TOUCHING = DVC_TOUCH in os.environ  # this process is the touch


class Look(NamedTuple):
    """The main process's side of a look: DVC's side (pid), its go-ahead and DVC's word to the touch
    (pipe ends), then the touch (pid) and the file its output goes to."""

    dvc: int
    go: int
    word: int
    say: int
    touch: int = 0
    log: object = None


def start_dvc_look():
    """In the main process, before common.smk writes the section files: DVC's side of the look, forked,
    when DVC wrote something since the last look; None otherwise."""
    if os.environ.get("REPROZOO_NO_DVC_SYNC") or TOUCHING or not workflow.is_main_process:
        return None
    if find_spec("dvc") is None or not os.path.isfile("dvc.lock") or not _dvc_written_since(DVC_SEEN):
        return None
    word, say = os.pipe()  # DVC's side -> the touch
    wait, go = os.pipe()  # the main process -> DVC's side, once the section files are written
    pid = _fork()
    if pid == 0:
        os.close(word)
        os.close(go)
        _exit_with(_ask_dvc, wait, say)
    os.close(wait)
    atexit.register(_stop_unasked, pid)  # common.smk may end the run (a config error): DVC's side with it
    return Look(pid, go, word, say)


def _stop_unasked(pid):
    """At the main process's exit before the section files were written: DVC's side, which has taken no
    lock and written nothing yet, ends at once rather than after it has loaded DVC."""
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def touch_beside_dvc(look):
    """In the main process, once common.smk has written the section files: DVC's side may ask for its
    status, and the touch starts: it reads the workflow and builds its DAG while DVC answers, then waits
    for DVC's word (`touch_if_dvc_is_current`)."""
    if look is None:
        return None
    log = tempfile.TemporaryFile()
    pid = _fork()
    if pid == 0:
        os.close(look.go)
        os.close(look.say)
        _exit_with(_run_touch, look.word, log)
    os.close(look.word)
    os.close(look.say)  # DVC's side holds the only writer: the touch reads an end of file if it dies
    atexit.unregister(_stop_unasked)  # from here DVC's side may hold DVC's lock: it ends by itself
    os.write(look.go, b"look\n")
    os.close(look.go)
    return look._replace(touch=pid, log=log)


def _fork():
    sys.stdout.flush()
    sys.stderr.flush()
    return os.fork()


def _exit_with(work, *args):
    """The forked child: `work(*args)`, then its exit status, never Snakemake's exit handlers."""
    code = 1
    try:
        work(*args)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
    except BaseException:  # say nothing: the main process decides what a look that failed means
        pass
    finally:
        os._exit(code)


def _ask_dvc(wait, say):
    """DVC's side: DVC loaded while common.smk writes the section files, then, on the main process's go,
    `dvc status` as its Python API answers it, under DVC's lock; its word to the touch: "touch" when
    every stage is current. Quiet: DVC's own messages are not the user's business here."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    from dvc.repo import Repo  # here, not above: loading DVC would cost every Snakemake start 0.3 s

    with Repo(".") as repo:
        with os.fdopen(wait) as main:
            if main.readline().strip() != "look":  # the main process stopped before the section files
                return
        current = repo.status() == {}
    os.write(say, b"touch\n" if current else b"stop\n")


def _run_touch(word, log):
    """The forked touch: Snakemake's command line with the main process's config, its output to `log`."""
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    os.environ[DVC_TOUCH] = str(word)
    args = ["--snakefile", workflow.main_snakefile]
    files = [str(f) for f in workflow.config_settings.configfiles]
    args += ["--configfile", *files] if files else []  # one flag: a second --configfile replaces the first
    if workflow.config_settings.config:  # `snakemake --config k=v`: values as YAML (JSON is YAML)
        args += ["--config", *(f"{k}={json.dumps(v)}" for k, v in workflow.config_settings.config.items())]
    snakemake.cli.main(["--touch", "--forceall", "--cores", "1", "--quiet", *args])


def finish_dvc_look(look):
    """In the main process, before Snakemake builds its DAG: both sides waited for, one line said, the
    stamp set."""
    if look is None:
        return
    code = os.waitstatus_to_exitcode(os.waitpid(look.touch, 0)[1])
    os.waitpid(look.dvc, 0)
    if code == 0:
        print("reprozoo: outputs that DVC made are current (dvc status): recorded for Snakemake", file=sys.stderr)
    elif code != DVC_CHANGED:  # say so: Snakemake may now plan to rerun what DVC made
        look.log.seek(0)
        last = (look.log.read().decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        print(f"reprozoo: could not record DVC's outputs for Snakemake (snakemake --touch: {last})", file=sys.stderr)
    look.log.close()
    DVC_SEEN.parent.mkdir(exist_ok=True)
    DVC_SEEN.touch()


if TOUCHING:
    # Snakemake's touch sleeps 0.1 s per job so that outputs are newer than inputs; touched in DAG order
    # they are at least as new, all Snakemake asks (an input counts only when strictly newer), and on
    # the demo those sleeps were most of the first dry run after DVC.
    snakemake.executors.touch.Executor.SLEEPING_TIME = 0
    # Snakemake records each output with its job's input checksums, hashing every input again for every
    # output (the report's job: dozens of each); a touch changes no file's content, so each is hashed once.
    _hash, _hashed = snakemake.io._IOFile.checksum, {}

    @functools.wraps(_hash)
    async def _hash_once(self, threshold=None, force=False, algorithm=None):
        key = (str(self), threshold, force, algorithm)
        if key not in _hashed:
            _hashed[key] = await _hash(self, threshold, force, algorithm)
        return _hashed[key]

    snakemake.io._IOFile.checksum = _hash_once


def touch_if_dvc_is_current():
    """`onstart` of the touch: leave (DVC_CHANGED) before touching anything unless DVC sees no change."""
    if not TOUCHING:
        return
    try:
        with os.fdopen(int(os.environ[DVC_TOUCH])) as word:
            current = word.readline().strip() == "touch"
    except (OSError, ValueError):  # no such descriptor: no word
        current = False
    if not current:
        sys.exit(DVC_CHANGED)


def record_job_times():
    """`onsuccess` of the touch, which recorded every job as run in no time: each job's records take its
    real run time (start = end - seconds) from its benchmark file, which DVC's job wrote (`--benchmark`)
    or Snakemake did, so that the report's Statistics page shows what the jobs took. A job whose
    benchmark is missing (its outputs came by `dvc pull`) gets one of NAs: Snakemake would otherwise
    plan the report again for the lack of it."""
    if not TOUCHING:
        return
    persistence = workflow.persistence
    for job in workflow.dag.jobs:
        if job.benchmark and not os.path.isfile(job.benchmark):
            write_benchmark(job.benchmark)
        seconds = benchmark_seconds(job.benchmark) if job.benchmark else None
        if seconds is None:  # no benchmark, or NA: the touch's 0 s stays
            continue
        for f in job.output:
            record = persistence.metadata(f)
            if record and record.endtime is not None:
                record.starttime = record.endtime - seconds
                persistence._write_record(persistence._get_key(f), record)  # Snakemake's own record store


def _dvc_written_since(stamp):
    """Whether dvc.lock or an output it lists is newer than the stamp."""
    seen = stamp.stat().st_mtime if stamp.is_file() else 0
    lock = yaml.load(Path("dvc.lock").read_text(), Loader=LOADER) or {}
    paths = ["dvc.lock"] + [o["path"] for s in lock.get("stages", {}).values() for o in s.get("outs", [])]
    return any(os.path.exists(p) and os.path.getmtime(p) > seen for p in paths)
