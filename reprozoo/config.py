"""Configuration: load config.yaml, merge overrides and the experiment file, validate.

What each job receives of it is reprozoo/sections.py; what each architecture accepts is read
from the model files by reprozoo/architectures.py. Torch-free on purpose: the Snakefile
imports this module on hosts that may only have Snakemake installed (container runs).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

from reprozoo.architectures import Architecture, registered_architectures
from reprozoo.errors import ConfigError
from reprozoo.schema import STUDY_SCHEMA_PATH, check_size, load_schema, read_yaml, validate_against

EXPERIMENTS = "params.yaml"  # the experiment file (with_experiments), in the working directory
BACKBONE_BATCH_SIZE = 256  # images per forward pass while caching a frozen backbone's features


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
    sets), then complete it as the Snakefile does (`complete`); the study's record is read from
    beside config.yaml."""
    cfg = read_yaml(path)
    for override in overrides:
        cfg = deep_merge(cfg, read_yaml(override))
    if values:
        cfg = deep_merge(cfg, values)
    return complete(cfg, experiments, Path(path).parent)


def complete(cfg: dict, experiments: str | Path | None = None, base: Path = Path(".")) -> dict:
    """What every reader of a config does with it, the Snakefile and `load_config` alike: apply the
    experiment file (if given), validate the run, read the study's record (`cfg["study"]`, a path
    relative to `base`, becomes the record), expand the ablations, and settle each run model's
    plan (`hparams_plan`), so that a missing reported number is one line before any job."""
    if experiments is not None:
        cfg = with_experiments(cfg, experiments)
    validate_config(cfg)
    cfg = expand_ablations({**cfg, "study": read_study(base / cfg["study"])})
    for name in run_models(cfg):
        hparams_plan(cfg, name)
    return cfg


def read_study(path: Path) -> dict:
    """The study's record (config/study.yaml), validated against its own schema."""
    if not path.is_file():
        raise ConfigError(f"config key 'study': the study's record {path} is not found")
    study = read_yaml(path)
    try:
        validate_against(study, schema=load_schema(STUDY_SCHEMA_PATH))
    except ConfigError as e:
        raise ConfigError(f"study record {path}: {str(e).replace('config key', 'key', 1)}") from None
    return study


RECORD = {"paper": "models", "verify": "verify"}  # a run section's key that belongs in the study's record


def with_experiments(cfg: dict, path: str | Path = EXPERIMENTS) -> dict:
    """cfg with the experiment file applied: params.yaml holds one section override per model
    (`mlp: {hparams: fixed, lr: 1.0e-4, epochs: 13}` merges into models.mlp), the file `dvc exp run -S`
    edits. Snakemake applies it too, so both engines see one configuration (docs/dvc.md). It holds
    what a model runs with, never the study's record (reported numbers, verifier expectations)."""
    layer = read_yaml(path)
    for name, section in layer.items():
        if name not in cfg.get("models", {}):
            raise ConfigError(f"{path}: '{name}' is no model of the config (it holds one section per model)")
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: '{name}' must be a mapping: keys of models.{name} to override")
        for key in RECORD:
            if key in section:
                raise ConfigError(f"{path}: '{name}.{key}': reported numbers and verify expectations are the "
                                  f"study's record ({cfg.get('study')}), which an experiment never changes")
    return deep_merge(cfg, {"models": layer})


def expand_ablations(cfg: dict) -> dict:
    """Each ablation becomes a model of its own: the base's section with `set` applied. Idempotent."""
    cfg = copy.deepcopy(cfg)
    for name, ablation in cfg.get("ablations", {}).items():
        cfg["models"][name] = _ablation_model(cfg, ablation)
    return cfg


def _ablation_model(cfg: dict, ablation: dict) -> dict:
    return deep_merge(cfg["models"][ablation["base"]], ablation["set"])


def run_models(cfg: dict) -> list[str]:
    """The models the pipeline runs: run.models, then each of run.ablations whose base runs."""
    return cfg["run"]["models"] + [a for a in cfg["run"].get("ablations", [])
                                   if cfg["ablations"][a]["base"] in cfg["run"]["models"]]


MAX_SEED = 2**32 - 1  # numpy's np.random.seed takes no more (torch takes 2^64 - 1)


def validate_config(cfg: dict) -> None:
    """Schema check plus the cross-references a schema cannot express."""
    check_size(cfg)
    sections = [(f"models.{n}", m) for n, m in (cfg.get("models") or {}).items()]
    sections += [(f"ablations.{n}", a) for n, a in (cfg.get("ablations") or {}).items()]
    for key, section in sections:  # the schema would say "unknown key": say where it belongs
        found = [k for k in RECORD if isinstance(section, dict) and k in section]
        if found:
            raise ConfigError(f"config key '{key}.{found[0]}': the study's record holds it ({cfg.get('study')}, under "
                              f"{RECORD[found[0]]}.{key.split('.')[1]}); a run's config only says what to run")
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


def hparams_plan(cfg: dict, name: str) -> dict:
    """How model (or ablation) `name` of a completed config gets its lr and epochs, decided here and
    nowhere else: {"hparams": "tuned", "tune": search range and budget}, or {"hparams": "paper" or
    "fixed", "lr", "epochs"}: the study's reported ones (an ablation it reports none for takes its
    base's, with "from": the ablation changes one thing, not the recipe), or the model's own."""
    section = cfg["models"][name]
    how = section.get("hparams", cfg["protocol"]["hparams"])
    base = cfg.get("ablations", {}).get(name, {}).get("base")
    key = f"ablations.{name}.set" if base else f"models.{name}"
    if how == "fixed":
        missing = [k for k in ("lr", "epochs") if k not in section]
        if missing:
            raise ConfigError(f"config key '{key}.{missing[0]}': required by 'hparams: fixed' but missing")
        return {"hparams": "fixed", "lr": section["lr"], "epochs": section["epochs"]}
    given = [k for k in ("lr", "epochs") if k in section]
    if given:
        raise ConfigError(f"config key '{key}.{given[0]}': taken only under 'hparams: fixed' (this model's is "
                          f"'{how}')")
    if how == "tuned":
        return {"hparams": "tuned", "tune": deep_merge(cfg["protocol"]["tune"], section.get("tune", {}))}
    record = cfg["study"].get("models", {})
    found = {k: record[name][k] for k in ("lr", "epochs") if k in record.get(name, {})}
    if base and not found:
        found = {k: record[base][k] for k in ("lr", "epochs") if k in record.get(base, {})}
        found.update({"from": base} if found else {})
    missing = [k for k in ("lr", "epochs") if k not in found]
    if missing:
        nor = f" (nor for its base '{base}')" if base else ""
        raise ConfigError(f"config key '{key}.hparams': 'paper', but the study's record reports no "
                          f"{missing[0]} for '{name}'{nor}: add it under models.{name} there, or tune it")
    return {"hparams": "paper", **found}


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
