"""`samples`: what a generative classifier has learnt to draw, from its trained weights.

What to show is declared by the model on its registry entry (`samples=`, in
reprozoo/models/): e.g. the vae's test images over their reconstructions and a
class-conditional grid, the acgan's grid and its players' loss curves. This module
loads the model, builds the inputs every figure may use (the first test images, a
class-conditional grid with one row per class, the training history) and draws
the panels the model returns.

Image panels stack in one column, each as tall as its rows of images (no blank area under a
short grid); every row is labelled (a class grid's classes, or the panel's `row_labels`). Curve
panels stand in a column of their own beside them.
"""
from __future__ import annotations

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from reprozoo.errors import ConfigError  # noqa: E402
from reprozoo.data import load_arrays  # noqa: E402
from reprozoo.engine import Normalize  # noqa: E402
from reprozoo.io import load_weights, save_figure  # noqa: E402
from reprozoo.results import read_history  # noqa: E402
from reprozoo.models import create_model, model_entry  # noqa: E402

PER_CLASS = 10      # samples per row of the grid
RECONSTRUCTED = 10  # test images shown with their reconstructions


def _show(ax, images: torch.Tensor, nrow: int, title: str, row_labels: list[str] | None = None) -> None:
    """An image grid, `nrow` images per row; `row_labels` name the rows (a class grid's classes)."""
    pad = 2
    grid = make_grid(images.clamp(0, 1), nrow=nrow, padding=pad, pad_value=1.0)
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if row_labels:
        side = images.shape[-2]
        ax.set_yticks([pad + r * (side + pad) + side / 2 for r in range(len(row_labels))], row_labels, fontsize=8)
        ax.tick_params(axis="y", length=0)
    else:
        ax.set_yticks([])


@torch.no_grad()
def class_grid(model, num_classes: int, seed: int = 0) -> torch.Tensor:
    """(num_classes * PER_CLASS, 3, H, W) in [0, 1]: row c holds class c."""
    y = torch.arange(num_classes).repeat_interleave(PER_CLASS)
    return model.sample(y, torch.Generator().manual_seed(seed))


def samples_figure(cfg: dict, data_path, weights_path, history_path, samples_plot_path) -> dict:
    """The figure a generative model declares on its registry entry (`samples=`), drawn here:
    each panel is an image grid (`images`, `nrow`) or curves from the training history
    (`curves`: {label: history column})."""
    draw = model_entry(cfg["arch"]).samples
    if draw is None:
        raise ConfigError(f"model '{cfg['name']}' is not generative (arch '{cfg['arch']}'): nothing to sample")
    arrays = load_arrays(data_path)
    classes = [str(c) for c in arrays["classes"]]
    cpu = torch.device("cpu")
    torch.manual_seed(cfg["seed"])
    model = load_weights(create_model(cfg["arch"], len(classes), **cfg["args"]), weights_path, cpu).eval()
    inputs = SimpleNamespace(
        x_test=torch.from_numpy(arrays["x_test"][:RECONSTRUCTED]).permute(0, 3, 1, 2),   # (n, 3, H, W) uint8
        normalize=Normalize(cfg["normalize"]["mean"], cfg["normalize"]["std"]),
        grid=class_grid(model, len(classes), cfg["seed"]), per_class=PER_CLASS,
        rows=f"one row per class: {', '.join(classes)}" if len(classes) <= 10 else "one row per class",
        history=read_history(history_path, columns=("epoch",)))  # the curves' columns: the model's panels'
    with torch.no_grad():
        title, panels = draw(model, inputs)

    images = [p for p in panels if "images" in p]
    curves = [p for p in panels if "images" not in p]
    rows = [-(-len(p["images"]) // p["nrow"]) for p in images]  # image rows per panel
    cols = 10 if not images else max(p["nrow"] for p in images)
    side = (5.5 - 1.3) / cols  # inches per image: the column's width less the row labels
    height = side * sum(rows) + 0.4 * len(images) + 0.45  # rows of square images, panel titles, the suptitle
    fig = plt.figure(figsize=(5.5 + 4.5 * bool(curves), max(height, 3.5 if curves else 0)), layout="constrained")
    grid = fig.add_gridspec(max(len(images), 1), 1 + bool(curves), height_ratios=[r + 0.4 / side for r in rows] or None,
                            width_ratios=[5.5, 4.5][:1 + bool(curves)])
    axes = [fig.add_subplot(grid[i, 0]) for i in range(len(images))]
    if curves:
        side = grid[:, 1 if images else 0].subgridspec(len(curves), 1)
        axes += [fig.add_subplot(side[i, 0]) for i in range(len(curves))]
    for ax, panel in zip(axes, images + curves):
        if "images" in panel:
            is_grid = panel["images"] is inputs.grid
            _show(ax, panel["images"], panel["nrow"], panel["title"], classes if is_grid else panel.get("row_labels"))
            continue
        for label, column in panel["curves"].items():
            ax.plot(inputs.history["epoch"], inputs.history[column], marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(panel.get("ylabel", ""))
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(panel["title"], fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{cfg['name']}: {title}", fontsize=11)
    save_figure(fig, samples_plot_path)
    return {"model": cfg["name"], "objective": cfg["objective"], "images": int(inputs.grid.shape[0])}
