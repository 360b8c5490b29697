"""Config validation: the real config passes; every bad input is one line naming the key."""
import pytest
import torch
import yaml

from conftest import ROOT, run_cli, run_snakemake
from reprozoo.config import ConfigError, expand_ablations, load_config, validate_config
from reprozoo.engine import Runner
from reprozoo.models import create_model
from reprozoo.results import read_best
from reprozoo.sections import resolve_model
from reprozoo.tune import tune


def test_study_config_is_the_published_study(study_cfg):
    assert study_cfg["seed"] == 3407
    assert study_cfg["run"]["datasets"] == ["cifar10"]
    assert study_cfg["protocol"]["batch_size"] == 128
    assert study_cfg["protocol"]["tune"] == {"max_evals": 20, "max_epochs": 50, "patience": 5,
                                             "lr_log_range": [-10, -4]}
    papers = {m: study_cfg["study"]["models"][m] for m in ("mlp", "cnn", "resnet18")}  # the record's
    assert papers["mlp"]["accuracy"] == 54.44 and papers["cnn"]["accuracy"] == 77.33
    assert papers["resnet18"]["lr"] == 2.787e-3 and papers["resnet18"]["epochs"] == 8


def test_every_shipped_override_is_listed_and_valid_as_its_readme_runs_it():
    """config/README.md's table names each override in config/ with a command; that command's
    --configfile list, over config.yaml, passes validation (a renamed key would fail here). The
    study's record (config.yaml's `study:`) is no override: the README says what it is."""
    readme = (ROOT / "config/README.md").read_text()
    rows = [line.split("|") for line in readme.splitlines() if line.startswith("| `") and line.endswith("` |")]
    listed = {row[1].strip().strip("`"): row[3].strip().strip("`") for row in rows}
    record = yaml.safe_load((ROOT / "config.yaml").read_text())["study"]
    assert record == "config/study.yaml" and "`study.yaml`" in readme
    shipped = sorted(p.name for p in (ROOT / "config").glob("*.yaml") if p.name != "study.yaml")
    assert shipped and all(name in listed for name in shipped), (shipped, sorted(listed))
    for name in shipped:
        files = listed[name].split("--configfile")[1].split()
        assert f"config/{name}" in files, (name, listed[name])
        cfg = load_config(ROOT / "config.yaml", *(ROOT / f for f in files))
        assert cfg["run"]["models"], name


def test_resolved_model_holds_only_its_own_section(study_cfg):
    mlp = resolve_model(study_cfg, "mlp")
    assert mlp["args"] == {"hidden": [512, 256]} and mlp["batch_size"] == 128 and mlp["seed"] == 3407
    assert mlp["hparams"] == "tuned" and "lr" not in mlp and mlp["tune"]["max_evals"] == 20  # the search, no lr
    cfg = {**study_cfg, "models": {**study_cfg["models"], "mlp": {**study_cfg["models"]["mlp"], "hparams": "paper"}}}
    paper = resolve_model(cfg, "mlp")
    assert (paper["hparams"], paper["lr"], paper["epochs"]) == ("paper", 5.6e-5, 13)  # the record's
    assert "tune" not in paper
    assert resolve_model(cfg, "cnn") == resolve_model(study_cfg, "cnn")
    fixed = {**cfg, "models": {**cfg["models"], "mlp": {**cfg["models"]["mlp"], "hparams": "fixed", "lr": 1e-4,
                                                        "epochs": 3}}}
    assert {k: resolve_model(fixed, "mlp")[k] for k in ("hparams", "lr", "epochs")} == {
        "hparams": "fixed", "lr": 1e-4, "epochs": 3}


BAD = [
    ({"seed": "abc"}, "config key 'seed': 'abc' is not of type 'integer'"),
    ({"protocol": {"batch_size": 0}}, "config key 'protocol.batch_size'"),
    ({"models": {"mlp": {"lr_typo": 1}}}, "config key 'models.mlp': unknown key ('lr_typo' was unexpected)"),
    ({"run": {"models": ["mlp", "nope"]}}, "config key 'run.models.1': unknown model 'nope'"),
    ({"run": {"datasets": ["imagenet"]}}, "config key 'run.datasets.0': unknown dataset 'imagenet'"),
    ({"models": {"mlp": {"arch": "transformer9000"}}}, "config key 'models.mlp.arch': unknown architecture"),
    ({"datasets": {"x": {"kind": "imagefolder"}}}, "config key 'datasets.x': 'root' is a required property"),
    ({"protocol": {"hparams": "guess"}}, "config key 'protocol.hparams'"),
]


@pytest.mark.parametrize("override,message", BAD, ids=[b[1][:40] for b in BAD])
def test_bad_config_is_one_line_naming_the_key(tmp_path, override, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(override))
    with pytest.raises(ConfigError) as err:
        load_config(ROOT / "config.yaml", path)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_key_is_named(study_cfg):
    cfg = {k: v for k, v in study_cfg.items() if k != "protocol"}
    with pytest.raises(ConfigError, match="'protocol' is a required property"):
        validate_config(cfg)


def test_hparams_paper_needs_reported_lr(tmp_path):
    path = tmp_path / "o.yaml"
    path.write_text(yaml.safe_dump({"models": {"extra": {"arch": "mlp", "hparams": "paper"}},
                                    "run": {"models": ["extra"]}}))
    with pytest.raises(ConfigError, match=r"models.extra.hparams': 'paper', but the study's record reports no lr "
                                          r"for 'extra'"):
        load_config(ROOT / "config.yaml", path)
    path.write_text(yaml.safe_dump({"models": {"extra": {"arch": "mlp", "hparams": "fixed", "lr": 1e-3}},
                                    "run": {"models": ["extra"]}}))
    with pytest.raises(ConfigError, match="models.extra.epochs': required by 'hparams: fixed'"):
        load_config(ROOT / "config.yaml", path)


def test_ablations_under_hparams_paper_take_their_bases_reported_lr(tmp_path):
    """The study's ablations report no lr/epochs of their own: they train with the base's
    (found on the first GPU run, where the ablation's tune job died on a KeyError)."""
    path = tmp_path / "o.yaml"
    path.write_text(yaml.safe_dump({"protocol": {"hparams": "paper"},
                                    "run": {"models": ["cnn", "resnet18", "vae"],
                                            "ablations": ["cnn_nobn", "resnet18_noresidual"]},
                                    "models": {"vae": {"hparams": "tuned"}}}))
    cfg = expand_ablations(load_config(ROOT / "config.yaml", path))
    base = cfg["study"]["models"]["cnn"]

    def plan(name):
        return {k: v for k, v in resolve_model(cfg, name).items() if k in ("lr", "epochs", "from")}

    assert plan("cnn_nobn") == {"lr": base["lr"], "epochs": base["epochs"], "from": "cnn"}
    assert plan("cnn") == {"lr": base["lr"], "epochs": base["epochs"]}
    # what the stages receive (--model JSON) passes their schema check, `from` included
    import json
    from reprozoo.config import parse_json_arg
    resolved = resolve_model(cfg, "resnet18_noresidual")
    assert parse_json_arg(json.dumps(resolved), "--model", "resolved_model")["from"] == "resnet18"
    # an ablation whose base reports nothing is a config error naming the ablation
    path.write_text(yaml.safe_dump({"protocol": {"hparams": "paper"},
                                    "run": {"models": ["vae"], "ablations": ["vae_small"]},
                                    "models": {"vae": {"hparams": "tuned"}},
                                    "ablations": {"vae_small": {"base": "vae", "what": "z", "set": {
                                        "hparams": "paper", "args": {"z_dim": 8}}}}}))
    with pytest.raises(ConfigError, match=r"ablations.vae_small.set.hparams'.*no lr for 'vae_small' \(nor for "
                                          r"its base 'vae'\)"):
        load_config(ROOT / "config.yaml", path)


def test_cli_bad_config_exits_nonzero_with_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"models": {"cnn": {"args": "wide"}}}))
    result = run_cli("check-config", ROOT / "config.yaml", path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "reprozoo check-config: error: config key 'models.cnn.args': 'wide' is not of type 'object'"]


def test_cli_stage_validates_its_model_section(digits_npz, digits_split, tmp_path, demo_cfg):
    import json

    model = {**resolve_model(demo_cfg, "mlp"), "batch_size": -1}
    result = run_cli("tune", "--model-json", json.dumps(model), "--data", digits_npz, "--split", digits_split,
                     "--trials", tmp_path / "t.csv", "--best", tmp_path / "b.json")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("reprozoo tune: error: config key '--model-json.batch_size'")
    assert not (tmp_path / "b.json").exists()


def test_cli_wrong_model_args_named(digits_npz, digits_split, tmp_path, demo_cfg):
    import json

    model = {**resolve_model(demo_cfg, "cnn"), "args": {"chanels": [8]}}
    result = run_cli("tune", "--model-json", json.dumps(model), "--data", digits_npz, "--split", digits_split,
                     "--trials", tmp_path / "t.csv", "--best", tmp_path / "b.json")
    assert result.returncode == 2
    assert "'chanels'" in result.stderr and "Traceback" not in result.stderr


def test_snakemake_rejects_bad_config_before_any_job(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"run": {"models": ["mlp", "vgg"]}}))
    result = run_snakemake("-n", "--configfile", path)
    assert result.returncode != 0
    assert "config key 'run.models.1': unknown model 'vgg'" in result.stderr + result.stdout
    assert "rule tune" not in result.stdout


@pytest.mark.parametrize("name, players", [("cnn", 1), ("acgan", 2)])
def test_a_fixed_lr_in_the_config_reaches_every_adam_of_the_model(tmp_path, name, players):
    """The lr's road (docs/pipeline.md): config -> hparams_plan -> section -> tune's best.json ->
    read_best -> train's Runner -> one Adam per part the objective updates (acgan: D and G)."""
    path = tmp_path / "o.yaml"
    path.write_text(yaml.safe_dump({"run": {"models": [name]}, "models": {name: {"hparams": "fixed", "lr": 3.25e-4,
                                                                                  "epochs": 7}}}))
    section = resolve_model(load_config(ROOT / "config.yaml", path), name)
    tune(section, None, None, tmp_path / "trials.csv", tmp_path / "best.json", torch.device("cpu"))
    best = read_best(tmp_path / "best.json")
    assert (best["lr"], best["epochs"], best["source"]) == (3.25e-4, 7, "fixed")
    runner = Runner(create_model(section["arch"], **section["args"]), section, torch.device("cpu"), best["lr"])
    assert [o.param_groups[0]["lr"] for o in runner.optimizers] == [3.25e-4] * players
    assert sum(len(g["params"]) for o in runner.optimizers for g in o.param_groups) == \
        sum(1 for p in runner.model.parameters() if p.requires_grad)  # every trainable tensor, once
