"""benchmarks/study_timings.py reads a finished run's artifacts and logs correctly."""
import json
import subprocess
import sys

from conftest import ROOT


def _run_tree(root, model, hparams, log_lines, duration_s, epochs, images, accuracy):
    train = root / "results" / "d" / "train" / model / "seed1"
    train.mkdir(parents=True)
    (train / "run.json").write_text(json.dumps({
        "hparams": hparams, "duration_s": duration_s, "epochs": epochs, "train_images": images,
        "final_test_accuracy": accuracy, "hardware": "cpu"}))
    tune = root / "results" / "d" / "tune" / model
    tune.mkdir(parents=True)
    (tune / "best.json").write_text(json.dumps({"search": "concurrent: in-process"} if hparams == "tuned" else {}))
    logs = root / "logs" / "d" / "tune"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / f"{model}.log").write_text("\n".join(log_lines) + "\n")


def test_timings_come_from_run_json_and_the_tune_logs_span(tmp_path):
    _run_tree(tmp_path, "cnn", "tuned", ["2026-11-24 20:00:00,000 reprozoo.tune INFO start",
                                         "a traceback line without a stamp",
                                         "2026-11-24 20:01:30,500 reprozoo.tune INFO best"], 20.0, 4, 1000, 61.234)
    _run_tree(tmp_path, "mlp", "paper", ["2026-11-24 20:00:00,000 reprozoo.tune INFO paper"], 8.0, 2, 1000, 50.0)
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "study_timings.py"), "--dataset", "d",
                          "--root", str(tmp_path)], capture_output=True, text=True, check=True).stdout
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]]
            for line in out.splitlines()[2:]}
    assert rows["cnn"][1:] == ["tuned", "concurrent: in-process", "90.5", "20", "4", "200", "61.23", "cpu"]
    assert rows["mlp"][3] == "0" and rows["mlp"][6] == "250"


def test_no_runs_is_one_clear_line(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "study_timings.py"), "--dataset", "d",
                             "--root", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 1 and "no results/d/train" in result.stderr
