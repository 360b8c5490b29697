"""The rest of the study's zoo: pretrained weights, the ViT-B/16 probe on cached
features, vit_tiny and patch_lstm details."""
from urllib.error import URLError

import numpy as np
import pytest
import torch
from torch import nn

from reprozoo.errors import ConfigError
from reprozoo.sections import resolve_model
from reprozoo.data import load_features, model_inputs, save_arrays
from reprozoo.engine import Normalize, Tensors
from reprozoo.features import cache_features
from reprozoo.models import count_parameters, create_model, setting_deviations
from reprozoo.models.pretrained import ViTB16Features
from conftest import tiny_model_cfg

NORM = {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2023, 0.1994, 0.2010]}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache (TORCH_HOME) with downloads cut off, as on an offline machine."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)

    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    yield tmp_path / "hub" / "checkpoints"
    torch.hub.set_dir(old)


def test_resnet18_pretrained_keeps_every_pretrained_layer_but_stem_and_fc(hub):
    from torchvision.models import resnet18

    torch.manual_seed(1)
    reference = resnet18(weights=None).state_dict()  # stands in for the ImageNet file
    torch.save(reference, hub / "resnet18-f37072fd.pth")
    model = create_model("resnet18_pretrained")
    state = model.state_dict()
    kept = [k for k in reference if not k.startswith(("conv1.", "fc."))]
    assert len(kept) > 100
    for key in kept:
        assert torch.equal(state[key], reference[key]), key
    assert model.conv1.weight.shape == (64, 3, 3, 3) and model.fc.weight.shape == (10, 512)
    assert isinstance(model.maxpool, nn.Identity)
    assert count_parameters(model) == 11_173_962


def test_resnet18_pretrained_with_the_imagenet_stem_keeps_conv1_and_the_maxpool(hub):
    from torchvision.models import resnet18

    torch.manual_seed(2)
    reference = resnet18(weights=None).state_dict()
    torch.save(reference, hub / "resnet18-f37072fd.pth")
    model = create_model("resnet18_pretrained", stem="imagenet")
    state = model.state_dict()
    for key in (k for k in reference if not k.startswith("fc.")):  # conv1 too: only fc is new
        assert torch.equal(state[key], reference[key]), key
    assert model.conv1.weight.shape == (64, 3, 7, 7) and isinstance(model.maxpool, nn.MaxPool2d)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert count_parameters(model) == 11_173_962 - 3 * 3 * 3 * 64 + 7 * 7 * 3 * 64
    with pytest.raises(ConfigError, match="unknown stem 'big' for resnet18_pretrained \\(known: cifar, imagenet\\)"):
        create_model("resnet18_pretrained", weights="none", stem="big")


def test_missing_weights_is_one_line_naming_file_and_folder(hub):
    with pytest.raises(ConfigError) as err:
        create_model("resnet18_pretrained")
    message = str(err.value)
    assert "resnet18-f37072fd.pth" in message and f"{hub}/" in message and "\n" not in message
    with pytest.raises(ConfigError, match="vit_b_16-c867db91.pth"):
        ViTB16Features("IMAGENET1K_V1")
    with pytest.raises(ConfigError, match="unknown weights 'IMAGENET9K'"):
        create_model("resnet18_pretrained", weights="IMAGENET9K")


def test_vit_b16_probe_at_224_has_7690_trainable_params():
    model = create_model("vit_b16_probe", weights="none")
    assert count_parameters(model) == 7_690
    assert all(not p.requires_grad for p in model.backbone.parameters())
    model.train()  # the frozen backbone stays in eval mode (no dropout) inside a training model
    assert not model.backbone.vit.training
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)  # resized 32 -> 224 inside


def test_vit_tiny_uses_torch_encoder_layers_and_heads_ablation():
    model = create_model("vit_tiny")
    layers = model.encoder.layers
    assert len(layers) == 4 and all(isinstance(l, nn.TransformerEncoderLayer) for l in layers)
    assert layers[0].self_attn.num_heads == 8 and not layers[0].norm_first
    assert torch.count_nonzero(model.cls_token) == 0 and torch.count_nonzero(model.pos_embed) == 0
    assert create_model("vit_tiny", heads=3, dim=192).encoder.layers[0].self_attn.num_heads == 3
    assert create_model("vit_tiny", patch_size=4).patch_embed.num_patches == 64


def test_patch_lstm_reads_the_last_step_of_a_2_layer_bilstm():
    model = create_model("patch_lstm")
    assert isinstance(model.rnn, nn.LSTM) and model.rnn.num_layers == 2 and model.rnn.bidirectional
    assert model.patch_embed.num_patches == 256 and torch.count_nonzero(model.pos_embed) > 0


def test_setting_deviations_mark_what_is_not_the_papers(demo_cfg, study_cfg):
    assert all(setting_deviations(resolve_model(study_cfg, m)) == [] for m in study_cfg["run"]["models"])
    assert setting_deviations(resolve_model(demo_cfg, "resnet18_pretrained")) == [
        "stem='imagenet' (paper 'cifar')", "weights='none' (paper 'IMAGENET1K_V1')"]
    assert setting_deviations(resolve_model(demo_cfg, "resnet18")) == ["stem_stride=2 (paper 1)"]
    assert setting_deviations(resolve_model(demo_cfg, "vit_b16_probe")) == [
        "backbone image_size=32 (paper 224)", "backbone weights='none' (paper 'IMAGENET1K_V1')"]


@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("tiny") / "data.npz"
    save_arrays(path, {"x_train": rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8),
                       "y_train": np.arange(24, dtype=np.int64) % 3,
                       "x_test": rng.integers(0, 256, (9, 32, 32, 3), dtype=np.uint8),
                       "y_test": np.arange(9, dtype=np.int64) % 3, "classes": np.asarray(["a", "b", "c"])})
    return path


SPEC = {"name": "vit_b16_t", "arch": "vit_b16", "weights": "none", "image_size": 48, "batch_size": 8,
        "normalize": NORM}


def test_cache_features_writes_fp16_features_labels_and_a_record(tiny_images, tmp_path):
    meta = cache_features(SPEC, tiny_images, tmp_path / "f.pt", torch.device("cpu"))
    blob = load_features(tmp_path / "f.pt")
    assert blob["x_train"].shape == (24, 768) and blob["x_test"].shape == (9, 768)
    assert blob["x_train"].dtype == torch.float16 and torch.isfinite(blob["x_train"].float()).all()
    assert blob["y_train"].tolist() == [i % 3 for i in range(24)]
    assert meta["weights"] == "none" and meta["image_size"] == 48 and "resize to 48px" in meta["transform"]
    cache_features(SPEC, tiny_images, tmp_path / "g.pt", torch.device("cpu"))
    assert torch.equal(load_features(tmp_path / "g.pt")["x_train"], blob["x_train"])  # deterministic


def test_cached_features_equal_running_the_backbone_every_batch(tiny_images, tmp_path):
    """Caching changes speed, not results: the head sees the same inputs both ways."""
    cache_features(SPEC, tiny_images, tmp_path / "f.pt", torch.device("cpu"))  # seeds 0, builds the backbone
    torch.manual_seed(0)  # so the end-to-end probe's backbone gets the same (random) init
    probe = create_model("vit_b16_probe", num_classes=3, weights="none", image_size=48).eval()
    arrays = np.load(tiny_images)
    images = Tensors.from_numpy(arrays["x_test"], arrays["y_test"], torch.device("cpu"))
    cached = load_features(tmp_path / "f.pt")["x_test"].float()
    with torch.no_grad():
        live = probe.backbone(Normalize(NORM["mean"], NORM["std"])(images.x))
        slow = probe(Normalize(NORM["mean"], NORM["std"])(images.x))
        fast = probe.head(cached)
    assert torch.allclose(live, cached, atol=2e-2, rtol=1e-2)  # fp16 storage
    assert torch.allclose(slow, fast, atol=2e-2)


def test_probe_stages_read_only_features(demo_cfg, tiny_images, tmp_path, monkeypatch):
    from reprozoo.prepare import write_split
    from reprozoo.evaluate import evaluate
    from reprozoo.train import train
    from reprozoo.tune import tune

    cpu = torch.device("cpu")
    cache_features(SPEC, tiny_images, tmp_path / "f.pt", cpu)
    write_split(tiny_images, tmp_path / "split.json", 3407, 0.5, 0.25)

    def never(*args, **kwargs):
        raise AssertionError("the backbone ran inside a trial or an epoch")

    monkeypatch.setattr(ViTB16Features, "forward", never)
    cfg = tiny_model_cfg(demo_cfg, "vit_b16_probe", tune={"max_evals": 2, "max_epochs": 3})
    cfg["backbone"] = {k: SPEC[k] for k in ("name", "arch", "weights", "image_size")}
    best = tune(cfg, tiny_images, tmp_path / "split.json", tmp_path / "t.csv", tmp_path / "b.json", cpu, tmp_path / "f.pt")
    run = train(cfg, tiny_images, tmp_path / "split.json", tmp_path / "b.json", tmp_path / "w.pt",
                tmp_path / "h.csv", tmp_path / "r.json", cpu, tmp_path / "f.pt")
    metrics = evaluate(cfg, tiny_images, tmp_path / "w.pt", tmp_path / "m.json", tmp_path / "c.csv", cpu,
                       features_path=tmp_path / "f.pt")
    assert best["source"] == "tuned" and run["params"] == 768 * 3 + 3  # the head alone, for 3 classes
    assert metrics["images"] == 9
    assert run["setting_deviations"] == ["backbone image_size=48 (paper 224)",
                                         "backbone weights='none' (paper 'IMAGENET1K_V1')"]
    assert set(torch.load(tmp_path / "w.pt", weights_only=True)) == {"weight", "bias"}  # the head alone


def test_probe_without_features_is_a_clear_error(demo_cfg, tiny_images):
    from reprozoo.data import DataError

    cfg = resolve_model(demo_cfg, "vit_b16_probe")
    with pytest.raises(DataError, match="trains on cached features of backbone 'vit_b16_demo': pass --features"):
        model_inputs(cfg, tiny_images)
