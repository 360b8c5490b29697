"""Training objectives: what one optimisation step minimises.

The training loop (`reprozoo.engine`) is the same for every model; the model's
registry entry names its objective (`@register_model(objective=...)`):

- `classification`: cross-entropy of `model(x)`, the study's objective;
- `vae_m2`: Kingma et al. 2014's M2, labelled ELBO + unlabelled ELBO
  (marginalising y under q(y|x)) + alpha x cross-entropy of q(y|x);
- `acgan`: Odena et al. 2017, a discriminator step (real/fake + class) then a
  generator step (non-saturating real/fake + class of its own samples).

Every objective reports a `classification` part, the cross-entropy of the
model's classifier on the labelled images of the batch, which becomes the
history's `train_loss`; its other parts become `train_<part>` columns. A batch
carries a `labelled` mask: semi-supervised objectives use the unlabelled images
too, plain classification never sees them (its training set is cut to the
labelled images, see `reprozoo.data.labelled_mask`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

Parts = dict[str, torch.Tensor]


class Collapsed(RuntimeError):
    """Training produced a degenerate model (e.g. a generator that ignores its noise)."""


class Classification:
    name = "classification"
    semi_supervised = False   # trains on labelled images only

    def players(self, model: nn.Module) -> list[nn.Module]:
        """The parts of the model that `step` updates, one optimiser each, in the order `step` takes them
        (the engine builds the optimisers: the study's Adam for every model)."""
        return [model]

    def losses(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, labelled: torch.Tensor,
               normalize) -> Parts:
        """Differentiable parts for one batch; `loss` is what a step minimises."""
        if labelled is not None:  # None: every image is labelled (no per-batch mask, no sync)
            x, y = x[labelled], y[labelled]
        loss = F.cross_entropy(model(x), y)
        return {"loss": loss, "classification": loss}

    def step(self, model, optimizers, x, y, labelled, normalize) -> Parts:
        """One optimisation step; returns the parts, detached."""
        parts = self.losses(model, x, y, labelled, normalize)
        (opt,) = optimizers
        opt.zero_grad(set_to_none=True)
        parts["loss"].backward()
        opt.step()
        return {k: v.detach().float() for k, v in parts.items()}

    def check(self, model: nn.Module, device: torch.device) -> None:
        """After each epoch: raise Collapsed when the model degenerated."""


class VAEM2(Classification):
    """-ELBO in nats per image with Bernoulli pixels and a uniform prior p(y).

    loss = (sum over labelled L(x, y) + sum over unlabelled U(x) + alpha * sum over labelled CE) / batch
    L(x, y) = -E_q(z|x,y)[log p(x|y,z)] + KL(q(z|x,y) || N(0, I)) - log p(y)
    U(x)    = sum_y q(y|x) L(x, y) - H(q(y|x))
    """
    name = "vae_m2"
    semi_supervised = True

    def neg_elbo(self, model, features, target, y) -> torch.Tensor:
        mu, logvar = model.encode(features, y)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        recon = F.binary_cross_entropy_with_logits(model.decode(z, y).float(), target, reduction="none")
        kl = 0.5 * (mu.float() ** 2 + logvar.float().exp() - 1 - logvar.float()).sum(1)
        return recon.flatten(1).sum(1) + kl + math.log(model.num_classes)

    def losses(self, model, x, y, labelled, normalize) -> Parts:
        target = normalize.to_unit(x).clamp(0, 1).float()
        logits, features = model(x).float(), model.encoder(x)
        lab = unl = ce = logits.new_zeros(())
        if labelled is None:  # every image labelled: no mask, no host sync per batch
            n_lab, n_unl = len(x), 0
            lab = self.neg_elbo(model, features, target, y).sum()
            ce = F.cross_entropy(logits, y, reduction="sum")
        else:
            n_lab, n_unl = int(labelled.sum()), int((~labelled).sum())
            if n_lab:
                lab = self.neg_elbo(model, features[labelled], target[labelled], y[labelled]).sum()
                ce = F.cross_entropy(logits[labelled], y[labelled], reduction="sum")
        if n_unl:
            k, unlabelled = model.num_classes, ~labelled
            ys = torch.arange(k, device=x.device).repeat(n_unl)                  # every class for every image
            per_class = self.neg_elbo(model, features[unlabelled].repeat_interleave(k, 0),
                                      target[unlabelled].repeat_interleave(k, 0), ys).view(n_unl, k)
            log_q = F.log_softmax(logits[unlabelled], 1)
            unl = (log_q.exp() * (per_class + log_q)).sum()
        loss = (lab + unl + model.alpha * ce) / len(x)
        return {"loss": loss, "classification": ce / max(n_lab, 1),
                "labelled_elbo": lab / max(n_lab, 1), "unlabelled_elbo": unl / max(n_unl, 1)}


class ACGAN(Classification):
    """D: BCE(real -> 1) + BCE(G(z, c) -> 0) + CE(class of labelled reals) + CE(class of fakes = c).
    G: BCE(D(G(z, c)) -> 1) + CE(class of G(z, c) = c). One D step, then one G step, per batch."""
    name = "acgan"
    semi_supervised = True
    min_diversity = 0.05   # within-class / overall pixel std of samples: below it, collapsed

    def players(self, model):
        return [model.discriminator, model.generator]

    def fakes(self, model, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.randn(n, model.z_dim, device=device)
        c = torch.randint(0, model.num_classes, (n,), device=device)
        return model.generator(z, c), c

    def d_losses(self, model, x, y, labelled, normalize, fake, c) -> tuple[torch.Tensor, torch.Tensor]:
        src_real, cls_real = model.discriminator(x)
        src_fake, cls_fake = model.discriminator(normalize.from_unit(fake))
        src_real, src_fake = src_real.float(), src_fake.float()
        source = F.binary_cross_entropy_with_logits(src_real, torch.ones_like(src_real)) + \
            F.binary_cross_entropy_with_logits(src_fake, torch.zeros_like(src_fake))
        if labelled is None:  # every image labelled: no mask, no host sync per batch
            ce = F.cross_entropy(cls_real.float(), y)
        else:
            ce = F.cross_entropy(cls_real[labelled].float(), y[labelled]) if labelled.any() else src_real.new_zeros(())
        return source + ce + F.cross_entropy(cls_fake.float(), c), ce

    def g_loss(self, model, normalize, fake, c) -> torch.Tensor:
        src, cls = model.discriminator(normalize.from_unit(fake))
        src = src.float()
        return F.binary_cross_entropy_with_logits(src, torch.ones_like(src)) + F.cross_entropy(cls.float(), c)

    def losses(self, model, x, y, labelled, normalize) -> Parts:
        fake, c = self.fakes(model, len(x), x.device)
        d, ce = self.d_losses(model, x, y, labelled, normalize, fake.detach(), c)
        g = self.g_loss(model, normalize, fake, c)
        return {"loss": d + g, "classification": ce, "discriminator": d, "generator": g}

    def step(self, model, optimizers, x, y, labelled, normalize) -> Parts:
        opt_d, opt_g = optimizers
        fake, c = self.fakes(model, len(x), x.device)
        d, ce = self.d_losses(model, x, y, labelled, normalize, fake.detach(), c)
        opt_d.zero_grad(set_to_none=True)
        d.backward()
        opt_d.step()
        g = self.g_loss(model, normalize, fake, c)
        opt_g.zero_grad(set_to_none=True)
        g.backward()
        opt_g.step()
        return {"loss": (d + g).detach().float(), "classification": ce.detach().float(),
                "discriminator": d.detach().float(), "generator": g.detach().float()}

    @torch.no_grad()
    def check(self, model, device) -> None:
        """Mode collapse: samples of one class barely vary with the noise, compared with
        how much all samples vary (a generator that ignores z has a ratio near 0, a
        fresh one near 1)."""
        was_training = model.training
        model.eval()
        y = torch.arange(model.num_classes, device=device).repeat_interleave(8)
        images = model.sample(y, torch.Generator().manual_seed(0)).float().reshape(model.num_classes, 8, -1)  # channels_last on CUDA
        model.train(was_training)
        within = images.std(1).mean().item()
        overall = images.flatten(0, 1).std(0).mean().item()
        ratio = within / overall if overall > 1e-6 else 0.0
        if not math.isfinite(ratio) or ratio < self.min_diversity:
            raise Collapsed(f"generator collapsed: samples of a class vary {ratio:.3f} times as much as all "
                            f"samples across noise draws (< {self.min_diversity})")


OBJECTIVES = {o.name: o for o in (Classification(), VAEM2(), ACGAN())}


def get_objective(name: str) -> Classification:
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective '{name}' (known: {', '.join(sorted(OBJECTIVES))})")
    return OBJECTIVES[name]
