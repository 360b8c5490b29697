"""`resolve`: a validated config checked against what its jobs will meet, then written into the
section files each job reads. The Snakefile does this at every DAG build, DVC in its first stage,
`python -m reprozoo resolve` (or a stage given `--config`) by hand.

Before anything is written: every image tree the jobs will read is found and holds images
(reprozoo/sections.py), and every model whose section is new or changed is built and given one
image (reprozoo/models/check.py). A model that passed is remembered in the user's cache
($XDG_CACHE_HOME/reprozoo, else ~/.cache/reprozoo) by what decides the outcome (its section, the
image size, its source files, the check's own code, torch's version), so that a new checkout or a
config switched back pays torch's import (2 s) only for a model it has not seen. Then the files
are written as reprozoo/runlock.py allows beside other commands in the folder. Torch-free until a
model has to be built: the Snakefile imports this module on hosts that may run every job in the image.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from reprozoo import runlock
from reprozoo.config import EXPERIMENTS, load_config, run_models
from reprozoo.io import write_text
from reprozoo.schema import read_yaml
from reprozoo.sections import models_in, resolve_model, section_texts, source_digests

CHECK = Path(__file__).parent / "models" / "check.py"


def _passed(cfg: dict, size: int) -> Path | None:
    """Where the mark of a model that passed its check goes, named by what decides the check (None
    where the user has no home folder)."""
    try:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "reprozoo" / "checked-models"
        torch = version("torch")
    except (RuntimeError, PackageNotFoundError):
        return None
    decides = [cfg, size, source_digests(cfg["arch"]), hashlib.sha256(CHECK.read_bytes()).hexdigest(), torch]
    return cache / hashlib.sha256(json.dumps(decides, sort_keys=True).encode()).hexdigest()


def check_models(models: list[tuple[str, dict, int]]) -> None:
    """Build each (config key, model section, image size) not yet seen to pass; where torch is not
    installed, the job says what the model refuses."""
    todo = [(m, _passed(m[1], m[2])) for m in models]
    todo = [(m, mark) for m, mark in todo if mark is None or not mark.is_file()]
    if not todo or not importlib.util.find_spec("torch"):
        return
    from reprozoo.models.check import check_models as build_each  # torch: only when a model is to be built

    build_each([m for m, _ in todo])
    for _, mark in todo:
        with contextlib.suppress(OSError, AttributeError):  # a cache that cannot be written only costs a check
            mark.parent.mkdir(parents=True, exist_ok=True)
            mark.touch()


def resolve(cfg: dict, role: str) -> list[str]:
    """Check `cfg` (validated, ablations expanded) and write its changed section files, taking this
    folder as `role` ('run', 'stage' or 'check': reprozoo/runlock.py); the paths written."""
    texts = section_texts(cfg)
    check_models(models_in(cfg, runlock.changed(texts)))
    return runlock.begin(role, texts, write_text)


def check_config(path: str, *overrides: str, model: str | None = None) -> str:
    """`check-config`: what a DAG build checks (the config, its image trees, every model built once),
    writing nothing; then the resolved plan, or models.<model> as its stages get it."""
    experiments = EXPERIMENTS if Path(EXPERIMENTS).is_file() else None  # as Snakemake and DVC apply it
    cfg = load_config(path, *overrides, experiments=experiments)
    if model:
        return json.dumps(resolve_model(cfg, model), indent=2, sort_keys=True)
    check_models(models_in(cfg, list(section_texts(cfg))))
    settings = experiment_settings(read_yaml(experiments)) if experiments else []
    note = f"; {EXPERIMENTS} (the experiment file) sets {', '.join(settings)}" if settings else ""
    return f"config OK: datasets {cfg['run']['datasets']} x models {run_models(cfg)}{note}"


def experiment_settings(layer: dict, prefix: str = "") -> list[str]:
    """The values an experiment file sets, as `mlp.lr=0.0001` (an empty section sets nothing)."""
    found = []
    for key, value in layer.items():
        if isinstance(value, dict):
            found += experiment_settings(value, f"{prefix}{key}.")
        else:
            found.append(f"{prefix}{key}={json.dumps(value)}")
    return found
