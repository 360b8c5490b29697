"""`samples`: what a generative classifier has learnt to draw, from its trained weights.

- vae (M2): test images beside their reconstructions (y as q(y|x) predicts it),
  and a class-conditional sample grid, one row per class, z from the prior;
- acgan: a class-conditional sample grid, one row per class, and the
  generator / discriminator loss curves from the training history.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from reprozoo.config import ConfigError  # noqa: E402
from reprozoo.data import load_arrays  # noqa: E402
from reprozoo.engine import Normalize  # noqa: E402
from reprozoo.evaluate import load_weights  # noqa: E402
from reprozoo.models import create_model, objective_name  # noqa: E402
from reprozoo.report import save_figure  # noqa: E402

PER_CLASS = 10      # samples per row of the grid
RECONSTRUCTED = 10  # test images shown with their reconstructions


def _show(ax, images: torch.Tensor, nrow: int, title: str) -> None:
    grid = make_grid(images.clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")


@torch.no_grad()
def class_grid(model, num_classes: int, seed: int = 0) -> torch.Tensor:
    """(num_classes * PER_CLASS, 3, H, W) in [0, 1]: row c holds class c."""
    y = torch.arange(num_classes).repeat_interleave(PER_CLASS)
    return model.sample(y, torch.Generator().manual_seed(seed))


def samples_figure(cfg: dict, data_path, weights_path, history_path, out_path) -> dict:
    objective = objective_name(cfg["arch"])
    if objective == "classification":
        raise ConfigError(f"model '{cfg['name']}' is not generative (arch '{cfg['arch']}'): nothing to sample")
    arrays = load_arrays(data_path)
    classes = [str(c) for c in arrays["classes"]]
    cpu = torch.device("cpu")
    torch.manual_seed(cfg["seed"])
    model = load_weights(create_model(cfg["arch"], len(classes), **cfg["args"]), weights_path, cpu).eval()
    grid = class_grid(model, len(classes), cfg["seed"])
    rows = f"one row per class: {', '.join(classes)}" if len(classes) <= 10 else "one row per class"

    fig, axes = plt.subplots(1, 2, figsize=(11, 5.6))
    if objective == "vae_m2":
        x = torch.from_numpy(arrays["x_test"][:RECONSTRUCTED]).permute(0, 3, 1, 2)
        normalize = Normalize(cfg["normalize"]["mean"], cfg["normalize"]["std"])
        recon = model.reconstruct(normalize(x))
        pairs = torch.cat([x.float() / 255, recon])          # row 1: test images, row 2: reconstructions
        _show(axes[0], pairs, RECONSTRUCTED, "test images (top) and reconstructions (bottom)")
        _show(axes[1], grid, PER_CLASS, f"samples p(x|y,z), z ~ N(0, I); {rows}")
    else:
        _show(axes[0], grid, PER_CLASS, f"samples G(z, y); {rows}")
        history = pd.read_csv(history_path)
        ax = axes[1]
        ax.plot(history["epoch"], history["train_discriminator"], marker="o", label="discriminator")
        ax.plot(history["epoch"], history["train_generator"], marker="o", label="generator")
        ax.set_xlabel("epoch")
        ax.set_ylabel("mean loss per batch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title("adversarial losses (training)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{cfg['name']}: {'semi-supervised VAE (M2)' if objective == 'vae_m2' else 'AC-GAN'}", fontsize=11)
    fig.tight_layout()
    save_figure(fig, out_path)
    return {"model": cfg["name"], "objective": objective, "images": int(grid.shape[0])}
