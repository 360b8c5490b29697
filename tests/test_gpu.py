"""The CUDA path, run where a GPU is (skipped elsewhere, see conftest): every model
of the study trains through the engine under bf16 autocast + channels_last, the
probe's backbone caches features at the study's 224 px, and concurrent tuning
trials on the card (spawned workers) match the sequential trials."""
import pandas as pd
import pytest
import torch

import reprozoo.trials as concurrent
from conftest import tiny_model_cfg
from reprozoo.config import deep_merge, expand_ablations, run_models
from reprozoo.engine import Runner, Tensors, fit, pick_device, seed_everything
from reprozoo.models import create_model

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda():
    return pick_device("cuda")


def _study_models(study_cfg):
    cfg = expand_ablations(study_cfg)
    return cfg, [m for m in run_models(cfg) if "backbone" not in cfg["models"][m]]


def test_every_study_model_trains_on_cuda_with_bf16_and_channels_last(study_cfg, digits_npz, digits_split, cuda):
    """One short fit per model (ablations included) on the digits: finite losses, the
    train loss falls, predictions come back as float32. Catches what breaks only on
    CUDA: bf16 in the LSTM, the GAN's two players under autocast, flatten after
    channels_last, the VAE's sampling."""
    from reprozoo.data import load_arrays, read_split

    cfg, models = _study_models(study_cfg)
    arrays = load_arrays(digits_npz)
    split = read_split(digits_split, len(arrays["y_train"]), len(arrays["y_test"]))
    train = Tensors.from_numpy(arrays["x_train"], arrays["y_train"], cuda, split["tune_train"])
    val = Tensors.from_numpy(arrays["x_train"], arrays["y_train"], cuda, split["tune_val"])
    for name in models:
        section = tiny_model_cfg(cfg, name, batch_size=64)
        args = deep_merge(section["args"], {"weights": "none"} if "weights" in section["args"] else {})
        generator = seed_everything(0)
        runner = Runner(create_model(section["arch"], 10, **args), section, cuda, lr=1e-3)
        history = fit(runner, train, val, 3, generator)
        losses = [r["train_loss"] for r in history]
        assert all(map(lambda v: v == v and abs(v) < 1e6, losses)), (name, losses)
        assert losses[-1] < losses[0], (name, losses)
        _, logits = runner.predict(val)
        assert logits.dtype == torch.float32 and logits.shape == (len(val), 10), name


def test_probe_features_at_224px_on_cuda_match_fp32_cpu(study_cfg, cuda):
    """The frozen ViT-B/16 at the study's 224 px under bf16 + channels_last gives the
    CPU fp32 features up to bf16 rounding."""
    from reprozoo.sections import resolve_backbone
    from reprozoo.models.pretrained import backbone_features

    spec = {**resolve_backbone(study_cfg, "vit_b16_in1k"), "weights": "none", "batch_size": 8}
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.zeros(12, dtype=torch.int64)
    seed_everything(0)
    on_gpu = backbone_features(spec, spec["normalize"], {"x": Tensors(images.to(cuda), labels.to(cuda))}, cuda)["x"]
    seed_everything(0)
    on_cpu = backbone_features(spec, spec["normalize"], {"x": Tensors(images, labels)}, torch.device("cpu"))["x"]
    assert on_gpu.shape == on_cpu.shape == (12, 768)
    cos = torch.nn.functional.cosine_similarity(on_gpu.float(), on_cpu.float(), dim=1)
    assert cos.min() > 0.99, cos


@pytest.mark.parametrize("workers", ["1", "3"])
def test_spawned_trials_on_cuda_match_sequential(demo_cfg, digits_npz, digits_split, tmp_path, monkeypatch,
                                                  workers, cuda):
    from reprozoo.tune import tune

    cfg = tiny_model_cfg(demo_cfg, "cnn", tune={"max_evals": 3, "max_epochs": 3, "patience": 2})
    monkeypatch.setenv("REPROZOO_TUNE_WORKERS", workers)
    best_c = tune(cfg, digits_npz, digits_split, tmp_path / "c.csv", tmp_path / "c.json", cuda)
    monkeypatch.setattr(concurrent, "applies", lambda max_evals: False)
    best_s = tune(cfg, digits_npz, digits_split, tmp_path / "s.csv", tmp_path / "s.json", cuda)
    rows_c, rows_s = pd.read_csv(tmp_path / "c.csv"), pd.read_csv(tmp_path / "s.csv")
    assert best_s["search"] == "sequential"
    assert best_c["search"] == ("concurrent: spawned x3 on cuda" if workers == "3" else "concurrent: in-process")
    assert rows_c["lr"].tolist() == rows_s["lr"].tolist()
    cols = ["trial", "status", "best_epoch", "epochs_run"]
    pd.testing.assert_frame_equal(rows_c[cols], rows_s[cols])
    pd.testing.assert_series_equal(rows_c["best_val_loss"], rows_s["best_val_loss"], rtol=1e-3)


def test_unset_workers_default_to_several_on_cuda(monkeypatch, cuda):
    monkeypatch.delenv("REPROZOO_TUNE_WORKERS", raising=False)
    assert concurrent.workers_from_env(cuda) == concurrent.CUDA_WORKERS > 1
    assert concurrent.workers_from_env(torch.device("cpu")) == 1

