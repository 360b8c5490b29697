"""Every failure a user can cause is one line naming the problem and a non-zero exit, on the
terminal too when the stage logs to a file; numbers a run reports are finite or the run fails."""
import json
import resource
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import (BIN, ROOT, copy_workflow, one_line_error, run_cli, run_snakemake, split_section,
                      tiny_model_cfg)
from reprozoo.models import create_model


@pytest.fixture()
def mlp(demo_cfg):
    return json.dumps(tiny_model_cfg(demo_cfg, "mlp"))


def evaluate(mlp, digits_npz, weights, tmp_path, *more):
    return run_cli("evaluate", "--model-json", mlp, "--data", digits_npz, "--weights", weights,
                   "--metrics", tmp_path / "m.json", "--confusion", tmp_path / "c.csv",
                   "--predictions", tmp_path / "p.csv", *more)


def test_weights_that_are_text_are_one_line(mlp, digits_npz, tmp_path):
    (tmp_path / "t.pt").write_text("these are not weights\n" * 20)
    line = one_line_error(evaluate(mlp, digits_npz, tmp_path / "t.pt", tmp_path), "evaluate")
    assert f"{tmp_path / 't.pt'}: not a readable weights file" in line and not (tmp_path / "m.json").exists()


def test_weights_that_are_all_nan_give_no_metrics(mlp, demo_cfg, digits_npz, tmp_path):
    model = create_model("mlp", 10, **json.loads(mlp)["args"])
    torch.save({k: torch.full_like(v, float("nan")) for k, v in model.state_dict().items()}, tmp_path / "w.pt")
    line = one_line_error(evaluate(mlp, digits_npz, tmp_path / "w.pt", tmp_path), "evaluate")
    assert "weights hold NaN or infinite values" in line
    assert not any((tmp_path / f).exists() for f in ("m.json", "c.csv", "p.csv"))  # nothing half-written


def test_results_are_strict_json(tmp_path):
    from reprozoo.errors import UserError
    from reprozoo.io import write_json

    with pytest.raises(UserError, match=r"'extra\.odd\.loss' is nan, not a finite number"):
        write_json(tmp_path / "m.json", {"accuracy": 10.0, "extra": {"odd": {"loss": float("nan")}}})
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("option, message", [
    (["--device", "banana"], "--device banana: not a device (auto, cpu, cuda, cuda:1, ...)"),
    (["--device", "cuda"], "--device cuda: no CUDA GPU is available here; use --device cpu (or auto)"),
], ids=["banana", "cuda"])
def test_a_bad_device_is_one_line(mlp, digits_npz, tmp_path, option, message):
    if option[1] == "cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is here")
    assert one_line_error(evaluate(mlp, digits_npz, tmp_path / "w.pt", tmp_path, *option), "evaluate").endswith(message)


@pytest.mark.parametrize("where, message", [
    ("/proc/nope/s.json", "/proc/nope/s.json: cannot write it ("),
    ("a-folder", "a-folder: cannot write it (it is a folder"),
], ids=["impossible-folder", "a-folder"])
def test_an_output_that_cannot_be_written_is_one_line(digits_npz, tmp_path, where, message):
    (tmp_path / "a-folder").mkdir()
    result = run_cli("split", "--split-cfg", split_section(tmp_path), "--data", digits_npz, "--seed", 3407,
                     "--split", where, cwd=tmp_path)
    assert message in one_line_error(result, "split")


def test_a_file_size_limit_while_saving_weights_is_one_line_and_leaves_nothing(mlp, digits_npz, digits_split,
                                                                            tmp_path):
    """torch.save wraps the write's OSError in its own RuntimeError: still one line, no temp file left."""
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"lr": 1e-3, "epochs": 1}))
    out = tmp_path / "out"

    def limit():  # 1 MB: the log and history fit, the mlp's 6.8 MB of weights do not
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    result = subprocess.run(
        [sys.executable, "-m", "reprozoo", "train", "--model-json", mlp, "--data", str(digits_npz), "--split",
         str(digits_split), "--best", str(best), "--weights", str(out / "w.pt"), "--history", str(out / "h.csv"),
         "--run", str(out / "r.json"), "--log", str(tmp_path / "train.log")], capture_output=True, text=True,
        preexec_fn=limit, timeout=600)
    assert "file too large for this process's file-size limit (ulimit -f)" in one_line_error(result, "train")
    assert not (out / "w.pt").exists() and not list(out.glob(".*tmp"))


def test_num_classes_in_a_models_args_is_refused_before_any_job(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"models": {"mlp": {"args": {"num_classes": 5}}}}))
    line = one_line_error(run_cli("check-config", ROOT / "config.yaml", tmp_path / "c.yaml"), "check-config")
    assert "config key 'models.mlp.args.num_classes': set by the dataset" in line
    result = run_snakemake("-n", "--configfile", tmp_path / "c.yaml")
    assert result.returncode != 0 and "models.mlp.args.num_classes" in result.stderr + result.stdout


@pytest.mark.parametrize("yaml_text, message", [
    ("models: {mlp: {hparams: fixed, lr: 5e-5, epochs: 3}}", "'5e-5' is not of type 'number' (YAML reads 5e-5 as "
                                                             "text: write it with a dot, e.g. 5.0e-5)"),
    ("datasets: {d: {kind: imagefolder, root: no}}", "(YAML reads yes/no/on/off/true/false as a boolean: quote it)"),
], ids=["float-as-text", "no-as-false"])
def test_yaml_that_means_something_else_is_named(tmp_path, yaml_text, message):
    (tmp_path / "c.yaml").write_text(yaml_text + "\n")
    assert message in one_line_error(run_cli("check-config", ROOT / "config.yaml", tmp_path / "c.yaml"), "check-config")


def test_a_stage_with_a_log_prints_only_its_reason_on_the_terminal(mlp, digits_npz, tmp_path):
    (tmp_path / "t.pt").write_text("not weights")
    result = evaluate(mlp, digits_npz, tmp_path / "t.pt", tmp_path, "--log", tmp_path / "e.log")
    line = one_line_error(result, "evaluate")
    log = (tmp_path / "e.log").read_text()
    assert line in log and "reprozoo.evaluate" not in result.stderr  # the log has it all, the terminal the reason


def test_a_bug_is_named_on_the_terminal_and_its_traceback_is_in_the_log(mlp, tmp_path):
    code = ("import sys, reprozoo.verify as v; v.verify = lambda *a, **kw: 1 / 0; "
            "from reprozoo.cli import main; sys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", code, "verify", "--model-json", mlp, "--verify", "v.json",
                             "--log", "v.log"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr == ("reprozoo verify: internal error: ZeroDivisionError: division by zero "
                             "(traceback in v.log)\n")
    assert "Traceback (most recent call last)" in (tmp_path / "v.log").read_text()


@pytest.mark.slow
def test_a_failed_jobs_reason_reaches_the_terminal_in_snakemake_and_dvc(tmp_path):
    """An image that does not decode (what only reading it finds): the prepare job fails, and its one line
    is on the console of a plain `snakemake` run and of `dvc repro`, not only in the job's log; then a
    config error through DVC."""
    from conftest import write_imagefolder

    work = copy_workflow(tmp_path)
    write_imagefolder(work / "broken", classes=("cat", "dog"))
    (work / "broken/train/cat/0000.png").write_bytes(b"not a PNG at all")
    (work / "one.yaml").write_text(yaml.safe_dump({
        "run": {"datasets": ["shapes"], "models": ["mlp"], "ablations": []},
        "datasets": {"shapes": {"kind": "imagefolder", "root": "broken"}}}))
    configs = ["tests/tiny.yaml", "one.yaml"]
    result = run_snakemake("--cores", "1", "--configfile", *configs, cwd=work)
    reason = "reprozoo prepare: error: broken/train/cat/0000.png: cannot decode image"
    assert result.returncode != 0 and reason in result.stderr, result.stderr[-2000:]
    assert reason in (work / "logs/shapes/prepare.log").read_text()
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "DVC_NO_ANALYTICS": "1"}
    subprocess.run([BIN / "dvc", "init", "--no-scm", "-q"], cwd=work, check=True, env=env)
    assert run_cli("dvc-yaml", *(a for c in configs for a in ("--configfile", c)), cwd=work).returncode == 0
    repro = subprocess.run([BIN / "dvc", "repro"], cwd=work, capture_output=True, text=True, env=env)
    assert repro.returncode != 0 and reason in repro.stdout + repro.stderr, repro.stdout[-2000:] + repro.stderr
    (work / "params.yaml").write_text("mlp: {batch_size: 0}\n")  # a config error: DVC's resolve stage says which
    repro = subprocess.run([BIN / "dvc", "repro"], cwd=work, capture_output=True, text=True, env=env)
    assert repro.returncode != 0 and "reprozoo resolve: error: config key 'models.mlp.batch_size': 0 is less than " \
        "the minimum of 1" in repro.stdout + repro.stderr


def test_an_argument_the_layers_refuse_is_one_line_at_the_start_of_the_job(demo_cfg, tmp_path):
    cfg = tiny_model_cfg(demo_cfg, "cnn", args={"dropout": 1.5})
    line = one_line_error(run_cli("verify", "--model-json", json.dumps(cfg), "--verify", tmp_path / "v.json"), "verify")
    assert "config key 'models.*.args' of 'cnn': dropout probability has to be between 0 and 1" in line


def test_what_the_imagefolder_reader_leaves_out_or_alters_is_said(tmp_path, caplog):
    import logging

    from PIL import Image

    from conftest import write_imagefolder
    from reprozoo.images import read_imagefolder

    root = write_imagefolder(tmp_path / "shapes")
    (root / "train/cat/notes.txt").write_text("not an image")
    (root / "train/cat/.DS_Store").write_bytes(b"")  # hidden files are no one's images: nothing to say
    Image.new("L", (32, 32), 100).save(root / "train/cat/grey.png")
    Image.new("RGB", (40, 20), (9, 9, 9)).save(root / "train/dog/wide.png")
    with caplog.at_level(logging.WARNING, logger="reprozoo.data"):
        x, y, classes = read_imagefolder(root, "train", 32)
    assert x.shape == (14, 32, 32, 3) and classes == ["cat", "dog"]
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 3, said
    assert said[0].startswith(f"{root}/train/cat: 1 entry not read (not an image file: .jpg, ") and \
        said[0].endswith("): notes.txt")
    assert said[1] == f"{root}/train: 1 of 14 images resized to 32x32 px (first: wide.png (40x20))"
    assert said[2] == f"{root}/train: 1 of 14 images converted to RGB (first: grey.png (L))"
