"""The one table of artifact paths, and what each stage's command line takes.

`python -m reprozoo <stage>` runs the stage's function (reprozoo/cli.py names each) as
`function(<its section file's arguments>, <file>_path ..., device=...)`. The declarations below
say which section file a stage reads (the arguments the
config gives it, written by reprozoo/sections.py), which names it takes (`--dataset digits
--model mlp --seed 3407`), the files it reads and writes by their names in PATHS (`--data PATH`
becomes the argument `data_path`; each defaults to its PATHS entry filled with the names), and
its other options. The CLI's options are built from them (reprozoo/arguments.py); the rules (rules/*.smk) name the
same PATHS entries, and tests/test_stages_declared.py checks that each rule's files are the
ones its command reads and writes.

Adding a per-model stage that feeds the report takes its module (reprozoo/<stage>.py), its
output path and declaration here, its rule in rules/report.smk and the line of reprozoo/cli.py
that names its function. The rest follows from the declaration: its options, its jobs in the
default target when no other stage reads its output (rules/common.smk), and its dvc.yaml stage
(reprozoo/dvc.py). docs/cli.md says how.

This module imports neither torch nor Snakemake: the Snakefile reads it at parse time.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent  # the repository: the package's, the workflow's and the schemas' root
IMAGE_SIZE = 32  # px: data.npz stores images at this size unless `datasets.<name>.image_size` says otherwise

# ------------------------------------------------------------------ the paths table
# Every artifact's path pattern, by the name stages and rules call it. Logs and benchmarks
# are the rules' own (rules/common.smk).
R = "results/{dataset}"
PATHS = {
    # section files: what each job reads of the config (reprozoo/sections.py)
    "dataset_cfg": f"{R}/config/dataset.json",
    "split_cfg": f"{R}/config/split.json",
    "backbone_cfg": f"{R}/config/backbone-{{backbone}}.json",
    "model_cfg": f"{R}/config/model-{{model}}.json",
    "evaluate_cfg": f"{R}/config/evaluate-{{model}}.json",
    "report_cfg": f"{R}/config/report.json",
    "verify_cfg": f"{R}/config/verify-{{model}}.json",
    # artifacts
    "manifest": "resources/{dataset}/manifest.json",
    "data": f"{R}/data.npz",
    "split": f"{R}/split-seed{{seed}}.json",
    "features": f"{R}/features/{{backbone}}.pt",
    "trials": f"{R}/tune/{{model}}/trials.csv",
    "best": f"{R}/tune/{{model}}/best.json",
    "weights": f"{R}/train/{{model}}/seed{{seed}}/weights.pt",
    "history": f"{R}/train/{{model}}/seed{{seed}}/history.csv",
    "run": f"{R}/train/{{model}}/seed{{seed}}/run.json",
    "verify": f"{R}/verify/{{model}}.json",
    "metrics": f"{R}/eval/{{model}}/seed{{seed}}/metrics.json",
    "confusion": f"{R}/eval/{{model}}/seed{{seed}}/confusion.csv",
    "predictions": f"{R}/eval/{{model}}/seed{{seed}}/predictions.csv",
    "table_csv": f"{R}/report/comparison.csv",
    "table_md": f"{R}/report/comparison.md",
    "verdicts": f"{R}/report/verdicts.csv",
    "claims": f"{R}/report/claims.csv",
    "ablation_table": f"{R}/report/ablations.csv",
    "verification_table": f"{R}/report/verification.csv",
    "summary": f"{R}/report/summary.json",
    "histories": f"{R}/report/histories.csv",  # every run's history in one long table: `dvc plots show` draws it
    # figures (each with a PDF twin, reprozoo.io.pdf_twin): the report's, then those a model declares
    "curves": f"{R}/report/figures/curves_{{model}}.png",
    "confusion_plot": f"{R}/report/figures/confusion_{{model}}.png",
    "accuracy_plot": f"{R}/report/figures/accuracy.png",
    "attention_plot": f"{R}/report/models/attention_{{model}}.png",
    "samples_plot": f"{R}/report/models/samples_{{model}}.png",
}


def wildcards_of(pattern: str) -> set[str]:
    return set(re.findall(r"{(\w+)}", pattern))


def flag(name: str) -> str:
    """The command-line option of a file or option name: `table_csv` -> `--table-csv`."""
    return "--" + name.replace("_", "-")


# ------------------------------------------------------------------ declarations
class Option(NamedTuple):
    help: str
    type: type = str
    default: object = None


class Stage(NamedTuple):
    help: str
    section: str                      # its section file, by name in PATHS: the function's config arguments
    names: tuple[str, ...]            # of dataset, model, backbone, seed: what its paths are filled with
    inputs: tuple[str, ...] = ()      # names in PATHS: `--<name> PATH`, argument `<name>_path`
    outputs: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()    # files a job may go without (`features`: only a model with a backbone)
    each_run: tuple[str, ...] = ()    # report: inputs with one path per model and seed (`<name>_paths`)
    each_model: tuple[str, ...] = ()  # report: inputs with one path per model
    options: dict[str, Option] = {}
    compute: bool = False             # --device; torch threads from the section (protocol.threads)
    code: tuple[str, ...] = ()        # files of the package whose edits rerun its jobs (the rule's `code` input)
    only_declaring: bool = False      # only for models whose registry entry declares it (attention, samples)

    def files(self) -> tuple[str, ...]:
        return self.inputs + self.each_run + self.each_model + self.outputs


REPORT_MODULES = ("build", "claims", "figures", "markdown", "runs", "tables", "verdicts")  # reprozoo/report/
MODEL, DATA_MODEL, RUN = ("model",), ("dataset", "model"), ("dataset", "model", "seed")
STAGES: dict[str, Stage] = {
    "download": Stage("fetch (cifar10) or check (digits, imagefolder) raw data",
                      "dataset_cfg", ("dataset",), outputs=("manifest",)),
    "prepare": Stage("raw data -> one uint8 array file (data.npz)", "dataset_cfg",
                     ("dataset",), inputs=("manifest",), outputs=("data",), code=("prepare.py", "data.py", "images.py")),
    "split": Stage("the study's seeded tuning split as index lists + checksum",
                   "split_cfg", ("dataset", "seed"), inputs=("data",), outputs=("split",)),
    "cache-features": Stage("run a frozen backbone once over a dataset; store fp16 features", "backbone_cfg",
                            ("dataset", "backbone"), inputs=("data",), outputs=("features",), compute=True,
                            code=("features.py", "models/pretrained.py")),
    "verify": Stage("module-level checks of one model (no data): stats, gradients, references",
                    "verify_cfg", DATA_MODEL, outputs=("verify",), code=("engine.py", "verify.py")),
    "tune": Stage("hyperopt TPE over lr (or the paper's lr/epochs)", "model_cfg", DATA_MODEL,
                  inputs=("data", "split", "features"), outputs=("trials", "best"), optional=("features",),
                  compute=True, code=("engine.py", "tune.py"),
                  options={"cores": Option("CPU cores its trials share, side by side at the config's protocol.threads "
                                           "each (default: every core this process may use)", int,
                                           len(os.sched_getaffinity(0)))}),
    "train": Stage("final training on the full training set", "model_cfg", RUN,
                   inputs=("data", "split", "best", "features"), outputs=("weights", "history", "run"),
                   optional=("features",), compute=True, code=("engine.py", "train.py")),
    "evaluate": Stage("test metrics, per-class accuracy, confusion matrix",
                      "evaluate_cfg", RUN, inputs=("data", "weights", "features"),
                      outputs=("metrics", "confusion", "predictions"), optional=("features", "predictions"),
                      compute=True, code=("engine.py", "evaluate.py")),
    "attention": Stage("class-token attention maps per layer of a trained ViT (one test image)", "model_cfg", DATA_MODEL,
                       inputs=("data", "weights"), outputs=("attention_plot",), code=("attention.py",),
                       only_declaring=True, options={"index": Option("which test image (default: the first)", int, 0)}),
    "samples": Stage("sample grid (+ reconstructions or G/D losses) of a trained vae or acgan", "model_cfg", DATA_MODEL,
                     inputs=("data", "weights", "history"), outputs=("samples_plot",), code=("samples.py",),
                     only_declaring=True),
    "report": Stage("comparison table (CSV + Markdown) and figures", "report_cfg",
                    ("dataset",), each_run=("metrics", "run", "best", "history", "confusion", "predictions"),
                    each_model=("verify",), optional=("predictions",),
                    outputs=("table_csv", "table_md", "verdicts", "claims", "ablation_table", "verification_table",
                             "summary", "histories", "accuracy_plot"),  # the other figures go beside the accuracy chart
                    code=(*(f"report/{m}.py" for m in REPORT_MODULES), "results.py", "stats.py")),
}


def rule_of(name: str) -> str:
    """A stage's rule: `cache-features` runs in `rule cache_features`."""
    return name.replace("-", "_")


def log_of(name: str) -> str:
    """A stage's log, as its rule names it: logs/[{dataset}/]<rule>[/{model} or /{backbone}][/seed{seed}].log."""
    names = STAGES[name].names
    parts = ["logs", *(["{dataset}"] if "dataset" in names else []), rule_of(name)]
    parts += [f"{{{n}}}" for n in ("model", "backbone") if n in names] + (["seed{seed}"] if "seed" in names else [])
    return "/".join(parts) + ".log"


def benchmark_of(name: str) -> str:
    """A stage's benchmark (Snakemake's TSV: wall seconds, memory, CPU time), as its rule names it: its
    log's path under logs/[{dataset}/]benchmarks/. DVC's jobs write it too (`--benchmark`)."""
    log = log_of(name)
    head = "logs/{dataset}/" if log.startswith("logs/{dataset}/") else "logs/"
    return f"{head}benchmarks/{log[len(head):-len('.log')]}.tsv"


# The section a stage may be given as JSON instead of a file (`--model-json`), and its argument.
JSON_SECTIONS = {"dataset_cfg": ("dataset", "dataset"), "backbone_cfg": ("backbone", "spec"),
                 "model_cfg": ("model", "cfg"), "evaluate_cfg": ("model", "cfg"), "verify_cfg": ("model", "cfg")}
