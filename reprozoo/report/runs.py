"""Every model's results over its seeds, read through reprozoo/results.py (each file checked)."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from reprozoo import stats
from reprozoo.progress import no_progress
from reprozoo.results import (read_best_of_run, read_confusion, read_metrics, read_predictions, read_run,
                              read_run_history)

METRICS = {"accuracy": 100.0, "loss": 1.0}  # the metrics with an interval: per-image mean -> the metric's unit


class Results:
    """Per-model results over seeds: metrics, runs, histories, tuned hparams."""

    def __init__(self, models, metrics_paths, run_paths, best_paths, history_paths, confusion_paths=(),
                 predictions_paths=()):
        self.order: list[str] = list(dict.fromkeys(models))
        self.metrics, self.runs, self.histories, self.confusions = (defaultdict(list) for _ in range(4))
        self.per_image = defaultdict(lambda: defaultdict(list))  # model -> metric -> per seed, a value per test image
        self.best = {}
        confusion_paths = list(confusion_paths) or [None] * len(models)
        predictions_paths = list(predictions_paths) or [None] * len(models)
        for name, m, r, b, h, c, p in zip(models, metrics_paths, run_paths, best_paths, history_paths,
                                          confusion_paths, predictions_paths):
            # every file checked (above) before any number is computed from it
            metrics, run = read_metrics(m, name), read_run(r, name)
            self.metrics[name].append(metrics)
            self.runs[name].append(run)
            self.histories[name].append(read_run_history(h, r, run).assign(seed=run["seed"]))
            confusion = None if c is None else read_confusion(c, m, metrics)
            if confusion is not None:
                self.confusions[name].append(confusion)
            if p is not None:
                correct, losses = read_predictions(p, m, metrics, c, confusion)
                self.per_image[name]["accuracy"].append(correct)
                if losses is not None:
                    self.per_image[name]["loss"].append(losses)
            self.best[name] = read_best_of_run(b, r, run)
        seeds = [run.get("seed") for runs in self.runs.values() for run in runs if run.get("seed") is not None]
        self.seed = min(seeds, default=0)  # the config's seed (runs use seed, seed+1, ...): seeds every bootstrap

    def seeds(self, name: str) -> list:
        return [run.get("seed") for run in self.runs[name]]

    def interval(self, name: str, key: str) -> stats.Interval:
        """The metric's 95% interval (reprozoo/stats.py): test images (bootstrap) and seeds."""
        per_image = self.per_image[name][key] if name in self.per_image else []
        return stats.interval(self.values(name, key), per_image, self.seed, METRICS[key])

    def values(self, name: str, key: str) -> np.ndarray:
        return np.array([m[key] for m in self.metrics[name]], dtype=float)

    def mean_std(self, name: str, key: str) -> tuple[float, float | None]:
        v = self.values(name, key)
        return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else None)

    def no_progress(self, name: str) -> str | None:
        """Why the model's test numbers are no result (the first seed that made no
        progress), else None. Class sizes come from the confusion matrix; without
        one, from per_class_accuracy and images as an even split (the commonest
        class is at least that large, so this can only flag less)."""
        for i, (m, run) in enumerate(zip(self.metrics[name], self.runs[name])):
            if self.confusions[name]:
                counts = self.confusions[name][i].to_numpy().sum(axis=1)
            elif m.get("per_class_accuracy") and m.get("images"):
                k = len(m["per_class_accuracy"])
                counts = np.full(k, m["images"] / k)
            else:
                continue  # neither: the number of classes is unknown
            found = no_progress(m["loss"], m["accuracy"], counts, "test")
            if found is not None:
                return f"seed {run.get('seed', '?')}: {found[0]}"
        return None
