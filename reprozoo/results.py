"""The results files train and the report read (run.json, history.csv, best.json, metrics.json,
confusion.csv, predictions.csv, verify records), each checked before any number is computed from it.

Each file is checked against what its stage writes and against the files it must agree with
(predictions.csv and confusion.csv give metrics.json's image count and accuracy; history.csv and
best.json match run.json): a failure is one line naming the file, what is wrong and the stage to
rerun (ArtifactError), and the report writes nothing.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from reprozoo.io import ArtifactError, read_csv, read_json_object


def finite(value) -> bool:
    """A JSON number (a bool is none) that is finite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def whole(value) -> bool:
    """A JSON integer (2.0 and true are none)."""
    return isinstance(value, int) and not isinstance(value, bool)


def require(path, data: dict, key: str, ok, what: str, stage: str, where: str = "") -> None:
    """Unless `ok(data[key])`: one line naming the file, the key, its value and what it must be."""
    if key in data and ok(data[key]):
        return
    found = "is missing" if key not in data else f"is {json.dumps(data[key])[:60]}"
    raise ArtifactError(f"{path}: '{where}{key}' {found}: it must be {what}; rerun {stage}")


def read_best(path: str | Path) -> dict:
    """best.json as tune writes it: the lr (a finite number > 0) and epochs (an integer >= 1) to train with."""
    best = read_json_object(path, "tune")
    require(path, best, "lr", lambda v: finite(v) and v > 0, "a finite number above 0", "tune")
    require(path, best, "epochs", lambda v: whole(v) and v >= 1, "a whole number >= 1", "tune")
    if "source" in best:
        require(path, best, "source", lambda v: isinstance(v, str), "a string ('tuned', 'paper')", "tune")
    return best


HISTORY_COLUMNS = ("epoch", "train_loss", "test_loss", "test_accuracy")  # what the report and samples draw


def read_history(path: str | Path, columns=HISTORY_COLUMNS):
    """history.csv as train writes it: `columns` there ("epoch" among them), a row per epoch, 1 to n in
    order, every value a finite number, losses >= 0, accuracy from 0 to 100."""
    frame = read_csv(path, "train", columns=columns)
    if frame.empty:
        raise ArtifactError(f"{path}: no epochs; rerun train")
    for column in frame.columns:
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(float)
        low, high, what = ((0, 100, "a number from 0 to 100") if column == "test_accuracy" else
                           (0, np.inf, "a finite number >= 0") if column.endswith("_loss") else
                           (-np.inf, np.inf, "a finite number"))
        bad = ~(np.isfinite(values) & (values >= low) & (values <= high))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ArtifactError(f"{path}: '{column}' is {frame[column].iloc[row]} at epoch row {row + 1}: it must be "
                                f"{what}; rerun train")
        frame[column] = values
    if frame["epoch"].tolist() != list(range(1, len(frame) + 1)):
        shown = ", ".join(f"{e:g}" for e in frame["epoch"].head(6)) + (", ..." if len(frame) > 6 else "")
        raise ArtifactError(f"{path}: its epochs are {shown}, not 1 to {len(frame)} in order: edited, or rows of "
                            "another run; rerun train")
    frame["epoch"] = frame["epoch"].astype(int)
    return frame


ACCURACY = (lambda v: finite(v) and 0 <= v <= 100, "a number from 0 to 100")
LOSS = (lambda v: finite(v) and v >= 0, "a finite number >= 0")
COUNT = (lambda v: whole(v) and v >= 1, "a whole number >= 1")
ROUNDING = 1e-9      # relative: an accuracy from counts vs evaluate's (the same division)
LOSS_ROUNDING = 1e-5  # relative: the mean of predictions.csv's losses (float64) vs evaluate's float32 mean


def _stale(path, what: str, stage: str) -> ArtifactError:
    return ArtifactError(f"{path}: {what}; rerun {stage}")


def _differs(a: float, b: float, rel: float) -> bool:
    return not math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)


def read_metrics(path, model: str) -> dict:
    """metrics.json as evaluate writes it, for `model`."""
    m = read_json_object(path, "evaluate")
    if m.get("model", model) != model:
        raise _stale(path, f"the metrics of model {m['model']!r}, not of {model!r}: from another run", "evaluate")
    require(path, m, "accuracy", *ACCURACY, "evaluate")
    require(path, m, "loss", *LOSS, "evaluate")
    if "images" in m:  # needed (and required) where a confusion matrix or predictions are checked against it
        require(path, m, "images", *COUNT, "evaluate")
    if "per_class_accuracy" in m:
        require(path, m, "per_class_accuracy", lambda v: isinstance(v, dict), "a mapping of each class to its "
                "accuracy", "evaluate")
        for name in m["per_class_accuracy"]:
            require(path, m["per_class_accuracy"], name, *ACCURACY, "evaluate", where="per_class_accuracy.")
    if "extra" in m:
        require(path, m, "extra", lambda v: isinstance(v, dict) and all(isinstance(x, dict) for x in v.values()),
                "a mapping of each extra test set to its metrics", "evaluate")
    for name, extra in m.get("extra", {}).items():
        for key, check in (("accuracy", ACCURACY), ("loss", LOSS), ("images", COUNT)):
            require(path, extra, key, *check, "evaluate", where=f"extra.{name}.")
    return m


def read_run(path, model: str) -> dict:
    """run.json as train writes it, for `model` and the seed of its `seed<N>` folder (where it has one)."""
    run = read_json_object(path, "train")
    if run.get("model", model) != model:
        raise _stale(path, f"the run of model {run['model']!r}, not of {model!r}: from another run", "train")
    require(path, run, "seed", whole, "a whole number", "train")
    folder = re.fullmatch(r"seed(\d+)", Path(path).parent.name)
    if folder and run["seed"] != int(folder[1]):
        raise _stale(path, f"the run of seed {run['seed']}, in the folder of seed {folder[1]}: from another run",
                     "train")
    require(path, run, "params", lambda v: whole(v) and v >= 0, "a whole number >= 0", "train")
    require(path, run, "duration_s", lambda v: finite(v) and v >= 0, "a finite number >= 0", "train")
    require(path, run, "hardware", lambda v: isinstance(v, str), "a string", "train")
    if "epochs" in run:
        require(path, run, "epochs", *COUNT, "train")
    if "lr" in run:
        require(path, run, "lr", lambda v: finite(v) and v > 0, "a finite number above 0", "train")
    if "setting_deviations" in run:
        require(path, run, "setting_deviations", lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v),
                "a list of strings", "train")
    return run


def read_run_history(path, run_path, run: dict) -> pd.DataFrame:
    """history.csv (`read_history`), the epochs of the run.json beside it: as many, the last one its final numbers."""
    history = read_history(path)
    if "epochs" in run and len(history) != run["epochs"]:
        raise _stale(path, f"{len(history)} epoch{'s' * (len(history) != 1)}, but {Path(run_path).name} says "
                           f"{run['epochs']}: truncated or from another run", "train")
    last = history.iloc[-1]
    for key, column in (("final_test_accuracy", "test_accuracy"), ("final_test_loss", "test_loss")):
        if finite(run.get(key)) and _differs(last[column], run[key], ROUNDING):
            raise _stale(path, f"its last epoch's {column} is {last[column]:.6g}, but {Path(run_path).name} says "
                               f"{run[key]:.6g}: from another run", "train")
    return history


def read_best_of_run(path, run_path, run: dict) -> dict:
    """best.json (`read_best`), with the lr and epochs the run.json beside it trained with."""
    best = read_best(path)
    require(path, best, "source", lambda v: isinstance(v, str), "a string ('tuned', 'paper')", "tune")
    lr, epochs = run.get("lr", best["lr"]), run.get("epochs", best["epochs"])
    if _differs(lr, best["lr"], ROUNDING) or epochs != best["epochs"]:
        raise _stale(run_path, f"trained at lr {lr:.6g} for {epochs} epochs, but {path} says lr {best['lr']:.6g} for "
                               f"{best['epochs']}: tuned again since, or from another run", "train")
    return best


def _classes(names) -> str:
    names = [str(n) for n in names]
    return ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")


def read_confusion(path, metrics_path, m: dict) -> pd.DataFrame:
    """confusion.csv as evaluate writes it: square, the same classes on both axes, whole counts that add
    up to metrics.json's images, its diagonal giving metrics.json's accuracy (and per-class accuracy)."""
    raw = read_csv(path, "evaluate", dtype=str, keep_default_na=False)  # class names as written ('NA' too)
    classes, rows = [str(c) for c in raw.columns[1:]], raw.iloc[:, 0].astype(str).tolist()
    if rows != classes:
        raise _stale(path, f"its rows ({_classes(rows)}) are not its columns ({_classes(classes)}): not a "
                           "confusion matrix", "evaluate")
    counts = raw.iloc[:, 1:].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    bad = np.argwhere(~(np.isfinite(counts) & (counts >= 0) & (counts == np.round(counts))))
    if len(bad):
        i, j = bad[0]
        raise _stale(path, f"the count of class {rows[i]!r} predicted as {classes[j]!r} is "
                           f"{raw.iat[i, j + 1] or 'empty'}: it must be a whole number >= 0", "evaluate")
    counts = counts.astype(np.int64)
    require(metrics_path, m, "images", *COUNT, "evaluate")
    name = Path(metrics_path).name
    if counts.sum() != m["images"]:
        raise _stale(path, f"counts {counts.sum()} images, but {name} says {m['images']}: truncated or from another "
                           "run", "evaluate")
    accuracy = 100 * np.trace(counts) / counts.sum()
    if _differs(accuracy, m["accuracy"], ROUNDING):
        raise _stale(path, f"its diagonal gives an accuracy of {accuracy:.4f}%, but {name} says "
                           f"{m['accuracy']:.4f}%: from another run", "evaluate")
    per_class = m.get("per_class_accuracy")
    if per_class is not None:
        found = dict(zip(classes, 100 * np.diag(counts) / np.maximum(counts.sum(axis=1), 1)))
        wrong = sorted(set(per_class) ^ set(found)) or [c for c in classes if abs(found[c] - per_class[c]) > 1e-3]
        if wrong:  # evaluate rounds it to 4 decimals
            c = wrong[0]
            here = f"{found[c]:.4f}" if c in found else "no class"
            raise _stale(path, f"the per-class accuracy of class {c!r} is {per_class.get(c, 'missing')} in {name}, "
                               f"{here} from these counts: from another run", "evaluate")
    return pd.DataFrame(counts, index=pd.Index(classes, name=raw.columns[0]), columns=classes)


def read_predictions(path, metrics_path, m: dict, confusion_path=None,
                     confusion: pd.DataFrame | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """predictions.csv as evaluate writes it: a row per test image (metrics.json's images), labels among
    the classes, giving metrics.json's accuracy and loss (and the confusion matrix's counts). Returns,
    per image, whether it was answered right, and its loss (None without a loss column)."""
    frame = read_csv(path, "evaluate", columns=("actual", "predicted"), dtype={"actual": str, "predicted": str},
                     keep_default_na=False)
    require(metrics_path, m, "images", *COUNT, "evaluate")
    name = Path(metrics_path).name
    if len(frame) != m["images"]:
        raise _stale(path, f"{len(frame)} rows, but {name} says {m['images']} test images: truncated or from "
                           "another run", "evaluate")
    classes = list(confusion.columns) if confusion is not None else list(m.get("per_class_accuracy") or [])
    for column in ("actual", "predicted"):
        labels = frame[column]
        bad = labels.isna() | (labels == "") | (~labels.isin(classes) if classes else False)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise _stale(path, f"'{column}' is {labels.iloc[row]!r} at row {row + 1}: not one of the classes"
                               + (f" ({_classes(classes)})" if classes else ""), "evaluate")
    correct = (frame["actual"] == frame["predicted"]).to_numpy()
    if _differs(100 * correct.mean(), m["accuracy"], ROUNDING):
        raise _stale(path, f"its rows give an accuracy of {100 * correct.mean():.4f}%, but {name} says "
                           f"{m['accuracy']:.4f}%: edited or from another run", "evaluate")
    losses = None
    if "loss" in frame:  # per-image cross-entropy, where evaluate writes it
        losses = pd.to_numeric(frame["loss"], errors="coerce").to_numpy(float)
        bad = ~(np.isfinite(losses) & (losses >= 0))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise _stale(path, f"'loss' is {str(frame['loss'].iloc[row]) or 'empty'} at row {row + 1}: it must be a "
                               "finite number "
                               ">= 0", "evaluate")
        if _differs(losses.mean(), m["loss"], LOSS_ROUNDING):
            raise _stale(path, f"the mean of its losses is {losses.mean():.6g}, but {name} says {m['loss']:.6g}: "
                               "edited or from another run", "evaluate")
    if confusion is not None:
        counts = pd.crosstab(frame["actual"], frame["predicted"]).reindex(index=classes, columns=classes, fill_value=0)
        if (counts.to_numpy() != confusion.to_numpy()).any():
            raise _stale(path, f"its rows do not give the counts of {confusion_path}: one of them is from another run",
                         "evaluate")
    return correct, losses


def read_verify(path, model: str | None) -> dict:
    """results/<dataset>/verify/<model>.json as verify writes it (for `model`, where known)."""
    v = read_json_object(path, "verify")
    require(path, v, "model", lambda x: isinstance(x, str) and x == (model or x),
            "a model's name" + (f", {model!r}" if model else ""), "verify")

    def flags(*keys):  # a list of objects, each with these keys true or false
        return lambda rows: isinstance(rows, list) and all(
            isinstance(r, dict) and all(isinstance(r.get(k), bool) for k in keys) for r in rows)

    require(path, v, "modules", flags("nan", "inf"), "a list of modules with 'nan' and 'inf' true or false", "verify")
    require(path, v, "gradients", flags("finite", "all_zero"),
            "a list of parameters with 'finite' and 'all_zero' true or false", "verify")
    require(path, v, "reference", lambda rows: isinstance(rows, list) and all(
        isinstance(r, dict) and finite(r.get("max_abs_diff")) and finite(r.get("cosine")) for r in rows),
            "a list of checks with a finite 'max_abs_diff' and 'cosine'", "verify")
    require(path, v, "expected_zero_grad", lambda x: isinstance(x, list) and all(isinstance(n, str) for n in x),
            "a list of parameter names", "verify")
    require(path, v, "passed", lambda x: isinstance(x, bool), "true or false", "verify")
    return v
