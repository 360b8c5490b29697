"""dvc.yaml for `dvc repro`: `python -m reprozoo dvc-yaml [--configfile config/demo.yaml]`.

Snakemake is the orchestrator of record; dvc.yaml describes the same jobs in DVC's idiom, one
`matrix` stage per rule over the run's datasets, models and seeds, with the rules' commands,
files and logs (rules/*.smk). Two differences, both by design:

- DVC's first stage, `resolve`, writes the section files every job reads
  (reprozoo/sections.py); Snakemake writes them when it reads the Snakefile. Each job depends
  on its own section file, so DVC reruns what Snakemake reruns: editing one model's section
  (in config.yaml, or params.yaml through `dvc exp run -S`) reruns that model's stages,
  editing reported numbers reruns the report.
- The report depends on the folders of the per-run files it reads (results/<dataset>/eval, ...),
  and writes its figures as one folder; the metrics are its one summary file.

tests/test_dvc.py checks that DVC reads from this file exactly the jobs, commands, inputs and
outputs Snakemake plans. The file holds one configuration at a time (config.yaml and the
overrides named in its header): results/verify/ does not depend on the dataset, so two
configurations cannot share a repository's DVC pipeline.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from reprozoo.config import EXPERIMENTS, ROOT, SCHEMA_PATH, ConfigError, _read_yaml, load_config, run_models
from reprozoo.models.sources import architectures_declaring
from reprozoo.sections import extra_test_folders, image_folders, seeds

BASE_CONFIG = "config.yaml"
DVC_YAML = Path("dvc.yaml")
CONFIG_LINE = "# Config: "
LAYER_HEADER = """\
# The experiment file (docs/dvc.md): one section per model, merged into models.<name> after
# config.yaml (and its override) by Snakemake and by DVC's resolve stage. `dvc exp run -S
# params.yaml:++mlp.<key>=...` edits this file (in its own layout); config.yaml is never touched.
"""
# The rules (rules/*.smk) in DVC's words: each one's command, log, section file, inputs and
# outputs, with ${item.*} for its wildcards. `features` marks the one input that only models with
# a frozen backbone have: those models get a stage group of their own per backbone.
D, M, S = "${item.dataset}", "${item.model}", "${item.seed}"
R = f"results/{D}"
RULES = {
    "download": ({"dataset": "${datasets}"}, f"download --dataset {D}", f"logs/{D}/download.log",
                 [f"{R}/config/dataset.json"], [f"resources/{D}/manifest.json"]),
    "prepare": ({"dataset": "${datasets}"}, f"prepare --dataset {D}", f"logs/{D}/prepare.log",
                [f"{R}/config/dataset.json", f"resources/{D}/manifest.json", "reprozoo/data.py"], [f"{R}/data.npz"]),
    "split": ({"dataset": "${datasets}", "seed": ["${seed}"]}, f"split --dataset {D} --seed {S}",
              f"logs/{D}/split-seed{S}.log", [f"{R}/config/split.json", f"{R}/data.npz"], [f"{R}/split-seed{S}.json"]),
    "cache_features": ({"dataset": "${datasets}", "backbone": "${backbones}"},
                       f"cache-features --dataset {D} --backbone ${{item.backbone}} --threads 0",
                       f"logs/{D}/cache_features/${{item.backbone}}.log",
                       [f"{R}/config/backbone-${{item.backbone}}.json", f"{R}/data.npz", "reprozoo/features.py",
                        "reprozoo/models/pretrained.py"], [f"{R}/features/${{item.backbone}}.pt"]),
    "verify": ({"model": "${all_models}"}, f"verify --model {M}", f"logs/verify/{M}.log",
               [f"results/config/verify-{M}.json", "reprozoo/engine.py", "reprozoo/verify.py"],
               [f"results/verify/{M}.json"]),
    "tune": ({"dataset": "${datasets}", "model": "MODELS"}, f"tune --dataset {D} --model {M} --threads 0",
             f"logs/{D}/tune/{M}.log",
             [f"{R}/config/model-{M}.json", f"{R}/data.npz", f"{R}/split-seed${{seed}}.json", "features",
              "reprozoo/engine.py", "reprozoo/tune.py"],
             [f"{R}/tune/{M}/trials.csv", f"{R}/tune/{M}/best.json"]),
    "train": ({"dataset": "${datasets}", "model": "MODELS", "seed": "${seeds}"},
              f"train --dataset {D} --model {M} --seed {S} --threads 0", f"logs/{D}/train/{M}/seed{S}.log",
              [f"{R}/config/model-{M}.json", f"{R}/data.npz", f"{R}/split-seed${{seed}}.json",
               f"{R}/tune/{M}/best.json", "features", "reprozoo/engine.py", "reprozoo/train.py"],
              [f"{R}/train/{M}/seed{S}/{f}" for f in ("weights.pt", "history.csv", "run.json")]),
    "evaluate": ({"dataset": "${datasets}", "model": "MODELS", "seed": "${seeds}"},
                 f"evaluate --dataset {D} --model {M} --seed {S} --threads 0", f"logs/{D}/evaluate/{M}/seed{S}.log",
                 [f"{R}/config/evaluate-{M}.json", f"{R}/data.npz", f"{R}/train/{M}/seed{S}/weights.pt", "features",
                  "reprozoo/engine.py", "reprozoo/evaluate.py"],
                 [f"{R}/eval/{M}/seed{S}/{f}" for f in ("metrics.json", "confusion.csv", "predictions.csv")]),
    "attention": ({"dataset": "${datasets}", "model": "${attention_models}"}, f"attention --dataset {D} --model {M}",
                  f"logs/{D}/attention/{M}.log",
                  [f"{R}/config/model-{M}.json", f"{R}/data.npz", f"{R}/train/{M}/seed${{seed}}/weights.pt",
                   "reprozoo/attention.py"], [f"{R}/report/models/attention_{M}.{x}" for x in ("png", "pdf")]),
    "samples": ({"dataset": "${datasets}", "model": "${samples_models}"}, f"samples --dataset {D} --model {M}",
                f"logs/{D}/samples/{M}.log",
                [f"{R}/config/model-{M}.json", f"{R}/data.npz", f"{R}/train/{M}/seed${{seed}}/weights.pt",
                 f"{R}/train/{M}/seed${{seed}}/history.csv", "reprozoo/samples.py"],
                [f"{R}/report/models/samples_{M}.{x}" for x in ("png", "pdf")]),
    # the report reads files of every run: it depends on their folders, and writes its figures as one
    "report": ({"dataset": "${datasets}"}, f"report --dataset {D}", f"logs/{D}/report.log",
               [f"{R}/config/report.json", f"{R}/tune", f"{R}/train", f"{R}/eval", "results/verify",
                "reprozoo/report.py", "reprozoo/stats.py"],
               [f"{R}/report/{f}" for f in ("comparison.csv", "comparison.md", "verdicts.csv", "claims.csv",
                                            "ablations.csv", "verification.csv", "figures")]),
}
# Plots: each run's confusion matrix (evaluate) and tuning trials (tune); at the top level, each
# run's loss curves and one chart of every model's test accuracy per epoch.
STAGE_PLOTS = {
    "evaluate": (f"{R}/eval/{M}/seed{S}/predictions.csv", {"template": "confusion", "x": "predicted", "y": "actual"}),
    "tune": (f"{R}/tune/{M}/trials.csv", {"template": "scatter", "x": "lr", "y": "best_val_loss"}),
}
SUMMARY = f"{R}/report/summary.json"


def _stage(rule: str, models: str | None = None, backbone: str | None = None) -> dict:
    matrix, command, log, deps, outs = RULES[rule]
    matrix = {k: models if v == "MODELS" else v for k, v in matrix.items()}
    features = f"{R}/features/{backbone}.pt"
    stage = {"matrix": Flow(matrix),
             "cmd": f"python -m reprozoo {command} --log {log}",
             "deps": [features if d == "features" else d for d in deps if d != "features" or backbone]}
    if rule in STAGE_PLOTS:
        plot, props = STAGE_PLOTS[rule]
        stage["outs"] = [o for o in outs if o != plot]
        stage["plots"] = [Flow({plot: Flow(props)})]
    else:
        stage["outs"] = list(outs)
    if rule == "report":
        stage["metrics"] = [SUMMARY]
    return stage


def render(overrides: list[str]) -> str:
    """The dvc.yaml text for config.yaml + overrides (+ params.yaml), run in the repository root."""
    configs = [BASE_CONFIG, *overrides]
    cfg = load_config(*configs, experiments=EXPERIMENTS if Path(EXPERIMENTS).is_file() else None)
    models = run_models(cfg)
    backbone = {m: cfg["models"][m].get("backbone") for m in models}
    probes = {b: [m for m in models if backbone[m] == b] for b in dict.fromkeys(filter(None, backbone.values()))}
    figures = {f: [m for m in models if cfg["models"][m]["arch"] in architectures_declaring(f)]
               for f in ("attention", "samples")}
    var = {"datasets": cfg["run"]["datasets"], "seed": cfg["seed"], "seeds": seeds(cfg), "all_models": models,
           "models": [m for m in models if not backbone[m]]}
    var.update({"backbones": list(probes), "probes": Flow(probes)} if probes else {})
    var.update({f"{f}_models": found for f, found in figures.items() if found})
    folders = [f for d in cfg["run"]["datasets"] for f in image_folders(cfg, d)] + extra_test_folders(cfg)
    for folder in folders:
        if "${" in folder:  # DVC would substitute it
            raise ConfigError(f"'{folder}' contains '${{', which DVC would read as a variable; rename that folder")
    schema = str(SCHEMA_PATH.relative_to(ROOT))
    stages = {"resolve": {
        "cmd": " ".join(["python -m reprozoo resolve", *(f"--config {c}" for c in configs),
                         f"--experiments {EXPERIMENTS}"]),
        "deps": [schema, "reprozoo/models", *folders],
        "params": [Flow({c: []}) for c in configs] + [Flow({EXPERIMENTS: []})],
        "outs": [Flow({d: Flow(persist=True)}) for d in ["results/config", *(f"results/{x}/config" for x in var["datasets"])]]}}
    for rule in RULES:
        if rule in ("tune", "train", "evaluate"):
            if var["models"]:
                stages[rule] = _stage(rule, "${models}")
            for b in probes:
                stages[f"{rule}-{b}"] = _stage(rule, f"${{probes.{b}}}", b)
        elif rule == "cache_features" and not probes or rule in ("attention", "samples") and not figures[rule]:
            continue
        else:
            stages[rule] = _stage(rule)
    plots = []
    for d in var["datasets"]:
        history = {(m, s): f"results/{d}/train/{m}/seed{s}/history.csv" for m in models for s in var["seeds"]}
        plots.append({f"{d}/accuracy": {"x": "epoch", "y": {path: "test_accuracy" for path in history.values()}}})
        plots += [{f"{d}/{m}/loss": Flow(x="epoch", y=Flow({path: ["train_loss", "test_loss"]}))}
                  for (m, s), path in history.items()]
    command = " ".join(["python -m reprozoo dvc-yaml", *(f"--configfile {o}" for o in overrides)])
    header = (f"# Generated by `{command}` from config.yaml and rules/*.smk: do not edit (docs/dvc.md).\n"
              f"{CONFIG_LINE}{' + '.join(configs)}\n")
    body = yaml.dump({"vars": [var], "stages": stages, "plots": plots}, Dumper=_Dumper, sort_keys=False,
                     width=10_000)
    return header + body


class Flow(dict):
    """A mapping dvc.yaml shows on one line."""


class _Dumper(yaml.SafeDumper):
    """Block style, but names and Flow mappings on one line; no YAML anchors."""

    def ignore_aliases(self, data) -> bool:
        return True

    def represent_list(self, data):
        flow = all(isinstance(x, (str, int)) and "/" not in str(x) for x in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)

    def represent_flow(self, data):
        return self.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=True)


_Dumper.add_representer(list, _Dumper.represent_list)
_Dumper.add_representer(Flow, _Dumper.represent_flow)


def recorded_overrides(path: Path = DVC_YAML) -> list[str]:
    """The override files an existing dvc.yaml was generated for (its `# Config:` line)."""
    for line in path.read_text().splitlines() if path.is_file() else []:
        if line.startswith(CONFIG_LINE):
            return line[len(CONFIG_LINE):].split(" + ")[1:]
    raise ConfigError(f"{path}: no '{CONFIG_LINE.strip()}' line; regenerate it with `python -m reprozoo dvc-yaml`")


def missing_sections(overrides: list[str]) -> list[str]:
    """The models of config.yaml + overrides that params.yaml has no section for (all of them, without the file)."""
    cfg = load_config(BASE_CONFIG, *overrides)
    layer = _read_yaml(EXPERIMENTS) if Path(EXPERIMENTS).is_file() else {}
    return [m for m in cfg["models"] if m not in cfg.get("ablations", {}) and m not in layer]


def add_sections(names: list[str]) -> None:
    """Give params.yaml an empty section for each of `names`, keeping what the others hold (creating the file)."""
    layer = _read_yaml(EXPERIMENTS) if Path(EXPERIMENTS).is_file() else {}
    layer.update({name: {} for name in names})
    Path(EXPERIMENTS).write_text(LAYER_HEADER + yaml.safe_dump(layer, sort_keys=False))


# `dvc plots show` fills this page (.dvc/config: plots.html_template): Vega, Vega-Lite and Vega-Embed
# inline, from vl-convert's bundle, where DVC's own page loads them from a CDN and is blank offline.
PLOTS_TEMPLATE = Path(".dvc/plots.html")


def plots_template() -> str:
    import vl_convert

    return ("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>DVC plots (offline)</title>\n"
            f"<script>\n{vl_convert.javascript_bundle()}\n</script>\n</head>\n<body>\n{{plot_divs}}\n</body>\n</html>\n")


def write_dvc_yaml(overrides: list[str], check: bool = False) -> Path:
    """Write dvc.yaml for config.yaml + overrides (first giving params.yaml a section for each new model);
    with check, compare it with a fresh generation for the config files it records."""
    path = DVC_YAML
    if check:
        overrides = overrides or recorded_overrides(path)
    command = " ".join(["python -m reprozoo dvc-yaml", *(f"--configfile {o}" for o in overrides)])
    missing = missing_sections(overrides)
    if check and missing:
        raise ConfigError(f"{EXPERIMENTS}: no section for model '{missing[0]}': run `{command}`")
    if missing:  # all of them when there is no params.yaml
        add_sections(missing)
    text = render(overrides)
    if check and path.read_text() != text:
        raise ConfigError(f"{path} is stale (the config or the workflow changed): run `{command}`")
    page = plots_template() if PLOTS_TEMPLATE.parent.is_dir() else None  # in a DVC repository
    if check and page and (not PLOTS_TEMPLATE.is_file() or PLOTS_TEMPLATE.read_text() != page):
        raise ConfigError(f"{PLOTS_TEMPLATE} is stale (another vl-convert-python): run `{command}`")
    if not check:
        path.write_text(text)
        if page and (not PLOTS_TEMPLATE.is_file() or PLOTS_TEMPLATE.read_text() != page):
            PLOTS_TEMPLATE.write_text(page)
    return path
