"""`cache_features`: run a frozen backbone once over every image of a prepared
dataset and store the features (fp16) with labels and a record of what made them.

Tune, train and evaluate of a probe then read only these features: the backbone
never runs inside a trial or an epoch (the study ran it ~55 times over the data).
"""
from __future__ import annotations

import logging
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from reprozoo.config import BACKBONE_BATCH_SIZE
from reprozoo.data import DataError, load_arrays
from reprozoo.engine import Normalize, Tensors, seed_everything
from reprozoo.io import load_torch, save_torch, stamp
from reprozoo.models.pretrained import create_backbone

log = logging.getLogger("reprozoo.features")


@torch.no_grad()
def extract(backbone: torch.nn.Module, images: Tensors, normalize: Normalize, batch_size: int,
            device: torch.device, desc: str = "features") -> torch.Tensor:
    """uint8 (N, 3, H, W) -> backbone features (N, D) in fp16, on the CPU."""
    out = []
    cuda = device.type == "cuda"
    for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", leave=False, disable=None):
        x = normalize(images.x[start:start + batch_size])
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            out.append(backbone(x).float().half().cpu())
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
    batch_size = spec.get("batch_size", BACKBONE_BATCH_SIZE)
    return {name: extract(backbone, images, norm, batch_size, device, f"{name} features")
            for name, images in image_sets.items()}


def cache_features(spec: dict, data_path, features_path, device) -> dict:
    seed_everything(0)  # the backbone is frozen and deterministic; seeded for the record
    arrays = load_arrays(data_path)
    start = time.perf_counter()
    images = {split: Tensors.from_numpy(arrays[f"x_{split}"], arrays[f"y_{split}"], device)
              for split in ("train", "test")}
    features = {}
    for split, x in backbone_features(spec, spec["normalize"], images, device).items():
        features[f"x_{split}"] = x
        features[f"y_{split}"] = torch.from_numpy(arrays[f"y_{split}"])
    seconds = time.perf_counter() - start
    meta = {"backbone": spec["name"], "arch": spec["arch"], "weights": spec["weights"],
            "transform": f"uint8 -> /255 -> normalize(mean={spec['normalize']['mean']}, std={spec['normalize']['std']})"
                         f" -> bilinear antialiased resize to {spec['image_size']}px",
            "image_size": spec["image_size"], "dim": int(features["x_train"].shape[1]), "dtype": "float16",
            **stamp(device, 0)}
    meta.pop("git_revision")  # the record holds what defines the features, nothing that changes per run or
    save_torch(features_path, {**features, "meta": meta})  # commit: the same features are the same bytes
    log.info("%s features of %d + %d images (%d-dim) in %.1fs -> %s", spec["name"], len(features["y_train"]),
             len(features["y_test"]), meta["dim"], seconds, features_path)
    return meta


def load_features(path) -> dict:
    blob = load_torch(path, "features", "cache_features")
    if not isinstance(blob, dict) or not {"x_train", "y_train", "x_test", "y_test", "meta"} <= blob.keys():
        raise DataError(f"{path}: not a features file (missing arrays)")
    return blob


def model_inputs(cfg: dict, data_path, features_path=None) -> dict:
    """x/y arrays a model trains on: images from data.npz, or a probe's cached features."""
    arrays = load_arrays(data_path)
    if not cfg.get("backbone"):
        return arrays
    if features_path is None:
        raise DataError(f"model '{cfg['name']}' trains on cached features of backbone "
                        f"'{cfg['backbone']['name']}': pass --features")
    blob = load_features(features_path)
    if not np.array_equal(blob["y_train"].numpy(), arrays["y_train"]) or \
            not np.array_equal(blob["y_test"].numpy(), arrays["y_test"]):
        raise DataError(f"{features_path}: labels differ from {data_path}; recompute the features")
    return {"x_train": blob["x_train"].numpy(), "y_train": arrays["y_train"], "x_test": blob["x_test"].numpy(),
            "y_test": arrays["y_test"], "classes": arrays["classes"]}
