"""The model zoo: one architecture per file, registered in reprozoo/models/registry.py.

`from reprozoo.models import create_model` (or any registry name) loads the registry, and with
it torch and every model file, on first use. The package itself imports nothing, so that the
Snakefile can read reprozoo/models/sources.py (what each file declares) without torch.
"""


def __getattr__(name: str):
    import importlib

    return getattr(importlib.import_module("reprozoo.models.registry"), name)
