# Config validation, and what the rules take from the stages' declarations
# (reprozoo/stages.py: every artifact path, each stage's files, section and options).
import json
import os
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

# The repository root, from this file's place in it: `workflow.basedir` is the folder of the
# Snakefile given to Snakemake (the top-level one, or workflow/Snakefile with -s).
REPO = os.path.dirname(workflow.current_basedir)
sys.path.insert(0, REPO)
from reprozoo.config import (
    CONFIG_VALUES,
    EXPERIMENTS,
    SECTIONS,
    ConfigError,
    architectures_declaring,
    expand_ablations,
    image_folders,
    model_sources,
    run_models,
    validate_config,
    with_experiments,
)
from reprozoo.io import pdf_twin
from reprozoo.stages import PATHS, STAGES, flag, wildcards_of

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
# Every artifact path is in reprozoo/stages.py (PATHS), with each stage's declaration: the
# rules below take their input, output, params and command from it (stage_inputs, ...).
# Logs and benchmarks are the rules' own:
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


# ------------------------------------------------------------------ stages, from their declarations
def as_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _config_args():
    """The config as the stages read it: config.yaml, the --configfile overrides, what
    `snakemake --config` set, params.yaml (as above). Commands name the files; the content
    reaches a job's params (stage_params), so a change that matters to a job reruns it."""
    given = [Path(f).absolute() for f in workflow.config_settings.configfiles]
    own = [f for f in workflow.configfiles if Path(f).absolute() not in given]  # configfile: config.yaml
    args = [a for f in own + [os.path.relpath(f) for f in given] for a in ("--config", str(f))]
    if workflow.config_settings.config:
        args += ["--set", as_json(dict(workflow.config_settings.config))]
    if os.path.isfile(EXPERIMENTS):
        args += ["--experiments", EXPERIMENTS]
    return " ".join(shlex.quote(a).replace("{", "{{").replace("}", "}}") for a in args)


CONFIG_ARGS = _config_args()


def stage_shell(stage):
    """`python -m reprozoo <stage>` with the config files, the section's name, a `--<name>` per
    declared file, the options a rule passes and the job's threads; its log gets everything."""
    s = STAGES[stage]
    words = ["python -m reprozoo", stage] + [CONFIG_ARGS] * bool(s.section or s.from_config)
    words += [f"--{s.section}-name {{wildcards.{s.section}}}"] * bool(s.section)
    words += [f"{{params.{f}_arg}}" if f in s.optional else f"{flag(f)} {{input.{f}}}" for f in s.inputs]
    words += [f"{flag(f)} {{input.{f}}}" for f in s.each_run + s.each_model]
    words += [f"{flag(f)} {{output.{f}}}" for f in s.outputs]
    words += [f"{flag(o)} {opt.rule}" for o, opt in s.options.items() if opt.rule]
    words += ["--threads {threads}"] * s.compute
    return " ".join(words) + " > {log} 2>&1"


def stage_params(stage):
    """The job's config section and config values as the stage resolves them: a change to
    them reruns the job (the `params` rerun trigger), a change elsewhere in the config does not.
    And each optional input's option, present when the job has that input."""
    s = STAGES[stage]
    params = {}
    if s.section:
        params[s.section] = lambda wildcards: as_json(SECTIONS[s.section](config, getattr(wildcards, s.section)))
    for f in set(s.optional) & set(s.inputs):  # `--features PATH`, or nothing for a model without
        params[f"{f}_arg"] = lambda wildcards, input, f=f: f"{flag(f)} {input[f]}" if input[f] else ""
    for value in s.from_config:
        params[value] = lambda wildcards, value=value: as_json(
            CONFIG_VALUES[value](config, getattr(wildcards, s.section or "", None), MODELS)
        )
    return params


def stage_inputs(stage):
    """A rule's named inputs: each declared file's PATHS pattern, its wildcards beyond the job's
    filled in ({seed}: the study seed's run; {backbone}: the model's, none without one); the
    report's per-run and per-model files for every model (and seed)."""
    s = STAGES[stage]
    known = set().union(*(wildcards_of(PATHS[f]) for f in s.outputs))
    inputs = {f: _input(PATHS[f], wildcards_of(PATHS[f]) - known) for f in s.inputs}
    inputs.update({f: per_run(PATHS[f]) for f in s.each_run})
    inputs.update({f: expand(PATHS[f], model=MODELS, allow_missing=True) for f in s.each_model})
    return inputs


def _input(pattern, missing):
    if not missing:
        return pattern

    def path(wildcards):
        values = dict(wildcards, seed=config["seed"])
        if "backbone" in missing:
            values["backbone"] = config["models"][wildcards.model].get("backbone")
            if not values["backbone"]:
                return []
        return pattern.format(**values)

    return path


def stage_outputs(stage, **reported):
    """A rule's named outputs, from the declaration; `reported` names those the HTML report shows,
    with their caption (workflow/report/<caption>.rst) and category."""
    outputs = {f: PATHS[f] for f in STAGES[stage].outputs}
    for f, (caption, category) in reported.items():
        outputs[f] = report(outputs[f], caption=f"../workflow/report/{caption}.rst", category=category)
    return outputs


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


# figures a model's registry entry declares (reprozoo/models/): attention maps, sample grids
ATTENTION_MODELS = [m for m in MODELS if config["models"][m]["arch"] in architectures_declaring("attention")]
SAMPLES_MODELS = [m for m in MODELS if config["models"][m]["arch"] in architectures_declaring("samples")]


def all_reports():
    figures = (
        expand(PATHS["accuracy_plot"], dataset=DATASETS)
        + expand([PATHS["curves"], PATHS["confusion_plot"]], dataset=DATASETS, model=MODELS)
        + expand(PATHS["attention_plot"], dataset=DATASETS, model=ATTENTION_MODELS)
        + expand(PATHS["samples_plot"], dataset=DATASETS, model=SAMPLES_MODELS)
    )
    tables = expand([PATHS["table_csv"], PATHS["table_md"]], dataset=DATASETS)
    return tables + figures + [pdf_twin(f) for f in figures]


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
