"""`attention`: the class token's attention over the image, per layer of a trained
vit_tiny-style model, on one test image (the study shows these maps for its ViT).

Each map is the class token's row of the layer's head-averaged attention weights
over the patches, upsampled to the image and laid over it.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from reprozoo.config import ConfigError  # noqa: E402
from reprozoo.data import load_arrays  # noqa: E402
from reprozoo.engine import Normalize  # noqa: E402
from reprozoo.evaluate import load_weights  # noqa: E402
from reprozoo.models import create_model  # noqa: E402
from reprozoo.report import save_figure  # noqa: E402


@torch.no_grad()
def class_token_attention(model, x: torch.Tensor) -> list[torch.Tensor]:
    """x (1, 3, H, W) normalised -> one (H/p, W/p) map per encoder layer."""
    model.eval()
    h = model.tokens(x)                                                     # (1, N+1, dim)
    side = int((h.shape[1] - 1) ** 0.5)
    maps = []
    for layer in model.encoder.layers:
        _, weights = layer.self_attn(h, h, h, need_weights=True, average_attn_weights=True)  # (1, N+1, N+1)
        maps.append(weights[0, 0, 1:].reshape(side, side))
        h = layer(h)
    return maps


def attention_figure(cfg: dict, data_path, weights_path, out_path, index: int = 0) -> list[torch.Tensor]:
    arrays = load_arrays(data_path)
    classes = [str(c) for c in arrays["classes"]]
    cpu = torch.device("cpu")
    model = load_weights(create_model(cfg["arch"], len(classes), **cfg["args"]), weights_path, cpu)
    if not hasattr(model, "encoder"):
        raise ConfigError(f"model '{cfg['name']}' has no transformer encoder to take attention maps from")
    image = torch.from_numpy(arrays["x_test"][index]).permute(2, 0, 1).unsqueeze(0)     # (1, 3, H, W) uint8
    x = Normalize(cfg["normalize"]["mean"], cfg["normalize"]["std"])(image)
    maps = class_token_attention(model, x)
    pred = model(x).argmax(1).item()

    fig, axes = plt.subplots(1, len(maps) + 1, figsize=(2.6 * (len(maps) + 1), 2.9))
    axes[0].imshow(image[0].permute(1, 2, 0).numpy())
    axes[0].set_title(f"true {classes[arrays['y_test'][index]]}, pred {classes[pred]}", fontsize=9)
    for i, (ax, m) in enumerate(zip(axes[1:], maps), start=1):
        up = F.interpolate(m[None, None], size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
        ax.imshow(image[0].permute(1, 2, 0).numpy())
        ax.imshow(up.numpy(), cmap="inferno", alpha=0.6)
        ax.set_title(f"layer {i}", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(f"{cfg['name']}: class-token attention per layer (test image {index})", fontsize=10)
    fig.tight_layout()
    save_figure(fig, out_path)
    return maps
