"""What each job reads of the config: its section, resolved once per run into a small JSON file.

A job never parses the config. The Snakefile (when it is read) and `python -m reprozoo resolve`
(DVC's first stage) resolve it once and write every section file of the run: the keyword
arguments of one stage function (the model's resolved section, a verifier's expectations, the
report's reported numbers, ...) plus `tracks`, what the job depends on beyond them (the digest
of the model's source files, the content of the image folders it reads). A file is rewritten
only when its content changes, so its mtime (Snakemake) and its hash (DVC) change exactly when
something its jobs depend on does: editing one model's section reruns that model's jobs,
editing reported numbers reruns the report alone, editing a model file reruns that model.

Torch-free: the Snakefile imports it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from reprozoo.architectures import model_sources, registered_architectures
from reprozoo.config import BACKBONE_BATCH_SIZE, ConfigError, deep_merge, hparams_plan, parse_json_arg, run_models
from reprozoo.schema import validate_against
from reprozoo.stages import IMAGE_SIZE, PATHS

TRACKS = "tracks"  # the key of a section file that is no argument of its stage


def resolve_model(cfg: dict, name: str) -> dict:
    """The model's own view of the config: protocol defaults merged with its section.

    This is all a tune/train/evaluate stage receives, so a change to one model's
    section changes only that model's jobs.
    """
    if name not in cfg["models"]:
        raise ConfigError(f"config key 'models': unknown model '{name}' "
                          f"(defined: {', '.join(sorted(cfg['models']))})")
    plan = ("split", "tune", "hparams", "lr", "epochs")  # the split is the dataset's; the rest, hparams_plan's
    protocol = {k: v for k, v in cfg["protocol"].items() if k not in plan}
    resolved = deep_merge(protocol, {k: v for k, v in cfg["models"][name].items() if k not in plan})
    resolved.setdefault("args", {})
    resolved.update(hparams_plan(cfg, name))  # the lr and epochs, or the search: from the record only when paper
    if "backbone" in resolved:
        resolved["backbone"] = resolve_backbone(cfg, resolved["backbone"], own_section=False)
    resolved["objective"] = registered_architectures()[resolved["arch"]].objective
    resolved["name"] = name
    resolved["seed"] = cfg["seed"]
    return resolved


def resolve_backbone(cfg: dict, name: str, own_section: bool = True) -> dict:
    """What cached features depend on: the backbone, the input normalisation and the CPU threads,
    nothing else (a model's section holds the latter two beside its backbone's)."""
    if name not in cfg.get("backbones", {}):
        raise ConfigError(f"config key 'backbones': unknown backbone '{name}'")
    spec = {"name": name, "batch_size": BACKBONE_BATCH_SIZE, **cfg["backbones"][name]}
    protocol = cfg["protocol"]
    return {**spec, "normalize": protocol["normalize"], "threads": protocol["threads"]} if own_section else spec


def resolve_dataset(cfg: dict, name: str) -> dict:
    if name not in cfg["datasets"]:
        raise ConfigError(f"config key 'datasets': unknown dataset '{name}' "
                          f"(defined: {', '.join(sorted(cfg['datasets']))})")
    return dataset_section(name, cfg["datasets"][name])


def dataset_section(name: str, section: dict) -> dict:
    """A dataset's section as a stage receives it: its name, the stored image size, whether it is the paper's."""
    return {"name": name, "image_size": IMAGE_SIZE, "paper_dataset": section["kind"] == "cifar10", **section}


def section_from_json(kind: str, text: str) -> dict:
    """A stage's section given as JSON on the command line (`--model-json JSON`, tests and one-off
    runs) instead of by name: checked as the config's, completed as the resolver completes it."""
    what = f"--{kind}-json"
    if kind == "model":
        return parse_json_arg(text, what, "resolved_model")
    value = parse_json_arg(text, what)
    name = value.pop("name", None)
    protocol = {k: value.pop(k, None) for k in ("normalize", "threads")} if kind == "backbone" else {}
    if not name:
        raise ConfigError(f"{what}: missing key 'name'")
    validate_against(value, kind, prefix=what)
    if kind == "dataset":
        return dataset_section(name, value)
    if not all(protocol.values()):
        raise ConfigError(f"{what}: needs 'normalize' and 'threads' besides the backbone section")
    for key, setting in protocol.items():
        validate_against(setting, f"protocol_keys/{key}", prefix=f"{what}.{key}")
    return {"name": name, "batch_size": BACKBONE_BATCH_SIZE, **value, **protocol}


def seeds(cfg: dict) -> list[int]:
    """The seeds of each model's runs: seed, seed+1, ... (`repeats`)."""
    return [cfg["seed"] + i for i in range(cfg.get("repeats", 1))]


def image_folders(cfg: dict, dataset: str) -> dict[str, str]:
    """An imagefolder dataset's train/ and test/ (what download and prepare read besides their files),
    each with the config key that names it."""
    section = resolve_dataset(cfg, dataset)
    if section["kind"] != "imagefolder":
        return {}
    return {os.path.join(section["root"], split): f"datasets.{dataset}.root" for split in ("train", "test")}


def extra_test_folders(cfg: dict) -> dict[str, str]:
    """Each extra test set's test/ folder (what evaluate reads besides its files), with its config key."""
    return {os.path.join(spec["root"], "test"): f"extra_test.{name}.root"
            for name, spec in sorted(cfg.get("extra_test", {}).items())}


def _trees(folders: dict[str, str], classes: list[str] | None = None) -> dict[str, str]:
    """Each image folder's content digest, checked as its stage will check it, so that a missing or
    degenerate tree is one line naming its config key before any job (not after hours of training)."""
    from reprozoo.images import check_classes, scan_tree, tree_digest  # numpy: only where there are image folders

    digests = {}
    for folder, key in folders.items():
        if not os.path.isdir(folder):
            raise ConfigError(f"config key '{key}': {folder}/ is not a folder (an image tree: "
                              f"{folder}/<class>/<image files>)")
        try:
            scan = scan_tree(Path(folder))
        except OSError as e:
            raise ConfigError(f"config key '{key}': cannot read {e.filename or folder} ({e.strerror})") from None
        check_classes(Path(folder), {name: c["images"] for name, c in scan.items()})
        if classes is not None and list(scan) != classes:
            raise ConfigError(f"config key '{key}': classes {list(scan)} differ from the dataset's {classes}")
        digests[folder] = tree_digest(scan)
    return digests


def _folder_classes(folder: str) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir())


def source_digests(arch: str) -> dict[str, str]:
    """sha256 of each file an architecture is built from (reprozoo/architectures.py), by path."""
    root = Path(__file__).resolve().parent.parent
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in model_sources(arch)}


def section_files(cfg: dict) -> dict[str, dict]:
    """Every section file of the run (config validated, ablations expanded), path -> content."""
    models, runs = run_models(cfg), [[m, s] for m in run_models(cfg) for s in seeds(cfg)]
    resolved = {m: resolve_model(cfg, m) for m in models}
    sources = {m: source_digests(resolved[m]["arch"]) for m in models}
    extra = {n: s["root"] for n, s in sorted(cfg.get("extra_test", {}).items())}
    record = cfg["study"]  # the study's record: what the report compares with, what verify must find
    files = {}
    for d in cfg["run"]["datasets"]:
        dataset = resolve_dataset(cfg, d)
        folders = image_folders(cfg, d)
        trees = _trees(folders)
        # extra test sets must hold the dataset's classes: known here for an image tree
        classes = _folder_classes(next(iter(folders))) if folders else None  # train/'s
        extra_trees = _trees(extra_test_folders(cfg), classes)
        files[PATHS["dataset_cfg"].format(dataset=d)] = {"dataset": dataset, TRACKS: trees}
        files[PATHS["split_cfg"].format(dataset=d)] = {**cfg["protocol"]["split"], "seed": cfg["seed"]}
        for m in models:
            files[PATHS["model_cfg"].format(dataset=d, model=m)] = {"cfg": resolved[m], TRACKS: sources[m]}
            files[PATHS["verify_cfg"].format(dataset=d, model=m)] = {
                "cfg": resolved[m], "expect": record.get("verify", {}).get(m, {}), TRACKS: sources[m]}
            files[PATHS["evaluate_cfg"].format(dataset=d, model=m)] = {
                "cfg": resolved[m], "extra_tests": extra, TRACKS: {**sources[m], **extra_trees}}
        for b in sorted({resolved[m]["backbone"]["name"] for m in models if "backbone" in resolved[m]}):
            files[PATHS["backbone_cfg"].format(dataset=d, backbone=b)] = {"spec": resolve_backbone(cfg, b)}
        files[PATHS["report_cfg"].format(dataset=d)] = {
            "dataset": dataset, "runs": runs, "papers": {m: record.get("models", {}).get(m, {}) for m in models},
            "study": {k: v for k, v in record.items() if k not in ("models", "verify")}, "ablations": {m: cfg["ablations"][m] for m in models
                                                         if m in cfg.get("ablations", {})}}
    return files


def section_texts(cfg: dict) -> dict[str, str]:
    """Every section file of the run as the text written to it: path -> text. What writes them is
    reprozoo/runlock.py's `begin`, which rewrites a file only when its text changes."""
    return {path: json.dumps(content, indent=1, sort_keys=True) + "\n" for path, content in section_files(cfg).items()}


def models_in(cfg: dict, paths: list[str]) -> list[tuple[str, dict, int]]:
    """The models whose model section files are among `paths` (those a change rewrites), for
    reprozoo/models/check.py: (config key of their args, resolved section, the dataset's image size)."""
    found = {}
    for d in cfg["run"]["datasets"]:
        size = resolve_dataset(cfg, d)["image_size"]
        for m in run_models(cfg):
            if PATHS["model_cfg"].format(dataset=d, model=m) in paths:
                key = f"ablations.{m}.set.args" if m in cfg.get("ablations", {}) else f"models.{m}.args"
                found.setdefault((key, size), resolve_model(cfg, m))
    return [(key, model, size) for (key, size), model in found.items()]


def read_section(path: str | Path) -> dict:
    """A section file's stage arguments (without its `tracks`); one line when it is missing or broken.
    A model's section is checked as the config is (a hand-edited file reaches no stage unchecked)."""
    path = Path(path)
    if path.exists() and not path.is_file():  # a FIFO would block the stage for good
        raise ConfigError(f"{path}: not a regular file; rerun `python -m reprozoo resolve`")
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such section file: run the stage with --config config.yaml (or "
                          "`python -m reprozoo resolve`, or snakemake) to write it") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not a section file ({e}); rerun `python -m reprozoo resolve`") from None
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: not a section file (a JSON object); rerun `python -m reprozoo resolve`")
    content.pop(TRACKS, None)
    if "cfg" in content:
        try:
            validate_against(content["cfg"] if isinstance(content["cfg"], dict) else {}, "resolved_model", "cfg")
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}; rerun `python -m reprozoo resolve`") from None
    return content
