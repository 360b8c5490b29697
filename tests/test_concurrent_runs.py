"""Commands started beside a running study change nothing it reads or writes, or are refused before
they write anything (reprozoo/runlock.py): a second run or a dry run with another config, a stage or
`resolve` by hand, a DVC stage, Snakemake beside DVC; and a killed holder frees the folder."""
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import BIN, TINY_MLP, copy_workflow, one_line_error, run_cli, run_snakemake
from reprozoo import runlock
from reprozoo.io import write_text

BUSY = "a run is going on in this folder"


def _stage_pids(work: Path, stage: str) -> list[int]:
    """The `python -m reprozoo <stage>` processes working in `work` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            if b"reprozoo" in argv and stage.encode() in argv and os.readlink(f"/proc/{entry}/cwd") == str(work):
                found.append(int(entry))
        except (OSError, ValueError):
            continue
    return found


def _refused(result) -> str:
    """Snakemake stopped by reprozoo before any job: one `reprozoo: ...` line, no traceback."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("reprozoo: ")]
    assert len(lines) == 1 and BUSY in lines[0], result.stderr[-3000:]
    assert "rule " not in result.stdout, result.stdout  # no job started
    return lines[0]


@pytest.mark.slow
def test_commands_beside_a_running_study_change_nothing_it_reads(tmp_path):
    """The issue's reproducer: run A tunes mlp at batch 32; a second run, a dry run with another config
    (batch 8), a stage by hand and `resolve` come while A's tune job runs (held still with SIGSTOP, so
    the check does not race the machine's speed). A ends as if alone: tuned and trained at 32."""
    work = tmp_path / "wf"
    work.mkdir()
    copy_workflow(work)
    (work / "A.yaml").write_text("models:\n  mlp:\n    batch_size: 32\n")
    (work / "B.yaml").write_text("models:\n  mlp:\n    batch_size: 8\n")
    a_config, b_config = [*TINY_MLP, "A.yaml"], [*TINY_MLP, "B.yaml"]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "TQDM_DISABLE": "1"}
    trained = "results/digits/train/mlp/seed3407/run.json"  # tune, then train: what the reproducer mixed up
    run_a = subprocess.Popen([str(BIN / "snakemake"), trained, "--cores", "2", "--configfile", *a_config], cwd=work,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    section = work / "results/digits/config/model-mlp.json"
    deadline = time.time() + 300
    while time.time() < deadline and not _stage_pids(work, "tune") and run_a.poll() is None:
        time.sleep(0.05)
    tune = _stage_pids(work, "tune")
    assert tune, f"run A never started its tune job: {run_a.communicate()[0][-3000:]}"
    for pid in tune:
        os.kill(pid, signal.SIGSTOP)
    try:
        planned = section.read_bytes()
        assert json.loads(planned)["cfg"]["batch_size"] == 32
        with ThreadPoolExecutor(5) as pool:  # side by side, as impatient users would
            second = pool.submit(run_snakemake, "--cores", "1", "--configfile", *b_config, cwd=work)
            dry = pool.submit(run_snakemake, "-n", "--configfile", *b_config, cwd=work)
            same = pool.submit(run_snakemake, "-n", "--configfile", *a_config, cwd=work)  # A's own: a plan
            by_hand = pool.submit(run_cli, "train", "--dataset", "digits", "--model", "mlp", cwd=work)
            resolve = pool.submit(run_cli, "resolve", "--config", "config.yaml", *[f"--config={c}" for c in b_config],
                                  cwd=work)
        second, dry, same, by_hand, resolve = (f.result() for f in (second, dry, same, by_hand, resolve))
        assert run_a.poll() is None
    finally:
        for pid in tune:
            os.kill(pid, signal.SIGCONT)
    _refused(second)
    assert "would change the settings it reads (results/" in _refused(dry)
    assert same.returncode == 0 and "rule report" in same.stdout, same.stderr[-3000:]  # A's config, all targets
    assert BUSY in one_line_error(by_hand, "train")
    assert BUSY in one_line_error(resolve, "resolve")
    assert section.read_bytes() == planned

    out = run_a.communicate(timeout=600)[0]
    assert run_a.returncode == 0, out[-3000:]
    assert section.read_bytes() == planned
    run = json.loads((work / trained).read_text())
    assert run["config"]["batch_size"] == 32
    after = run_snakemake(trained, "-n", "--configfile", *a_config, cwd=work)
    assert after.returncode == 0 and "Nothing to be done" in after.stdout + after.stderr


# ------------------------------------------------------------------ the lock itself, in this process

@pytest.fixture
def folder(tmp_path, monkeypatch):
    """An empty working folder, without a Snakemake run around this test."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(runlock.RUN_ENV, raising=False)
    monkeypatch.delenv(runlock.DVC_STAGE_ENV, raising=False)
    yield tmp_path
    while runlock._held:  # what begin() kept for "this process's life"
        os.close(runlock._held.pop())


def _holder(*code: str) -> subprocess.Popen:
    """Another process that runs `code` in the current folder, says 'ready', then sleeps."""
    script = "\n".join([*code, "print('ready', flush=True)", "import time; time.sleep(120)"])
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


RUN = "from reprozoo import runlock; from reprozoo.io import write_text; runlock.begin({role!r}, {{}}, write_text)"
SECTION = "results/digits/config/model-mlp.json"


def test_a_dry_run_with_the_same_config_beside_a_run_needs_no_lock(folder):
    write_text(SECTION, "a\n")
    holder = _holder(RUN.format(role="run"))
    try:
        assert runlock.begin("check", {SECTION: "a\n"}, write_text) == []
        with pytest.raises(runlock.Busy, match=rf"{BUSY} \(pid {holder.pid}: .*python -c"):
            runlock.begin("check", {SECTION: "b\n"}, write_text)
        with pytest.raises(runlock.Busy, match=BUSY):
            runlock.begin("stage", {}, write_text)
    finally:
        holder.kill()
        holder.wait()
    assert Path(SECTION).read_text() == "a\n"


def test_kill_9_frees_the_folder(folder):
    holder = _holder(RUN.format(role="run"))
    with pytest.raises(runlock.Busy):
        runlock.begin("run", {}, write_text)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert runlock.begin("check", {SECTION: "b\n"}, write_text) == [SECTION]  # no stale lock to clear by hand


def test_stages_share_the_folder_and_keep_a_run_out(folder):
    holder = _holder(RUN.format(role="stage"))  # a stage started by hand (or by DVC)
    try:
        assert runlock.begin("stage", {}, write_text) == []  # two stages by hand: fine
        with pytest.raises(runlock.Busy, match=BUSY):
            runlock.begin("check", {SECTION: "b\n"}, write_text)  # would change what the stage reads
        os.close(runlock._held.pop())
        fd = os.open(runlock.LOCK, os.O_RDWR)
        with pytest.raises(BlockingIOError):  # a Snakemake run's onstart cannot take it either
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
    finally:
        holder.kill()
        holder.wait()


def test_a_dvc_stage_beside_a_snakemake_run_is_refused(folder, monkeypatch):
    holder = _holder(RUN.format(role="run"))
    monkeypatch.setenv(runlock.DVC_STAGE_ENV, "train@digits-mlp")
    try:
        with pytest.raises(runlock.Busy, match=BUSY):
            runlock.begin("stage", {}, write_text)
    finally:
        holder.kill()
        holder.wait()


def test_snakemake_beside_dvc_is_refused(folder):
    """Between stages DVC holds its repository lock (zc.lockfile, taken here by DVC's own class);
    while a stage runs, its rwlock names the stage's outputs with DVC's pid."""
    (folder / ".dvc/tmp").mkdir(parents=True)
    holder = _holder("from dvc.lock import Lock", "lock = Lock('.dvc/tmp/lock'); lock.lock()")
    try:
        with pytest.raises(runlock.Busy, match=r"a dvc command holds .dvc/tmp/lock"):
            runlock.begin("run", {}, write_text)
        with pytest.raises(runlock.Busy, match=r"a dvc command holds"):
            runlock.begin("check", {SECTION: "b\n"}, write_text)
        assert runlock.begin("check", {}, write_text) == []  # a dry run that changes nothing
    finally:
        holder.kill()
        holder.wait()
    rwlock = {"write": {str(folder / "results/digits/data.npz"): {"pid": holder.pid, "cmd": "dvc repro"}}, "read": {}}
    (folder / ".dvc/tmp/rwlock").write_text(json.dumps(rwlock))
    assert runlock.begin("run", {}, write_text) == []  # that pid is gone: a stale entry is no run
    os.close(runlock._held.pop())
    rwlock["write"][str(folder / "results/digits/data.npz")]["pid"] = os.getppid()  # alive
    (folder / ".dvc/tmp/rwlock").write_text(json.dumps(rwlock))
    with pytest.raises(runlock.Busy, match=r"dvc is running a stage that writes .*data.npz"):
        runlock.begin("run", {}, write_text)


def test_a_folder_that_cannot_hold_the_lock_gives_the_write_error(folder):
    (folder / "results").write_text("a file where the folder should be")
    with pytest.raises(runlock.UserError, match=r"results/digits/config/model-mlp.json: cannot write it"):
        runlock.begin("check", {SECTION: "b\n"}, write_text)
    assert runlock.begin("check", {}, write_text) == []
