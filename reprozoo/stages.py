"""Every pipeline stage, declared once, and the one table of artifact paths.

A stage is a function `module.function(section, <file>_path ..., <option> ..., device=...)`.
Its declaration below says
- which config section it reads (`section`): it gets the section's name and the config
  files (`--config config.yaml [--config override.yaml] [--experiments params.yaml]
  --model-name mlp`) and resolves the section itself with reprozoo.config, so no command
  line carries config JSON;
- what more it takes from the config (`from_config`: verify's expectations, the report's
  papers, study and ablations, evaluate's extra test sets: CONFIG_VALUES);
- the files it reads and writes, by their names in PATHS (`--data PATH` becomes the
  argument `data_path`; the report's per-model files `--metrics P1 P2 ...`, `metrics_paths`);
- its other options, with what a Snakemake rule passes for each (`rule`).

Everything else derives from it: the CLI's options and dispatch (reprozoo/cli.py), each
rule's `input`, `output`, `params` and shell command (rules/common.smk: stage_inputs,
stage_outputs, stage_params, stage_shell) and thereby dvc.yaml, whose commands are
Snakemake's (reprozoo/dvc.py). tests/test_stages_declared.py checks that every
declaration matches its function's signature and its rule.

Adding a per-model stage that feeds the report: its module (reprozoo/<stage>.py), its
declaration and output path here (and its name in the report's `each_run`), its rule in
rules/model.smk, and the report's use of the file in reprozoo/report.py.

This module imports neither torch nor Snakemake: the Snakefile reads it at parse time.
"""
from __future__ import annotations

import re
from typing import NamedTuple

# ------------------------------------------------------------------ the paths table
# Every artifact's path pattern, by the name stages and rules call it. Logs and benchmarks
# are the rules' own (rules/common.smk).
R = "results/{dataset}"
PATHS = {
    "manifest": "resources/{dataset}/manifest.json",
    "data": f"{R}/data.npz",
    "split": f"{R}/split-seed{{seed}}.json",
    "features": f"{R}/features/{{backbone}}.pt",
    "trials": f"{R}/tune/{{model}}/trials.csv",
    "best": f"{R}/tune/{{model}}/best.json",
    "weights": f"{R}/train/{{model}}/seed{{seed}}/weights.pt",
    "history": f"{R}/train/{{model}}/seed{{seed}}/history.csv",
    "run": f"{R}/train/{{model}}/seed{{seed}}/run.json",
    "verify": "results/verify/{model}.json",
    "metrics": f"{R}/eval/{{model}}/seed{{seed}}/metrics.json",
    "confusion": f"{R}/eval/{{model}}/seed{{seed}}/confusion.csv",
    "predictions": f"{R}/eval/{{model}}/seed{{seed}}/predictions.csv",
    "table_csv": f"{R}/report/comparison.csv",
    "table_md": f"{R}/report/comparison.md",
    "verdicts": f"{R}/report/verdicts.csv",
    "ablation_table": f"{R}/report/ablations.csv",
    "verification_table": f"{R}/report/verification.csv",
    "summary": f"{R}/report/summary.json",
    # figures (each with a PDF twin, reprozoo.io.pdf_twin)
    "curves": f"{R}/report/figures/curves_{{model}}.png",
    "confusion_plot": f"{R}/report/figures/confusion_{{model}}.png",
    "accuracy_plot": f"{R}/report/figures/accuracy.png",
    "attention_plot": f"{R}/report/figures/attention_{{model}}.png",
    "samples_plot": f"{R}/report/figures/samples_{{model}}.png",
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
    required: bool = False
    rule: str | None = None   # what a Snakemake rule passes ("{wildcards.seed}"); None: the default
    many: bool = False        # one or more values (`--models a b`)


class Stage(NamedTuple):
    run: str                          # "module:function"
    help: str
    section: str | None = None        # "dataset", "model" or "backbone": resolved from the config by name
    inputs: tuple[str, ...] = ()      # names in PATHS: `--<name> PATH`, argument `<name>_path`
    outputs: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()    # inputs and outputs a job may go without (`--features` alone: none)
    each_run: tuple[str, ...] = ()    # report: inputs with one path per model and seed (`<name>_paths`)
    each_model: tuple[str, ...] = ()  # report: inputs with one path per model
    from_config: tuple[str, ...] = () # more arguments taken from the config (reprozoo.config.CONFIG_VALUES)
    options: dict[str, Option] = {}
    compute: bool = False             # --device, --threads

    def files(self) -> tuple[str, ...]:
        return self.inputs + self.each_run + self.each_model + self.outputs


STAGES: dict[str, Stage] = {
    "download": Stage("reprozoo.data:download", "fetch (cifar10) or check (digits, imagefolder) raw data",
                      section="dataset", outputs=("manifest",)),
    "prepare": Stage("reprozoo.data:prepare", "raw data -> one uint8 array file (data.npz)",
                     section="dataset", inputs=("manifest",), outputs=("data",)),
    "split": Stage("reprozoo.data:write_split", "the study's seeded tuning split as index lists + checksum",
                   inputs=("data",), outputs=("split",), options={
                       "seed": Option("seed of the split", int, required=True, rule="{wildcards.seed}"),
                       "tune_fraction": Option("share of train used for tuning", float, required=True, rule="{params.tune_fraction}"),
                       "val_fraction": Option("share of the tuning subset for validation", float, required=True,
                                              rule="{params.val_fraction}")}),
    "cache-features": Stage("reprozoo.features:cache_features",
                            "run a frozen backbone once over a dataset; store fp16 features",
                            section="backbone", inputs=("data",), outputs=("features",), compute=True),
    "verify": Stage("reprozoo.verify:verify",
                    "module-level checks of one model (no data): stats, gradients, references",
                    section="model", outputs=("verify",), from_config=("expect",)),
    "tune": Stage("reprozoo.tune:tune", "hyperopt TPE over lr (or the paper's lr/epochs)", section="model",
                  inputs=("data", "split", "features"), outputs=("trials", "best"), optional=("features",),
                  compute=True),
    "train": Stage("reprozoo.train:train", "final training on the full training set", section="model",
                   inputs=("data", "split", "best", "features"), outputs=("weights", "history", "run"),
                   optional=("features",), compute=True, options={
                       "seed": Option("seed of this run (default: the config's); repeats use seed, seed+1, ...",
                                      int, rule="{wildcards.seed}")}),
    "evaluate": Stage("reprozoo.evaluate:evaluate", "test metrics, per-class accuracy, confusion matrix",
                      section="model", inputs=("data", "weights", "features"),
                      outputs=("metrics", "confusion", "predictions"), optional=("features", "predictions"),
                      from_config=("extra_tests",), compute=True),
    "attention": Stage("reprozoo.attention:attention_figure",
                       "class-token attention maps per layer of a trained ViT (one test image)", section="model",
                       inputs=("data", "weights"), outputs=("attention_plot",),
                       options={"index": Option("which test image (default: the first)", int, 0)}),
    "samples": Stage("reprozoo.samples:samples_figure",
                     "sample grid (+ reconstructions or G/D losses) of a trained vae or acgan", section="model",
                     inputs=("data", "weights", "history"), outputs=("samples_plot",)),
    "report": Stage("reprozoo.report:report", "comparison table (CSV + Markdown) and figures", section="dataset",
                    each_run=("metrics", "run", "best", "history", "confusion"), each_model=("verify",),
                    optional=("confusion", "verify", "verdicts", "ablation_table", "verification_table", "summary"),
                    outputs=("table_csv", "table_md", "verdicts", "ablation_table", "verification_table", "summary",
                             "accuracy_plot"),  # the other figures go beside the accuracy chart
                    from_config=("papers", "study", "ablations"),
                    options={"models": Option("model of each run, in the order of the per-run files", many=True,
                                              required=True, rule="{params.models}")}),
}
