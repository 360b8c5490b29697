"""Configuration: load, merge overrides, validate, resolve one model's section.

Torch-free on purpose: the Snakefile imports this module on hosts that may only
have Snakemake installed (container runs).
"""
from __future__ import annotations

import ast
import copy
import json
import math
import os
from pathlib import Path
from typing import NamedTuple

import jsonschema
import yaml

from reprozoo.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = ROOT / "workflow" / "schemas" / "config.schema.yaml"
MODELS_DIR = Path(__file__).resolve().parent / "models"
EXPERIMENTS = "params.yaml"  # the experiment file (with_experiments), in the working directory


# Shared defaults, defined once.
IMAGE_SIZE = 32            # px: datasets are stored at this size unless `datasets.<name>.image_size` says otherwise
BACKBONE_BATCH_SIZE = 256  # images per forward pass while caching a frozen backbone's features


class ConfigError(UserError, ValueError):
    """A configuration problem, reported as one line naming the key."""


def load_schema() -> dict:
    with open(SCHEMA_PATH) as f:
        return yaml.safe_load(f)


def deep_merge(base: dict, override: dict) -> dict:
    """Recursive dict update (lists and scalars are replaced), like Snakemake's --configfile."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(path: str | Path, *overrides: str | Path, experiments: str | Path | None = None,
                values: dict | None = None) -> dict:
    """Read config.yaml, apply override files in order, then `values` (what `snakemake --config`
    sets), then the experiment file if given, validate, expand ablations: as the Snakefile does."""
    cfg = _read_yaml(path)
    for override in overrides:
        cfg = deep_merge(cfg, _read_yaml(override))
    if values:
        cfg = deep_merge(cfg, values)
    if experiments is not None:
        cfg = with_experiments(cfg, experiments)
    validate_config(cfg)
    return expand_ablations(cfg)


def check_config(path: str | Path, *overrides: str | Path, model: str | None = None) -> str:
    """`check-config`: the resolved plan of a valid config, or models.<model> as its stages get it."""
    cfg = load_config(path, *overrides)
    if model:
        return json.dumps(resolve_model(cfg, model), indent=2, sort_keys=True)
    return f"config OK: datasets {cfg['run']['datasets']} x models {run_models(cfg)}"


def with_experiments(cfg: dict, path: str | Path = EXPERIMENTS, missing_ok: bool = False) -> dict:
    """cfg with the experiment file applied: params.yaml holds one section override per model
    (`mlp: {hparams: paper}` merges into models.mlp), the file `dvc exp run -S` edits. Snakemake
    applies it too, so both engines see one configuration (README "DVC"). It holds what a model
    trains with: DVC tracks each section as a whole, so reported numbers (but the lr and epochs
    `hparams: paper` trains with) and verifier expectations stay in config.yaml."""
    if missing_ok and not Path(path).is_file():
        return cfg
    layer = _read_yaml(path)
    for name, section in layer.items():
        if name not in cfg.get("models", {}):
            raise ConfigError(f"{path}: '{name}' is no model of the config (it holds one section per model)")
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: '{name}' must be a mapping: keys of models.{name} to override")
        paper = section.get("paper") if isinstance(section.get("paper"), dict) else {}  # else: the schema says
        extra = ["verify"] * ("verify" in section) + [f"paper.{k}" for k in paper if k not in ("lr", "epochs")]
        if extra:
            raise ConfigError(f"{path}: '{name}.{extra[0]}': reported numbers and verify expectations belong in "
                              "config.yaml (this file holds what a model trains with)")
    return deep_merge(cfg, {"models": layer})


def expand_ablations(cfg: dict) -> dict:
    """Each ablation becomes a model of its own: the base's section with `set` applied,
    its own `paper:` block, and no verify expectations of the base. Idempotent."""
    cfg = copy.deepcopy(cfg)
    for name, ablation in cfg.get("ablations", {}).items():
        cfg["models"][name] = _ablation_model(cfg, ablation)
    return cfg


def _ablation_model(cfg: dict, ablation: dict) -> dict:
    base = {k: v for k, v in cfg["models"][ablation["base"]].items() if k not in ("paper", "verify")}
    return {**deep_merge(base, ablation["set"]), "paper": ablation.get("paper", {})}


def run_models(cfg: dict) -> list[str]:
    """The models the pipeline runs: run.models, then each of run.ablations whose base runs."""
    return cfg["run"]["models"] + [a for a in cfg["run"].get("ablations", [])
                                   if cfg["ablations"][a]["base"] in cfg["run"]["models"]]


def _read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path}: not found")
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"config file {path}: not valid YAML{where} ({problem})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    return data


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "(top level)"


def _one_line(error: jsonschema.ValidationError, prefix: str = "") -> str:
    # Prefer the deepest, most specific error (e.g. inside allOf/if-then branches).
    error = jsonschema.exceptions.best_match([error, *error.context]) if error.context else error
    key = _key_path(error)
    if prefix:
        key = prefix if key == "(top level)" else f"{prefix}.{key}"
    message = error.message
    if error.validator == "additionalProperties":
        message = message.replace("Additional properties are not allowed", "unknown key")
    return f"config key '{key}': {message}"


def validate_against(instance: dict, schema_ref: str | None = None, prefix: str = "") -> None:
    """Validate against the whole schema, or one of its $defs (e.g. 'resolved_model')."""
    schema = load_schema()
    if schema_ref is not None:
        schema = {**schema, "$ref": f"#/$defs/{schema_ref}"}
        for key in ("type", "required", "properties", "additionalProperties"):
            schema.pop(key, None)
    validator = _Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is not None:
        raise ConfigError(_one_line(error, prefix))
    _check_finite(instance, prefix)


def _is_strict_integer(checker, instance) -> bool:
    """An integer is an int: 64.0 is not (JSON Schema would accept it), nor is True."""
    return isinstance(instance, int) and not isinstance(instance, bool)


# Draft 2020-12 with a stricter `integer`: `batch_size: 64.0` is refused, not truncated later.
_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_strict_integer))


def _check_finite(value, key: str) -> None:
    """YAML's .nan and .inf pass every numeric bound of a schema; refuse them anywhere."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key '{key or '(top level)'}': {value} is not a finite number")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        _check_finite(v, f"{key}.{k}" if key else str(k))


def validate_config(cfg: dict) -> None:
    """Schema check plus the cross-references a schema cannot express."""
    validate_against(cfg)
    for i, name in enumerate(cfg["run"]["datasets"]):
        if name not in cfg["datasets"]:
            raise ConfigError(f"config key 'run.datasets.{i}': unknown dataset '{name}' "
                              f"(defined: {', '.join(sorted(cfg['datasets']))})")
    for i, name in enumerate(cfg["run"]["models"]):
        if name not in cfg["models"]:
            raise ConfigError(f"config key 'run.models.{i}': unknown model '{name}' "
                              f"(defined: {', '.join(sorted(cfg['models']))})")
    for i, name in enumerate(cfg["run"].get("ablations", [])):
        ablation = cfg.get("ablations", {}).get(name)
        if ablation is None:
            raise ConfigError(f"config key 'run.ablations.{i}': unknown ablation '{name}' "
                              f"(defined: {', '.join(sorted(cfg.get('ablations', {}))) or 'none'})")
    for name, ablation in cfg.get("ablations", {}).items():
        if ablation["base"] not in cfg["models"]:
            raise ConfigError(f"config key 'ablations.{name}.base': unknown model '{ablation['base']}'")
        if name in cfg["models"] and cfg["models"][name] != _ablation_model(cfg, ablation):  # expanded is fine
            raise ConfigError(f"config key 'ablations.{name}': a model of that name exists already")
    _check_lr_ranges(cfg)
    archs = registered_architectures()
    for name, section in cfg["models"].items():
        if section["arch"] not in archs:
            raise ConfigError(f"config key 'models.{name}.arch': unknown architecture "
                              f"'{section['arch']}' (registered: {', '.join(sorted(archs))})")
        _check_args(f"models.{name}.args", section["arch"], archs[section["arch"]], section.get("args", {}))
        if "backbone" in section and section["backbone"] not in cfg.get("backbones", {}):
            raise ConfigError(f"config key 'models.{name}.backbone': unknown backbone '{section['backbone']}' "
                              f"(defined: {', '.join(sorted(cfg.get('backbones', {}))) or 'none'})")
    for name, ablation in cfg.get("ablations", {}).items():
        base_arch = cfg["models"][ablation["base"]]["arch"]
        _check_args(f"ablations.{name}.set.args", base_arch, archs[base_arch], ablation["set"].get("args", {}))
    for name in run_models(cfg):
        section = cfg["models"].get(name) or deep_merge(cfg["models"][cfg["ablations"][name]["base"]],
                                                         cfg["ablations"][name]["set"])
        if section.get("hparams", cfg["protocol"]["hparams"]) == "paper":
            found = paper_hparams(cfg, name)
            missing = [key for key in ("lr", "epochs") if key not in found]
            if missing and name in cfg["models"]:
                raise ConfigError(f"config key 'models.{name}.paper.{missing[0]}': required by "
                                  "'hparams: paper' but missing")
            if missing:
                raise ConfigError(f"config key 'ablations.{name}.paper.{missing[0]}': required by 'hparams: paper' "
                                  f"but missing (its base '{cfg['ablations'][name]['base']}' gives none either)")


def _check_lr_ranges(cfg: dict) -> None:
    """Every `tune.lr_log_range` is [lo, hi] with lo < hi (hyperopt would fail only inside the tune job)."""
    sections = [("protocol.tune", cfg["protocol"]["tune"])]
    sections += [(f"models.{n}.tune", m["tune"]) for n, m in cfg["models"].items() if "tune" in m]
    sections += [(f"ablations.{n}.set.tune", a["set"]["tune"]) for n, a in cfg.get("ablations", {}).items()
                 if "tune" in a["set"]]
    for key, tune in sections:
        if "lr_log_range" in tune:
            lo, hi = tune["lr_log_range"]
            if not lo < hi:
                raise ConfigError(f"config key '{key}.lr_log_range': [{lo}, {hi}] must be [low, high] with "
                                  f"low < high (lr is log-uniform over [e^low, e^high])")


def _check_args(key: str, name: str, arch: "Architecture", args: dict) -> None:
    """Architecture `name`'s factory takes these keyword arguments (read from its source, no torch)."""
    unknown = sorted(set(args) - set(arch.args) - {"num_classes"})
    if unknown and not arch.any_keyword:
        raise ConfigError(f"config key '{key}.{unknown[0]}': '{name}' takes no argument '{unknown[0]}' "
                          f"(it takes: {', '.join(a for a in arch.args if a != 'num_classes')})")


def resolve_model(cfg: dict, name: str) -> dict:
    """The model's own view of the config: protocol defaults merged with its section.

    This is all a tune/train/evaluate stage receives, so a change to one model's
    section changes only that model's jobs.
    """
    if name not in cfg["models"]:
        raise ConfigError(f"config key 'models': unknown model '{name}' "
                          f"(defined: {', '.join(sorted(cfg['models']))})")
    protocol = {k: v for k, v in cfg["protocol"].items() if k != "split"}
    resolved = deep_merge(protocol, cfg["models"][name])
    resolved.setdefault("args", {})
    # The reported numbers matter to training only under `hparams: paper` (lr, epochs);
    # the rest of the paper block goes to the report alone, so editing it reruns only the report.
    resolved.pop("verify", None)  # the verifier's expectations reach only the verify stage
    resolved.pop("paper", None)
    resolved["paper"] = paper_hparams(cfg, name) if resolved["hparams"] == "paper" else {}
    if "backbone" in resolved:
        resolved["backbone"] = {"name": resolved["backbone"], **cfg["backbones"][resolved["backbone"]]}
    resolved["name"] = name
    resolved["seed"] = cfg["seed"]
    return resolved


def paper_hparams(cfg: dict, name: str) -> dict:
    """The reported lr and epochs that model (or ablation) `name` trains with under
    `hparams: paper`. An ablation the study gives none for takes its base's, with
    `from: <base>`: the ablation changes one thing, not the recipe."""
    ablation = cfg.get("ablations", {}).get(name)
    paper = (ablation if ablation is not None else cfg["models"][name]).get("paper", {})
    found = {k: paper[k] for k in ("lr", "epochs") if k in paper}
    if ablation is not None and not found:
        base = cfg["models"][ablation["base"]].get("paper", {})
        found = {k: base[k] for k in ("lr", "epochs") if k in base}
        if found:
            found["from"] = ablation["base"]
    return found


def resolve_backbone(cfg: dict, name: str) -> dict:
    """What cached features depend on: the backbone and the input normalisation, nothing else."""
    if name not in cfg.get("backbones", {}):
        raise ConfigError(f"config key 'backbones': unknown backbone '{name}'")
    return {"name": name, "batch_size": BACKBONE_BATCH_SIZE, **cfg["backbones"][name],
            "normalize": cfg["protocol"]["normalize"]}


def resolve_dataset(cfg: dict, name: str) -> dict:
    if name not in cfg["datasets"]:
        raise ConfigError(f"config key 'datasets': unknown dataset '{name}' "
                          f"(defined: {', '.join(sorted(cfg['datasets']))})")
    section = cfg["datasets"][name]
    return dataset_section(name, section)


def dataset_section(name: str, section: dict) -> dict:
    """A dataset's section as a stage receives it: its name, the stored image size, whether it is the paper's."""
    return {"name": name, "image_size": IMAGE_SIZE, "paper_dataset": section["kind"] == "cifar10", **section}


def section_from_json(kind: str, text: str) -> dict:
    """A stage's section given as JSON on the command line (`--model JSON`, tests and one-off runs)
    instead of by name: checked as the config's, completed as the resolver completes it."""
    what = f"--{kind}"
    if kind == "model":
        return parse_json_arg(text, what, "resolved_model")
    value = parse_json_arg(text, what)
    name, normalize = value.pop("name", None), value.pop("normalize", None) if kind == "backbone" else None
    if not name:
        raise ConfigError(f"{what}: missing key 'name'")
    validate_against(value, kind, prefix=what)
    if kind == "dataset":
        return dataset_section(name, value)
    if not normalize:
        raise ConfigError(f"{what}: needs 'normalize' besides the backbone section")
    return {"name": name, "batch_size": BACKBONE_BATCH_SIZE, **value, "normalize": normalize}


# A stage's section, resolved by name (reprozoo/stages.py `section`): the same function for the
# Snakefile (a job's rerun params) and the CLI (what the stage runs with).
SECTIONS = {"dataset": resolve_dataset, "model": resolve_model, "backbone": resolve_backbone}


def _report_models(cfg: dict, models: list[str]) -> list[str]:
    unknown = [m for m in models if m not in cfg["models"]]
    if unknown:
        raise ConfigError(f"--models: unknown model '{unknown[0]}' (defined: {', '.join(sorted(cfg['models']))})")
    return list(dict.fromkeys(models))


# What else a stage takes from the config (reprozoo/stages.py `from_config`), as
# value(cfg, name of its section, the report's models).
CONFIG_VALUES = {
    "expect": lambda cfg, name, models: cfg["models"][name].get("verify", {}),
    "extra_tests": lambda cfg, name, models: {n: s["root"] for n, s in sorted(cfg.get("extra_test", {}).items())},
    "papers": lambda cfg, name, models: {m: cfg["models"][m].get("paper", {}) for m in _report_models(cfg, models)},
    "study": lambda cfg, name, models: cfg.get("study", {}),
    "ablations": lambda cfg, name, models: {m: cfg["ablations"][m] for m in _report_models(cfg, models)
                                            if m in cfg.get("ablations", {})},
}


def image_folders(cfg: dict, stage: str, wildcards: dict) -> list[str]:
    """The image folders a job of `stage` reads besides its input files: an imagefolder
    dataset's train/ and test/ (download, prepare), each extra test set's test/ (evaluate).
    Snakemake sees their content through a digest param (rules/common.smk), DVC as
    folder deps it hashes (reprozoo/dvc.py): both engines take the list from here."""
    if stage in ("download", "prepare"):
        dataset = resolve_dataset(cfg, wildcards["dataset"])
        if dataset["kind"] == "imagefolder":
            return [os.path.join(dataset["root"], split) for split in ("train", "test")]
    if stage == "evaluate":
        return [os.path.join(spec["root"], "test") for _, spec in sorted(cfg.get("extra_test", {}).items())]
    return []


def parse_json_arg(text: str, what: str, schema_ref: str | None = None) -> dict:
    """Parse a JSON config section given on the command line, validating it."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{what}: not valid JSON ({e.msg} at char {e.pos})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{what}: must be a JSON object")
    if schema_ref is not None:
        validate_against(value, schema_ref, prefix=what)
    return value


class Architecture(NamedTuple):
    """What the torch-free side (the Snakefile, config checks) knows of a registered architecture:
    read from its `@register_model(...)` decorator, the same declaration reprozoo.models imports."""
    source: Path                     # the file that defines it
    objective: str                   # `objective=`, default "classification"
    declares: frozenset[str]         # which of attention / reference / samples it declares
    args: tuple[str, ...]            # the factory's keyword arguments
    any_keyword: bool                # the factory takes **kwargs


def registered_architectures() -> dict[str, Architecture]:
    """Architecture name -> its declarations, parsed with `ast` instead of imported, so that it
    works without torch and the Snakefile can list a model's own source file as an input of its jobs."""
    found: dict[str, Architecture] = {}
    for path in sorted(MODELS_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef):
                continue
            for dec in node.decorator_list:
                target = dec.func if isinstance(dec, ast.Call) else dec
                if isinstance(target, ast.Name) and target.id == "register_model":
                    keywords = {kw.arg: kw.value for kw in getattr(dec, "keywords", [])}
                    objective = keywords.get("objective")
                    names = [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]
                    found[node.name] = Architecture(
                        path, objective.value if isinstance(objective, ast.Constant) else "classification",
                        frozenset(k for k in ("attention", "reference", "samples") if k in keywords),
                        tuple(names), node.args.kwarg is not None)
    return found


def architectures_declaring(figure: str) -> set[str]:
    """Architectures whose registry entry declares `figure` (attention, reference, samples)."""
    return {name for name, arch in registered_architectures().items() if figure in arch.declares}


def _sibling_imports(path: Path) -> set[Path]:
    """Model modules that `path` imports (`from reprozoo.models.layers import ...`)."""
    deps = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("reprozoo.models."):
            dep = MODELS_DIR / (node.module.split(".")[-1] + ".py")
            if dep.is_file():
                deps.add(dep)
    return deps


def model_sources(arch: str) -> list[Path]:
    """The architecture's own file plus the model modules it builds on, transitively."""
    archs = registered_architectures()
    if arch not in archs:
        raise ConfigError(f"unknown architecture '{arch}' (registered: {', '.join(sorted(archs))})")
    files, todo = [], [archs[arch].source]
    while todo:
        path = todo.pop()
        if path not in files:
            files.append(path)
            todo.extend(sorted(_sibling_imports(path)))
    return files
