"""`cache_features`: run a frozen backbone once over every image of a prepared
dataset and store the features (fp16) with labels and a record of what made them.

Tune, train and evaluate of a probe then read only these features: the backbone
never runs inside a trial or an epoch (the study ran it ~55 times over the data).
The backbone's pass (`backbone_features`) lives with the backbones, in
reprozoo/models/pretrained.py; what the later stages read of these features
(`load_features`, `model_inputs`) in reprozoo/data.py.
"""
from __future__ import annotations

import logging
import time

import torch

from reprozoo.data import load_arrays
from reprozoo.engine import Tensors, seed_everything
from reprozoo.io import save_torch, stamp
from reprozoo.models.pretrained import backbone_features

log = logging.getLogger("reprozoo.features")


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

