"""Semi-supervised generative classifiers: the VAE (M2) and the AC-GAN, trained
through the same loop under their own objectives."""
import numpy as np
import pandas as pd
import pytest
import torch

from conftest import run_cli, tiny_model_cfg
from reprozoo.config import ConfigError, deep_merge, load_config
from reprozoo.architectures import architectures_declaring
from reprozoo.data import DataError, labelled_mask, load_arrays, read_split
from reprozoo.engine import Normalize, Runner, Tensors, fit, optimizers, seed_everything
from reprozoo.models import count_parameters, create_model, objective_name
from reprozoo.objectives import ACGAN, Collapsed, get_objective

CPU = torch.device("cpu")
NORM = Normalize([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])
# Our architectures (the study gives none), recorded so that a change is deliberate.
PARAMS = {"vae": 2_654_093, "acgan": 1_813_838}


def batch(n=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = NORM(torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8))
    return x, torch.randint(0, 10, (n,), generator=gen)


def half_labelled(n=8):
    return torch.arange(n) < n // 2


def grads(model):
    return {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("arch", ["vae", "acgan"])
def test_registered_with_their_objective_and_param_counts(arch, study_cfg):
    assert arch in architectures_declaring("samples")
    assert objective_name(arch) == {"vae": "vae_m2", "acgan": "acgan"}[arch]
    model = create_model(arch)
    assert count_parameters(model) == PARAMS[arch]
    assert model.eval()(batch(4)[0]).shape == (4, 10)            # forward = the classifier part
    for name in (arch, f"{arch}_4000"):
        assert study_cfg["models"][name]["arch"] == arch and name in study_cfg["run"]["models"]
    assert study_cfg["models"][f"{arch}_4000"]["labelled_per_class"] == 400
    assert "labelled_per_class" not in study_cfg["models"][arch]


def test_one_vae_step_lowers_its_objective():
    seed_everything(0)
    model, objective = create_model("vae"), get_objective("vae_m2")
    x, y = batch()
    opt = optimizers(objective, model, 1e-3, {"betas": [0.9, 0.999], "weight_decay": 0.0})

    def loss():
        torch.manual_seed(1)  # the same z draws before and after
        model.eval()
        with torch.no_grad():
            return objective.losses(model, x, y, half_labelled(), NORM)["loss"].item()

    before = loss()
    model.train()
    for _ in range(3):
        objective.step(model, opt, x, y, half_labelled(), NORM)
    assert loss() < before


def test_acgan_steps_lower_each_players_loss():
    seed_everything(0)
    model, objective = create_model("acgan", dropout=0.0), get_objective("acgan")
    x, y = batch()
    labelled = half_labelled()
    opt_d, opt_g = optimizers(objective, model, 1e-3, {"betas": [0.5, 0.999], "weight_decay": 0.0})
    model.train()
    z = torch.randn(8, model.z_dim, generator=torch.Generator().manual_seed(2))
    c = torch.arange(8) % 10

    def d_loss():
        fake = model.generator(z, c).detach()
        return objective.d_losses(model, x, y, labelled, NORM, fake, c)[0]

    before = d_loss()
    opt_d.zero_grad()
    before.backward()
    opt_d.step()
    assert d_loss().item() < before.item()

    def g_loss():
        return objective.g_loss(model, NORM, model.generator(z, c), c)

    before = g_loss()
    opt_g.zero_grad()
    before.backward()
    opt_g.step()
    assert g_loss().item() < before.item()


def test_vae_uses_the_unlabelled_images():
    """Unlabelled images change the gradient (the classifier's included); their labels never matter."""
    model, objective = create_model("vae").train(), get_objective("vae_m2")
    x, y = batch()
    lab = half_labelled()

    def gradient(x, y, labelled):
        model.zero_grad()
        torch.manual_seed(3)
        objective.losses(model, x, y, labelled, NORM)["loss"].backward()
        return grads(model)

    x_other = x.clone()
    x_other[~lab] = batch(seed=9)[0][~lab]          # other unlabelled images, same labelled ones
    a, b = gradient(x, y, lab), gradient(x_other, y, lab)
    assert not torch.allclose(a["classifier.7.weight"], b["classifier.7.weight"])
    assert not torch.allclose(a["decoder.0.weight"], b["decoder.0.weight"])
    unlabelled_only = gradient(x, y, torch.zeros(8, dtype=torch.bool))
    assert unlabelled_only["classifier.7.weight"].abs().sum() > 0    # q(y|x) learns from unlabelled images
    y_other = y.clone()
    y_other[~lab] = (y[~lab] + 1) % 10                                # hidden labels: no effect
    c = gradient(x, y_other, lab)
    assert all(torch.equal(a[k], c[k]) for k in a if a[k] is not None)


def test_acgan_unlabelled_images_train_only_the_real_fake_head():
    model, objective = create_model("acgan", dropout=0.0).train(), get_objective("acgan")
    x, y = batch()
    c = torch.arange(8) % 10
    fake = model.generator(torch.randn(8, model.z_dim), c).detach()

    def gradient(x, y, labelled):
        model.zero_grad()
        objective.d_losses(model, x, y, labelled, NORM, fake, c)[0].backward()
        return grads(model)

    base = gradient(x, y, half_labelled())
    y_other = y.clone()
    y_other[4:] = (y[4:] + 1) % 10
    assert torch.equal(base["discriminator.classes.weight"],
                       gradient(x, y_other, half_labelled())["discriminator.classes.weight"])
    x_other = x.clone()
    x_other[4:] = batch(seed=9)[0][4:]
    other = gradient(x_other, y, half_labelled())
    assert not torch.allclose(base["discriminator.source.weight"], other["discriminator.source.weight"])


def test_labelled_mask_respects_the_config(digits_npz, digits_split):
    arrays = load_arrays(digits_npz)
    split = read_split(digits_split, len(arrays["y_train"]), len(arrays["y_test"]))
    y, pool = arrays["y_train"], split["train"]
    mask = labelled_mask(y, pool, 5, 3407)
    assert mask.sum() == 50 and set(np.flatnonzero(mask)) <= set(pool)
    assert np.bincount(y[mask], minlength=10).tolist() == [5] * 10
    assert np.array_equal(mask, labelled_mask(y, pool, 5, 3407))             # seeded
    assert not np.array_equal(mask, labelled_mask(y, pool, 5, 3408))
    assert labelled_mask(y, pool, None, 3407).sum() == len(pool)           # absent: all labelled
    with pytest.raises(DataError, match=r"config key 'labelled_per_class': 1000 exceeds the \d+ training images "
                                        r"of class '0'"):
        labelled_mask(y, pool, 1000, 3407, [str(c) for c in arrays["classes"]])


def test_labelled_per_class_is_schema_checked(tmp_path):
    from conftest import ROOT

    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  vae:\n    labelled_per_class: 0\n")
    with pytest.raises(ConfigError, match="config key 'models.vae.labelled_per_class': 0 is less than the minimum"):
        load_config(ROOT / "config.yaml", bad)


SMALL = {"acgan": {"width": 8}, "vae": {"channels": [8, 16, 32], "hidden": 64}}  # CPU-sized test models


def tiny(demo_cfg, name, **overrides):
    return tiny_model_cfg(demo_cfg, name, **deep_merge({"args": SMALL.get(name, {})}, overrides))


@pytest.mark.parametrize("name", ["vae", "acgan", "mlp"])
def test_train_uses_only_the_configured_labels(demo_cfg, digits_npz, digits_split, tmp_path, name):
    from reprozoo.io import read_json, write_json
    from reprozoo.train import train

    cfg = tiny(demo_cfg, name, labelled_per_class=3)
    write_json(tmp_path / "best.json", {"source": "tuned", "lr": 3e-3, "epochs": 1})
    run = train(cfg, digits_npz, digits_split, tmp_path / "best.json", tmp_path / "w.pt", tmp_path / "h.csv",
                tmp_path / "run.json", CPU)
    assert run["labelled_images"] == 30 and read_json(tmp_path / "run.json")["labelled_images"] == 30
    assert run["train_images"] == len(load_arrays(digits_npz)["y_train"])
    assert run["objective"] == objective_name(cfg["arch"])
    history = pd.read_csv(tmp_path / "h.csv")
    extra = {"vae": {"train_objective", "train_labelled_elbo", "train_unlabelled_elbo"},
             "acgan": {"train_objective", "train_discriminator", "train_generator"}, "mlp": set()}[name]
    assert extra | {"train_loss", "test_loss", "test_accuracy"} <= set(history.columns)
    assert not (extra - set(history.columns))


def _fit_twice(cfg, digits_npz, digits_split):
    arrays = load_arrays(digits_npz)
    split = read_split(digits_split, len(arrays["y_train"]), len(arrays["y_test"]))
    mask = labelled_mask(arrays["y_train"], split["train"], 10, cfg["seed"])
    histories = []
    for _ in range(2):
        train = Tensors.from_numpy(arrays["x_train"], arrays["y_train"], CPU, split["tune_train"][:300], mask)
        val = Tensors.from_numpy(arrays["x_train"], arrays["y_train"], CPU, split["tune_val"])
        generator = seed_everything(cfg["seed"])
        runner = Runner(create_model(cfg["arch"], **cfg["args"]), cfg, CPU, 1e-3)
        histories.append([{k: v for k, v in row.items() if k != "seconds"}
                          for row in fit(runner, train, val, 2, generator)])
    return histories


@pytest.mark.parametrize("name", ["vae", "acgan"])
def test_seeded_runs_repeat_exactly_on_cpu(demo_cfg, digits_npz, digits_split, name):
    a, b = _fit_twice(tiny(demo_cfg, name), digits_npz, digits_split)
    assert a == b and len(a) == 2


def test_a_collapsing_gan_is_detected():
    model = create_model("acgan", width=8).eval()
    ACGAN().check(model, CPU)                                   # a fresh generator varies with its noise
    with torch.no_grad():
        model.generator.project[0].weight[:, :model.z_dim] = 0  # G(z, y) now ignores z
    with pytest.raises(Collapsed, match="generator collapsed: samples of a class vary 0.000 times as much"):
        ACGAN().check(model, CPU)


def test_a_collapsing_trial_is_recorded_as_failed_and_tuning_goes_on(demo_cfg, digits_npz, digits_split, tmp_path,
                                                                     monkeypatch):
    from reprozoo.tune import tune

    calls = {"n": 0}

    def check(self, model, device):  # the first trial collapses after its first epoch
        calls["n"] += 1
        if calls["n"] == 1:
            raise Collapsed("generator collapsed: samples of a class vary 0.001 times as much as all samples")

    monkeypatch.setattr(ACGAN, "check", check)
    cfg = tiny(demo_cfg, "acgan", tune={"max_evals": 2, "max_epochs": 1})
    best = tune(cfg, digits_npz, digits_split, tmp_path / "t.csv", tmp_path / "b.json", CPU)
    trials = pd.read_csv(tmp_path / "t.csv")
    assert trials["status"].tolist() == ["fail", "ok"]
    assert "collapsed" in trials["error"][0] and best["trial"] == 2 and best["failed_trials"] == 1


@pytest.mark.parametrize("name", ["vae", "acgan"])
def test_every_parameter_learns_under_the_objective(study_cfg, name, tmp_path):
    from reprozoo.sections import resolve_model
    from reprozoo.verify import verify

    record = verify(resolve_model(study_cfg, name), tmp_path / "v.json")
    assert record["passed"] and record["objective"] == objective_name(name)
    assert all(g["finite"] and not g["all_zero"] for g in record["gradients"])
    modules = {m["module"] for m in record["modules"]}
    assert {"classifier", "decoder"} <= modules if name == "vae" else {"generator", "discriminator"} <= modules


@pytest.mark.parametrize("name", ["vae", "acgan"])
def test_samples_figure(demo_cfg, digits_npz, digits_split, tmp_path, name):
    from reprozoo.io import write_json
    from reprozoo.train import train

    cfg = tiny(demo_cfg, name)
    write_json(tmp_path / "best.json", {"source": "tuned", "lr": 1e-3, "epochs": 1})
    train(cfg, digits_npz, digits_split, tmp_path / "best.json", tmp_path / "w.pt", tmp_path / "h.csv",
          tmp_path / "run.json", CPU)
    import json

    result = run_cli("samples", "--model-json", json.dumps(cfg), "--data", digits_npz, "--weights", tmp_path / "w.pt",
                     "--history", tmp_path / "h.csv", "--samples-plot", tmp_path / "s.png")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "s.png").stat().st_size > 20_000


def test_samples_of_a_classifier_is_a_one_line_error(demo_cfg, digits_npz, tmp_path):
    import json

    cfg = tiny_model_cfg(demo_cfg, "mlp")
    result = run_cli("samples", "--model-json", json.dumps(cfg), "--data", digits_npz, "--weights", tmp_path / "w.pt",
                     "--history", tmp_path / "h.csv", "--samples-plot", tmp_path / "s.png")
    assert result.returncode == 2
    assert result.stderr.strip() == ("reprozoo samples: error: model 'mlp' is not generative (arch 'mlp'): "
                                     "nothing to sample")


def test_the_semi_supervised_digits_config_is_valid():
    from conftest import ROOT
    from reprozoo.sections import resolve_model

    cfg = load_config(ROOT / "config.yaml", ROOT / "config" / "demo.yaml", ROOT / "config" / "digits-semi.yaml")
    assert cfg["run"]["models"] == ["cnn_l20", "vae_l20", "acgan_l20"]
    for name in cfg["run"]["models"]:
        assert resolve_model(cfg, name)["labelled_per_class"] == 20
