# Config validation, every artifact path, and every input function.
# Paths live here and nowhere else.
import json
import os
import subprocess
import sys
from functools import lru_cache

# The repository root, from this file's place in it: `workflow.basedir` is the folder of the
# Snakefile given to Snakemake (the top-level one, or workflow/Snakefile with -s).
REPO = os.path.dirname(workflow.current_basedir)
sys.path.insert(0, REPO)
from reprozoo.config import (
    ConfigError,
    architectures_declaring,
    expand_ablations,
    image_folders,
    model_sources,
    resolve_backbone,
    resolve_dataset,
    resolve_model,
    run_models,
    validate_config,
    with_experiments,
)
from reprozoo.io import pdf_twin

try:
    config.update(with_experiments(config, missing_ok=True))  # params.yaml: DVC experiments' layer, if any
    validate_config(config)
except ConfigError as e:
    sys.exit(f"reprozoo: {e}")
config.update(expand_ablations(config))  # each ablation becomes a model with its own jobs


DATASETS = config["run"]["datasets"]
MODELS = run_models(config)
SEEDS = [config["seed"] + i for i in range(config.get("repeats", 1))]  # repeats: seed, seed+1, ...


def job_threads():
    """torch threads of a heavy job (tune, train, evaluate, cache_features). A cluster job asks
    for 4 CPUs (profiles/slurm's max-threads caps them). Locally: half the cores Snakemake was
    given, 1 to 4, so that two jobs always run side by side. On a small machine that beats one
    job on every core: much of a job is interpreter start-up, and a second thread speeds up
    small tensors little (`python benchmarks/job_threads.py`: the demo on 2 cores 1.35x faster)."""
    plugin = workflow.executor_plugin
    if plugin is not None and not plugin.common_settings.local_exec:
        return 4
    return max(1, min(4, (workflow.resource_settings.cores or 1) // 2))


JOB_THREADS = job_threads()


wildcard_constraints:
    dataset="[a-z][a-z0-9_]*",
    model="[a-z][a-z0-9_]*",
    seed=r"\d+",
    backbone="[a-z][a-z0-9_]*",


# ------------------------------------------------------------------ artifacts
MANIFEST = "resources/{dataset}/manifest.json"
DATA = "results/{dataset}/data.npz"
SPLIT = "results/{dataset}/split-seed{seed}.json"
FEATURES = "results/{dataset}/features/{backbone}.pt"
TRIALS = "results/{dataset}/tune/{model}/trials.csv"
BEST = "results/{dataset}/tune/{model}/best.json"
WEIGHTS = "results/{dataset}/train/{model}/seed{seed}/weights.pt"
HISTORY = "results/{dataset}/train/{model}/seed{seed}/history.csv"
RUN = "results/{dataset}/train/{model}/seed{seed}/run.json"
VERIFY = "results/verify/{model}.json"
METRICS = "results/{dataset}/eval/{model}/seed{seed}/metrics.json"
CONFUSION = "results/{dataset}/eval/{model}/seed{seed}/confusion.csv"
PREDICTIONS = "results/{dataset}/eval/{model}/seed{seed}/predictions.csv"
TABLE_CSV = "results/{dataset}/report/comparison.csv"
TABLE_MD = "results/{dataset}/report/comparison.md"
VERDICTS = "results/{dataset}/report/verdicts.csv"
ABLATION_TABLE = "results/{dataset}/report/ablations.csv"
VERIFICATION_TABLE = "results/{dataset}/report/verification.csv"
SUMMARY = "results/{dataset}/report/summary.json"
FIGURES = "results/{dataset}/report/figures"
CURVES = "results/{dataset}/report/figures/curves_{model}.png"
CONFUSION_PLOT = "results/{dataset}/report/figures/confusion_{model}.png"
ACCURACY_PLOT = "results/{dataset}/report/figures/accuracy.png"
ATTENTION_PLOT = "results/{dataset}/report/figures/attention_{model}.png"
SAMPLES_PLOT = "results/{dataset}/report/figures/samples_{model}.png"
# Every figure also has a PDF twin for papers, `pdf_twin(<figure>)`: the same name, .pdf.
LOG = "logs/{dataset}/{stage}.log"
MODEL_LOG = "logs/{dataset}/{stage}/{model}.log"
SEED_LOG = "logs/{dataset}/{stage}/{model}/seed{seed}.log"
# Snakemake's benchmarks of the heavy jobs (wall and CPU time, max RSS, I/O): measurements
# of one machine's run, kept with the logs and out of DVC. Snakemake counts a benchmark as
# an output when it compares timestamps, so a bare `dvc commit` or `dvc checkout`, which
# gives the outputs fresh ones, leaves it older than its job's inputs and the job reruns.
# `snakemake --touch` touches a job's benchmark with its outputs (Snakemake 9), so the
# Makefile's dvc-* targets, which end with it, keep them in line (README "DVC").
FEATURES_BENCHMARK = "logs/{dataset}/benchmarks/cache_features/{backbone}.tsv"
TUNE_BENCHMARK = "logs/{dataset}/benchmarks/tune/{model}.tsv"
TRAIN_BENCHMARK = "logs/{dataset}/benchmarks/train/{model}/seed{seed}.tsv"
EVALUATE_BENCHMARK = "logs/{dataset}/benchmarks/evaluate/{model}/seed{seed}.tsv"


# ------------------------------------------------------------------ config sections
def as_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def dataset_json(wildcards):
    return as_json(resolve_dataset(config, wildcards.dataset))


def model_json(wildcards):
    """Only the model's own resolved section: a change elsewhere never reruns its jobs."""
    return as_json(resolve_model(config, wildcards.model))


def backbone_json(wildcards):
    """Only what features depend on (backbone, weights, input size, normalisation)."""
    return as_json(resolve_backbone(config, wildcards.backbone))


def verify_json(wildcards):
    return as_json(config["models"][wildcards.model].get("verify", {}))


def papers_json(wildcards):
    return as_json({m: config["models"][m].get("paper", {}) for m in MODELS})


def study_json(wildcards):
    return as_json(config.get("study", {}))


def ablations_json(wildcards):
    return as_json({a: config["ablations"][a] for a in MODELS if a in config.get("ablations", {})})


def extra_test_args(wildcards):
    """`--extra-test NAME=ROOT ...` as a list: evaluate quotes each word (`:q`)."""
    return [
        arg
        for name, spec in sorted(config.get("extra_test", {}).items())
        for arg in ("--extra-test", f"{name}={spec['root']}")
    ]


# ------------------------------------------------------------------ image folders as inputs
# Image files are not Snakemake inputs (a folder input is only its own mtime). Instead a
# job that reads an image tree gets `params` trees={folder: content digest}, computed
# here at DAG time: editing, adding or removing an image changes the params, and the
# `params` rerun trigger (profiles/default) reruns the job and everything after it.
# reprozoo/dvc.py turns the same folders (one list for both) into DVC `deps`, whose content DVC hashes.
@lru_cache(maxsize=None)
def _tree_fingerprint(folder):
    from reprozoo.data import tree_fingerprint

    return tree_fingerprint(folder)


def _trees(folders):
    return {f: _tree_fingerprint(f) for f in folders}


def image_trees(stage):
    """The image folders a job of `stage` reads (reprozoo.config.image_folders), each with its content digest."""

    def trees(wildcards):
        return _trees(image_folders(config, stage, wildcards))

    return trees


# ------------------------------------------------------------------ input functions
def src(*parts):
    return os.path.relpath(os.path.join(REPO, "reprozoo", *parts))


def split_file(wildcards):
    return SPLIT.format(dataset=wildcards.dataset, seed=config["seed"])


def features_file(wildcards):
    """A probe's cached backbone features; nothing for models that train on images."""
    backbone = config["models"][wildcards.model].get("backbone")
    return FEATURES.format(dataset=wildcards.dataset, backbone=backbone) if backbone else []


def features_arg(wildcards, input):
    return f"--features {input.features}" if input.features else ""


def model_code(stage):
    """The model's own source file plus the stage's code: editing a model file reruns only that model."""

    def inputs(wildcards):
        arch = config["models"][wildcards.model]["arch"]
        return [os.path.relpath(p) for p in model_sources(arch)] + [src("engine.py"), src(f"{stage}.py")]

    return inputs


def per_run(pattern):
    """One path per model and seed, model-major: the order of `report_models`."""

    def inputs(wildcards):
        return [pattern.format(dataset=wildcards.dataset, model=m, seed=s) for m in MODELS for s in SEEDS]

    return inputs


def report_models(wildcards):
    return " ".join(m for m in MODELS for _ in SEEDS)


def study_seed_weights(wildcards):
    return WEIGHTS.format(dataset=wildcards.dataset, model=wildcards.model, seed=config["seed"])


def study_seed_history(wildcards):
    return HISTORY.format(dataset=wildcards.dataset, model=wildcards.model, seed=config["seed"])


# figures a model's registry entry declares (reprozoo/models/): attention maps, sample grids
ATTENTION_MODELS = [m for m in MODELS if config["models"][m]["arch"] in architectures_declaring("attention")]
SAMPLES_MODELS = [m for m in MODELS if config["models"][m]["arch"] in architectures_declaring("samples")]


def all_reports():
    figures = (
        expand(ACCURACY_PLOT, dataset=DATASETS)
        + expand([CURVES, CONFUSION_PLOT], dataset=DATASETS, model=MODELS)
        + expand(ATTENTION_PLOT, dataset=DATASETS, model=ATTENTION_MODELS)
        + expand(SAMPLES_PLOT, dataset=DATASETS, model=SAMPLES_MODELS)
    )
    return expand([TABLE_CSV, TABLE_MD], dataset=DATASETS) + figures + [pdf_twin(f) for f in figures]


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
