"""Benchmark: the ViT-B/16 linear probe's tuning + training, the study's way vs ours.

- study: the frozen backbone runs on every batch of every epoch of every trial
  (the notebook's ViT_Cifar10 module), then the final training does it again;
- ours: `cache_features` runs the backbone once over the images, then every trial
  and the final training train the 768 -> 10 head on the cached features.

Both ways use the same images, the same backbone weights, the same seeded heads,
lrs and epochs, and the same training loop (reprozoo.engine), measured side by
side in one run. Prints the wall times and their ratio, and the final val losses
of both ways (they agree up to fp16 feature storage).

    python benchmarks/probe_cache.py                      # CPU-sized: 256 images at 64 px
    python benchmarks/probe_cache.py --images 50000 --image-size 224 --device cuda   # the study's size
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from reprozoo.prepare import _prepare_digits
from reprozoo.engine import Normalize, Runner, Tensors, fit, pick_device, seed_everything
from reprozoo.models import create_model
from reprozoo.models.pretrained import FrozenProbe, create_backbone, extract

NORM = {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2023, 0.1994, 0.2010]}


def images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n real 32x32 RGB images: the bundled digits, repeated with a random flip/shift when n > 1,437."""
    arrays = _prepare_digits(32)
    x, y = arrays["x_train"], arrays["y_train"]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), n) if n > len(y) else rng.permutation(len(y))[:n]
    x = x[idx].copy()
    if n > len(y):
        x = np.roll(x, rng.integers(-2, 3), axis=2)
    return x, y[idx]


def add_device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)


def device_from(args: argparse.Namespace) -> torch.device:
    if args.threads:
        torch.set_num_threads(args.threads)
    return pick_device(args.device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=256, help="training + validation images (80/20)")
    p.add_argument("--image-size", type=int, default=64, help="backbone input size in px (the study: 224)")
    p.add_argument("--trials", type=int, default=3, help="tuning trials (the study: 20)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per trial and for the final training")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--weights", default="none", help="IMAGENET1K_V1 when the file is in the torch hub cache")
    add_device_options(p)
    args = p.parse_args()
    device = device_from(args)

    x, y = images(args.images)
    n_train = int(0.8 * len(y))
    train_img = Tensors.from_numpy(x[:n_train], y[:n_train], device)
    val_img = Tensors.from_numpy(x[n_train:], y[n_train:], device)
    cfg = {"normalize": NORM, "batch_size": args.batch_size, "eval_batch_size": 256,
           "optimizer": {"name": "adam", "betas": [0.9, 0.999], "weight_decay": 0.0}}
    lrs = np.exp(np.random.default_rng(3407).uniform(-10, -4, args.trials)).tolist()
    runs = lrs + [lrs[0]]  # the trials, then the final training at the chosen lr

    seed_everything(0)
    backbone = create_backbone("vit_b16", args.weights, args.image_size).to(device)  # shared, not timed

    def train_heads(train, val, wrap) -> list[float]:
        losses = []
        for lr in runs:
            seed_everything(1)
            runner = Runner(wrap(create_model("linear_probe")), cfg, device, lr)
            history = fit(runner, train, val, args.epochs, torch.Generator().manual_seed(2))
            losses.append(history[-1]["val_loss"])
        return losses

    print(f"device {device}, {len(y)} images at {args.image_size}px, {args.trials} trials + final training, "
          f"{args.epochs} epochs each, weights={args.weights}")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    sync()
    start = time.perf_counter()
    study_losses = train_heads(train_img, val_img, lambda head: FrozenProbe(backbone, head))
    sync()
    study = time.perf_counter() - start

    start = time.perf_counter()
    norm = Normalize(NORM["mean"], NORM["std"]).to(device)
    train_feat = Tensors(extract(backbone, train_img, norm, 256, device).to(device), train_img.y)
    val_feat = Tensors(extract(backbone, val_img, norm, 256, device).to(device), val_img.y)
    ours_losses = train_heads(train_feat, val_feat, lambda head: head)
    sync()
    ours = time.perf_counter() - start

    print(f"study's way (backbone every epoch): {study:9.2f} s")
    print(f"ours (features cached once):        {ours:9.2f} s")
    print(f"ratio study / ours:                 {study / ours:9.1f} x")
    print("final val loss per run, study vs ours: "
          + ", ".join(f"{a:.4f}/{b:.4f}" for a, b in zip(study_losses, ours_losses)))


if __name__ == "__main__":
    main()
