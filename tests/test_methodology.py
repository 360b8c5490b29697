"""The reproduction methodology: paper specs, module verification, verdicts,
ablations, seed repeats and the study's figures."""
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import ROOT, run_cli
from reprozoo.config import ConfigError, load_config, run_models
from reprozoo.sections import resolve_model
from reprozoo.models import count_parameters, create_model
from reprozoo.report.build import report
from reprozoo.report.tables import build_verdicts
from reprozoo.report.verdicts import parse_duration, verdict
from reprozoo.verify import VerifyError, verify


# ------------------------------------------------------------------ paper spec

def test_every_model_carries_a_paper_spec(study_cfg):
    study = study_cfg["study"]
    assert study["reported"]["batch_size"] == 128 and study["reported"]["optimizer"] == "Adam"
    assert any("betas" in a for a in study["assumptions"]) and study["missing"]
    for name in study_cfg["run"]["models"]:
        assert name in study["models"], name  # the study's record (config/study.yaml), not the run's config
        assert "paper" not in study_cfg["models"][name] and "verify" not in study_cfg["models"][name], name
    assert study["models"]["vit_tiny"]["batch_size"] == 128


# The study prints one "Results" block per trained model, in this order (ViT twice: the
# tiny one, then the frozen ViT-B/16). tests/data/study_results.yaml keeps their numbers
# in the repository; each must be the study's record (config/study.yaml).
STUDY_RESULTS = ROOT / "tests/data/study_results.yaml"
# The study's own text, where a checkout has it beside itself: then the copy is checked too.
STUDY_TEXT = ROOT.parent / "shared/seeds/002_db44b60538d920b0.txt"
RESULTS_BLOCK = re.compile(
    r"Best LR: ([\d.]+)\s+- Best epochs: (\d+) epochs.*?Model type: (.+?)\n.*?Total params: ([\d,]+)"
    r".*?Training duration on full training set: (.+?)\n.*?Test loss: ([\d.]+)\s+- Test accuracy: ([\d.]+)%",
    re.S)


def study_results() -> dict:
    return yaml.safe_load(STUDY_RESULTS.read_text(encoding="utf-8"))


def test_reported_numbers_are_the_studys_own(study_cfg):
    """Every reported number in the study's record against its printed results, block by block;
    this caught resnet18 carrying the fine-tuned run's 89.06% instead of its own 83.46%."""
    printed = study_results()
    assert [b["model"] for b in printed["results"]] == ["mlp", "cnn", "resnet18", "resnet18_pretrained",
                                                         "vit_tiny", "vit_b16_probe", "patch_lstm"]
    for block in printed["results"]:
        paper = study_cfg["study"]["models"][block["model"]]
        assert f"{paper['lr']:.6f}" == block["best_lr"] and paper["epochs"] == block["best_epochs"], block["model"]
        assert paper["params"] == int(block["total_params"].replace(",", "")), block["model"]
        assert paper["accuracy"] == float(block["test_accuracy"]), block["model"]
        assert paper["loss"] == float(block["test_loss"]), block["model"]
        assert parse_duration(paper["time"]) == parse_duration(block["duration"]), block["model"]
    for name, numbers in printed["ablations"].items():
        paper = study_cfg["study"]["models"][name]
        assert (paper["loss"], paper["accuracy"]) == (float(numbers["test_loss"]), float(numbers["test_accuracy"]))


def test_a_wrong_reported_number_is_caught(study_cfg):
    cfg = json.loads(json.dumps(study_cfg))
    cfg["study"]["models"]["resnet18"]["accuracy"] = 89.06
    with pytest.raises(AssertionError, match="resnet18"):
        test_reported_numbers_are_the_studys_own(cfg)


def test_the_kept_copy_is_the_studys_text():
    """The copy against the study's own text, block by block, where the text is at hand."""
    if not STUDY_TEXT.exists():
        pytest.skip(f"the study's text is not beside this checkout ({STUDY_TEXT})")
    text = STUDY_TEXT.read_text(encoding="utf-8")
    printed = study_results()
    blocks = [dict(zip(("best_lr", "best_epochs", "model_type", "total_params", "duration", "test_loss",
                        "test_accuracy"), b)) for b in RESULTS_BLOCK.findall(text)]
    kept = [{k: str(v) for k, v in b.items() if k != "model"} for b in printed["results"]]
    assert [{k: v.strip() for k, v in b.items()} for b in blocks] == kept
    heads3 = printed["ablations"]["vit_tiny_heads3"]
    assert re.search(rf"loss = {heads3['test_loss']}\D.*?{heads3['test_accuracy']}%", text)


def test_paper_spec_is_schema_validated(tmp_path):
    """The study's record has its own schema (workflow/schemas/study.schema.yaml); a run's config that
    carries reported numbers is told where they belong."""
    record = yaml.safe_load((ROOT / "config/study.yaml").read_text())
    record["models"]["mlp"]["assumptions"] = "one string"
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(record))
    path = tmp_path / "other-record.yaml"
    path.write_text(yaml.safe_dump({"study": str(tmp_path / "study.yaml")}))
    with pytest.raises(ConfigError, match=rf"study record {tmp_path}/study.yaml: key 'models.mlp.assumptions': "
                                          "'one string' is not of type"):
        load_config(ROOT / "config.yaml", path)
    path.write_text(yaml.safe_dump({"models": {"mlp": {"paper": {"accuracy": 60.0}}}}))
    with pytest.raises(ConfigError, match=r"config key 'models.mlp.paper': the study's record holds it "
                                          r"\(config/study.yaml, under models.mlp\)"):
        load_config(ROOT / "config.yaml", path)


# ------------------------------------------------------------------ verify

@pytest.mark.parametrize("model", ["mlp", "cnn", "resnet18", "resnet18_pretrained", "vit_tiny", "vit_b16_probe",
                                   "patch_lstm", "vae", "vae_4000", "acgan", "acgan_4000", "cnn_nobn",
                                   "vit_tiny_heads3", "resnet18_noresidual"])
def test_every_model_verifies(study_cfg, model, tmp_path):
    record = verify(resolve_model(study_cfg, model), tmp_path / "v.json", study_cfg["study"]["verify"].get(model))
    assert record["passed"] and json.loads((tmp_path / "v.json").read_text())["passed"]
    assert all(not (m["nan"] or m["inf"]) for m in record["modules"])
    assert all(r["max_abs_diff"] <= 1e-4 and r["cosine"] >= 0.99999 for r in record["reference"])


def test_references_cover_what_the_issue_names(study_cfg, tmp_path):
    checks = {m: [r["check"] for r in verify(resolve_model(study_cfg, m), tmp_path / f"{m}.json",
                                              study_cfg["study"]["verify"].get(m))["reference"]]
              for m in ("resnet18", "vit_tiny", "patch_lstm")}
    assert "layer4 vs torchvision resnet18.layer4" in checks["resnet18"]
    assert "encoder.layers.3 vs nn.TransformerEncoderLayer (copied weights)" in checks["vit_tiny"]
    assert "encoder.layers.0 vs functional reference" in checks["vit_tiny"]
    assert "patch_embed vs unfold + linear" in checks["vit_tiny"] and "patch_embed vs unfold + linear" in checks["patch_lstm"]


def test_a_broken_module_is_caught_with_the_module_and_the_size(study_cfg, tmp_path, monkeypatch):
    from reprozoo.models.layers import PatchEmbed

    def broken(self, x):  # swaps the patch grid's axes: right shape, wrong tokens
        return self.proj(x).transpose(2, 3).flatten(2).transpose(1, 2)

    monkeypatch.setattr(PatchEmbed, "forward", broken)
    with pytest.raises(VerifyError) as err:
        verify(resolve_model(study_cfg, "vit_tiny"), tmp_path / "v.json")
    message = str(err.value)
    assert message.startswith("model 'vit_tiny': patch_embed vs unfold + linear: max abs diff ")
    assert "(tolerance 0.0001)" in message and "\n" not in message
    assert not json.loads((tmp_path / "v.json").read_text())["passed"]


def test_the_study_lstm_has_a_weight_that_never_learns(study_cfg, tmp_path):
    """verify finds it; the config documents it; an undocumented one fails."""
    cfg = resolve_model(study_cfg, "patch_lstm")
    with pytest.raises(VerifyError, match="parameter rnn.weight_hh_l1_reverse gets an all-zero gradient"):
        verify(cfg, tmp_path / "v.json")
    with pytest.raises(VerifyError, match="rnn.weight_ih_l0 was expected to get no gradient"):
        verify(cfg, tmp_path / "v.json", {"zero_grad": ["rnn.weight_hh_l1_reverse", "rnn.weight_ih_l0"]})
    with pytest.raises(VerifyError, match="names 'rnn.nope', which is not a trainable parameter"):
        verify(cfg, tmp_path / "v.json", {"zero_grad": ["rnn.weight_hh_l1_reverse", "rnn.nope"]})


def test_verify_cli_fails_with_one_line(study_cfg, tmp_path):
    cfg = resolve_model(study_cfg, "patch_lstm")
    result = run_cli("verify", "--model-json", json.dumps(cfg), "--verify", tmp_path / "v.json")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "reprozoo verify: error: model 'patch_lstm': parameter rnn.weight_hh_l1_reverse gets an all-zero gradient")


# ------------------------------------------------------------------ verdicts

def test_verdicts_from_known_numbers():
    assert verdict(55.1, 54.44) == "reproduced"                  # +1.2%
    assert verdict(70.0, 77.33) == "DEVIATES"                    # -9.5%
    assert verdict(51.8, 54.44) == "reproduced"                  # -4.85%: inside 5%
    assert verdict(51.6, 54.44) == "DEVIATES"                    # -5.2%
    assert verdict(80.0, None) == "not comparable (no reported value)"
    assert verdict(98.0, 54.44, "dataset digits") == "not comparable (dataset digits)"


def _fake_results(root, model, seed, accuracy, loss, setting=()):
    d = root / f"{model}-{seed}"
    d.mkdir(parents=True)
    (d / "m.json").write_text(json.dumps({"accuracy": accuracy, "loss": loss, "extra": {}}))
    (d / "r.json").write_text(json.dumps({"params": 1147914, "seed": seed, "duration_s": 60.0, "hardware": "CPU",
                                          "setting_deviations": list(setting)}))
    (d / "b.json").write_text(json.dumps({"lr": 2e-4, "epochs": 16, "source": "paper"}))
    pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.8], "test_loss": [1.1, 0.9],
                  "test_accuracy": [60.0, accuracy], "seconds": [1, 1]}).to_csv(d / "h.csv", index=False)
    return [d / "m.json", d / "r.json", d / "b.json", d / "h.csv"]


def test_report_with_seed_repeats_and_an_ablation(tmp_path):
    files = [_fake_results(tmp_path, "cnn", 3407, 76.0, 0.72), _fake_results(tmp_path, "cnn", 3408, 78.0, 0.70),
             _fake_results(tmp_path, "cnn_nobn", 3407, 70.0, 0.9, ["batchnorm=False (paper True)"]),
             _fake_results(tmp_path, "cnn_nobn", 3408, 72.0, 0.88, ["batchnorm=False (paper True)"])]
    models = ["cnn", "cnn", "cnn_nobn", "cnn_nobn"]
    dataset = {"name": "cifar10", "kind": "cifar10", "paper_dataset": True}
    papers = {"cnn": {"accuracy": 77.33, "loss": 0.7026, "params": 1147914, "time": "4m7s", "device": "P100"},
              "cnn_nobn": {}}
    table = report(dataset, papers, models, *[[f[i] for f in files] for i in range(4)], tmp_path / "c.csv",
                   tmp_path / "c.md", tmp_path / "fig" / "accuracy.png",
                   ablations={"cnn_nobn": {"base": "cnn", "what": "BN"}})
    row = table.iloc[0]
    assert table["model"].tolist() == ["cnn"]  # ablations get their own table
    assert row["accuracy"] == 77.0 and row["accuracy_std"] == pytest.approx(1.41, abs=0.01) and row["seeds"] == 2
    verdicts = pd.read_csv(tmp_path / "verdicts.csv").set_index(["model", "metric"])
    acc = verdicts.loc[("cnn", "accuracy")]
    assert acc["verdict"] == "reproduced" and bool(acc["reported_within_seed_spread"])  # 76 <= 77.33 <= 78
    assert verdicts.loc[("cnn", "params"), "verdict"] == "reproduced"
    assert verdicts.loc[("cnn", "train_time_s"), "verdict"].startswith("not comparable (hardware")
    ablation = pd.read_csv(tmp_path / "ablations.csv").iloc[0]
    assert ablation["variant"] == "cnn_nobn" and ablation["diff_vs_base"] == pytest.approx(-6.0)
    md = (tmp_path / "c.md").read_text()
    assert "| 77.00 ± 1.41 |" in md and "## Ablations" in md and "## Verdicts" in md and "## Paper spec" in md


def test_mean_outside_tolerance_deviates_even_when_one_seed_is_close():
    class Res:  # two seeds: 70 and 76; the mean 73 is 5.6% below 77.33
        runs = {"cnn": [{"params": 1, "hardware": "CPU", "duration_s": 1.0}] * 2}

        def values(self, name, key):
            return np.array([70.0, 76.0]) if key == "accuracy" else np.array([0.8, 0.7])

    rows = build_verdicts({"name": "cifar10", "paper_dataset": True}, Res(), {"cnn": {"accuracy": 77.33}}, ["cnn"])
    acc = rows.set_index("metric").loc["accuracy"]
    assert acc["verdict"] == "DEVIATES" and acc["reported_within_seed_spread"] is False


def test_a_changed_architecture_makes_even_params_not_comparable():
    class Res:  # vit_tiny at patch size 4: 2.4% fewer params, within 5%, but not the paper's model
        runs = {"vit_tiny": [{"params": 1212490, "hardware": "CPU", "duration_s": 1.0,
                              "setting_deviations": ["patch_size=4 (paper 2)"]}]}

        def values(self, name, key):
            return np.array([73.0])

    rows = build_verdicts({"name": "cifar10", "paper_dataset": True}, Res(), {"vit_tiny": {"params": 1242442,
                                                                                           "accuracy": 73.24}},
                          ["vit_tiny"]).set_index("metric")
    assert rows.loc["params", "verdict"] == "not comparable (setting: patch_size=4 (paper 2))"
    assert rows.loc["accuracy", "verdict"] == "not comparable (setting: patch_size=4 (paper 2))"


# ------------------------------------------------------------------ ablations

def test_ablations_are_models_of_their_own(study_cfg):
    assert run_models(study_cfg)[-4:] == ["cnn_nobn", "vit_tiny_heads3", "vit_tiny_patch4", "resnet18_noresidual"]
    heads3 = resolve_model(study_cfg, "vit_tiny_heads3")
    assert heads3["args"]["heads"] == 3 and heads3["args"]["dim"] == 192 and heads3["hparams"] == "tuned"
    assert study_cfg["study"]["models"]["vit_tiny_heads3"]["accuracy"] == 69.17
    assert "cnn_nobn" not in study_cfg["study"]["verify"]


def test_resnet_without_residuals_drops_the_shortcuts():
    plain, full = create_model("resnet18", residual=False), create_model("resnet18")
    assert all(block.downsample is None for block in plain.layer2)
    assert count_parameters(full) - count_parameters(plain) == 172_032 + 1_792  # the 1x1 shortcut convs + their BNs
    plain.load_state_dict({k: v for k, v in full.state_dict().items() if "downsample" not in k})
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(plain.eval()(x), full.eval()(x))


def test_ablations_skip_when_their_base_does_not_run(tmp_path):
    path = tmp_path / "o.yaml"
    path.write_text(yaml.safe_dump({"run": {"models": ["mlp", "cnn"], "ablations": ["cnn_nobn", "vit_tiny_heads3"]}}))
    assert run_models(load_config(ROOT / "config.yaml", path)) == ["mlp", "cnn", "cnn_nobn"]
    path.write_text(yaml.safe_dump({"run": {"ablations": ["cnn_wide"]}}))
    with pytest.raises(ConfigError, match="config key 'run.ablations.0': unknown ablation 'cnn_wide'"):
        load_config(ROOT / "config.yaml", path)


# ------------------------------------------------------------------ figures

def test_class_token_attention_maps_per_layer():
    from reprozoo.models.vit import class_token_attention

    torch.manual_seed(0)
    maps = class_token_attention(create_model("vit_tiny"), torch.randn(1, 3, 32, 32))
    assert len(maps) == 4 and all(m.shape == (16, 16) for m in maps)
    assert all(0 < m.sum() <= 1 + 1e-5 and (m >= 0).all() for m in maps)  # a softmax row minus the cls entry
