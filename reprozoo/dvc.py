"""dvc.yaml for `dvc repro`: `python -m reprozoo dvc-yaml [--configfile config/demo.yaml]`.

Snakemake is the orchestrator of record; dvc.yaml describes the same jobs in DVC's idiom, one
`matrix` stage per rule over the run's datasets, models and seeds. Each stage follows from its
declaration in reprozoo/stages.py, as the CLI does and as the rules (rules/*.smk) show it: the
same command, files and log. Three differences, all by design:

- DVC's first stage, `resolve`, writes the section files every job reads
  (reprozoo/sections.py); Snakemake writes them when it reads the Snakefile. Each job depends
  on its own section file, so DVC reruns what Snakemake reruns: editing one model's section
  (in config.yaml, or params.yaml through `dvc exp run -S`) reruns that model's stages,
  editing reported numbers reruns the report.
- The report depends on the folders of the per-run files it reads (results/<dataset>/eval, ...),
  and writes its figures as one folder; the metrics are its one summary file.
- Each command adds `--benchmark <the rule's benchmark file>`: the job measures itself as Snakemake
  measures it, so that Snakemake's records and report show the real times of the jobs DVC ran.

tests/test_dvc.py checks that DVC reads from this file exactly the jobs, commands, inputs and
outputs Snakemake plans. The file holds one configuration at a time (config.yaml and the
overrides named in its header); every file of a run sits in its dataset's folder.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from reprozoo.architectures import models_declaring
from reprozoo.config import EXPERIMENTS, ConfigError, load_config, run_models
from reprozoo.errors import UserError
from reprozoo.io import pdf_twin
from reprozoo.schema import SCHEMA_PATH, STUDY_SCHEMA_PATH, read_yaml
from reprozoo.sections import extra_test_folders, image_folders, seeds
from reprozoo.stages import PATHS, ROOT, STAGES, Stage, benchmark_of, log_of, rule_of

BASE_CONFIG = "config.yaml"
DVC_YAML = Path("dvc.yaml")
CONFIG_LINE = "# Config: "
LAYER_HEADER = """\
# The experiment file (docs/dvc.md): one section per model, merged into models.<name> after
# config.yaml (and its override) by Snakemake and by DVC's resolve stage. `dvc exp run -S
# params.yaml:++mlp.<key>=...` edits this file (in its own layout); config.yaml is never touched.
"""
# A stage's paths: PATHS with ${item.<name>} for the stage's names, ${seed} for the study's seed.
STUDY = {"seed": "${seed}"}
# Outputs that DVC shows as plots (each run's confusion matrix, its tuning trials), and as metrics.
# Their templates (but confusion, DVC's own) are in .dvc/plots/: one colour per model, integer epochs, lr on a log axis.
PLOTS = {"predictions": {"template": "confusion", "x": "predicted", "y": "actual", "x_label": "predicted class",
                         "y_label": "true class", "title": "{dataset} / {model}, seed {seed}: test images by class"},
         "trials": {"template": "trials", "x": "lr", "y": "best_val_loss", "x_label": "learning rate (log scale)",
                    "y_label": "tune-val loss at the best epoch (nats)", "title": "{dataset} / {model}: tuning trials"}}
METRICS = ("summary",)


def _fill(pattern: str, stage: Stage, backbone: str | None = None, study_seed: bool = False) -> str:
    values = {**STUDY, "backbone": backbone, **{n: f"${{item.{n}}}" for n in stage.names}}
    return pattern.format(**{**values, **(STUDY if study_seed else {})})


def _for_the_study_seed(stage: Stage) -> bool:
    """A seeded stage without a model (the split) runs for the study's seed alone: every model tunes and trains
    on that split, whatever the seed of its own run."""
    return "seed" in stage.names and "model" not in stage.names


def _study_seed_only(name: str) -> bool:
    """A file made for the study's seed alone (the split's)."""
    return any(name in s.outputs and _for_the_study_seed(s) for s in STAGES.values())


def _folder(name: str, stage: Stage) -> str:
    """The folder of a file the stage reads for every run (results/{dataset}/eval for metrics.json)."""
    pattern = PATHS[name]
    return _fill(pattern[:pattern.index("{model}")].rstrip("/"), stage)


def _matrix(name: str, stage: Stage, models: str) -> dict:
    """What the stage runs for: the run's datasets, backbones and models; every seed for a per-run stage
    (train, evaluate), the study's seed for the split."""
    values = {"dataset": "${datasets}", "backbone": "${backbones}", "model": models,
              "seed": ["${seed}"] if _for_the_study_seed(stage) else "${seeds}"}
    return {n: values[n] for n in stage.names}


def _stage(name: str, models: str | None = None, backbone: str | None = None) -> dict:
    stage = STAGES[name]
    log, benchmark = _fill(log_of(name), stage), _fill(benchmark_of(name), stage)
    command = [name, *(f"--{n} ${{item.{n}}}" for n in stage.names)]
    deps = [_fill(PATHS[stage.section], stage)]
    deps += [_fill(PATHS[f], stage, backbone, _study_seed_only(f)) for f in stage.inputs if f != "features" or backbone]
    deps += list(dict.fromkeys(_folder(f, stage) for f in stage.each_run + stage.each_model))
    deps += [f"reprozoo/{c}" for c in stage.code]
    outs = []
    for f in stage.outputs:
        if f.endswith("_plot"):  # a figure, with its PDF twin; a stage over every run writes its figures as a folder
            png = _fill(PATHS[f], stage)
            outs += [os.path.dirname(png)] if stage.each_run else [png, pdf_twin(png)]
        elif f not in PLOTS and f not in METRICS:
            outs.append(_fill(PATHS[f], stage))
    result = {"matrix": Flow(_matrix(name, stage, models)),
              "cmd": f"python -m reprozoo {' '.join(command)} --log {log} --benchmark {benchmark}", "deps": deps,
              "outs": outs}
    if plots := [Flow({_fill(PATHS[f], stage): Flow({**PLOTS[f], "title": _fill(PLOTS[f]["title"], stage)})})
                 for f in stage.outputs if f in PLOTS]:
        result["plots"] = plots
    if metrics := [_fill(PATHS[f], stage) for f in stage.outputs if f in METRICS]:
        result["metrics"] = metrics
    return result


def render(overrides: list[str]) -> str:
    """The dvc.yaml text for config.yaml + overrides (+ params.yaml), run in the repository root."""
    configs = [BASE_CONFIG, *overrides]
    cfg = load_config(*configs, experiments=EXPERIMENTS if Path(EXPERIMENTS).is_file() else None)
    models = run_models(cfg)
    backbone = {m: cfg["models"][m].get("backbone") for m in models}
    probes = {b: [m for m in models if backbone[m] == b] for b in dict.fromkeys(filter(None, backbone.values()))}
    figures = {name: models_declaring(name, cfg, models) for name, stage in STAGES.items() if stage.only_declaring}
    var = {"datasets": cfg["run"]["datasets"], "seed": cfg["seed"], "seeds": seeds(cfg), "all_models": models,
           "models": [m for m in models if not backbone[m]]}
    var.update({"backbones": list(probes), "probes": Flow(probes)} if probes else {})
    var.update({f"{f}_models": found for f, found in figures.items() if found})
    folders = [f for d in cfg["run"]["datasets"] for f in image_folders(cfg, d)] + list(extra_test_folders(cfg))
    for folder in folders:
        if "${" in folder:  # DVC would substitute it
            raise ConfigError(f"'{folder}' contains '${{', which DVC would read as a variable; rename that folder")
    schemas = [str(p.relative_to(ROOT)) for p in (SCHEMA_PATH, STUDY_SCHEMA_PATH)]
    record = [layer["study"] for layer in map(read_yaml, configs) if "study" in layer][-1]  # the study's record
    stages = {"resolve": {
        "cmd": " ".join(["python -m reprozoo resolve", *(f"--config {c}" for c in configs),
                         f"--experiments {EXPERIMENTS}"]),
        # the whole package: the code that writes the section files (config, sections, stages) and the
        # models' checks; the stages after it rerun only where a section file's bytes changed
        "deps": [*schemas, record, "reprozoo", *folders],
        "params": [Flow({c: []}) for c in configs] + [Flow({EXPERIMENTS: []})],
        "outs": [Flow({f"results/{d}/config": Flow(persist=True)}) for d in var["datasets"]]}}
    for name, stage in STAGES.items():
        if "model" not in stage.names:
            if all(var.get(f"{n}s") for n in stage.names if n != "seed"):  # cache-features: when a model has a backbone
                stages[rule_of(name)] = _stage(name)
        elif stage.only_declaring:
            if var.get(f"{name}_models"):
                stages[rule_of(name)] = _stage(name, f"${{{name}_models}}")
        elif "features" in stage.optional:  # a model with a frozen backbone reads its features: a group per backbone
            if var["models"]:
                stages[rule_of(name)] = _stage(name, "${models}")
            for b in probes:
                stages[f"{rule_of(name)}-{b}"] = _stage(name, f"${{probes.{b}}}", b)
        else:
            stages[rule_of(name)] = _stage(name, "${all_models}")
    plots = []
    for d in var["datasets"]:  # from the report's table of every run's history; templates in .dvc/plots/
        histories = PATHS["histories"].format(dataset=d)
        plots += [{f"{d}/accuracy": Flow(template="curves", x="epoch", y=Flow({histories: "test_accuracy"}),
                                         x_label="epoch", y_label="test accuracy (%)",
                                         title=f"{d}: test accuracy by epoch, every model")},
                  {f"{d}/loss": Flow(template="losses", x="epoch", y=Flow({histories: ["train_loss", "test_loss"]}),
                                     x_label="epoch", y_label="cross-entropy (nats)",
                                     title=f"{d}: loss by epoch, one panel per model")}]
    command = " ".join(["python -m reprozoo dvc-yaml", *(f"--configfile {o}" for o in overrides)])
    header = (f"# Generated by `{command}` from config.yaml and reprozoo/stages.py: do not edit (docs/dvc.md).\n"
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
    layer = read_yaml(EXPERIMENTS) if Path(EXPERIMENTS).is_file() else {}
    return [m for m in cfg["models"] if m not in cfg.get("ablations", {}) and m not in layer]


def add_sections(names: list[str]) -> None:
    """Give params.yaml an empty section for each of `names`, keeping what the others hold (creating the file)."""
    layer = read_yaml(EXPERIMENTS) if Path(EXPERIMENTS).is_file() else {}
    layer.update({name: {} for name in names})
    Path(EXPERIMENTS).write_text(LAYER_HEADER + yaml.safe_dump(layer, sort_keys=False))


# `dvc plots show` fills this page (.dvc/config: plots.html_template): Vega, Vega-Lite and Vega-Embed
# inline, from vl-convert's bundle, where DVC's own page loads them from a CDN and is blank offline.
# Every plot is drawn as SVG, so that what is drawn can be read back (tests/test_dvc.py, a browser's
# inspector), and a plot that fails says so in its place instead of staying blank.
PLOTS_TEMPLATE = Path(".dvc/plots.html")
EMBED_AS_SVG = """const embedOnCanvas = window.vegaEmbed;
window.vegaEmbed = (el, spec, options) => embedOnCanvas(el, spec, {renderer: "svg", ...options}).catch((e) => {
  document.querySelector(el).insertAdjacentHTML("beforeend", "<p class=\\"plot-error\\"></p>");
  document.querySelector(el + " .plot-error").textContent = "This plot failed: " + e;
});"""


def plots_template() -> str:
    import vl_convert

    return ("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>DVC plots (offline)</title>\n"
            f"<script>\n{vl_convert.javascript_bundle()}\n{EMBED_AS_SVG}\n</script>\n</head>\n<body>\n{{plot_divs}}\n"
            "</body>\n</html>\n")


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


def stage_order(dot: str):
    """The order of the pipeline's stages from `dvc dag --collapse-foreach-matrix --dot`: one node
    per stage of dvc.yaml (a matrix is one node), an edge from each stage to those that run right
    after it. Edges implied by a longer path are dropped (the transitive reduction): every job
    reads its section file from `resolve`, and those edges alone make DVC's drawing of the
    collapsed graph several terminals wide."""
    import warnings

    import networkx as nx
    import pydot

    with warnings.catch_warnings():  # pydot's parser calls pyparsing's deprecated names: not the user's concern
        warnings.simplefilter("ignore", DeprecationWarning)
        parsed = pydot.graph_from_dot_data(dot)
    if not parsed:
        raise UserError("dvc dag --dot gave no graph: is dvc.yaml there (make dvc-yaml)?")
    graph = nx.nx_pydot.from_pydot(parsed[0])
    reduced = nx.transitive_reduction(graph)
    ordered = nx.DiGraph()  # sorted: the drawing's layout follows the order it is given
    ordered.add_nodes_from(sorted(reduced))
    ordered.add_edges_from(sorted(reduced.edges))
    return ordered


def draw_stage_order() -> str:
    """The stages of dvc.yaml in order, drawn as `dvc dag` draws (its ASCII layout), first at the
    top: what `make dvc-dag` prints. `dvc dag` itself draws every model's stages side by side."""
    import subprocess
    import sys

    import networkx as nx
    from dvc.dagascii import draw

    dot = subprocess.run([sys.executable, "-m", "dvc", "dag", "--collapse-foreach-matrix", "--dot"],
                         capture_output=True, text=True)
    if dot.returncode:
        raise UserError(f"dvc dag: {(dot.stderr.strip() or 'failed').splitlines()[-1]}")
    graph = stage_order(dot.stdout)
    # dvc dag draws its edges from a stage to the stages it needs, and so puts the first at the top.
    return "\n".join(draw(sorted(part), sorted((b, a) for a, b in graph.subgraph(part).edges))
                     for part in sorted(nx.weakly_connected_components(graph), key=min))
