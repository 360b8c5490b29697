# After DVC ran stages: Snakemake takes DVC's outputs as its own, without a manual step.
#
# DVC decides by content hashes, Snakemake by timestamps and its records (params, code, inputs,
# times). `dvc repro`, `dvc exp run`, `dvc exp apply`, `dvc checkout` and `dvc pull` leave outputs
# that Snakemake would plan again. So when DVC has written outputs since the last look (a stamp in
# .snakemake/), the main process starts `dvc status` and, beside it, a `snakemake --touch
# --forceall` with the same config; when DVC says every stage is current, the touch puts the
# outputs' timestamps in DAG order and records every job for Snakemake, and each job's record takes
# its real time from its benchmark file. When DVC sees changes nothing is touched: Snakemake decides
# by itself. workflow/Snakefile starts this look once common.smk has written the section files and
# waits for it after the last rule; docs/dvc.md has the user's side.
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import snakemake.cli
import snakemake.executors.touch
import yaml

from reprozoo.benchmark import benchmark_seconds, write_benchmark
from reprozoo.schema import LOADER

# Set in the touch only: the file descriptor it reads DVC's word from ("touch", or anything else to
# leave without touching). `make dvc-touch` runs one by hand: REPROZOO_DVC_TOUCH=0, the word on stdin.
DVC_TOUCH = "REPROZOO_DVC_TOUCH"
DVC_CHANGED = 3  # the touch's exit status when DVC sees changes: nothing was touched
DVC = shutil.which("dvc") or shutil.which("dvc", path=os.path.dirname(sys.executable))
DVC_SEEN = Path(".snakemake/reprozoo-dvc-seen")  # newer than every output DVC wrote: nothing to look at
TOUCHING = DVC_TOUCH in os.environ  # this process is the touch


def start_dvc_look():
    """In the main process, once the section files are written: `dvc status` and the touch, when DVC wrote
    something since the last look; None otherwise. The touch is this process forked, with Snakemake
    already loaded (a fresh interpreter would spend longer importing it than DVC takes to answer): it
    reads the workflow and builds its DAG while `dvc status` runs, then waits for the word
    (`touch_if_dvc_is_current`)."""
    if os.environ.get("REPROZOO_NO_DVC_SYNC") or TOUCHING or not workflow.is_main_process:
        return None
    if DVC is None or not os.path.isfile("dvc.lock") or not _dvc_written_since(DVC_SEEN):
        return None
    quiet = {**os.environ, "DVC_NO_ANALYTICS": "1"}  # our own question, not the user's command: no usage report
    status = subprocess.Popen([DVC, "status", "--json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=quiet)
    word, go = os.pipe()
    log = tempfile.TemporaryFile()
    sys.stdout.flush()
    sys.stderr.flush()
    touch = os.fork()
    if touch == 0:
        _run_touch(word, go, log)
    os.close(word)
    return status, touch, go, log


def _run_touch(word, go, log):
    """The forked touch: Snakemake's command line with the main process's config, its output to `log`;
    never returns."""
    code = 1
    try:
        os.close(go)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        os.environ[DVC_TOUCH] = str(word)
        args = ["--snakefile", workflow.main_snakefile]
        files = [str(f) for f in workflow.config_settings.configfiles]
        args += ["--configfile", *files] if files else []  # one flag: a second --configfile replaces the first
        if workflow.config_settings.config:  # `snakemake --config k=v`: values as YAML (JSON is YAML)
            args += ["--config", *(f"{k}={json.dumps(v)}" for k, v in workflow.config_settings.config.items())]
        snakemake.cli.main(["--touch", "--forceall", "--cores", "1", "--quiet", *args])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
    finally:
        os._exit(code)


def finish_dvc_look(look):
    """In the main process, before Snakemake builds its DAG: DVC's word to the touch, the touch waited for,
    one line said, the stamp set."""
    if look is None:
        return
    status, touch, go, log = look
    changes, _ = status.communicate()
    try:
        current = status.returncode == 0 and json.loads(changes or "{}") == {}
    except ValueError:  # not DVC's JSON: no word that it is current
        current = False
    os.write(go, b"touch\n" if current else b"stop\n")
    os.close(go)
    code = os.waitstatus_to_exitcode(os.waitpid(touch, 0)[1])
    if code == 0:
        print("reprozoo: outputs that DVC made are current (dvc status): recorded for Snakemake", file=sys.stderr)
    elif code != DVC_CHANGED:  # say so: Snakemake may now plan to rerun what DVC made
        log.seek(0)
        last = (log.read().decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        print(f"reprozoo: could not record DVC's outputs for Snakemake (snakemake --touch: {last})", file=sys.stderr)
    log.close()
    DVC_SEEN.parent.mkdir(exist_ok=True)
    DVC_SEEN.touch()


if TOUCHING:
    # Snakemake's touch sleeps 0.1 s per job so that outputs are newer than inputs; touched in DAG order
    # they are at least as new, all Snakemake asks (an input counts only when strictly newer), and on
    # the demo those sleeps were most of the first dry run after DVC.
    snakemake.executors.touch.Executor.SLEEPING_TIME = 0


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
