"""A model's arguments checked before any job: the model is built and run on one image.

Whatever a factory or its forward pass refuses (a negative width, heads that do not divide the
width, a patch size that does not divide the image, a probe head that does not fit its backbone's
features) is a ConfigError naming the config key, raised by `check-config` and at the DAG build
(rules/common.smk), not by the tune job after the data is prepared. The model is built on torch's
meta device (no memory, no pretrained weights: `load_pretrained` only checks the weights' name
there), then given uninitialised CPU storage for one forward pass of a single image: the meta
device runs an LSTM step by step, a hundred times slower than the CPU does.
"""
from __future__ import annotations

import inspect

import torch

from reprozoo.errors import ConfigError
from reprozoo.models.pretrained import BACKBONES, create_backbone
from reprozoo.models.registry import create_model, model_entry

NUM_CLASSES = 10  # any count: no factory refuses an argument for the number of classes


def check_model(cfg: dict, image_size: int, key: str) -> None:
    """Build the resolved model section `cfg` and run one image of `image_size` px through it (or one
    feature vector of its backbone); one ConfigError naming `key` (e.g. 'models.mlp.args') if it refuses."""
    backbone = cfg.get("backbone")
    if backbone:
        _refused(f"backbones.{backbone['name']}", backbone["arch"], backbone, None,
                 lambda: create_backbone(backbone["arch"], backbone["weights"], backbone["image_size"]))
        x = torch.zeros(1, BACKBONES[backbone["arch"]].dim)
    else:
        x = torch.zeros(1, 3, image_size, image_size)

    def build_and_run():
        model = create_model(cfg["arch"], NUM_CLASSES, **cfg["args"])
        with torch.device("cpu"), torch.no_grad():
            model.to_empty(device="cpu").eval()(x)

    _refused(key, cfg["arch"], cfg["args"], image_size, build_and_run)


def _refused(key: str, arch: str, args: dict, image_size: int | None, build) -> None:
    """Run `build` on the meta device; what it raises becomes one ConfigError naming `key`."""
    try:
        with torch.device("meta"):
            build()
    except ConfigError as e:  # create_model's message names no model; load_pretrained's names no key
        text, generic = str(e), f"config key 'models.*.args' of '{arch}'"
        raise ConfigError(text.replace(generic, f"config key '{key}'") if generic in text
                          else f"config key '{key}': {text}") from None
    except Exception as e:  # noqa: BLE001 (whatever torch raises for a shape or a value is the model refusing it)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        on = f" on {image_size}x{image_size} images" if image_size else ""
        raise ConfigError(f"config key '{key}': {arch} refuses {args}{on} ({type(e).__name__}: {first})") from None


def _defaults(fn) -> dict:
    """Keyword defaults of a factory; tuples as lists, as they come from YAML."""
    return {k: list(p.default) if isinstance(p.default, tuple) else p.default
            for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


def setting_deviations(cfg: dict) -> list[str]:
    """Where a run departs from the paper's setting, shown in the report.

    Each factory's (and backbone's) defaults are the study's architecture, so any
    configured argument that differs from its default is a deviation.
    """
    notes = [f"{k}={v!r} (paper {d!r})" for k, v in sorted(cfg["args"].items())
             if (d := _defaults(model_entry(cfg["arch"]).factory).get(k, v)) != v]
    backbone = cfg.get("backbone")
    if backbone:
        defaults = _defaults(BACKBONES[backbone["arch"]].__init__)
        notes += [f"backbone {k}={backbone[k]!r} (paper {d!r})" for k, d in sorted(defaults.items())
                  if backbone.get(k, d) != d]
    return notes


def check_models(models: list[tuple[str, dict, int]]) -> None:
    """check_model for each (config key, resolved section, image size): reprozoo/sections.py's models_in."""
    for key, cfg, size in models:
        check_model(cfg, size, key)
