"""Results files that are cut short, damaged, edited or from another run: the report (and train, and
`python -m reprozoo table`) stops with one line naming the file and the stage to rerun, exit 2, and
writes nothing; a number it prints is the number its inputs give.

One valid results set (train, evaluate and verify of a tiny mlp on the bundled digits, then its
report) is built once; each case damages a copy of it.
"""
import json
import logging
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from conftest import one_line_error, run_cli, tiny_model_cfg
from reprozoo.cli import main
from reprozoo.evaluate import evaluate
from reprozoo.stages import PATHS, flag
from reprozoo.train import train
from reprozoo.verify import verify

CPU = torch.device("cpu")
NAMES = {"dataset": "digits", "model": "mlp", "seed": 3407}
INPUTS = ("metrics", "run", "best", "history", "confusion", "predictions", "verify")
FILES = {name: PATHS[name].format(**NAMES) for name in (*INPUTS, "report_cfg")}
OUTPUTS = ("table_csv", "table_md", "verdicts", "claims", "ablation_table", "verification_table", "summary",
           "histories", "accuracy_plot")
REPORT = Path(PATHS["table_csv"].format(**NAMES)).parent  # every output (figures too) is under it


@pytest.fixture(scope="module")
def valid(tmp_path_factory, demo_cfg, digits_npz, digits_split) -> Path:
    """A folder holding results/ of one run (digits, mlp, seed 3407) as the stages write it, and its report."""
    root = tmp_path_factory.mktemp("valid")
    f = {name: root / path for name, path in FILES.items()}
    cfg = tiny_model_cfg(demo_cfg, "mlp", batch_size=128)  # 12 steps an epoch
    assert cfg["seed"] == NAMES["seed"]
    f["best"].parent.mkdir(parents=True)
    f["best"].write_text(json.dumps({"source": "paper", "lr": 2e-3, "epochs": 2}))
    weights = root / PATHS["weights"].format(**NAMES)
    train(cfg, digits_npz, digits_split, f["best"], weights, f["history"], f["run"], CPU)
    evaluate(cfg, digits_npz, weights, f["metrics"], f["confusion"], CPU, predictions_path=f["predictions"])
    verify(cfg, f["verify"])
    weights.unlink()  # the report does not read it
    f["report_cfg"].parent.mkdir(parents=True, exist_ok=True)
    f["report_cfg"].write_text(json.dumps({
        "dataset": {"name": "digits", "kind": "digits", "image_size": 32, "paper_dataset": False},
        "runs": [["mlp", NAMES["seed"]]], "papers": {"mlp": {"accuracy": 54.44, "loss": 1.3208}},
        "study": {}, "ablations": {}}))
    assert main([str(a) for a in report_args(root)]) == 0, "the report refuses valid results"
    logging.getLogger().handlers.clear()
    return root


def cli(capsys, *args) -> SimpleNamespace:
    """`python -m reprozoo ...` in this process (no interpreter start-up per case)."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    logging.getLogger().handlers.clear()  # main() logs to this test's captured stderr
    return SimpleNamespace(returncode=code, stdout="", stderr=capsys.readouterr().err)


def report_args(root: Path) -> list:
    """The report stage on root/results, every path given (none falls back to this checkout's results/)."""
    args = ["report", "--report-cfg", root / FILES["report_cfg"]]
    for name in INPUTS:
        args += [flag(name), root / FILES[name]]
    return args + [a for name in OUTPUTS for a in (flag(name), root / PATHS[name].format(**NAMES))]


def outputs(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / REPORT).rglob("*")) if p.is_file()}


def test_valid_results_pass_every_check(valid):
    """Results as train, evaluate and verify write them pass (`valid` reports them); the report shows their numbers."""
    metrics = json.loads((valid / FILES["metrics"]).read_text())
    row = pd.read_csv(valid / PATHS["table_csv"].format(**NAMES)).iloc[0]
    assert row["accuracy"] == round(metrics["accuracy"], 2) and row["loss"] == round(metrics["loss"], 4)
    assert row["accuracy_low"] <= row["accuracy"] <= row["accuracy_high"] <= 100 and row["loss_low"] >= 0


def damaged_copy(valid: Path, tmp_path: Path) -> Path:
    work = tmp_path / "work"
    shutil.copytree(valid, work)
    return work


# ------------------------------------------------------------------ the case

def test_truncated_predictions_fail_the_report_and_change_nothing(valid, tmp_path):
    """predictions.csv cut to its first 500 bytes: before, exit 0 and an accuracy interval of
    [86.08, 105.03] with a negative loss bound; now one line, exit 2, the report as it was."""
    work = damaged_copy(valid, tmp_path)
    before = outputs(work)
    predictions = work / FILES["predictions"]
    predictions.write_bytes(predictions.read_bytes()[:500])
    result = run_cli("report", "--dataset", "digits", cwd=work)
    line = one_line_error(result, "report")
    assert re.fullmatch(rf"reprozoo report: error: {re.escape(FILES['predictions'])}: \d+ rows, but metrics\.json "
                        r"says 360 test images: truncated or from another run; rerun evaluate", line), line
    assert outputs(work) == before  # nothing written, no temp file left


# ------------------------------------------------------------------ a family of damaged files

def text(path: Path, change) -> None:
    path.write_text(change(path.read_text()))


def edit_json(path: Path, change) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def set_key(path: Path, key: str, value) -> None:
    data = json.loads(path.read_text())
    data[key] = value
    path.write_text(json.dumps(data))


def edit_csv(path: Path, change, index=False, **read) -> None:
    frame = pd.read_csv(path, index_col=0 if index else None, **read)
    change(frame).to_csv(path, index=index)


def edit_predictions(path: Path, change) -> None:
    edit_csv(path, change, dtype={"actual": str, "predicted": str})


def first_right(frame: pd.DataFrame) -> int:
    return int((frame["actual"] == frame["predicted"]).to_numpy().nonzero()[0][0])


def answer_wrong(frame):  # the row count still matches
    i = first_right(frame)
    frame.loc[i, "predicted"] = str((int(frame.loc[i, "actual"]) + 1) % 10)
    return frame


def move_a_right_answer(frame):  # as many right, the same losses: only the confusion matrix can tell
    i = first_right(frame)
    frame.loc[i, ["actual", "predicted"]] = str((int(frame.loc[i, "actual"]) + 1) % 10)
    return frame


def off_diagonal(cm, plus=1, diagonal=0):
    cm.iloc[0, 1] += plus
    cm.iloc[0, 0] += diagonal
    return cm


NOT_UTF8 = b"\xff\xfe\x00\x81 not text \x9c\n"
CASES = [
    # predictions.csv
    ("predictions", lambda p: p.write_text(""), None, "empty; rerun the evaluate stage to rewrite it"),
    ("predictions", lambda p: p.write_bytes(NOT_UTF8), None, "not a readable CSV file, truncated or corrupt ("),
    ("predictions", lambda p: p.write_bytes(p.read_bytes()[:500]), None,
     "rows, but metrics.json says 360 test images: truncated or from another run"),
    ("predictions", lambda p: edit_predictions(p, lambda f: f.rename(columns={"actual": "truth"})), None,
     "no column 'actual' (it has 'truth', 'predicted', 'loss'); rerun evaluate"),
    ("predictions", lambda p: edit_predictions(p, lambda f: pd.concat([f, f.tail(1)])), None,
     "361 rows, but metrics.json says 360 test images"),
    ("predictions", lambda p: edit_predictions(p, lambda f: f.iloc[1:]), None, "359 rows, but metrics.json says 360"),
    ("predictions", lambda p: edit_predictions(p, answer_wrong), None, "its rows give an accuracy of"),
    ("predictions", lambda p: edit_predictions(p, move_a_right_answer), None,
     "its rows do not give the counts of"),
    ("predictions", lambda p: edit_predictions(p, lambda f: f.assign(actual=f["actual"].replace("3", "cat"))), None,
     "'actual' is 'cat' at row"),
    ("predictions", lambda p: edit_predictions(p, lambda f: f.assign(predicted="")), None,
     "'predicted' is '' at row 1"),
    ("predictions", lambda p: edit_predictions(p, lambda f: f.assign(loss=f["loss"].where(f.index > 0, float("nan")))),
     None, "'loss' is empty at row 1: it must be a finite number >= 0; rerun evaluate"),
    ("predictions", lambda p: edit_predictions(p, lambda f: f.assign(loss=f["loss"].where(f.index > 4, float("inf")))),
     None, "'loss' is inf at row 1"),
    ("predictions", lambda p: edit_predictions(p, lambda f: f.assign(loss=-f["loss"])), None, "'loss' is -"),
    ("predictions", lambda p: edit_predictions(p, lambda f: f.assign(loss=f["loss"] * 1.01)), None,
     "the mean of its losses is"),
    ("predictions", lambda p: p.unlink(), None, "not found (run the evaluate stage first)"),
    # metrics.json
    ("metrics", lambda p: text(p, lambda t: t[:40]), None, "not valid JSON ("),
    ("metrics", lambda p: p.write_text(""), None, "not valid JSON ("),
    ("metrics", lambda p: p.write_bytes(NOT_UTF8), None, "not valid JSON ("),
    ("metrics", lambda p: edit_json(p, lambda m: [m]), None, "holds an array, not a JSON object; rerun evaluate"),
    ("metrics", lambda p: set_key(p, "accuracy", 120), None,
     "'accuracy' is 120: it must be a number from 0 to 100; rerun evaluate"),
    ("metrics", lambda p: set_key(p, "accuracy", "95"), None, "'accuracy' is \"95\": it must be a number from 0"),
    ("metrics", lambda p: set_key(p, "images", 0), None, "'images' is 0: it must be a whole number >= 1"),
    ("metrics", lambda p: set_key(p, "images", 361), "confusion", "counts 360 images, but metrics.json says 361"),
    ("metrics", lambda p: set_key(p, "loss", -0.5), None, "'loss' is -0.5: it must be a finite number >= 0"),
    ("metrics", lambda p: text(p, lambda t: re.sub(r'"loss": [^,]+', '"loss": NaN', t)), None,
     "not valid JSON (NaN is no JSON number)"),
    ("metrics", lambda p: text(p, lambda t: re.sub(r'"loss": [^,]+', '"loss": 1e999', t)), None,
     "'loss' is Infinity: it must be a finite number >= 0"),
    ("metrics", lambda p: set_key(p, "model", "cnn"), None,
     "the metrics of model 'cnn', not of 'mlp': from another run; rerun evaluate"),
    ("metrics", lambda p: edit_json(p, lambda m: {**m, "accuracy": m["accuracy"] - 1}), "confusion",
     "its diagonal gives an accuracy of"),
    ("metrics", lambda p: edit_json(p, lambda m: {**m, "loss": m["loss"] * 1.1}), "predictions",
     "the mean of its losses is"),
    ("metrics", lambda p: edit_json(p, lambda m: {**m, "per_class_accuracy": {**m["per_class_accuracy"], "3": 1.0}}),
     "confusion", "the per-class accuracy of class '3' is 1.0 in metrics.json"),
    ("metrics", lambda p: edit_json(p, lambda m: {**m, "per_class_accuracy": {**m["per_class_accuracy"], "3": 130}}),
     None, "'per_class_accuracy.3' is 130: it must be a number from 0 to 100; rerun evaluate"),
    ("metrics", lambda p: set_key(p, "extra", {"noise": {"accuracy": 50.0, "loss": 1.0, "images": 0}}), None,
     "'extra.noise.images' is 0: it must be a whole number >= 1"),
    # confusion.csv
    ("confusion", lambda p: edit_csv(p, off_diagonal, index=True), None,
     "counts 361 images, but metrics.json says 360: truncated or from another run; rerun evaluate"),
    ("confusion", lambda p: edit_csv(p, lambda cm: off_diagonal(cm, plus=1, diagonal=-1), index=True), None,
     "its diagonal gives an accuracy of"),
    ("confusion", lambda p: edit_csv(p, lambda cm: cm.drop(columns="9"), index=True), None,
     "its rows (0, 1, 2, 3, 4, 5, 6, 7, 8, 9) are not its columns (0, 1, 2, 3, 4, 5, 6, 7, 8): not a confusion"),
    ("confusion", lambda p: edit_csv(p, lambda cm: off_diagonal(cm.astype(float), plus=0.5), index=True), None,
     "the count of class '0' predicted as '1' is 0.5: it must be a whole number >= 0; rerun evaluate"),
    ("confusion", lambda p: edit_csv(p, lambda cm: off_diagonal(cm, plus=-cm.iloc[0, 1] - 1), index=True), None,
     "the count of class '0' predicted as '1' is -1: it must be"),
    ("confusion", lambda p: p.write_text(""), None, "empty; rerun the evaluate stage to rewrite it"),
    ("confusion", lambda p: p.write_bytes(NOT_UTF8), None, "not a readable CSV file"),
    # run.json
    ("run", lambda p: set_key(p, "seed", 3408), None,
     "the run of seed 3408, in the folder of seed 3407: from another run; rerun train"),
    ("run", lambda p: set_key(p, "seed", "3407"), None, "'seed' is \"3407\": it must be a whole number; rerun train"),
    ("run", lambda p: set_key(p, "model", "cnn"), None, "the run of model 'cnn', not of 'mlp'"),
    ("run", lambda p: set_key(p, "duration_s", float("inf")), None, "not valid JSON (Infinity is no JSON number)"),
    ("run", lambda p: set_key(p, "epochs", 3), "history",
     "2 epochs, but run.json says 3: truncated or from another run; rerun train"),
    ("run", lambda p: set_key(p, "lr", 1e-3), None, "trained at lr 0.001 for 2 epochs, but "),
    ("run", lambda p: set_key(p, "lr", "fast"), None, "'lr' is \"fast\": it must be a finite number above 0"),
    ("run", lambda p: edit_json(p, lambda r: [r]), None, "holds an array, not a JSON object; rerun train"),
    # history.csv
    ("history", lambda p: edit_csv(p, lambda h: h.iloc[:1]), None, "1 epoch, but run.json says 2"),
    ("history", lambda p: edit_csv(p, lambda h: h.assign(epoch=[1, 3])), None,
     "its epochs are 1, 3, not 1 to 2 in order"),
    ("history", lambda p: edit_csv(p, lambda h: h.assign(test_loss=[float("nan"), 1.0])), None,
     "'test_loss' is nan at epoch row 1: it must be a finite number >= 0; rerun train"),
    ("history", lambda p: edit_csv(p, lambda h: h.assign(test_accuracy=[50.0, 120.0])), None,
     "'test_accuracy' is 120.0 at epoch row 2: it must be a number from 0 to 100"),
    ("history", lambda p: edit_csv(p, lambda h: h.assign(test_accuracy=h["test_accuracy"] - 1)), None,
     "its last epoch's test_accuracy is"),
    ("history", lambda p: edit_csv(p, lambda h: h.drop(columns="test_accuracy")), None, "no column 'test_accuracy'"),
    ("history", lambda p: text(p, lambda t: t[:len(t) // 2]), None, "rerun train"),
    ("history", lambda p: p.write_text(""), None, "empty; rerun the train stage to rewrite it"),
    # best.json
    ("best", lambda p: set_key(p, "lr", 0), None, "'lr' is 0: it must be a finite number above 0; rerun tune"),
    ("best", lambda p: set_key(p, "epochs", 2.5), None, "'epochs' is 2.5: it must be a whole number >= 1; rerun tune"),
    ("best", lambda p: set_key(p, "epochs", 3), "run", "trained at lr 0.002 for 2 epochs, but "),
    ("best", lambda p: p.write_text("[]"), None, "holds an array, not a JSON object; rerun tune"),
    ("best", lambda p: edit_json(p, lambda b: {k: v for k, v in b.items() if k != "source"}), None,
     "'source' is missing: it must be a string ('tuned', 'paper'); rerun tune"),
    # the verify record
    ("verify", lambda p: set_key(p, "model", "cnn"), None, "'model' is \"cnn\": it must be a model's name, 'mlp'"),
    ("verify", lambda p: edit_json(p, lambda v: {**v, "modules": [{"module": "0"}]}), None, "'modules' is [{"),
    ("verify", lambda p: text(p, lambda t: t[:100]), None, "not valid JSON ("),
]


@pytest.mark.parametrize("file, damage, named, says", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_a_damaged_results_file_is_one_line_and_nothing_is_written(valid, tmp_path, capsys, file, damage, named,
                                                                    says):
    work = damaged_copy(valid, tmp_path)
    before = outputs(work)
    damage(work / FILES[file])
    line = one_line_error(cli(capsys, *report_args(work)), "report")
    assert line.startswith(f"reprozoo report: error: {work / FILES[named or file]}: "), line
    assert says in line, line
    assert outputs(work) == before


# ------------------------------------------------------------------ train's best.json, the table

@pytest.mark.parametrize("best, says", [
    ({"source": "paper", "lr": 0, "epochs": 2}, "'lr' is 0: it must be a finite number above 0; rerun tune"),
    ({"source": "paper", "lr": -1e-3, "epochs": 2}, "'lr' is -0.001: it must be a finite number above 0"),
    ({"source": "paper", "lr": 1e-3, "epochs": 2.5}, "'epochs' is 2.5: it must be a whole number >= 1"),
    ({"source": "paper", "lr": 1e-3, "epochs": 0}, "'epochs' is 0: it must be a whole number >= 1"),
    ({"source": "paper", "lr": "1e-3", "epochs": 2}, "'lr' is \"1e-3\": it must be a finite number above 0"),
    ({"source": 1, "lr": 1e-3, "epochs": 2}, "'source' is 1: it must be a string"),
    ([1e-3, 2], "holds an array, not a JSON object; rerun tune"),
    ('{"source": "paper", "lr": NaN, "epochs": 2}', "not valid JSON (NaN is no JSON number)"),
], ids=["lr-0", "lr-negative", "epochs-2.5", "epochs-0", "lr-text", "source-number", "list", "nan"])
def test_train_refuses_a_best_json_it_cannot_train_with(demo_cfg, digits_npz, digits_split, tmp_path, capsys, best,
                                                        says):
    path = tmp_path / "best.json"
    path.write_text(best if isinstance(best, str) else json.dumps(best))
    out = tmp_path / "out"
    result = cli(capsys, "train", "--model-json", json.dumps(tiny_model_cfg(demo_cfg, "mlp")), "--data", digits_npz,
                 "--split", digits_split, "--best", path, "--weights", out / "w.pt", "--history", out / "h.csv",
                 "--run", out / "r.json", "--device", "cpu")
    line = one_line_error(result, "train")
    assert line.startswith(f"reprozoo train: error: {path}: ") and says in line, line
    assert not out.exists()


@pytest.mark.parametrize("damage, says", [
    (lambda p: p.unlink(), "not found (run the report stage first)"),
    (lambda p: p.write_text(""), "empty; rerun the report stage to rewrite it"),
    (lambda p: p.write_bytes(NOT_UTF8), "not a readable CSV file, truncated or corrupt ("),
    (lambda p: edit_csv(p, lambda t: t.drop(columns="flag")), "no column 'flag'"),
], ids=["missing", "empty", "not-utf8", "no-verdict"])
def test_the_compact_table_names_the_csv(valid, tmp_path, capsys, monkeypatch, damage, says):
    work = damaged_copy(valid, tmp_path)
    table = Path(PATHS["table_csv"].format(**NAMES))
    damage(work / table)
    monkeypatch.chdir(work)
    assert one_line_error(cli(capsys, "table", "--dataset", "digits"), "table").startswith(
        f"reprozoo table: error: {table}: {says}")
