"""CNN: 3 x [conv3x3 pad1, BN, ReLU, maxpool2] with 32/64/128 channels, then
FC 2048-512, ReLU, dropout 0.5, 512-10 (1,147,914 params)."""
from torch import nn

from reprozoo.models.registry import register_model


@register_model
def cnn(num_classes: int = 10, channels: tuple[int, ...] = (32, 64, 128), hidden: int = 512,
        dropout: float = 0.5, batchnorm: bool = True, image_size: int = 32) -> nn.Module:
    features: list[nn.Module] = []
    c_in = 3
    for c_out in channels:                               # (B, c_in, s, s) -> (B, c_out, s/2, s/2)
        features.append(nn.Conv2d(c_in, c_out, 3, padding=1))
        if batchnorm:
            features.append(nn.BatchNorm2d(c_out))
        features += [nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        c_in = c_out
    side = image_size // 2 ** len(channels)              # 32 -> 4
    return nn.Sequential(
        nn.Sequential(*features),
        nn.Flatten(),                                    # (B, 128, 4, 4) -> (B, 2048)
        nn.Linear(c_in * side * side, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )
