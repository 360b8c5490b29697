"""Configuration: load config.yaml, merge overrides and the experiment file, validate.

What each job receives of it is reprozoo/sections.py; what each architecture accepts is read
from the model files by reprozoo/architectures.py. Torch-free on purpose: the Snakefile
imports this module on hosts that may only have Snakemake installed (container runs).
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import jsonschema
import yaml

from reprozoo.architectures import Architecture, registered_architectures
from reprozoo.errors import ConfigError
from reprozoo.stages import ROOT

SCHEMA_PATH = ROOT / "workflow" / "schemas" / "config.schema.yaml"
EXPERIMENTS = "params.yaml"  # the experiment file (with_experiments), in the working directory


BACKBONE_BATCH_SIZE = 256  # images per forward pass while caching a frozen backbone's features


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
    cfg = read_yaml(path)
    for override in overrides:
        cfg = deep_merge(cfg, read_yaml(override))
    if values:
        cfg = deep_merge(cfg, values)
    if experiments is not None:
        cfg = with_experiments(cfg, experiments)
    validate_config(cfg)
    return expand_ablations(cfg)


def with_experiments(cfg: dict, path: str | Path = EXPERIMENTS, missing_ok: bool = False) -> dict:
    """cfg with the experiment file applied: params.yaml holds one section override per model
    (`mlp: {hparams: paper}` merges into models.mlp), the file `dvc exp run -S` edits. Snakemake
    applies it too, so both engines see one configuration (docs/dvc.md). It holds what a model
    trains with: DVC tracks each section as a whole, so reported numbers (but the lr and epochs
    `hparams: paper` trains with) and verifier expectations stay in config.yaml."""
    if missing_ok and not Path(path).is_file():
        return cfg
    layer = read_yaml(path)
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


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping from a user's file (a config layer, params.yaml), or one ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path}: not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
                          f"{e.start}); save it as UTF-8") from None
    except RecursionError:
        raise ConfigError(f"config file {path}: nested too deeply to be a config") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"config file {path}: not valid YAML{where} ({problem})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    check_size(data, f"config file {path}")
    return data


MAX_SEED = 2**32 - 1  # numpy's np.random.seed takes no more (torch takes 2^64 - 1)
MAX_VALUES = 100_000  # values a config may hold once its YAML aliases are expanded (the study's: about 1,500)


def check_size(cfg: dict, what: str = "config") -> None:
    """Refuse a config whose YAML aliases expand to more values than any config holds: nested anchors
    multiply (eight levels of ten make 10^8), and every later check would walk them all. Counted once
    per distinct object (an alias is the same object), so this costs what the file's size does."""
    sizes: dict[int, int | None] = {}

    def size(value) -> int:
        if not isinstance(value, (dict, list)):
            return 1
        if id(value) not in sizes:
            sizes[id(value)] = None  # being counted: met again inside itself, it is a cycle
            items = value.values() if isinstance(value, dict) else value
            sizes[id(value)] = min(1 + sum(size(v) for v in items), MAX_VALUES + 1)
        elif sizes[id(value)] is None:
            raise ConfigError(f"{what}: a YAML alias refers to a value that holds it (a cycle)")
        return sizes[id(value)]

    try:
        total = size(cfg)
    except RecursionError:
        raise ConfigError(f"{what}: nested too deeply to be a config") from None
    if total > MAX_VALUES:
        raise ConfigError(f"{what}: its YAML aliases expand to more than {MAX_VALUES:,} values (nested anchors?); "
                          "write the values out")


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
    if error.validator == "type" and isinstance(error.instance, str) and _number_like(error.instance):
        message += f" (YAML reads {error.instance} as text: write it with a dot, e.g. {_with_dot(error.instance)})"
    if error.validator == "type" and isinstance(error.instance, bool) and "string" in str(error.validator_value):
        message += " (YAML reads yes/no/on/off/true/false as a boolean: quote it)"
    return f"config key '{key}': {message}"


def _number_like(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _with_dot(text: str) -> str:
    """1e-3 -> 1.0e-3: the float YAML 1.1 (PyYAML) reads as a number."""
    mantissa, _, exponent = text.lower().partition("e")
    return (mantissa if "." in mantissa else mantissa + ".0") + ("e" + exponent if exponent else "")


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
    check_size(cfg)
    validate_against(cfg)
    last_seed = cfg["seed"] + cfg.get("repeats", 1) - 1
    if last_seed > MAX_SEED:
        raise ConfigError(f"config key 'seed': runs use seeds {cfg['seed']} to {last_seed} (repeats), and numpy "
                          f"takes at most {MAX_SEED}")
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
    if "num_classes" in args:
        raise ConfigError(f"config key '{key}.num_classes': set by the dataset (its number of classes), "
                          "not by the config: remove it")
    unknown = sorted(set(args) - set(arch.args))
    if unknown and not arch.any_keyword:
        raise ConfigError(f"config key '{key}.{unknown[0]}': '{name}' takes no argument '{unknown[0]}' "
                          f"(it takes: {', '.join(a for a in arch.args if a != 'num_classes')})")


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
