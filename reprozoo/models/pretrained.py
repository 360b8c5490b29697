"""ImageNet-pretrained models: resnet18_pretrained (fine-tuned end to end) and the
frozen ViT-B/16 linear probe, whose backbone runs once per image in
`cache_features` while `linear_probe` (768 -> 10, 7,690 params) trains on the
cached features. `backbone_features` is that one pass of a frozen backbone over
uint8 images (`cache_features` stores it; `evaluate` runs it over a probe's extra
test sets).

Weights come through torchvision's weight enums into torch's hub cache
($TORCH_HOME/hub/checkpoints). `weights: none` (random init) exists for tests
and the CPU demo; such runs are marked not comparable to the paper.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from urllib.error import URLError

import torch
from torch import nn
from tqdm.auto import tqdm

from reprozoo.engine import Normalize, Tensors
from reprozoo.errors import ConfigError
from reprozoo.models.registry import register_model
from reprozoo.models.resnet import cifar_stem, resnet_references

log = logging.getLogger("reprozoo.features")
PROGRESS_EVERY_S = 10  # s between the progress lines of a long extraction

PAPER_IMAGE_SIZE = 224  # the study upsamples 32 -> 224 for ViT-B/16
# torchvision is imported where a model is built (see reprozoo/models/resnet.py).


def weights_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def load_pretrained(enum, name: str) -> dict[str, torch.Tensor] | None:
    """State dict of torchvision weights `enum[name]`, from the hub cache or downloaded into it;
    None on the meta device, where a config check builds the model (reprozoo/models/check.py)."""
    try:
        weights = enum[name]
    except KeyError:
        raise ConfigError(f"unknown weights '{name}' for {enum.__name__} "
                          f"(known: {', '.join(w.name for w in enum)}, none)") from None
    if torch.get_default_device().type == "meta":
        return None
    path = weights_dir() / Path(weights.url).name
    try:
        return torch.hub.load_state_dict_from_url(weights.url, model_dir=str(weights_dir()), progress=False,
                                                  check_hash=True, weights_only=True)
    except (URLError, OSError, RuntimeError) as e:
        reason = getattr(e, "reason", None) or str(e).splitlines()[0]
        raise ConfigError(f"pretrained weights {path.name} are not in {path.parent}/ and cannot be downloaded "
                          f"({reason}); download {weights.url} and put it in that folder "
                          f"(or set TORCH_HOME)") from None


STEMS = ("cifar", "imagenet")


@register_model(reference=resnet_references)
def resnet18_pretrained(num_classes: int = 10, weights: str = "IMAGENET1K_V1", stem: str = "cifar") -> nn.Module:
    """torchvision resnet18 with ImageNet weights and a new 512->classes fc. `stem: cifar`
    (the study's) also swaps in a new 3x3 stride-1 conv1 and drops the maxpool; `stem:
    imagenet` keeps torchvision's 7x7 stride-2 conv1 (pretrained) and maxpool, which at
    32 px leaves 8x8 maps after the stem: 1/16 of the FLOPs (the CPU demo's random-init
    row). Every layer that is not new keeps its pretrained weights and is fine-tuned."""
    from torchvision.models import ResNet18_Weights, resnet18

    if stem not in STEMS:
        raise ConfigError(f"unknown stem '{stem}' for resnet18_pretrained (known: {', '.join(STEMS)})")
    net = resnet18(weights=None)
    state = load_pretrained(ResNet18_Weights, weights) if weights != "none" else None
    if state is not None:
        net.load_state_dict(state)
    if stem == "imagenet":
        net.fc = nn.Linear(net.fc.in_features, num_classes)
        return net
    return cifar_stem(net, num_classes)


class ViTB16Features(nn.Module):
    """Frozen torchvision vit_b_16 as a feature extractor: normalised (B, 3, h, w)
    -> bilinear antialiased resize to image_size -> class-token features (B, 768)."""

    dim = 768

    def __init__(self, weights: str = "IMAGENET1K_V1", image_size: int = PAPER_IMAGE_SIZE):
        super().__init__()
        from torchvision.models import ViT_B_16_Weights, vit_b_16
        from torchvision.models.vision_transformer import interpolate_embeddings

        self.image_size = image_size
        self.vit = vit_b_16(weights=None, image_size=image_size)
        state = load_pretrained(ViT_B_16_Weights, weights) if weights != "none" else None
        if state is not None:
            if image_size != PAPER_IMAGE_SIZE:  # resample the position embedding to the new grid
                state = interpolate_embeddings(image_size, 16, state)
            self.vit.load_state_dict(state)
        self.vit.heads = nn.Identity()
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # frozen: dropout stays off even inside a training model
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = nn.functional.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                                          antialias=True, align_corners=False)
        return self.vit(x)                                  # (B, 768)

    def reference_outputs(self, x: torch.Tensor) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """Our features beside torchvision's vit_b_16 run by hand (patchify, class token, encoder)."""
        vit = self.vit
        images = nn.functional.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", antialias=True)
        tokens = vit._process_input(images)
        tokens = torch.cat([vit.class_token.expand(len(x), -1, -1), tokens], dim=1)
        return [("backbone vs torchvision vit_b_16 run by hand", self(x), vit.encoder(tokens)[:, 0])]


BACKBONES = {"vit_b16": ViTB16Features}


def create_backbone(arch: str, weights: str, image_size: int) -> nn.Module:
    if arch not in BACKBONES:
        raise ConfigError(f"unknown backbone '{arch}' (known: {', '.join(sorted(BACKBONES))})")
    return BACKBONES[arch](weights=weights, image_size=image_size)


@torch.no_grad()
def extract(backbone: torch.nn.Module, images: Tensors, normalize: Normalize, batch_size: int,
            device: torch.device, desc: str = "features") -> torch.Tensor:
    """uint8 (N, 3, H, W) -> backbone features (N, D) in fp16, on the CPU."""
    out = []
    cuda = device.type == "cuda"
    starts = range(0, len(images), batch_size)
    began, told = time.perf_counter(), 0
    for i, start in enumerate(tqdm(starts, desc=desc, unit="batch", leave=False, disable=None)):
        x = normalize(images.x[start:start + batch_size])
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            out.append(backbone(x).float().half().cpu())
        done, seconds = min(start + batch_size, len(images)), time.perf_counter() - began
        if seconds - told >= PROGRESS_EVERY_S or i == len(starts) - 1:  # the log's progress line, bar or not
            told = seconds
            eta = seconds / done * (len(images) - done)
            log.info("%s: %d/%d images (%.0f%%), %.1fs, ETA %.0fs", desc, done, len(images), 100 * done / len(images),
                     seconds, eta)
    return torch.cat(out)


def backbone_features(spec: dict, normalize: dict, image_sets: dict[str, Tensors],
                      device: torch.device) -> dict[str, torch.Tensor]:
    """A frozen backbone (a `backbones:` section), built once, over each set of uint8 images
    -> {name: fp16 features (N, D) on the CPU}. What cache_features stores and evaluate uses
    for extra test sets."""
    backbone = create_backbone(spec["arch"], spec["weights"], spec["image_size"]).to(device).eval()
    if device.type == "cuda":
        backbone = backbone.to(memory_format=torch.channels_last)
    norm = Normalize(normalize["mean"], normalize["std"]).to(device)
    batch_size = spec["batch_size"]  # images per forward pass (the section gives it)
    return {name: extract(backbone, images, norm, batch_size, device, f"{name} features")
            for name, images in image_sets.items()}


@register_model
def linear_probe(num_classes: int = 10, in_features: int = 768) -> nn.Module:
    """The probe's head alone, trained on cached backbone features: (B, 768) -> (B, classes)."""
    return nn.Linear(in_features, num_classes)


class FrozenProbe(nn.Module):
    """Backbone + head in one module: the study's (slow) way, running the frozen
    backbone on every batch. Used to check the probe and for the benchmark."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.backbone(x)
        return self.head(features.float())


def probe_references(model: "FrozenProbe", x: torch.Tensor, args: dict) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    return model.backbone.reference_outputs(x)


@register_model(reference=probe_references)
def vit_b16_probe(num_classes: int = 10, weights: str = "IMAGENET1K_V1",
                  image_size: int = PAPER_IMAGE_SIZE) -> nn.Module:
    """The study's ViT-B/16 linear probe end to end: 7,690 trainable parameters."""
    return FrozenProbe(ViTB16Features(weights, image_size), linear_probe(num_classes, ViTB16Features.dim))
