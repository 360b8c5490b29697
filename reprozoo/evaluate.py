"""`evaluate`: test loss, accuracy, per-class accuracy, confusion matrix and each test
image's prediction (what `dvc plots` draws its confusion matrix from) of a trained
model, plus the same metrics on optional extra test sets (imagefolder trees)."""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, recall_score

from reprozoo.data import DataError, load_arrays, model_inputs
from reprozoo.engine import Runner, Tensors
from reprozoo.images import read_imagefolder
from reprozoo.io import load_weights, write_csv, write_json
from reprozoo.models import create_model
from reprozoo.models.pretrained import backbone_features

log = logging.getLogger("reprozoo.evaluate")


def scores(runner: Runner, data: Tensors) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """Test metrics, and per image: the true class, the predicted one, the loss."""
    losses, logits = runner.predict(data)
    y_true, y_pred = data.y.cpu().numpy(), logits.argmax(1).numpy()
    return {"loss": losses.mean().item(), "accuracy": 100 * accuracy_score(y_true, y_pred),
            "images": len(y_true)}, y_true, y_pred, losses.double().numpy()


def evaluate(cfg: dict, data_path, weights_path, metrics_path, confusion_path, device,
             extra_tests: dict[str, str] | None = None, features_path=None, predictions_path=None) -> dict:
    arrays = model_inputs(cfg, data_path, features_path)
    classes = [str(c) for c in arrays["classes"]]
    labels = list(range(len(classes)))
    model = load_weights(create_model(cfg["arch"], len(classes), **cfg["args"]), weights_path, device)
    runner = Runner(model, cfg, device)

    test = Tensors.from_numpy(arrays["x_test"], arrays["y_test"], device)
    metrics, y_true, y_pred, losses = scores(runner, test)
    if not math.isfinite(metrics["loss"]):  # before any output: junk is no result
        raise DataError(f"{weights_path}: the test loss is {metrics['loss']}: the model's outputs are not finite; "
                        "retrain")
    per_class = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0) * 100
    metrics["per_class_accuracy"] = dict(zip(classes, per_class.round(4).tolist()))
    metrics["model"] = cfg["name"]

    metrics["extra"] = {}
    if extra_tests:  # extra images are stored at the dataset's size (a probe's arrays hold features)
        size = (load_arrays(data_path) if cfg.get("backbone") else arrays)["x_test"].shape[1]
    for name, root in sorted((extra_tests or {}).items()):
        x, y, _ = read_imagefolder(Path(root), "test", size, classes)
        data = Tensors.from_numpy(x, y, device)
        if cfg.get("backbone"):  # a probe: the backbone runs once over the extra images, as cache_features does
            features = backbone_features(cfg["backbone"], cfg["normalize"], {name: data}, device)[name]
            data = Tensors(features.to(device), data.y)
        extra, _, _, _ = scores(runner, data)
        metrics["extra"][name] = extra
        log.info("%s on extra test set %s: acc %.2f%% loss %.4f", cfg["name"], name, extra["accuracy"], extra["loss"])

    cm = confusion_matrix(y_true, y_pred, labels=labels)
    write_csv(confusion_path, pd.DataFrame(cm, index=pd.Index(classes, name="true"), columns=classes))
    if predictions_path is not None:  # one row per test image, in test-set order: the report's bootstrap
        names = np.array(classes)
        write_csv(predictions_path, pd.DataFrame({"actual": names[y_true], "predicted": names[y_pred], "loss": losses}),
                  index=False)
    write_json(metrics_path, metrics)
    log.info("%s: test acc %.2f%% loss %.4f", cfg["name"], metrics["accuracy"], metrics["loss"])
    return metrics
