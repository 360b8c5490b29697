"""AC-GAN (Odena et al. 2017) for 32x32x3 images, DCGAN-style.

G(z, y): noise and a one-hot class -> 4x4 -> transposed convs -> 32x32 image.
D(x): strided convs -> a real/fake logit and class logits. `forward(x)` is D's
class head, so the model is evaluated and reported like every other classifier;
the adversarial losses live in `reprozoo.objectives.ACGAN`. The study announced
this model but left it empty: the layer sizes are DCGAN's (see config.yaml).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reprozoo.models.registry import register_model


class Generator(nn.Module):
    def __init__(self, num_classes: int, z_dim: int, width: int):
        super().__init__()
        self.num_classes, self.z_dim = num_classes, z_dim
        self.project = nn.Sequential(nn.Linear(z_dim + num_classes, 4 * width * 16, bias=False),
                                     nn.Unflatten(1, (4 * width, 4, 4)), nn.BatchNorm2d(4 * width), nn.ReLU(True))
        self.up = nn.Sequential(
            nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(True),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True),
            nn.ConvTranspose2d(width, 3, 4, 2, 1), nn.Tanh())

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1]."""
        h = self.project(torch.cat([z, F.one_hot(y, self.num_classes).to(z.dtype)], 1))
        return (self.up(h) + 1) / 2


class Discriminator(nn.Module):
    def __init__(self, num_classes: int, width: int, dropout: float):
        super().__init__()
        # No BatchNorm: D's class head is the reported classifier, and eval-mode
        # statistics mixed from real and fake batches would skew it.
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2, True), nn.Dropout(dropout),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2, True), nn.Dropout(dropout),
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1), nn.LeakyReLU(0.2, True), nn.Dropout(dropout),
            nn.Flatten())
        self.source = nn.Linear(4 * width * 16, 1)          # real/fake logit
        self.classes = nn.Linear(4 * width * 16, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return self.source(h).squeeze(1), self.classes(h)


class ACGAN(nn.Module):
    def __init__(self, num_classes: int = 10, z_dim: int = 100, width: int = 64, dropout: float = 0.3):
        super().__init__()
        self.num_classes, self.z_dim = num_classes, z_dim
        self.generator = Generator(num_classes, z_dim, width)
        self.discriminator = Discriminator(num_classes, width, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of D's auxiliary classifier."""
        return self.discriminator(x)[1]

    @torch.no_grad()
    def sample(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images in [0, 1] for labels y."""
        z = torch.randn(len(y), self.z_dim, generator=generator).to(y.device)
        return self.generator(z, y)


def acgan_samples(model: ACGAN, inputs) -> tuple[str, list[dict]]:
    """The samples figure (reprozoo/samples.py draws it): the class-conditional grid, and the two
    players' losses over training."""
    return "AC-GAN", [
        {"title": f"samples G(z, y); {inputs.rows}", "images": inputs.grid, "nrow": inputs.per_class},
        {"title": "adversarial losses (training)", "ylabel": "mean loss per batch",
         "curves": {"discriminator": "train_discriminator", "generator": "train_generator"}},
    ]


@register_model(objective="acgan", samples=acgan_samples)
def acgan(num_classes: int = 10, z_dim: int = 100, width: int = 64, dropout: float = 0.3) -> nn.Module:
    return ACGAN(num_classes, z_dim, width, dropout)
