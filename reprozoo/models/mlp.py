"""MLP: flatten 3x32x32 -> 512 -> 256 -> 10 with ReLU (1,707,274 params)."""
from torch import nn

from reprozoo.models.registry import register_model


@register_model
def mlp(num_classes: int = 10, hidden: tuple[int, ...] = (512, 256), in_features: int = 3 * 32 * 32) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]            # (B, 3, 32, 32) -> (B, 3072)
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]      # (B, width) -> (B, h)
        width = h
    layers.append(nn.Linear(width, num_classes))        # (B, h) -> (B, classes)
    return nn.Sequential(*layers)
