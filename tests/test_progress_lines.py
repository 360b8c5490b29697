"""Progress a person can follow: long stages log progress with an ETA, library noise is
silenced, and what a terminal shows fits 120 columns."""
import logging
import re

import torch

from conftest import tiny_model_cfg
from reprozoo.engine import Normalize, Tensors
from reprozoo.tune import tune

CPU = torch.device("cpu")


def test_feature_extraction_logs_its_progress_with_an_eta(caplog, monkeypatch):
    from reprozoo.models import pretrained

    monkeypatch.setattr(pretrained, "PROGRESS_EVERY_S", 0)  # a line per batch; 10 s apart in a real run
    images = Tensors(torch.randint(0, 255, (10, 3, 8, 8), dtype=torch.uint8), torch.zeros(10, dtype=torch.long))
    with caplog.at_level(logging.INFO, logger="reprozoo.features"):
        features = pretrained.extract(torch.nn.Flatten(), images, Normalize([0.5] * 3, [0.5] * 3), 4, CPU, "train")
    assert features.shape == (10, 192) and features.dtype == torch.float16
    lines = [r.getMessage() for r in caplog.records if r.name == "reprozoo.features"]
    assert [re.sub(r"[\d.]+s", "Xs", line) for line in lines] == [
        "train: 4/10 images (40%), Xs, ETA Xs", "train: 8/10 images (80%), Xs, ETA Xs",
        "train: 10/10 images (100%), Xs, ETA Xs"]


def test_tuning_logs_each_trial_and_the_search_with_an_eta_and_no_hyperopt_noise(demo_cfg, digits_npz, digits_split,
                                                                              tmp_path, caplog):
    cfg = tiny_model_cfg(demo_cfg, "mlp", tune={"max_evals": 2, "max_epochs": 2, "patience": 2})
    with caplog.at_level(logging.DEBUG):
        tune(cfg, digits_npz, digits_split, tmp_path / "t.csv", tmp_path / "b.json", CPU)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert not [r for r in caplog.records if r.name.startswith("hyperopt") and r.levelno < logging.WARNING]
    assert sum("left)" in line and " epoch 1/2 " in line for line in lines) == 2  # each trial's epochs
    assert [re.sub(r"\(.*", "", line) for line in lines if "trials done" in line] == [
        "mlp: 1/2 trials done ", "mlp: 2/2 trials done "]
    assert lines[-2].endswith("ETA 0m00s")


def test_the_compact_table_fits_a_terminal(tmp_path):
    """`python -m reprozoo table`, the end of `make demo`: the study's longest names and verdicts in 120 columns."""
    import pandas as pd

    from reprozoo.report.markdown import compact_table

    rows = [{"model": "resnet18_pretrained", "params": 11173962, "paper_accuracy": 89.06, "accuracy": 94.44,
             "diff_percent": 6.04, "flag": "not comparable (setting)", "setting": "stem='imagenet' (paper 'cifar')",
             "paper_loss": 0.345, "loss": 0.1234, "lr": 0.000123, "epochs": 12, "hparams": "tuned",
             "train_time": "125m00s", "paper_time": "1m55s", "device": "NVIDIA H100 80GB HBM3 (bf16)"}] * 3
    pd.DataFrame(rows).to_csv(tmp_path / "comparison.csv", index=False)
    shown = compact_table(tmp_path / "comparison.csv")
    assert max(map(len, shown.splitlines())) <= 120 and "resnet18_pretrained" in shown and "n/c (setting)" in shown


def test_printing_the_table_loads_no_plotting_library_scipy_or_torch(tmp_path):
    """`python -m reprozoo table` reads one CSV: the report's figures and statistics stay unloaded."""
    import subprocess
    import sys

    (tmp_path / "results/d/report").mkdir(parents=True)
    (tmp_path / "results/d/report/comparison.csv").write_text("model,accuracy,flag\nmlp,93.3,ok\n")
    code = ("import sys; from reprozoo.cli import main; code = main(['table', '--dataset', 'd']); "
            "print([m for m in ('matplotlib', 'seaborn', 'scipy', 'torch') if m in sys.modules], code)")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.stdout.splitlines()[-1] == "[] 0", result.stdout + result.stderr
    assert "mlp" in result.stdout
