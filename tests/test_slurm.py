"""The pipeline on a live SLURM cluster: `snakemake --executor slurm --profile profiles/slurm`.

A throwaway one-node cluster (tests/slurm_cluster.py) runs tests/tiny.yaml, one sbatch job
per rule; a local run of the same config runs beside it for comparison. The node has two
GRES GPUs (no card behind them), so the GPU rules' `--gpus=1` is granted as shipped.

Skipped only where the SLURM/munge binaries are missing (or not root) and CI is not set;
with CI=true (`.ci/run`) a cluster that does not start is a failure. `pytest -m "not slurm"`
leaves this module out.
"""
import json
import os
import re
import shutil
import subprocess
import time

import pandas as pd
import pytest
import yaml

from conftest import BIN, ROOT, TINY_MLP, copy_workflow, run_snakemake
from slurm_cluster import ClusterError, SlurmCluster, missing_binaries

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

PROFILE = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
GPU_RULES = {"tune", "train", "evaluate", "cache_features"}
# digits, mlp. download is a localrule, `all` runs no command.
SLURM_JOBS = {("prepare", "digits"), ("split", "digits_3407"), ("verify", "digits_mlp"), ("tune", "digits_mlp"),
              ("train", "digits_mlp_3407"), ("evaluate", "digits_mlp_3407"),
              ("report", "digits")}
# Both runs at 1 thread per job (rules ask 4 for the GPU rules): --max-threads scales them
# down to what a node offers, and two 1-CPU jobs share the 2-CPU test node instead of queueing.
THREADS = 1
PROFILE_MEM_MB = max(r.get("mem_mb", 0) for r in [PROFILE["default-resources"], *PROFILE["set-resources"].values()])
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")
SBATCH_CALL = re.compile(r"^sbatch call: (sbatch .*?) --wrap=", re.M)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = None
    if missing_binaries():
        why = f"SLURM/munge not installed ({', '.join(missing_binaries())} missing: apt-get install slurm-wlm munge)"
    elif os.geteuid() != 0:
        why = "a test cluster's slurmd needs root"
    if why and not in_ci():
        pytest.skip(why)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        try:
            cluster.start()
        except ClusterError as e:
            pytest.fail(f"could not start the test SLURM cluster: {e}", pytrace=False)
        yield cluster
    finally:  # also after a failed start, an error or Ctrl-C: every daemon it started, by PID
        cluster.stop()


def slurm_snakemake(cluster, work, *args, timeout=600):
    """`snakemake --executor slurm --profile profiles/slurm` against the test cluster.

    Test-cluster settings only: it has no accounting database (job states from squeue,
    no account), 1 s before the first status check instead of 40 for speed, successful
    jobs' SLURM logs kept to be inspected, --verbose to print each sbatch line, and
    --max-threads (docs/slurm.md: nodes smaller than the rules' 4 threads).
    """
    # A CI machine with less memory than the profile asks of a rule (8 GB for tune/train/
    # evaluate): cap every job's memory at the node's (docs/slurm.md). A later --resources replaces it.
    small = ["--resources", f"mem_mb={cluster.memory_mb}"] if cluster.memory_mb < PROFILE_MEM_MB else []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", str(cluster.conf))
        return run_snakemake("--executor", "slurm", "--profile", "profiles/slurm", "--configfile", *TINY_MLP, *small,
                             "--max-threads", THREADS, "--slurm-status-command", "squeue",
                             "--slurm-no-account", "--slurm-init-seconds-before-status-checks", "1",
                             "--slurm-keep-successful-logs", "--verbose", *args, cwd=work, timeout=timeout)


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    """tests/tiny.yaml through SLURM, and locally at the same thread count (both at once:
    the SLURM run mostly waits on status polls)."""
    slurm_work = copy_workflow(tmp_path_factory.mktemp("slurm-run"))
    local_work = copy_workflow(tmp_path_factory.mktemp("local-run"))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "TQDM_DISABLE": "1"}
    env.pop("SLURM_CONF", None)
    local_log = local_work / "local-run.log"
    start = time.perf_counter()
    with open(local_log, "w") as log:
        local = subprocess.Popen([str(BIN / "snakemake"), "--cores", str(cluster.cpus), "--max-threads",
                                  str(THREADS), "--configfile", *TINY_MLP], cwd=local_work, env=env, stdout=log,
                                 stderr=subprocess.STDOUT)
        try:
            slurm = slurm_snakemake(cluster, slurm_work)
            slurm_seconds = time.perf_counter() - start
            local.wait(timeout=600)
        finally:
            if local.poll() is None:
                local.kill()
                local.wait()
    assert local.returncode == 0, local_log.read_text()[-3000:]
    assert slurm.returncode == 0, (slurm.stdout + slurm.stderr)[-6000:]
    print(f"SLURM run: {slurm_seconds:.0f}s; both runs: {time.perf_counter() - start:.0f}s")
    # SLURM's record of the run (MinJobAge keeps finished jobs for an hour)
    jobs = cluster.run("squeue", "--states=all", "--noheader", "--format=%i|%T|%k").stdout
    details = cluster.run("scontrol", "--oneliner", "show", "job").stdout
    return slurm_work, local_work, slurm.stdout + slurm.stderr, jobs, details


def submitted(output: str) -> dict[str, str]:
    """SLURM job id -> its log, as the plugin reported each submission."""
    return {jobid: log for jobid, log in SUBMITTED.findall(output)}


def rule_of(sbatch: str) -> tuple[str, str]:
    """(rule, wildcards) from the plugin's `--comment rule_<rule>_wildcards_<wildcards>`."""
    comment = re.search(r"--comment (\S+)", sbatch).group(1)
    rule, _, wildcards = comment.removeprefix("rule_").partition("_wildcards_")
    return rule, wildcards


def test_every_job_ran_as_a_slurm_job(runs):
    work, _, output, squeue, _ = runs
    jobs = submitted(output)
    assert len(jobs) == len(SLURM_JOBS), output[-4000:]
    # SLURM's own record: one COMPLETED job per rule and wildcards, under the plugin's comment
    states = {}
    for line in squeue.splitlines():
        jobid, state, comment = line.split("|", 2)
        rule, _, wildcards = comment.removeprefix("rule_").partition("_wildcards_")
        states[jobid] = (rule, wildcards, state)
    assert set(states) == set(jobs)
    assert {(r, w) for r, w, _ in states.values()} == SLURM_JOBS
    assert {s for _, _, s in states.values()} == {"COMPLETED"}
    # each job's SLURM log: .snakemake/slurm_logs/rule_<rule>/<wildcards>/<jobid>.log, written on the node
    for jobid, log in jobs.items():
        rule, wildcards, _ = states[jobid]
        assert log == str(work / ".snakemake/slurm_logs" / f"rule_{rule}" / wildcards / f"{jobid}.log")
        text = open(log).read()
        assert re.search(rf"^rule {rule}:", text, re.M) and "Finished jobid" in text, log
    assert "localrule download:" in output  # the one rule kept on the login node (network)
    assert (work / "results/digits/report/comparison.csv").is_file()


def table(path, drop=()):
    frame = pd.read_csv(path)
    return frame.drop(columns=[c for c in drop if c in frame.columns])


def test_slurm_results_equal_a_local_run(runs):
    slurm, local, _, _, _ = runs
    d = "results/digits"
    for name in ("mlp",):
        for rel in (f"tune/{name}/best.json", f"eval/{name}/seed3407/metrics.json"):
            assert json.loads((slurm / d / rel).read_text()) == json.loads((local / d / rel).read_text()), rel
        pd.testing.assert_frame_equal(table(slurm / d / f"tune/{name}/trials.csv", ["seconds"]),
                                      table(local / d / f"tune/{name}/trials.csv", ["seconds"]))
        pd.testing.assert_frame_equal(table(slurm / d / f"train/{name}/seed3407/history.csv", ["seconds"]),
                                      table(local / d / f"train/{name}/seed3407/history.csv", ["seconds"]))
        assert (slurm / d / f"eval/{name}/seed3407/confusion.csv").read_text() == \
            (local / d / f"eval/{name}/seed3407/confusion.csv").read_text()
    assert (slurm / d / "split-seed3407.json").read_text() == (local / d / "split-seed3407.json").read_text()
    pd.testing.assert_frame_equal(table(slurm / d / "report/comparison.csv", ["train_time"]),
                                  table(local / d / "report/comparison.csv", ["train_time"]))


def test_sbatch_lines_fit_the_node_and_ask_a_gpu_only_for_gpu_rules(runs, cluster):
    _, _, output, _, details = runs
    calls = SBATCH_CALL.findall(output)
    assert {rule_of(c) for c in calls} == SLURM_JOBS
    for call in calls:
        rule, _ = rule_of(call)
        cpus = int(re.search(r"--cpus-per-task=(\d+)", call).group(1))
        mem = int(re.search(r"--mem (\d+)", call).group(1))
        # rules/*.smk: 4 threads for the GPU rules, 1 elsewhere; capped by --max-threads
        assert cpus == min(4 if rule in GPU_RULES else 1, THREADS) <= cluster.cpus, call
        assert mem <= cluster.memory_mb, call
        assert re.search(r" -t \d+", call), call  # a wall time from the profile
        gpus = re.findall(r"--gpus=(\S+)|--gres=\S*gpu", call)
        assert gpus == (["1"] if rule in GPU_RULES else []), call
    # SLURM's record of each (completed) job: a GPU in TresPerJob for the GPU rules only
    requested = {}
    for line in details.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        rule, _, _ = fields["Comment"].removeprefix("rule_").partition("_wildcards_")
        requested.setdefault(rule, set()).add(fields.get("TresPerJob"))
        assert fields["JobState"] == "COMPLETED" and fields["NumCPUs"] == str(THREADS), line
    assert requested == {rule: {"gres:gpu:1" if rule in GPU_RULES else None} for rule, _ in SLURM_JOBS}


@pytest.fixture
def rerun_copy(runs, tmp_path):
    """A copy of the finished SLURM run's directory, to break things in."""
    work = tmp_path / "work"
    shutil.copytree(runs[0], work, symlinks=True)
    shutil.rmtree(work / ".snakemake" / "slurm_logs")
    return work


def test_a_failing_rule_gives_the_path_of_its_slurm_log(cluster, rerun_copy):
    data = rerun_copy / "results/digits/data.npz"
    data.write_bytes(b"not an npz archive")  # newer than split's output: split reruns, and fails on it
    result = slurm_snakemake(cluster, rerun_copy, "results/digits/split-seed3407.json", timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    [(jobid, log)] = submitted(output).items()
    error = re.search(r"^Error in rule split:\n(?:    .*\n)+", output, re.M)
    assert error, output[-4000:]
    assert f"SLURM-job '{jobid}' failed, SLURM status is: 'FAILED'" in error.group(0)
    assert re.search(rf"^    log: logs/digits/split/seed3407\.log, {re.escape(log)} ", error.group(0), re.M)
    assert log == str(rerun_copy / ".snakemake/slurm_logs/rule_split/digits_3407" / f"{jobid}.log")
    text = open(log).read()  # the log holds what went wrong in the job
    assert "python -m reprozoo split" in text and "(command exited with non-zero exit code)" in text
    reason = "reprozoo split: error: results/digits/data.npz: "
    assert reason in text and reason in output  # and the terminal shows the reason (show-failed-logs)


def test_a_request_no_node_can_meet_is_refused_with_one_message(cluster, rerun_copy):
    """A GPU-less cluster (`--resources gpu=0`) and a memory request above every node: sbatch
    refuses the job at once, and Snakemake stops with sbatch's reason, not a job pending forever."""
    too_much = cluster.memory_mb + 1024
    start = time.perf_counter()
    result = slurm_snakemake(cluster, rerun_copy, "--resources", "gpu=0", "--set-resources",
                             f"tune:mem_mb={too_much}", "--forcerun", "tune", "--",
                             "results/digits/tune/mlp/best.json", timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert time.perf_counter() - start < 100
    assert "Memory specification can not be satisfied" in output, output[-4000:]
    assert submitted(output) == {}
    [call] = [c for c in SBATCH_CALL.findall(output) if rule_of(c)[0] == "tune"]
    assert f"--mem {too_much}" in call
    assert "--gpus" not in call and "--gres" not in call  # gpu=0: a GPU rule asks SLURM for none


def test_more_cpus_than_any_node_stops_at_once_with_one_line(cluster, rerun_copy):
    """SLURM would accept a job asking more CPUs than a node has and keep it PENDING forever:
    the workflow checks the nodes (sinfo) before submitting anything and says what to do."""
    too_many = cluster.cpus + 2
    start = time.perf_counter()
    result = slurm_snakemake(cluster, rerun_copy, "--max-threads", str(too_many), "--set-threads",
                             f"tune={too_many}", "--forcerun", "tune", "--", "results/digits/tune/mlp/best.json",
                             timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert time.perf_counter() - start < 100
    assert (f"reprozoo: rule tune asks for {too_many} CPUs and the largest SLURM node has {cluster.cpus}: SLURM "
            f"would keep it pending forever. Run with --max-threads {cluster.cpus}") in output, output[-4000:]
    assert submitted(output) == {} and not SBATCH_CALL.findall(output)
