"""Semi-supervised VAE, Kingma et al. 2014's M2, for 32x32x3 images.

Three networks: a classifier q(y|x), an encoder q(z|x,y) and a decoder p(x|y,z)
(Bernoulli pixels). `forward(x)` is the classifier, so evaluation, the report
and the verifier treat it like every other model; the ELBO terms live in
`reprozoo.objectives.VAEM2`. The study announced this model but left it empty:
the layer sizes are ours (see the `paper:` block in config.yaml).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reprozoo.models.registry import register_model


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.MaxPool2d(2))


class M2(nn.Module):
    def __init__(self, num_classes: int = 10, z_dim: int = 32, channels=(32, 64, 128), hidden: int = 512,
                 alpha: float = 50.0):
        super().__init__()
        self.num_classes, self.z_dim, self.alpha = num_classes, z_dim, alpha
        c1, c2, c3 = channels
        # q(y|x): a small CNN
        self.classifier = nn.Sequential(_conv(3, c1), _conv(c1, c2), _conv(c2, c3), nn.Flatten(),
                                        nn.Linear(c3 * 16, hidden), nn.ReLU(inplace=True), nn.Dropout(0.3),
                                        nn.Linear(hidden, num_classes))
        # q(z|x,y): strided convs on x, then y joins the flattened features
        self.encoder = nn.Sequential(nn.Conv2d(3, c1, 4, 2, 1), nn.ReLU(inplace=True),
                                     nn.Conv2d(c1, c2, 4, 2, 1), nn.ReLU(inplace=True),
                                     nn.Conv2d(c2, c3, 4, 2, 1), nn.ReLU(inplace=True), nn.Flatten())
        self.posterior = nn.Sequential(nn.Linear(c3 * 16 + num_classes, hidden), nn.ReLU(inplace=True),
                                       nn.Linear(hidden, 2 * z_dim))
        # p(x|y,z): pixel logits
        self.decoder = nn.Sequential(nn.Linear(z_dim + num_classes, c3 * 16), nn.ReLU(inplace=True),
                                     nn.Unflatten(1, (c3, 4, 4)),
                                     nn.ConvTranspose2d(c3, c2, 4, 2, 1), nn.ReLU(inplace=True),
                                     nn.ConvTranspose2d(c2, c1, 4, 2, 1), nn.ReLU(inplace=True),
                                     nn.ConvTranspose2d(c1, 3, 4, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of q(y|x)."""
        return self.classifier(x)

    def encode(self, features: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder features of x (from `self.encoder`) and labels -> mean and log-variance of q(z|x,y)."""
        mu, logvar = self.posterior(torch.cat([features, F.one_hot(y, self.num_classes).to(features.dtype)], 1)
                                    ).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Pixel logits of p(x|y,z)."""
        return self.decoder(torch.cat([z, F.one_hot(y, self.num_classes).to(z.dtype)], 1))

    @torch.no_grad()
    def sample(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images in [0, 1] for labels y, z from the prior."""
        z = torch.randn(len(y), self.z_dim, generator=generator).to(y.device)
        return torch.sigmoid(self.decode(z, y))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean reconstruction in [0, 1], with y as the classifier predicts it (no label needed)."""
        y = self.classifier(x).argmax(1)
        mu, _ = self.encode(self.encoder(x), y)
        return torch.sigmoid(self.decode(mu, y))


def vae_samples(model: M2, inputs) -> tuple[str, list[dict]]:
    """The samples figure (reprozoo/samples.py draws it): test images over their reconstructions,
    and the class-conditional grid from the prior."""
    x = inputs.x_test                                       # (n, 3, H, W) uint8
    recon = model.reconstruct(inputs.normalize(x))
    return "semi-supervised VAE (M2)", [
        {"title": "test images and their reconstructions", "images": torch.cat([x.float() / 255, recon]),
         "nrow": len(x), "row_labels": ["test", "reconstructed"]},
        {"title": f"samples p(x|y,z), z ~ N(0, I); {inputs.rows}", "images": inputs.grid, "nrow": inputs.per_class},
    ]


@register_model(objective="vae_m2", samples=vae_samples)
def vae(num_classes: int = 10, z_dim: int = 32, channels=(32, 64, 128), hidden: int = 512,
        alpha: float = 50.0) -> nn.Module:
    return M2(num_classes, z_dim, tuple(channels), hidden, alpha)
