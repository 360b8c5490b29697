# Config validation, the section files every job reads, and the rules' input functions.
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

# The repository root, from this file's place in it: `workflow.basedir` is the folder of the
# Snakefile given to Snakemake (the top-level one, or workflow/Snakefile with -s).
REPO = os.path.dirname(workflow.current_basedir)
sys.path.insert(0, REPO)
import snakemake.executors.touch

from reprozoo import gpus, runlock
from reprozoo.architectures import models_declaring
from reprozoo.config import EXPERIMENTS, complete, run_models
from reprozoo.errors import UserError
from reprozoo.benchmark import benchmark_seconds, write_benchmark
from reprozoo.io import pdf_twin
from reprozoo.resolve import resolve
from reprozoo.stages import PATHS, REPORT_MODULES, STAGES

# The config is resolved here, once per run: each job reads its own section file
# (reprozoo/sections.py), rewritten only when what that job depends on changed, and never while
# another run in this folder reads it (reprozoo/runlock.py; `onstart` takes the folder for a run).
# Job processes (a cluster job reads the Snakefile too) write nothing.
try:
    # params.yaml (DVC experiments' layer) if any, the run validated, the study's record read,
    # ablations expanded, each model's plan settled: as every reader of a config does
    config.update(complete(config, EXPERIMENTS if os.path.isfile(EXPERIMENTS) else None))
    if workflow.is_main_process:
        resolve(config, "check")
    else:
        os.environ.setdefault(runlock.RUN_ENV, "job")
except UserError as e:
    sys.exit(f"reprozoo: {e}")


def claim_run():
    """`onstart` of a run with jobs to do: this folder is the run's until it ends (reprozoo/runlock.py),
    its section files are those it planned with, and its jobs know they belong to it."""
    try:
        resolve(config, "run")
    except UserError as e:
        sys.exit(f"reprozoo: {e}")
    os.environ[runlock.RUN_ENV] = str(os.getpid())


DATASETS = config["run"]["datasets"]
MODELS = run_models(config)
SEEDS = [config["seed"] + i for i in range(config.get("repeats", 1))]  # repeats: seed, seed+1, ...
# The models a stage declared `only_declaring` runs for (attention maps, sample grids): those whose
# registry entry declares it (reprozoo/models/).
DECLARING = {name: models_declaring(name, config, MODELS) for name, stage in STAGES.items() if stage.only_declaring}


def on_cluster():
    """Whether jobs go to a cluster's scheduler (profiles/slurm) rather than run on this machine."""
    plugin = workflow.executor_plugin
    return plugin is not None and not plugin.common_settings.local_exec


def tune_cores():
    """CPU cores of a tuning job, whose trials run side by side on them at protocol.threads each:
    the cores change its time, never its numbers. A cluster job asks for 4 CPUs (profiles/slurm's
    max-threads caps them). Locally: half the cores Snakemake was given, 1 to 4, so that two jobs
    always run side by side (`python benchmarks/job_threads.py` compares)."""
    if on_cluster():
        return max(THREADS, 4)
    return max(THREADS, min(4, (workflow.resource_settings.cores or 1) // 2))


def gpu_jobs():
    """GPU jobs at a time: every slot of every card nvidia-smi lists (each job takes its own slot on one
    card, reprozoo/gpus.py), unless `--resources gpu=K` says otherwise; a cluster's scheduler assigns
    cards itself. Without cards GPU jobs are not counted."""
    if "gpu" in workflow.global_resources or on_cluster():
        return
    cards = gpus.cards()
    if cards:
        workflow.register_resource("gpu", len(cards) * gpus.slots())


if "gpu_slots" in config:  # the jobs read it when they take a slot
    os.environ[gpus.SLOTS_ENV] = str(config["gpu_slots"])
if workflow.is_main_process:
    gpu_jobs()


# torch's CPU threads in every computation (train, evaluate, cache_features, each trial): the
# config's, which DVC's stages read too; the count changes CPU sums, so no engine picks its own.
THREADS = config["protocol"]["threads"]
TUNE_CORES = tune_cores()


wildcard_constraints:
    dataset="[a-z][a-z0-9_]*",
    model="[a-z][a-z0-9_]*",
    seed=r"\d+",
    backbone="[a-z][a-z0-9_]*",


# ------------------------------------------------------------------ input functions
def src(*parts):
    """A file of the package, as an input: editing a stage's code reruns its jobs."""
    return os.path.relpath(os.path.join(REPO, "reprozoo", *parts))


def backbone_features(wildcards):
    """The cached features of the model's frozen backbone; none for a model without one."""
    backbone = config["models"][wildcards.model].get("backbone")
    return PATHS["features"].format(dataset=wildcards.dataset, backbone=backbone) if backbone else []


def study_split(wildcards):
    """Every model tunes and trains on the split of the study's seed."""
    return PATHS["split"].format(dataset=wildcards.dataset, seed=config["seed"])


def study_run(name):
    """A file of the model's run with the study's seed (the attention and samples figures)."""
    return lambda wildcards: PATHS[name].format(dataset=wildcards.dataset, model=wildcards.model, seed=config["seed"])


def per_run(name):
    """The report's inputs: one path per model and seed, model-major (the order of report.json's runs)."""
    return lambda wildcards: [
        PATHS[name].format(dataset=wildcards.dataset, model=m, seed=s) for m in MODELS for s in SEEDS
    ]


def default_targets():
    """The default target's files: one output of every job whose files no other job reads, from
    the stage declarations (reprozoo/stages.py). That is each dataset's report, and each per-model
    stage that only adds to it (attention maps, sample grids, or a new one); the report asks for
    everything else."""
    read = {f for stage in STAGES.values() for f in stage.inputs + stage.each_run + stage.each_model}
    values = {"dataset": DATASETS, "seed": SEEDS}
    return [
        expand(
            PATHS[stage.outputs[0]],
            **{n: DECLARING.get(name, MODELS) if n == "model" else values[n] for n in stage.names},
        )
        for name, stage in STAGES.items()
        if not read & set(stage.outputs)
    ]


# ------------------------------------------------------------------ after DVC ran stages
# When DVC has written outputs since the last look (dvc repro, dvc exp run, dvc exp apply, dvc
# checkout, dvc pull), the main process runs `snakemake --touch --forceall` with the same config
# (this file again, with DVC_TOUCH set) beside `dvc status`: when DVC says every stage is current,
# the touch puts the outputs' timestamps in DAG order and records every job for Snakemake (params,
# code, inputs), so that Snakemake reruns nothing DVC has made; then each job's record takes its
# real time from its benchmark file. Only in a DVC repository; a stamp in .snakemake/ keeps it to
# one look per change.
DVC_TOUCH = "REPROZOO_DVC_TOUCH"
DVC_CHANGED = 3  # the touch's exit status when `dvc status` shows changes: nothing was touched
DVC = shutil.which("dvc") or shutil.which("dvc", path=os.path.dirname(sys.executable))
TOUCHING = bool(os.environ.get(DVC_TOUCH))  # this process is that touch


def reconcile_with_dvc():
    """In the main process: the touch above, when DVC wrote something since the last look. The touch
    builds its DAG while `dvc status` runs, then waits in `onstart` for the word to go on (stdin)."""
    if os.environ.get("REPROZOO_NO_DVC_SYNC") or TOUCHING or not workflow.is_main_process:
        return
    stamp = Path(".snakemake/reprozoo-dvc-seen")
    if DVC is None or not os.path.isfile("dvc.lock") or not _dvc_written_since(stamp):
        return
    files = [str(f) for f in workflow.config_settings.configfiles]
    args = ["--configfile", *files] if files else []  # one flag: a second --configfile replaces the first
    if workflow.config_settings.config:  # `snakemake --config k=v`: values as YAML (JSON is YAML)
        args += ["--config", *(f"{k}={json.dumps(v)}" for k, v in workflow.config_settings.config.items())]
    touch = [sys.executable, "-m", "snakemake", "--touch", "--forceall", "--cores", "1", "--quiet", *args]
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    status = subprocess.Popen([DVC, "status", "--json"], **pipes)
    done = subprocess.Popen(touch, stdin=subprocess.PIPE, env={**os.environ, DVC_TOUCH: "1"}, **pipes)
    changes, _ = status.communicate()
    current = status.returncode == 0 and json.loads(changes or "{}") == {}
    _, err = done.communicate("touch\n" if current else "stop\n")
    if done.returncode == 0:
        print("reprozoo: outputs that DVC made are current (dvc status): recorded for Snakemake", file=sys.stderr)
    elif done.returncode != DVC_CHANGED:  # say so: Snakemake may now plan to rerun what DVC made
        last = (err.strip().splitlines() or ["no output"])[-1]
        print(f"reprozoo: could not record DVC's outputs for Snakemake (snakemake --touch: {last})", file=sys.stderr)
    stamp.parent.mkdir(exist_ok=True)
    stamp.touch()


if TOUCHING:
    # Snakemake's touch sleeps 0.1 s per job so that outputs are newer than inputs; touched in DAG order
    # they are at least as new, all Snakemake asks (an input counts only when strictly newer), and on
    # the demo those sleeps were most of the first dry run after DVC.
    snakemake.executors.touch.Executor.SLEEPING_TIME = 0


def touch_if_dvc_is_current():
    """`onstart` of the touch: leave (DVC_CHANGED) before touching anything unless DVC sees no change."""
    if TOUCHING and sys.stdin.readline().strip() != "touch":
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
    import yaml

    seen = stamp.stat().st_mtime if stamp.is_file() else 0
    lock = yaml.safe_load(Path("dvc.lock").read_text()) or {}
    paths = ["dvc.lock"] + [o["path"] for s in lock.get("stages", {}).values() for o in s.get("outs", [])]
    return any(os.path.exists(p) and os.path.getmtime(p) > seen for p in paths)


reconcile_with_dvc()


# ------------------------------------------------------------------ cluster requests no node can meet
def slurm_misfit():
    """Under the SLURM executor, one line about the first job asking for more CPUs than the
    largest node has (SLURM accepts such a job and keeps it PENDING forever, without a word);
    None when every job fits, or when not on SLURM. Memory, GPUs and partitions need no check
    here: sbatch refuses those requests at once with its own reason."""
    plugin = workflow.executor_plugin
    if plugin is None or plugin.cli_prefix != "slurm":
        return None
    try:
        out = subprocess.run(
            ["sinfo", "--noheader", "--format=%c"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        largest = max(int(cpus.rstrip("+")) for cpus in out.split())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None  # no sinfo answer: nothing to compare with (sbatch will say what is wrong)
    for job in workflow.dag.needrun_jobs():
        if job.threads > largest:
            return (
                f"reprozoo: rule {job.rule.name} asks for {job.threads} CPUs and the largest SLURM node has "
                f"{largest}: SLURM would keep it pending forever. Run with --max-threads {largest}, or set "
                f"max-threads: {largest} in profiles/slurm/config.yaml"
            )
    return None
