"""A training run that makes no progress is a failure, not a result.

The rules (reprozoo.engine, "progress"): the loss a run reports is above
10 x ln K, or its accuracy is not above always answering the commonest class.
Both cases of the issue are reproduced here on digits: tuning at lr e^2..e^3
(val loss ~2e8) and training at lr 1000 (test loss ~1e12, 9.7%)."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ROOT, run_cli, tiny_model_cfg
from reprozoo.config import load_config
from reprozoo.engine import Diverged, NoProgress, Tensors, check_progress, no_progress
from reprozoo.io import write_json
from reprozoo.report.build import report
from reprozoo.train import TrainError, train
from reprozoo.tune import TuneError, tune

CPU = torch.device("cpu")
DIGITS_TEST = [36, 36, 35, 37, 36, 37, 36, 36, 35, 36]   # digits test images per class (360)
TUNE_VAL = [8, 7, 6, 5, 5, 6, 4, 5, 5, 6]                 # 57 images, commonest class 8


@pytest.fixture(scope="module")
def tiny_cfg() -> dict:
    """tests/tiny.yaml, where the issue reproduces."""
    return load_config(ROOT / "config.yaml", ROOT / "tests" / "tiny.yaml")


def mlp(tiny_cfg, **overrides) -> dict:
    return tiny_model_cfg(tiny_cfg, "mlp", batch_size=64, **overrides)


# ------------------------------------------------------------------ the rules

def test_a_loss_far_above_a_uniform_guess_is_no_progress():
    bound = 10 * math.log(10)                                           # 23.03
    why, exploded = no_progress(9.7e11, 9.72, DIGITS_TEST, "test")
    assert exploded and why == "test loss 9.7e+11 is above 10 x ln(10) = 23 (a uniform guess scores 2.3)"
    assert no_progress(bound + 0.01, 95.0, DIGITS_TEST)[1] is True      # even at a good accuracy
    assert no_progress(bound - 0.01, 95.0, DIGITS_TEST) is None
    assert no_progress(float("nan"), 95.0, DIGITS_TEST)[1] is True
    assert no_progress(18.4, 95.0, [30, 30]) is not None                # 10 x ln(2) = 6.9 for two classes


def test_accuracy_not_above_the_commonest_class_is_no_progress():
    why, exploded = no_progress(2.31, 100 * 37 / 360, DIGITS_TEST, "test")
    assert not exploded and why == ("test accuracy 10.28% is not above chance (10.28%: always answering "
                                    "the commonest class of the 360 images)")
    assert no_progress(2.31, 100 * 38 / 360, DIGITS_TEST) is None       # one image more than the commonest class
    # float32 accuracy of 8 of 57 (as Runner.evaluate returns it) is 8 images, not a hair more
    assert no_progress(0.5, 14.035087823867798, TUNE_VAL) is not None
    # a random-init resnet18 after 2 tuning epochs (an earlier demo setting): slow but learning
    assert no_progress(5.716, 100 * 14 / 57, TUNE_VAL) is None


def test_too_few_images_to_judge_accuracy():
    assert no_progress(1.0, 0.0, [3, 3, 3]) is None                     # 9 images, 3 classes: < 5 per class
    assert no_progress(1.0, 0.0, [5, 5, 5]) is not None
    assert no_progress(99.0, 0.0, [3, 3, 3])[1] is True                 # the loss bound needs no size


def test_check_progress_raises_a_kind_of_divergence():
    val = Tensors(torch.zeros(57, 4), torch.repeat_interleave(torch.arange(10), torch.tensor(TUNE_VAL)))
    check_progress({"epoch": 3, "val_loss": 0.4, "val_accuracy": 90.0}, 10, val)
    with pytest.raises(NoProgress, match=r"^val accuracy 10.53% is not above chance .* at epoch 3$") as info:
        check_progress({"epoch": 3, "val_loss": 2.2, "val_accuracy": 100 * 6 / 57}, 10, val)
    assert isinstance(info.value, Diverged) and not info.value.exploded


# ------------------------------------------------------------------ tuning

def test_tuning_where_every_trial_explodes_fails_with_one_line(tiny_cfg, digits_npz, digits_split, tmp_path):
    """The issue's first case: lr in [e^2, e^3] used to give 'ok' trials at val loss ~2e8."""
    cfg = mlp(tiny_cfg, tune={"max_evals": 2, "lr_log_range": [2, 3]})
    result = run_cli("tune", "--model-json", json.dumps(cfg), "--data", digits_npz, "--split", digits_split,
                     "--trials", tmp_path / "trials.csv", "--best", tmp_path / "best.json", "--device", "cpu",
                     "--cores", "1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("reprozoo tune: error: model 'mlp': all 2 trials made no progress (first: val loss ")
    assert line.endswith("lower tune.lr_log_range (now [2, 3]: lr 7.39 to 20.1)")
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert trials["status"].tolist() == ["fail", "fail"]
    assert trials["error"].str.contains(r"val loss .* is above 10 x ln\(10\) = 23").all()
    assert (trials["best_val_loss"] > 23).all() and (trials["epochs_run"] == 2).all()
    assert not (tmp_path / "best.json").exists()


def test_an_exploding_trial_is_recorded_failed_and_the_search_goes_on(tiny_cfg, digits_npz, digits_split,
                                                                    tmp_path):
    cfg = mlp(tiny_cfg, tune={"max_evals": 2, "lr_log_range": [-12, 12]})   # seed 3407 draws lr 3.29, then 5.2e-3
    best = tune(cfg, digits_npz, digits_split, tmp_path / "t.csv", tmp_path / "b.json", CPU)
    trials = pd.read_csv(tmp_path / "t.csv")
    assert trials["status"].tolist() == ["fail", "ok"]
    assert trials["lr"][0] > 1 and "is above 10 x ln(10)" in trials["error"][0]
    assert best["trial"] == 2 and best["failed_trials"] == 1 and best["lr"] == pytest.approx(trials["lr"][1])


def test_tuning_stuck_at_chance_says_so_and_what_to_check(tiny_cfg, digits_npz, digits_split, tmp_path):
    cfg = mlp(tiny_cfg, tune={"max_evals": 2, "max_epochs": 1, "lr_log_range": [-21, -20]})  # lr ~1e-9
    with pytest.raises(TuneError) as info:
        tune(cfg, digits_npz, digits_split, tmp_path / "t.csv", tmp_path / "b.json", CPU)
    message = str(info.value)
    assert message.startswith("model 'mlp': all 2 trials made no progress (first: val accuracy ")
    assert "not above chance" in message and message.endswith("and tune.max_epochs (now 1)")
    assert "check tune.lr_log_range (now [-21, -20]" in message
    assert pd.read_csv(tmp_path / "t.csv")["status"].tolist() == ["fail", "fail"]


# ------------------------------------------------------------------ training

def _outputs(tmp_path):
    return tmp_path / "weights.pt", tmp_path / "history.csv", tmp_path / "run.json"


def test_training_at_lr_1000_fails_with_one_line_and_writes_nothing(tiny_cfg, digits_npz, digits_split, tmp_path):
    """The issue's second case: hparams: paper at lr 1000 used to report 9.72% at loss 9.7e11."""
    cfg = mlp(tiny_cfg, hparams="paper", lr=1000, epochs=2)
    tune(cfg, digits_npz, digits_split, tmp_path / "t.csv", tmp_path / "best.json", CPU)   # paper: no trials
    weights, history, run = _outputs(tmp_path)
    result = run_cli("train", "--model-json", json.dumps(cfg), "--data", digits_npz, "--split", digits_split,
                     "--best", tmp_path / "best.json", "--weights", weights, "--history", history, "--run", run,
                     "--device", "cpu")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("reprozoo train: error: model 'mlp' made no progress at lr 1e+03 in 2 epochs: test loss ")
    assert line.endswith("is above 10 x ln(10) = 23 (a uniform guess scores 2.3) at epoch 2")
    assert not any(p.exists() for p in (weights, history, run))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "t.csv"]   # no temp files either


def test_training_that_learns_nothing_fails(tiny_cfg, digits_npz, digits_split, tmp_path):
    write_json(tmp_path / "best.json", {"source": "tuned", "lr": 1e-9, "epochs": 1})   # far too small to move
    with pytest.raises(TrainError, match=r"^model 'mlp' made no progress at lr 1e-09 in 1 epochs: test accuracy "
                                         r"6.94% is not above chance \(10.28%: .* of the 360 images\) at epoch 1$"):
        train(mlp(tiny_cfg), digits_npz, digits_split, tmp_path / "best.json", *_outputs(tmp_path), CPU)
    assert not any(p.exists() for p in _outputs(tmp_path))


# ------------------------------------------------------------------ report

def _results(root, model, accuracy, loss, per_class, confusion=True, seed=3407):
    """metrics / run / best / history (/ confusion) files as the stages write them, for 10 classes."""
    d = root / f"{model}-{seed}"
    d.mkdir(parents=True)
    counts = np.array(DIGITS_TEST)
    right = np.round(counts * per_class).astype(int)
    cm = np.diag(right)
    cm[np.arange(10), (np.arange(10) + 1) % 10] += counts - right   # each class's misses go to the next class
    if confusion:  # the accuracies the confusion matrix gives, as evaluate writes them
        accuracy, per_class = 100 * right.sum() / counts.sum(), right / counts
    names = [str(c) for c in range(10)]
    write_json(d / "m.json", {"accuracy": accuracy, "loss": loss, "images": 360, "extra": {},
                              "per_class_accuracy": dict(zip(names, (100 * per_class).tolist()))})
    write_json(d / "r.json", {"params": 1147914, "seed": seed, "duration_s": 60.0, "hardware": "CPU",
                              "setting_deviations": []})
    write_json(d / "b.json", {"lr": 2e-4, "epochs": 16, "source": "paper"})
    pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.8], "test_loss": [1.1, loss],
                  "test_accuracy": [60.0, accuracy], "seconds": [1, 1]}).to_csv(d / "h.csv", index=False)
    pd.DataFrame(cm, index=pd.Index(names, name="true"), columns=names).to_csv(d / "c.csv")
    return [d / "m.json", d / "r.json", d / "b.json", d / "h.csv", d / "c.csv"] if confusion else \
        [d / "m.json", d / "r.json", d / "b.json", d / "h.csv"]


PAPERS = {"cnn": {"accuracy": 77.33, "loss": 0.7026, "params": 1147914},
          "mlp": {"accuracy": 54.44, "loss": 1.3208, "params": 1147914}}
CIFAR = {"name": "cifar10", "kind": "cifar10", "paper_dataset": True}


@pytest.mark.parametrize("confusion", [True, False], ids=["confusion", "per-class-only"])
def test_report_never_calls_a_run_at_chance_reproduced(tmp_path, confusion):
    """An mlp whose whole test set is answered '0' (10.0%, the issue's loss) beside a cnn that learned."""
    good = _results(tmp_path, "cnn", 77.5, 0.70, np.full(10, 0.775), confusion)
    junk = _results(tmp_path, "mlp", 10.0, 9.7e11, np.eye(10)[0], confusion)
    files = [list(f) for f in zip(good, junk)]
    report(CIFAR, PAPERS, ["cnn", "mlp"], *files[:4], tmp_path / "c.csv", tmp_path / "c.md",
           tmp_path / "fig" / "accuracy.png", confusion_paths=files[4] if confusion else ())
    table = pd.read_csv(tmp_path / "c.csv").set_index("model")
    assert table.loc["mlp", "flag"] == "NO PROGRESS" and table.loc["cnn", "flag"] == "ok"
    verdicts = pd.read_csv(tmp_path / "verdicts.csv").set_index(["model", "metric"])["verdict"]
    for metric in ("accuracy", "loss"):
        assert verdicts[("mlp", metric)].startswith("NO PROGRESS (seed 3407: test loss 9.7e+11 is above")
    assert verdicts[("cnn", "accuracy")] == "reproduced" and verdicts[("mlp", "params")] == "reproduced"
    assert "reproduced" not in {verdicts[("mlp", "accuracy")], verdicts[("mlp", "loss")]}
    assert "**No progress**: `mlp` (seed 3407: test loss 9.7e+11" in (tmp_path / "c.md").read_text()


def test_report_flags_chance_accuracy_with_a_sane_loss(tmp_path):
    """Every test image answered '3' (the commonest digits class): 10.28% at a loss near ln 10."""
    files = _results(tmp_path, "mlp", 100 * 37 / 360, 2.30, np.eye(10)[3])
    report(CIFAR, PAPERS, ["mlp"], *[[f] for f in files[:4]], tmp_path / "c.csv", tmp_path / "c.md",
           tmp_path / "fig" / "accuracy.png", confusion_paths=[files[4]])
    verdict = pd.read_csv(tmp_path / "verdicts.csv").set_index(["model", "metric"])["verdict"][("mlp", "accuracy")]
    assert verdict.startswith("NO PROGRESS (seed 3407: test accuracy 10.28% is not above chance (10.28%")
