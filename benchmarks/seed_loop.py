"""Benchmark: the study's training loop next to reprozoo's engine, side by side in one run.

- study: the notebook's loop, written from its description: a torchvision-style
  dataset of PIL images, `ToTensor` + `Normalize` per sample, a `DataLoader`
  (batch 128, shuffle, no workers, no pinning), `.to(device)` per batch, fp32,
  Adam, cross-entropy, evaluation on the held-out set after every epoch;
- ours: `reprozoo.engine` (uint8 tensors in memory on the device, normalised per
  batch there; bf16 autocast + channels_last on CUDA).

Both train the same model (config.yaml's args, the same seeded initialisation),
on the same images, for the same epochs at the same lrs, on the same device.
Two stages, as the pipeline runs them:

- tune: `--trials` trials of `--epochs` epochs on the tuning split (20% of the
  images, split 80/20), no early stopping so both do the same work;
- final: one training on all `--images` images, evaluated on `--test-images`
  test images after every epoch.

Prints images/s (training images per second of wall time, evaluation included)
for both and the ratio ours / study. With `--workers N` (default: what `tune`
uses, REPROZOO_TUNE_WORKERS or 4 on a GPU, on CPU as many as `--threads` hold at
protocol.threads each) above 1, a third line times our tune stage as `tune` runs
it: the trials N at a time (spawned on CUDA, forked on CPU, each at `--threads` /
N threads), process start-up included.

    python benchmarks/seed_loop.py --models mlp --images 640 --epochs 1 --trials 2   # CPU smoke size
    python benchmarks/seed_loop.py --models cnn resnet18 --images 50000 --test-images 10000 \\
        --trials 20 --epochs 5 --device cuda                                         # the study's size
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import VisionDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/seed_loop.py` from anywhere
from benchmarks.probe_cache import add_device_options, device_from, images  # noqa: E402
from reprozoo.config import load_config  # noqa: E402
from reprozoo.sections import resolve_model  # noqa: E402
from reprozoo.engine import Runner, Tensors, fit, seed_everything  # noqa: E402
from reprozoo.models import create_model  # noqa: E402
from reprozoo import trials as concurrent  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"


class ImageArrays(VisionDataset):
    """uint8 HWC images as PIL images through a transform, as torchvision's CIFAR10 serves them."""

    def __init__(self, x: np.ndarray, y: np.ndarray, transform):
        super().__init__(root="", transform=transform)
        self.x, self.y = x, y

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])

    def __len__(self) -> int:
        return len(self.y)


def study_fit(model: torch.nn.Module, train: ImageArrays, val: ImageArrays, epochs: int, lr: float,
              device: torch.device) -> float:
    """The notebook's loop; returns the last epoch's val loss."""
    train_loader = DataLoader(train, batch_size=128, shuffle=True)
    val_loader = DataLoader(val, batch_size=128, shuffle=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        model.train()
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
        model.eval()
        total, n = 0.0, 0
        with torch.no_grad():
            for x, y in val_loader:
                x, y = x.to(device), y.to(device)
                total += F.cross_entropy(model(x), y, reduction="sum").item()
                n += len(y)
    return total / n


def bench_objective(cfg: dict, xt, yt, xv, yv, epochs: int, device: torch.device):
    """(objective, rows) for reprozoo.trials.run: our loop, one trial per lr,
    `epochs` epochs without early stopping (as the study's side does)."""
    train, val = Tensors.from_numpy(xt, yt, device), Tensors.from_numpy(xv, yv, device)
    rows: list[dict] = []

    def objective(params: dict) -> dict:
        generator = seed_everything(cfg["seed"])
        runner = Runner(create_model(cfg["arch"], 10, **cfg["args"]), cfg, device, params["lr"])
        loss = fit(runner, train, val, epochs, generator)[-1]["val_loss"]
        rows.append({"trial": len(rows) + 1, "lr": params["lr"], "val_loss": loss})
        return {"status": "ok", "loss": loss}

    return objective, rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["cnn"], help="model keys of config.yaml")
    p.add_argument("--images", type=int, default=1280, help="final training images (tune uses 20%% of them)")
    p.add_argument("--test-images", type=int, default=256)
    p.add_argument("--trials", type=int, default=2, help="tuning trials (the study: 20)")
    p.add_argument("--epochs", type=int, default=1, help="epochs per trial and for the final training")
    p.add_argument("--workers", type=int, help="trials at a time for the concurrent tune line (default: tune's)")
    add_device_options(p)
    args = p.parse_args()
    device = device_from(args)
    cfg_all = load_config(CONFIG)
    threads = torch.get_num_threads()
    workers = args.workers or concurrent.workers_from_env(device, cfg_all["protocol"]["threads"], threads)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    x, y = images(args.images, seed=0)
    x_test, y_test = images(args.test_images, seed=1)
    n_tune = max(2, int(0.2 * len(y)))
    n_tune_train = int(0.8 * n_tune)
    sets = {"tune": ((x[:n_tune_train], y[:n_tune_train]), (x[n_tune_train:n_tune], y[n_tune_train:n_tune])),
            "final": ((x, y), (x_test, y_test))}
    lrs = np.exp(np.random.default_rng(3407).uniform(-10, -4, args.trials)).tolist()
    print(f"device {device}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}; "
          f"{args.images} final / {n_tune_train} tune-train images, {args.trials} trials, {args.epochs} epoch(s)")

    for name in args.models:
        cfg = resolve_model(cfg_all, name)
        norm = cfg["normalize"]
        to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize(norm["mean"], norm["std"])])
        run_cfg = {**cfg, "batch_size": 128}
        for stage, ((xt, yt), (xv, yv)) in sets.items():
            runs = lrs if stage == "tune" else [lrs[0]]
            seen = len(yt) * args.epochs * len(runs)   # training images per way

            train_ds, val_ds = ImageArrays(xt, yt, to_tensor), ImageArrays(xv, yv, to_tensor)
            sync()
            start = time.perf_counter()
            for lr in runs:
                seed_everything(cfg["seed"])
                study_fit(create_model(cfg["arch"], 10, **cfg["args"]).to(device), train_ds, val_ds,
                          args.epochs, lr, device)
            sync()
            study = seen / (time.perf_counter() - start)

            start = time.perf_counter()
            train, val = Tensors.from_numpy(xt, yt, device), Tensors.from_numpy(xv, yv, device)  # timed: ours loads too
            for lr in runs:
                generator = seed_everything(cfg["seed"])
                runner = Runner(create_model(cfg["arch"], 10, **cfg["args"]), run_cfg, device, lr)
                fit(runner, train, val, args.epochs, generator)
            sync()
            ours = seen / (time.perf_counter() - start)
            print(f"{name:10s} {stage:5s} study {study:10.1f} images/s   ours {ours:10.1f} images/s   "
                  f"ratio ours/study {ours / study:6.2f} x", flush=True)
            if stage == "tune" and min(workers, len(runs)) > 1:
                build = (bench_objective, (run_cfg, xt, yt, xv, yv, args.epochs, device))
                start = time.perf_counter()
                how = concurrent.run(build, [], runs, workers, device, threads=max(1, threads // workers))
                sync()
                together = seen / (time.perf_counter() - start)
                print(f"{name:10s} {stage:5s} study {study:10.1f} images/s   ours {together:10.1f} images/s   "
                      f"ratio ours/study {together / study:6.2f} x   (trials {how})", flush=True)


if __name__ == "__main__":
    main()
