# Config validation, the section files every job reads, and the rules' input functions.
import os
import subprocess
import sys

# The repository root, from this file's place in it: `workflow.basedir` is the folder of the
# Snakefile given to Snakemake (the top-level one, or workflow/Snakefile with -s).
REPO = os.path.dirname(workflow.current_basedir)
sys.path.insert(0, REPO)
from reprozoo import gpus, runlock
from reprozoo.architectures import models_declaring
from reprozoo.config import EXPERIMENTS, complete, run_models
from reprozoo.errors import UserError
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
