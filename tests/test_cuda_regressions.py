"""Failures first seen on the H100 (benchmarks/measured/h100-2026-11-24/README.md), reproduced on CPU."""
import torch

from reprozoo.models import create_model
from reprozoo.objectives import get_objective


def test_acgan_collapse_check_takes_channels_last_samples():
    """On CUDA the engine keeps models in channels_last, so the generator's samples come
    out channels_last; the collapse check once did `.view` on them and every AC-GAN
    trial died. The same model in channels_last on CPU reproduces it."""
    torch.manual_seed(0)
    model = create_model("acgan", 10, z_dim=16, width=8).to(memory_format=torch.channels_last)
    y = torch.arange(10).repeat_interleave(8)
    assert not model.sample(y, torch.Generator().manual_seed(0)).is_contiguous()  # the condition itself
    get_objective("acgan").check(model, torch.device("cpu"))  # a fresh generator is not collapsed: no error
