"""`attention`: a trained model's attention over one test image, per layer (the study
shows these maps for its ViT). The maps come from the model's registry entry
(`attention=`, e.g. vit_tiny's class-token attention in reprozoo/models/vit.py);
each is upsampled to the image and laid over it.

Every map of every model is drawn on one colour scale, `SCALE`: the weight relative to uniform
attention (weight x number of patches; 1 = every patch alike), logarithmic from 1/8 to 8. So the
attention figures of two models (vit_tiny and its 3-head ablation, or two patch sizes) compare
colour for colour, whatever their number of patches.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from reprozoo.errors import ConfigError  # noqa: E402
from reprozoo.data import load_arrays  # noqa: E402
from reprozoo.engine import Normalize  # noqa: E402
from reprozoo.io import load_weights, save_figure  # noqa: E402
from reprozoo.models import create_model, model_entry  # noqa: E402

SCALE = (1 / 8, 8.0)  # the one colour scale of every attention map: weight x patches (1 = uniform)


def colour_scale() -> LogNorm:
    return LogNorm(*SCALE, clip=True)


def attention_figure(cfg: dict, data_path, weights_path, attention_plot_path, index: int = 0) -> list[torch.Tensor]:
    arrays = load_arrays(data_path)
    classes = [str(c) for c in arrays["classes"]]
    cpu = torch.device("cpu")
    model = load_weights(create_model(cfg["arch"], len(classes), **cfg["args"]), weights_path, cpu)
    attention = model_entry(cfg["arch"]).attention
    if attention is None:
        raise ConfigError(f"model '{cfg['name']}' (arch '{cfg['arch']}') declares no attention maps")
    image = torch.from_numpy(arrays["x_test"][index]).permute(2, 0, 1).unsqueeze(0)     # (1, 3, H, W) uint8
    x = Normalize(cfg["normalize"]["mean"], cfg["normalize"]["std"])(image)
    maps = attention(model, x)
    pred = model(x).argmax(1).item()

    fig, axes = plt.subplots(1, len(maps) + 1, figsize=(2.6 * (len(maps) + 1), 2.9))
    axes[0].imshow(image[0].permute(1, 2, 0).numpy())
    axes[0].set_title(f"true {classes[arrays['y_test'][index]]}, pred {classes[pred]}", fontsize=9)
    for i, (ax, m) in enumerate(zip(axes[1:], maps), start=1):
        up = F.interpolate(m[None, None], size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
        ax.imshow(image[0].permute(1, 2, 0).numpy())
        relative = (up * m.numel()).clamp(min=SCALE[0])  # x uniform: the same scale for any number of patches
        overlay = ax.imshow(relative.numpy(), cmap="inferno", alpha=0.6, norm=colour_scale())
        ax.set_title(f"layer {i}", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(f"{cfg['name']}: class-token attention per layer (test image {index})", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    bar = fig.colorbar(overlay, cax=fig.add_axes((0.94, 0.12, 0.012, 0.7)), extend="both")  # one scale, every model
    bar.set_ticks([0.125, 0.25, 0.5, 1, 2, 4, 8], labels=["1/8", "1/4", "1/2", "1", "2", "4", "8"])
    bar.ax.minorticks_off()
    bar.set_label("weight × patches (1 = uniform)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    save_figure(fig, attention_plot_path)
    return maps
