"""The reliability table as regression tests: hostile names and values, bad configs, crafted or
truncated artifacts, a full disk, byte-identical outputs, and recovery after kill -9.

Each case ends in one line naming the file or config key and exit code 2 (a CLI stage), or
Snakemake stopping before any job with that line. Data-input cases (images, archives, extra
test sets) are in test_data_inputs.py; runs that make no progress in test_progress.py.
"""
import errno
import hashlib
import logging
import json
import os
import pickle
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import BIN, ROOT, TINY_MLP, copy_workflow, run_cli, run_snakemake, split_section, tiny_model_cfg
from reprozoo.cli import main
from reprozoo.errors import ConfigError
from reprozoo.io import load_torch, save_torch

CPU = torch.device("cpu")


class Result:
    def __init__(self, returncode, stderr):
        self.returncode, self.stderr = returncode, stderr


def check_config(capsys, *files) -> Result:
    """`python -m reprozoo check-config ...`, in this process (no interpreter start-up per case)."""
    import logging

    capsys.readouterr()
    code = main(["check-config", *map(str, files)])
    logging.getLogger().handlers.clear()  # main() logs to this test's captured stderr
    return Result(code, capsys.readouterr().err)


def one_error_line(result, stage: str) -> str:
    """The CLI's whole stderr is one `reprozoo <stage>: error: ...` line (logging aside)."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith(f"reprozoo {stage}: error: "), result.stderr
    return errors[0]


def override(tmp_path: Path, data, name="override.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


# ------------------------------------------------------------------ config values, before any job

BAD_CONFIGS = {
    "lr range upside down": ({"protocol": {"tune": {"lr_log_range": [-5, -8]}}},
                             "config key 'protocol.tune.lr_log_range': [-5, -8] must be [low, high]"),
    "lr range of a model upside down": ({"models": {"mlp": {"tune": {"lr_log_range": [-4, -4]}}}},
                                        "config key 'models.mlp.tune.lr_log_range'"),
    "NaN bound": ("protocol:\n  tune:\n    lr_log_range: [.nan, -8]\n",
                  "config key 'protocol.tune.lr_log_range.0': nan is not a finite number"),
    "infinite lr": ("models:\n  mlp:\n    hparams: fixed\n    lr: .inf\n    epochs: 3\n", "config key 'models.mlp.lr'"),
    "float batch size": ({"protocol": {"batch_size": 64.0}},
                         "config key 'protocol.batch_size': 64.0 is not of type 'integer'"),
    "boolean epochs": ({"protocol": {"tune": {"max_epochs": True}}}, "config key 'protocol.tune.max_epochs'"),
    "dataset name with a path": ({"run": {"datasets": ["../../x"]}, "datasets": {"../../x": {"kind": "digits"}}},
                                 "'../../x' does not match"),
    "unknown args key": ({"models": {"mlp": {"args": {"hiden": [3]}}}},
                         "config key 'models.mlp.args.hiden': 'mlp' takes no argument 'hiden'"),
    "unknown args key of an ablation": ({"ablations": {"cnn_nobn": {"base": "cnn", "set": {"args": {"bn": False}}}}},
                                        "config key 'ablations.cnn_nobn.set.args.bn'"),
    # values a model refuses, found by building it once (reprozoo/models/check.py), not by the tune job
    "negative width": ({"models": {"mlp": {"args": {"hidden": [-5]}}}},
                       "config key 'models.mlp.args': mlp refuses {'hidden': [-5]} on 32x32 images (RuntimeError"),
    "input that does not fit the first layer": ({"models": {"mlp": {"args": {"in_features": 100}}}},
                                                 "config key 'models.mlp.args': mlp refuses"),
    "heads that do not divide the width": ({"run": {"models": ["vit_tiny"]}, "models": {"vit_tiny": {"args": {
        "heads": 7}}}}, "config key 'models.vit_tiny.args': vit_tiny refuses {'patch_size': 2, 'dim': 192"),
    "patch that does not divide the image": ({"run": {"models": ["vit_tiny"], "ablations": ["vit_tiny_patch4"]},
                                              "ablations": {"vit_tiny_patch4": {"set": {"args": {"patch_size": 5}}}}},
                                             "config key 'ablations.vit_tiny_patch4.set.args': image_size 32 is not a "
                                             "multiple of patch_size 5"),
    "dropout above 1": ({"models": {"cnn": {"args": {"dropout": 1.5}}}},
                        "config key 'models.cnn.args': dropout probability has to be between 0 and 1"),
    "unknown pretrained weights": ({"run": {"models": ["resnet18_pretrained"]}, "models": {"resnet18_pretrained": {
        "args": {"weights": "IMAGENET9K"}}}}, "config key 'models.resnet18_pretrained.args': unknown weights "
                                              "'IMAGENET9K' for ResNet18_Weights"),
    "probe head that does not fit its backbone": ({"run": {"models": ["vit_b16_probe"]}, "models": {"vit_b16_probe": {
        "args": {"in_features": 512}}}}, "config key 'models.vit_b16_probe.args': linear_probe refuses"),
    "backbone image size off its patch grid": ({"run": {"models": ["vit_b16_probe"]}, "backbones": {"vit_b16_in1k": {
        "image_size": 100}}}, "config key 'backbones.vit_b16_in1k': vit_b16 refuses"),
    "seed beyond numpy": ({"seed": 2**32}, "config key 'seed': 4294967296 is greater than the maximum of 4294967295"),
    "repeats past numpy's last seed": ({"seed": 2**32 - 2, "repeats": 3},
                                       "config key 'seed': runs use seeds 4294967294 to 4294967296 (repeats)"),
    "missing extra test root": ({"extra_test": {"noisy": {"root": "/no/such/folder"}}},
                                "config key 'extra_test.noisy.root': /no/such/folder/test/ is not a folder"),
    "missing dataset root": ({"run": {"datasets": ["pets"]}, "datasets": {"pets": {"kind": "imagefolder",
                                                                                  "root": "/no/pets"}}},
                             "config key 'datasets.pets.root': /no/pets/train/ is not a folder"),
    "anchors that expand a billion times": ("models:\n  mlp:\n    args:\n      x:\n" + "".join(
        f"        a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10) if i else '1, 2, 3, 4, 5, 6, 7, 8, 9, 10'}]\n"
        for i in range(9)), "aliases expand to more than 100,000 values (nested anchors?)"),
    "an alias inside itself": ("models:\n  mlp:\n    args:\n      hidden: &a [1, *a]\n",
                               "a YAML alias refers to a value that holds it (a cycle)"),
    "nested thousands deep": ("a: " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply to be a config"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_value_is_one_line_naming_the_key(case, tmp_path, capsys):
    data, message = BAD_CONFIGS[case]
    result = check_config(capsys, ROOT / "config.yaml", ROOT / "tests/tiny.yaml", override(tmp_path, data))
    assert message in one_error_line(result, "check-config")


def test_config_checks_cost_what_the_file_does(tmp_path, capsys):
    """Eight levels of ten aliases (10^8 values, 600 bytes) took two minutes to check, walked value by value."""
    data, _ = BAD_CONFIGS["anchors that expand a billion times"]
    start = time.perf_counter()
    check_config(capsys, ROOT / "config.yaml", override(tmp_path, data))
    assert time.perf_counter() - start < 5


def test_a_model_that_passed_its_check_is_not_built_again(tmp_path, monkeypatch, demo_cfg):
    """The check's outcome is a function of the section, the image size, the model's files, the check
    and torch's version: remembered in the user's cache, so a new checkout pays no torch import for it."""
    import reprozoo.models.check as check
    from reprozoo import resolve

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    mlp = tiny_model_cfg(demo_cfg, "mlp")
    built = []
    monkeypatch.setattr(check, "check_model", lambda cfg, size, key: built.append(key))
    resolve.check_models([("models.mlp.args", mlp, 32)])
    resolve.check_models([("models.mlp.args", mlp, 32)])
    resolve.check_models([("models.mlp.args", mlp, 64)])  # another image size: built again
    assert built == ["models.mlp.args"] * 2

    def refuse(cfg, size, key):
        raise ConfigError(f"config key '{key}': refused")

    monkeypatch.setattr(check, "check_model", refuse)
    wide = {**mlp, "args": {"hidden": [-5]}}
    for _ in range(2):  # a refusal is never remembered
        with pytest.raises(ConfigError, match="refused"):
            resolve.check_models([("models.mlp.args", wide, 32)])


def test_a_config_that_is_not_utf8_is_one_line(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("run:\n  models: [ml\u00e9p]\n".encode("latin-1"))
    line = one_error_line(check_config(capsys, ROOT / "config.yaml", path), "check-config")
    assert f"config file {path}: not UTF-8 text (byte 0xe9 at offset 18)" in line


@pytest.mark.parametrize("case", ["negative width", "missing extra test root", "anchors that expand a billion times"])
def test_the_dag_build_says_it_before_any_job(case, tmp_path):
    """What check-config knows, the DAG build knows: one line naming the key, no job, no section written."""
    work = tmp_path / "wf"
    work.mkdir()
    copy_workflow(work)
    data, message = BAD_CONFIGS[case]
    result = run_snakemake("--cores", "1", "--configfile", "tests/tiny.yaml", override(tmp_path, data), cwd=work)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert [line for line in result.stderr.splitlines() if line.startswith("reprozoo: ")] == \
        [line for line in result.stderr.splitlines() if message in line], result.stderr[-3000:]
    assert "rule " not in result.stdout and not (work / "results").exists()


def test_a_section_file_that_cannot_be_written_is_one_line(tmp_path):
    """A config change whose section files cannot be written (here a file where their folder goes; a
    read-only results/ gives the same path): one line naming the file, not a stack."""
    work = tmp_path / "wf"
    work.mkdir()
    copy_workflow(work)
    (work / "results/digits").mkdir(parents=True)
    (work / "results/digits/config").write_text("not a folder")
    result = run_snakemake("-n", "--configfile", "tests/tiny.yaml", cwd=work)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("reprozoo: ")]
    assert len(lines) == 1 and "results/digits/config/" in lines[0] and "cannot write it" in lines[0], result.stderr


def test_snakemake_stops_on_a_bad_lr_range_before_any_job_and_keeps_the_old_best(tmp_path):
    """Tune used to start, die in hyperopt, and Snakemake had removed the good best.json first."""
    work = tmp_path / "wf"
    work.mkdir()
    copy_workflow(work)
    best = work / "results/digits/tune/mlp/best.json"
    best.parent.mkdir(parents=True)
    best.write_text('{"lr": 0.001}')
    bad = override(tmp_path, {"protocol": {"tune": {"lr_log_range": [-5, -8]}}})
    result = run_snakemake("--cores", "1", "--configfile", "tests/tiny.yaml", bad, cwd=work)
    assert result.returncode != 0
    assert "reprozoo: config key 'protocol.tune.lr_log_range'" in result.stderr
    assert "rule tune" not in result.stdout + result.stderr
    assert best.read_text() == '{"lr": 0.001}'


def test_yaml_error_names_the_file_and_line(tmp_path, capsys):
    bad = override(tmp_path, "protocol:\n  tune: [\n", "broken.yaml")
    line = one_error_line(check_config(capsys, ROOT / "config.yaml", bad), "check-config")
    assert f"config file {bad}: not valid YAML at line 3" in line


HOSTILE = ["x; touch {marker}; exit 0; ", "$(touch {marker})", "`touch {marker}`", "a b", "it's", 'say "hi"',
           "../up", "Upper"]


@pytest.mark.parametrize("where", ["models", "datasets", "ablations", "extra_test", "backbones"])
def test_hostile_names_are_refused_by_the_schema_and_nothing_runs(where, tmp_path, capsys):
    """Names become paths, job names and wildcards: only [a-z][a-z0-9_]* gets in."""
    marker = tmp_path / "owned"
    for raw in HOSTILE:
        name = raw.format(marker=marker)
        section = {"models": {"arch": "mlp"}, "datasets": {"kind": "digits"},
                   "ablations": {"base": "mlp", "set": {"batch_size": 8}},
                   "extra_test": {"root": "somewhere"},
                   "backbones": {"arch": "vit_b16", "weights": "none", "image_size": 32}}[where]
        data = {where: {name: section}}
        if where in ("models", "datasets"):
            data["run"] = {where: [name]}
        path = override(tmp_path, data)
        line = one_error_line(check_config(capsys, ROOT / "config.yaml", ROOT / "tests/tiny.yaml", path),
                              "check-config")
        assert "does not match '^[a-z][a-z0-9_]*$'" in line, line
    result = run_snakemake("-n", "--configfile", "tests/tiny.yaml", path)
    assert result.returncode != 0 and "does not match" in result.stderr
    assert not marker.exists()


@pytest.mark.slow
def test_hostile_dataset_root_is_a_plain_string_for_the_shell(tmp_path):
    """A root with spaces, quotes, `;`, `$()` and backticks reaches the stage as one literal path."""
    from conftest import write_imagefolder

    marker = tmp_path / "owned"
    root = tmp_path / f"we ird; touch {marker}; $(touch {marker}) `touch {marker}` it's"
    write_imagefolder(root, classes=("cat", "dog"), per_class=(3, 2))
    work = tmp_path / "wf"
    work.mkdir()
    copy_workflow(work)
    cfg = override(tmp_path, {"run": {"datasets": ["odd"], "models": ["mlp"]},
                              "datasets": {"odd": {"kind": "imagefolder", "root": str(root)}}})
    result = run_snakemake("results/odd/data.npz", "--cores", "1", "--configfile", "tests/tiny.yaml", cfg, cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not marker.exists()
    import numpy as np

    with np.load(work / "results/odd/data.npz") as data:
        assert data["x_train"].shape == (6, 32, 32, 3) and list(data["classes"]) == ["cat", "dog"]


# ------------------------------------------------------------------ artifacts a user could have edited

class Payload:
    """Unpickling this runs a shell command: what a crafted .pt file would do without weights_only."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def cnn_args(demo_cfg, digits_npz, tmp_path):
    cfg = tiny_model_cfg(demo_cfg, "cnn")
    return ["evaluate", "--model-json", json.dumps(cfg), "--data", digits_npz, "--metrics", tmp_path / "m.json",
            "--confusion", tmp_path / "c.csv", "--device", "cpu"]


def test_crafted_pickle_in_weights_is_refused_in_one_line_and_never_runs(cnn_args, tmp_path):
    marker = tmp_path / "owned"
    weights = tmp_path / "weights.pt"
    torch.save({"conv.weight": Payload(marker)}, weights)  # a real torch zip, with a code-running pickle
    line = one_error_line(run_cli(*cnn_args, "--weights", weights), "evaluate")
    assert f"{weights}: refused to load weights" in line and "rerun the train stage" in line
    assert not marker.exists() and not (tmp_path / "m.json").exists()
    raw = tmp_path / "raw.pt"  # a bare pickle, not even a torch archive
    raw.write_bytes(pickle.dumps(Payload(marker)))
    assert str(raw) in one_error_line(run_cli(*cnn_args, "--weights", raw), "evaluate")
    assert not marker.exists()


def test_truncated_weights_are_one_line(cnn_args, tmp_path):
    weights = tmp_path / "weights.pt"
    save_torch(weights, {"w": torch.zeros(1000)})
    weights.write_bytes(weights.read_bytes()[:700])
    line = one_error_line(run_cli(*cnn_args, "--weights", weights), "evaluate")
    assert f"{weights}: not a readable weights file, truncated or corrupt" in line


def test_crafted_features_file_is_one_line(demo_cfg, digits_npz, digits_split, tmp_path):
    from reprozoo.data import load_features
    from reprozoo.io import ArtifactError

    marker = tmp_path / "owned"
    path = tmp_path / "features.pt"
    torch.save({"x_train": Payload(marker)}, path)
    with pytest.raises(ArtifactError, match="refused to load features"):
        load_features(path)
    assert not marker.exists()


def test_truncated_json_artifact_is_one_line(demo_cfg, digits_npz, digits_split, tmp_path):
    best = tmp_path / "best.json"
    best.write_text('{"lr": 0.00')
    cfg = tiny_model_cfg(demo_cfg, "mlp")
    result = run_cli("train", "--model-json", json.dumps(cfg), "--data", digits_npz, "--split", digits_split,
                     "--best", best, "--weights", tmp_path / "w.pt", "--history", tmp_path / "h.csv",
                     "--run", tmp_path / "r.json", "--device", "cpu")
    assert f"{best}: not valid JSON" in one_error_line(result, "train")


def test_full_disk_is_one_line_and_leaves_nothing_behind(digits_npz, tmp_path, monkeypatch, capsys):
    def no_space(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    section = split_section(tmp_path)
    monkeypatch.setattr(Path, "write_text", no_space)
    out = tmp_path / "out" / "split.json"
    code = main(["split", "--split-cfg", str(section), "--data", str(digits_npz), "--seed", "1", "--split", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    logging.getLogger().handlers.clear()
    assert code == 2
    assert err[-1] == (f"reprozoo split: error: {out}: no space left on device (or quota exceeded) while writing "
                       f"it; nothing was written: free space under {out.parent}/ and rerun")
    assert list(out.parent.iterdir()) == []  # no temp file either


# ------------------------------------------------------------------ the same tensors, the same bytes

def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_save_torch_gives_the_same_bytes_for_the_same_tensors(tmp_path):
    state = {"w": torch.arange(12.0).view(3, 4), "b": torch.ones(3)}
    save_torch(tmp_path / "a.pt", state)
    save_torch(tmp_path / "sub" / "b.pt", state)
    assert digest(tmp_path / "a.pt") == digest(tmp_path / "sub" / "b.pt")
    loaded = load_torch(tmp_path / "a.pt", "weights", "train")
    assert torch.equal(loaded["w"], state["w"])


def test_retraining_and_recaching_give_byte_identical_artifacts(demo_cfg, digits_npz, digits_split, tmp_path):
    from reprozoo.data import load_arrays, save_arrays
    from reprozoo.features import cache_features
    from reprozoo.train import train

    (tmp_path / "best.json").write_text(json.dumps({"source": "tuned", "lr": 2e-3, "epochs": 1}))
    cfg = tiny_model_cfg(demo_cfg, "mlp")
    for run in ("a", "b"):
        out = tmp_path / run
        train(cfg, digits_npz, digits_split, tmp_path / "best.json", out / "weights.pt", out / "history.csv",
              out / "run.json", CPU)
    assert digest(tmp_path / "a/weights.pt") == digest(tmp_path / "b/weights.pt")

    arrays = load_arrays(digits_npz)
    small = {k: (v[:16] if k != "classes" else v) for k, v in arrays.items()}
    save_arrays(tmp_path / "small.npz", small)
    spec = {"name": "vit_b16_demo", "arch": "vit_b16", "weights": "none", "image_size": 32, "batch_size": 8,
            "normalize": demo_cfg["protocol"]["normalize"]}
    for run in ("a", "b"):
        cache_features(spec, tmp_path / "small.npz", tmp_path / run / "features.pt", CPU)
    assert digest(tmp_path / "a/features.pt") == digest(tmp_path / "b/features.pt")


# ------------------------------------------------------------------ kill -9, then one command


@pytest.mark.slow
def test_kill_9_then_make_resume_finishes_the_run(tmp_path):
    """tests/tiny.yaml with one model (the resume is what is checked, not the number of models)."""
    work = tmp_path / "wf"
    work.mkdir()
    copy_workflow(work)
    shutil.copy2(ROOT / "Makefile", work / "Makefile")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "TQDM_DISABLE": "1"}
    proc = subprocess.Popen([str(BIN / "snakemake"), "--cores", "1", "--configfile", *TINY_MLP], cwd=work,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    incomplete = work / ".snakemake" / "incomplete"
    deadline = time.time() + 300
    # Wait until a tune job is under way: its log folder exists and Snakemake has marked an output
    # incomplete. The marker, not the folder alone: on a loaded machine the poll can fall between
    # two jobs, when no output is marked and the kill would leave nothing to resume.
    while time.time() < deadline and not ((work / "logs/digits/tune").is_dir() and incomplete.is_dir()
                                          and any(incomplete.iterdir())):
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # a power cut: Snakemake and its jobs die at once
    proc.wait()
    assert any(incomplete.iterdir()), "nothing was marked incomplete: the kill came too late"

    plain = run_snakemake("--cores", "1", "--configfile", *TINY_MLP, cwd=work)
    assert plain.returncode != 0 and "cannot be locked" in plain.stderr + plain.stdout  # why `make resume` exists

    result = subprocess.run(["make", "resume", f"CONFIG={' '.join(TINY_MLP)}", "CORES=1"], cwd=work, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (work / "results/digits/report/comparison.csv").is_file()
    after = run_snakemake("-n", "--configfile", *TINY_MLP, cwd=work)
    assert after.returncode == 0 and "Nothing to be done" in after.stdout + after.stderr


def test_resume_refuses_while_a_run_is_going_on(tmp_path):
    work = tmp_path / "wf"
    work.mkdir()
    shutil.copy2(ROOT / "Makefile", work / "Makefile")
    sleeper = subprocess.Popen(["bash", "-c", "exec -a 'python -m reprozoo tune' sleep 60"], cwd=work)
    try:
        time.sleep(0.3)
        result = subprocess.run(["make", "resume"], cwd=work, capture_output=True, text=True, timeout=60)
    finally:
        sleeper.kill()
    assert result.returncode != 0
    assert f"resume: a run is still going on here (pid {sleeper.pid}" in result.stdout
