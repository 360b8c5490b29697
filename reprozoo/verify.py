"""`verify`: module-level checks of one model, no training data needed.

1. Every named submodule on a fixed seeded input: output shape, mean, std, NaN/Inf.
2. One training step of the model's objective (cross-entropy, or the VAE's ELBO,
   or the AC-GAN's two players' losses): every trainable parameter gets a finite
   gradient, and none that should learn gets an all-zero one.
3. Reference comparisons where the architecture declares them on its registry
   entry (`@register_model(reference=...)` in reprozoo/models/), as max abs
   difference and cosine similarity under stated tolerances: e.g. resnet18's
   stages vs torchvision's, vit_tiny's blocks vs nn.TransformerEncoderLayer and
   a functional implementation, patch embeddings vs unfold + linear, and a
   probe's frozen backbone vs torchvision's vit_b_16 run by hand.
A failed check raises VerifyError naming the module and by how much.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from reprozoo.engine import Normalize, seed_everything
from reprozoo.errors import UserError
from reprozoo.io import write_json
from reprozoo.models import count_parameters, create_model, model_entry
from reprozoo.models.pretrained import create_backbone
from reprozoo.objectives import get_objective
from reprozoo.stages import IMAGE_SIZE  # what verify feeds each model: the size data.npz stores

MAX_ABS_DIFF = 1e-4     # fp32 on CPU: reorderings of the same sums stay far below this
MIN_COSINE = 0.99999
BATCH = 4               # images in the fixed input


class VerifyError(UserError, RuntimeError):
    pass


def fixed_input(arch_args: dict, cfg: dict, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if cfg.get("backbone"):  # a head on cached features
        return torch.randn(BATCH, cfg["args"].get("in_features", 768), generator=gen)
    return torch.randn(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen)


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


class Batch:
    """The fixed seeded batch and the model's objective: what one step computes.

    Semi-supervised objectives get half the batch labelled, half unlabelled, so
    that both paths are exercised (and every submodule, decoder and generator
    included, runs)."""

    def __init__(self, cfg: dict, x: torch.Tensor, num_classes: int, seed: int):
        self.objective = get_objective(cfg["objective"])
        self.x = x
        self.y = torch.randint(0, num_classes, (len(x),), generator=torch.Generator().manual_seed(seed))
        self.labelled = torch.arange(len(x)) < len(x) // 2 if self.objective.semi_supervised else None
        self.normalize = Normalize(cfg["normalize"]["mean"], cfg["normalize"]["std"])

    def loss(self, model: nn.Module) -> torch.Tensor:
        return self.objective.losses(model, self.x, self.y, self.labelled, self.normalize)["loss"]


def module_stats(model: nn.Module, batch: Batch) -> list[dict]:
    """Shape, mean, std and NaN/Inf of every named submodule's output on the batch (eval mode),
    running the objective's whole forward computation."""
    rows, hooks = [], []

    def hook(name):
        def record(_module, _inputs, out):
            t = _first_tensor(out)
            if t is None:
                return
            t = t.detach().float()
            rows.append({"module": name, "shape": list(t.shape), "mean": t.mean().item(),
                         "std": t.std().item() if t.numel() > 1 else 0.0,
                         "nan": bool(torch.isnan(t).any()), "inf": bool(torch.isinf(t).any())})
        return record

    for name, module in model.named_modules():
        if name:
            hooks.append(module.register_forward_hook(hook(name)))
    model.eval()
    try:
        with torch.no_grad():
            torch.manual_seed(0)  # the objective's own noise (z samples, fake labels)
            batch.loss(model)
    finally:
        for h in hooks:
            h.remove()
    return rows


def gradient_check(model: nn.Module, batch: Batch) -> list[dict]:
    """One backward pass of the objective in train mode; gradient statistics per trainable parameter."""
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    batch.loss(model).backward()
    rows = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        g = p.grad
        rows.append({"param": name, "finite": g is not None and bool(torch.isfinite(g).all()),
                     "all_zero": g is None or not bool(g.abs().sum() > 0),
                     "grad_abs_mean": None if g is None else g.abs().mean().item()})
    model.zero_grad(set_to_none=True)
    return rows


def compare(name: str, ours: torch.Tensor, ref: torch.Tensor) -> dict:
    ours, ref = ours.detach().float().flatten(), ref.detach().float().flatten()
    if ours.shape != ref.shape:
        return {"check": name, "max_abs_diff": math.inf, "cosine": -1.0, "passed": False,
                "note": f"shape {tuple(ours.shape)} vs reference {tuple(ref.shape)}"}
    diff = (ours - ref).abs().max().item()
    cos = F.cosine_similarity(ours, ref, dim=0).item()
    return {"check": name, "max_abs_diff": diff, "cosine": cos,
            "passed": diff <= MAX_ABS_DIFF and cos >= MIN_COSINE}


# ------------------------------------------------------------------ references

def reference_checks(model: nn.Module, arch: str, x: torch.Tensor, args: dict | None = None) -> list[dict]:
    """The architecture's own reference outputs (declared on its registry entry), compared."""
    reference = model_entry(arch).reference
    if reference is None:
        return []
    model.eval()
    with torch.no_grad():
        return [compare(what, ours, theirs) for what, ours, theirs in reference(model, x, args or {})]


def backbone_checks(backbone_cfg: dict, seed: int) -> list[dict]:
    """A probe's frozen backbone (random weights: structure is what is checked) beside its reference."""
    backbone = create_backbone(backbone_cfg["arch"], "none", backbone_cfg["image_size"]).eval()
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return [compare(what, ours, theirs) for what, ours, theirs in backbone.reference_outputs(x)]


# ------------------------------------------------------------------ the stage

def verify(cfg: dict, verify_path, expect: dict | None = None, num_classes: int = 10) -> dict:
    """Run every check for one model; write the record; raise VerifyError on the first failure.

    `expect` is the model's `verify:` config: parameters whose all-zero gradient is a
    documented property of the architecture (`zero_grad`) and why.
    """
    expect = expect or {}
    known_zero = set(expect.get("zero_grad", []))
    seed = cfg["seed"]
    seed_everything(seed)
    args = dict(cfg["args"])
    if "weights" in args:  # structure, not ImageNet values, is what is verified: no download needed
        args["weights"] = "none"
    model = create_model(cfg["arch"], num_classes, **args)
    x = fixed_input(args, cfg, seed)
    if cfg.get("backbone"):  # also verify the frozen backbone the head's features come from
        reference = backbone_checks(cfg["backbone"], seed)
    else:
        reference = reference_checks(model, cfg["arch"], x, args)
    batch = Batch(cfg, x, num_classes, seed)
    modules = module_stats(model, batch)
    grads = gradient_check(model, batch)

    for g in grads:
        g["expected_zero"] = g["param"] in known_zero
    unknown = known_zero - {g["param"] for g in grads}
    record = {"model": cfg["name"], "arch": cfg["arch"], "params": count_parameters(model), "seed": seed,
              "expected_zero_grad": sorted(known_zero), "why": expect.get("why", ""),
              "input_shape": list(x.shape), "objective": batch.objective.name, "weights": "random init (structure checks)" if "weights" in args else None,
              "tolerance": {"max_abs_diff": MAX_ABS_DIFF, "min_cosine": MIN_COSINE},
              "modules": modules, "gradients": grads, "reference": reference}
    failures = ([f"module {m['module']} outputs NaN/Inf" for m in modules if m["nan"] or m["inf"]]
                + [f"parameter {g['param']} has a non-finite gradient" for g in grads if not g["finite"]]
                + [f"parameter {g['param']} gets an all-zero gradient" for g in grads
                   if g["all_zero"] and not g["expected_zero"]]
                + [f"parameter {g['param']} was expected to get no gradient (verify.zero_grad) but gets one"
                   for g in grads if g["expected_zero"] and not g["all_zero"]]
                + [f"verify.zero_grad names '{name}', which is not a trainable parameter" for name in sorted(unknown)]
                + [f"{c['check']}: max abs diff {c['max_abs_diff']:.3g} (tolerance {MAX_ABS_DIFF:g}), "
                   f"cosine {c['cosine']:.6f} (min {MIN_COSINE})" + (f", {c['note']}" if "note" in c else "")
                   for c in reference if not c["passed"]])
    record["passed"] = not failures
    record["failures"] = failures
    write_json(verify_path, record)
    if failures:
        more = f" (+{len(failures) - 1} more, see {verify_path})" if len(failures) > 1 else ""
        raise VerifyError(f"model '{cfg['name']}': {failures[0]}{more}")
    return record
