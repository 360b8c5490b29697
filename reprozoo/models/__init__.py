"""Model registry, timm-style: `@register_model`, `create_model`, `list_models`.

Each architecture lives in its own file in this folder and registers a factory
`name(num_classes=10, **args) -> nn.Module`. Importing this package imports
every model file, so `list_models()` sees them all.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

from torch import nn

from reprozoo.config import ConfigError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"model '{fn.__name__}' registered twice")
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(arch: str, num_classes: int = 10, **args) -> nn.Module:
    if arch not in _REGISTRY:
        raise ConfigError(f"unknown architecture '{arch}' (registered: {', '.join(list_models())})")
    try:
        return _REGISTRY[arch](num_classes=num_classes, **args)
    except TypeError as e:  # wrong keyword in the config's args
        raise ConfigError(f"config key 'models.*.args' of '{arch}': {e}") from None


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, as the study counts them."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")
