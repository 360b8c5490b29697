"""The model zoo: one architecture per file, each registered in reprozoo/models/registry.py.

Importing this package imports every model file (so that each registers itself, as timm's
`timm.models` does) and gives the registry's names: `from reprozoo.models import create_model`.
The torch-free view of what the files declare is reprozoo/architectures.py; `check.py` builds a
config's model once, before any job.
"""
from reprozoo.models import acgan, cnn, lstm, mlp, pretrained, resnet, vae, vit  # noqa: F401 (each registers)
from reprozoo.models.check import setting_deviations  # noqa: F401
from reprozoo.models.registry import (count_parameters, create_model, list_models, model_entry,  # noqa: F401
                                      objective_name, register_model)
