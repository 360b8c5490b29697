"""`resolve`: a validated config checked against what its jobs will meet, then written into the
section files each job reads. The Snakefile does this at every DAG build, DVC in its first stage,
`python -m reprozoo resolve` (or a stage given `--config`) by hand.

Before anything is written: every image tree the jobs will read is found and holds images
(reprozoo/sections.py), and every model whose section is new or changed is built and given one
image (reprozoo/models/check.py). Then the files are written as reprozoo/runlock.py allows
beside other commands in the folder. Torch-free until a model has to be built: the Snakefile
imports this module on hosts that may run every job in the image.
"""
from __future__ import annotations

import importlib.util

from reprozoo import runlock
from reprozoo.io import write_text
from reprozoo.sections import models_in, section_texts


def check_models(models: list[tuple[str, dict, int]]) -> None:
    """Build each (config key, model section, image size); where torch is not installed, the job says it."""
    if models and importlib.util.find_spec("torch"):
        from reprozoo.models.check import check_models as build_each  # torch: only when a model is to be built

        build_each(models)


def resolve(cfg: dict, role: str) -> list[str]:
    """Check `cfg` (validated, ablations expanded) and write its changed section files, taking this
    folder as `role` ('run', 'stage' or 'check': reprozoo/runlock.py); the paths written."""
    texts = section_texts(cfg)
    check_models(models_in(cfg, runlock.changed(texts)))
    return runlock.begin(role, texts, write_text)


def check(cfg: dict) -> None:
    """What a DAG build checks, for every model (`check-config`), writing nothing."""
    check_models(models_in(cfg, list(section_texts(cfg))))
