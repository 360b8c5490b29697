"""What each model file of reprozoo/models/ declares, read from its source with `ast` instead of imported.

The torch-free view of the registry: the Snakefile and the config checks need to know
which architectures exist, which arguments their factories take, which objective they
train with, which figures they declare and which files a model is built from, on hosts
that may have no torch.
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from reprozoo.errors import ConfigError

MODELS_DIR = Path(__file__).resolve().parent / "models"


class Architecture(NamedTuple):
    """One `@register_model(...)` entry, as its source declares it."""
    source: Path                     # the file that defines it
    objective: str                   # `objective=`, default "classification"
    declares: frozenset[str]         # which of attention / reference / samples it declares
    args: tuple[str, ...]            # the factory's keyword arguments
    any_keyword: bool                # the factory takes **kwargs


@lru_cache(maxsize=None)
def registered_architectures() -> dict[str, Architecture]:
    """Architecture name -> its declarations, from the `@register_model` decorators of every model file."""
    found: dict[str, Architecture] = {}
    for path in sorted(MODELS_DIR.glob("*.py")):
        for node in ast.walk(_parse(path)):
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


@lru_cache(maxsize=None)
def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def architectures_declaring(figure: str) -> set[str]:
    """Architectures whose registry entry declares `figure` (attention, reference, samples)."""
    return {name for name, arch in registered_architectures().items() if figure in arch.declares}


def models_declaring(figure: str, cfg: dict, models: list[str]) -> list[str]:
    """The models, of `models` in the config `cfg`, whose architecture declares `figure`: what a stage
    declared `only_declaring` runs for (reprozoo/stages.py)."""
    return [m for m in models if cfg["models"][m]["arch"] in architectures_declaring(figure)]


@lru_cache(maxsize=None)  # as _parse: one process's reads of the config (the DAG's, a run's onstart) share it
def _sibling_imports(path: Path) -> frozenset[Path]:
    """Model modules that `path` imports (`from reprozoo.models.layers import ...`)."""
    deps = set()
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("reprozoo.models."):
            dep = MODELS_DIR / (node.module.split(".")[-1] + ".py")
            if dep.is_file():
                deps.add(dep)
    return frozenset(deps)


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
