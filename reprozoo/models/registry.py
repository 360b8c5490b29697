"""Model registry, timm-style: `@register_model`, `create_model`, `list_models`.

A leaf, as timm's `_registry.py`: it imports no model file. Each architecture lives in its
own file in this folder, imports `register_model` from here and registers a factory
`name(num_classes=10, **args) -> nn.Module`; the package (`reprozoo.models`) imports every
model file, so `list_models()` sees them all. Everything the pipeline knows about one
architecture is declared on its registry entry, beside its code, so no stage ever tests an
architecture's name:

- `objective`: what a training step minimises (`reprozoo.objectives`; default
  plain classification). Every model's `forward(x)` gives class logits.
- `attention`: `(model, x) -> [map per layer]`, the report's attention figure.
- `reference`: `(model, x, args) -> [(what, ours, reference)]`, outputs of the
  model's parts beside an independent implementation (torchvision, nn.*, by hand)
  that `verify` compares.
- `samples`: `(model, inputs) -> (title, panels)`, the samples figure of a
  generative model (reprozoo/samples.py draws the panels).

The Snakefile, which must not import torch, reads the same decorators from the source
files (reprozoo/architectures.py; tests check the two views agree). The objective also
reaches each job's section file from there, so the training engine never looks it up here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from reprozoo.errors import ConfigError


@dataclass(frozen=True)
class ModelEntry:
    """One architecture: its factory and what the stages need to know about it."""
    name: str
    factory: Callable[..., nn.Module]
    objective: str = "classification"
    attention: Callable | None = None
    reference: Callable | None = None
    samples: Callable | None = None


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, *, objective: str = "classification",
                   attention: Callable | None = None, reference: Callable | None = None,
                   samples: Callable | None = None):
    """`@register_model` or `@register_model(objective=..., attention=..., reference=..., samples=...)`."""
    def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if fn.__name__ in _REGISTRY:
            raise ValueError(f"model '{fn.__name__}' registered twice")
        _REGISTRY[fn.__name__] = ModelEntry(fn.__name__, fn, objective, attention, reference, samples)
        return fn

    return register(fn) if fn is not None else register


def model_entry(arch: str) -> ModelEntry:
    if arch not in _REGISTRY:
        raise ConfigError(f"unknown architecture '{arch}' (registered: {', '.join(list_models())})")
    return _REGISTRY[arch]


def objective_name(arch: str) -> str:
    """The training objective an architecture was registered with."""
    return model_entry(arch).objective


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(arch: str, num_classes: int = 10, **args) -> nn.Module:
    factory = model_entry(arch).factory
    try:
        return factory(num_classes=num_classes, **args)
    except (TypeError, ValueError) as e:  # a wrong keyword, or a value the layers refuse (dropout 1.5)
        raise ConfigError(f"config key 'models.*.args' of '{arch}': {str(e).strip().splitlines()[0]}") from None


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, as the study counts them."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

