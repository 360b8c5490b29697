"""The one training loop every stage uses.

Images live in memory as uint8 tensors (on the GPU when there is one) and are
normalised per batch on the device: no DataLoader, no per-sample transforms.
On CUDA: bf16 autocast, channels_last, TF32. On CPU: fp32, deterministic.
"""
from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reprozoo.errors import UserError
from reprozoo.objectives import Collapsed, get_objective
from reprozoo.progress import no_progress  # noqa: F401  (the rules; tests and callers import it from here too)


class Diverged(RuntimeError):
    """The loss became NaN or infinite."""


class NoProgress(Diverged):
    """Training ran to its end but the model is no better than a guess (see `check_progress`).

    A subclass of Diverged, so every stage that turns divergence into a failed trial
    or a failed job does the same with it. `exploded`: the loss blew up (a sign of
    too high a learning rate), rather than the accuracy staying at chance."""

    def __init__(self, message: str, exploded: bool):
        super().__init__(message)
        self.exploded = exploded


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch (CPU + CUDA), numpy and random; return a generator for data order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)


def pick_device(name: str = "auto", threads: int | None = None) -> torch.device:
    """The torch device `name` (auto: cuda if available); `threads` CPU threads for torch where given."""
    if threads:
        torch.set_num_threads(threads)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: not a device (auto, cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is available here; use --device cpu (or auto)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: reprozoo runs on cpu or cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


@dataclass
class Tensors:
    """A set held in memory: x is uint8 images (N, 3, H, W) or cached features
    (N, D); y is int64 (N,); `labelled` (bool, N) marks the images whose label a
    semi-supervised objective may use (None: all of them)."""
    x: torch.Tensor
    y: torch.Tensor
    labelled: torch.Tensor | None = None

    @classmethod
    def from_numpy(cls, x: np.ndarray, y: np.ndarray, device: torch.device,
                   index: list[int] | None = None, labelled: np.ndarray | None = None) -> "Tensors":
        """`labelled` is a mask over the whole of `x` (before `index` picks rows)."""
        if index is not None:
            x, y = x[index], y[index]
            labelled = None if labelled is None else labelled[index]
        x = torch.from_numpy(np.ascontiguousarray(x))
        if x.ndim == 4:  # images are stored NHWC
            x = x.permute(0, 3, 1, 2).contiguous()
        y = torch.from_numpy(np.asarray(y, dtype=np.int64))
        mask = None if labelled is None else torch.from_numpy(np.asarray(labelled, dtype=bool))
        if device.type == "cuda":
            x, y = x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
            mask = None if mask is None else mask.to(device)
        return cls(x, y, mask)

    def only_labelled(self) -> "Tensors":
        """The labelled images alone (what a supervised objective trains on)."""
        if self.labelled is None:
            return self
        return Tensors(self.x[self.labelled], self.y[self.labelled])

    def __len__(self) -> int:
        return len(self.y)


class Normalize(nn.Module):
    """uint8 (B, 3, H, W) -> float, scaled to [0, 1], then (x - mean) / std per channel."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) * 255)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised -> pixels in [0, 1] (what a generative model reconstructs)."""
        return (x * self.std + self.mean) / 255

    def from_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] (a generator's output) -> normalised, as real images reach the model."""
        return (x * 255 - self.mean) / self.std


def optimizers(objective, model: nn.Module, lr: float, opt: dict) -> list[torch.optim.Adam]:
    """The study's optimiser, Adam, one per part of the model the objective's step updates, over its
    trainable parameters; on CUDA the fused kernel (one launch per step instead of one per tensor
    group; on CPU the default, so CPU numbers stay put)."""
    made = []
    for player in objective.players(model):
        params = [p for p in player.parameters() if p.requires_grad]
        fused = bool(params) and all(p.is_cuda for p in params)
        made.append(torch.optim.Adam(params, lr=lr, betas=tuple(opt["betas"]), weight_decay=opt["weight_decay"],
                                     fused=fused or None))
    return made


class Runner:
    """Model + optimisers + objective + the batch logic for one training run.

    The objective is the one the model's section names (its registry entry's, resolved with the
    config: reprozoo/sections.py), or is given; the engine never looks a model up."""

    def __init__(self, model: nn.Module, cfg: dict, device: torch.device, lr: float | None = None,
                 objective: str | None = None):
        self.objective = get_objective(objective or cfg["objective"])
        self.device = device
        self.cuda = device.type == "cuda"
        self.model = model.to(device)
        if self.cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.normalize = Normalize(cfg["normalize"]["mean"], cfg["normalize"]["std"]).to(device)
        self.batch_size = cfg["batch_size"]          # images per step
        self.eval_batch_size = cfg["eval_batch_size"]
        self.optimizers = [] if lr is None else optimizers(self.objective, self.model, lr, cfg["optimizer"])

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:  # cached features: already what the model takes
            return x.float()
        x = self.normalize(x)
        return x.contiguous(memory_format=torch.channels_last) if self.cuda else x

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda)

    def batches(self, n: int, batch_size: int, generator: torch.Generator | None) -> Iterator[torch.Tensor]:
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        order = order.to(self.device)
        for start in range(0, n, batch_size):
            yield order[start:start + batch_size]

    def train_epoch(self, data: Tensors, generator: torch.Generator,
                    on_batch: Callable[[], None] | None = None) -> dict[str, float]:
        """One pass over `data` in the generator's order, one objective step per batch.

        Returns the epoch's mean of each part: `train_loss` (the classifier's
        cross-entropy on labelled images) and, for objectives other than plain
        classification, `train_objective` (what the steps minimise) and `train_<part>`."""
        self.model.train()
        totals: dict[str, torch.Tensor] = {}
        for idx in self.batches(len(data), self.batch_size, generator):
            labelled = None if data.labelled is None else data.labelled[idx]
            with self._autocast():
                parts = self.objective.step(self.model, self.optimizers, self._inputs(data.x[idx]), data.y[idx],
                                            labelled, self.normalize)
            for k, v in parts.items():
                totals[k] = totals.get(k, 0) + v * len(idx)
            if on_batch is not None:
                on_batch()
        means = {k: v.item() / len(data) for k, v in totals.items()}   # one sync per part per epoch
        for k, v in means.items():
            if not math.isfinite(v):
                raise Diverged(f"training {'loss' if k in ('loss', 'classification') else k + ' loss'} is {v}")
        row = {"train_loss": means.pop("classification")}
        if self.objective.name != "classification":
            row.update({("train_objective" if k == "loss" else f"train_{k}"): v for k, v in means.items()})
        return row

    @torch.no_grad()
    def predict(self, data: Tensors) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample cross-entropy and logits (float32, on CPU) for `data`."""
        self.model.eval()
        losses, logits = [], []
        for idx in self.batches(len(data), self.eval_batch_size, None):
            with self._autocast():
                out = self.model(self._inputs(data.x[idx])).float()
            losses.append(F.cross_entropy(out, data.y[idx], reduction="none"))
            logits.append(out)
        return torch.cat(losses).cpu(), torch.cat(logits).cpu()

    def evaluate(self, data: Tensors) -> tuple[float, float]:
        """Mean loss and accuracy (%) on `data`."""
        losses, logits = self.predict(data)
        accuracy = (logits.argmax(1) == data.y.cpu()).float().mean().item() * 100
        return losses.mean().item(), accuracy


def fit(runner: Runner, train: Tensors, val: Tensors, epochs: int, generator: torch.Generator,
        patience: int | None = None, on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """Train up to `epochs`, evaluating on `val` after each; stop early after `patience`
    epochs without a lower val loss. Returns one history row per epoch."""
    history: list[dict] = []
    best, since_best = math.inf, 0
    if not runner.objective.semi_supervised:
        train = train.only_labelled()  # once: a supervised objective never sees unlabelled images
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        train_parts = runner.train_epoch(train, generator)
        try:
            runner.objective.check(runner.model, runner.device)
        except Collapsed as e:
            raise Diverged(f"{e} at epoch {epoch}") from None
        val_loss, val_acc = runner.evaluate(val)
        if not math.isfinite(val_loss):
            raise Diverged(f"evaluation loss is {val_loss} at epoch {epoch}")
        row = {"epoch": epoch, **train_parts, "val_loss": val_loss, "val_accuracy": val_acc,
               "seconds": time.perf_counter() - start}
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if val_loss < best:
            best, since_best = val_loss, 0
        else:
            since_best += 1
            if patience is not None and since_best >= patience:
                break
    return history


# ------------------------------------------------------------------ progress (rules: reprozoo/progress.py)

def check_progress(row: dict, num_classes: int, val: Tensors, split: str = "val") -> None:
    """Raise NoProgress when the history row a run reports (its best or its last
    epoch, evaluated on `val`) shows no progress; see the rules above."""
    counts = torch.bincount(val.y.cpu(), minlength=num_classes).numpy()
    found = no_progress(row["val_loss"], row["val_accuracy"], counts, split)
    if found is not None:
        why, exploded = found
        raise NoProgress(f"{why} at epoch {row['epoch']}", exploded)
