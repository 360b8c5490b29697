"""`report`: every reproduced number beside the reported one, with a verdict.

Writes, for one dataset:
- comparison.csv: one row per model (mean over seeds), deviation in points and %;
- verdicts.csv: per model and metric, reproduced vs reported, its 95% interval and the verdict
  (reproduced within 5% / deviates / inconclusive: the interval is wider than the 5% /
  not comparable / no progress);
- claims.csv: each of the study's claims (config `study.claims`) checked on our runs with a
  paired test on the same test images (reprozoo/stats.py): supported / contradicted /
  inconclusive / not comparable / not testable;
- ablations.csv: each variant beside its base and, where reported, the paper;
- verification.csv: the module verifier's summary per model;
- summary.json: the study in six numbers (models; how many reproduced the reported accuracy,
  deviate from it (or made no progress), are inconclusive or not comparable; their mean test
  accuracy): DVC's metrics, few enough that `dvc metrics show` and `dvc exp show` fit a terminal;
- comparison.md: all of the above plus the paper spec, for people;
- figures: training curves (all seeds, with the test accuracy's 95% band), confusion
  matrices, the accuracy chart (95% intervals; each ablation hatched beside its base model;
  the study's CIFAR-10 bars only beside CIFAR-10 runs); each as PNG and as a PDF twin for papers
  (`reprozoo.io.save_figure`, through which the attention and samples stages write theirs too).

A model whose test numbers show no progress on any seed (loss exploded, or
accuracy at chance: `reprozoo.progress.no_progress`, the rule the train stage
enforces) is flagged NO PROGRESS: its accuracy and loss are never a verdict.
"""
from __future__ import annotations

import logging
import re
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from reprozoo import stats  # noqa: E402
from reprozoo.errors import ConfigError  # noqa: E402
from reprozoo.io import fmt_duration, read_csv, save_figure, write_csv, write_json, write_text  # noqa: E402
from reprozoo.progress import no_progress  # noqa: E402
from reprozoo.results import (read_best_of_run, read_confusion, read_metrics, read_predictions,  # noqa: E402
                              read_run, read_run_history, read_verify)

log = logging.getLogger("reprozoo.report")

TOLERANCE_PCT = 5.0  # the methodology's threshold: a metric more than 5% (relative) off deviates


def deviation(reproduced: float, reported: float | None) -> tuple[float | None, float | None, str]:
    """Difference in points, in percent of the reported value, and the flag."""
    if reported is None:
        return None, None, "no reported value"
    points = reproduced - reported
    percent = 100 * points / reported if reported else float("inf")
    return points, percent, ("DEVIATES" if abs(percent) > TOLERANCE_PCT else "ok")


def verdict(reproduced: float, reported: float | None, not_comparable: str | None = None,
            stuck: str | None = None, interval: stats.Interval | None = None) -> str:
    """no progress (why: the run is no result) / reproduced (within tolerance) / deviates
    (flagged) / inconclusive (our 95% interval is wider than the tolerance: it cannot tell the
    two apart) / not comparable (why)."""
    if stuck:
        return f"NO PROGRESS ({stuck})"
    if reported is None:
        return "not comparable (no reported value)"
    if not_comparable:
        return f"not comparable ({not_comparable})"
    if interval is not None and interval.half_width is not None and reported:
        relative = 100 * interval.half_width / abs(reported)
        if relative > TOLERANCE_PCT:
            return f"inconclusive (95% interval ±{relative:.1f}% of the reported value, wider than {TOLERANCE_PCT:g}%)"
    return "reproduced" if deviation(reproduced, reported)[2] == "ok" else "DEVIATES"


def summarise(verdicts: pd.DataFrame, table: pd.DataFrame) -> dict:
    """summary.json: per verdict on test accuracy, how many models got it; their mean accuracy."""
    accuracy = verdicts.loc[verdicts["metric"] == "accuracy", "verdict"].astype(str)
    # Six short keys: `dvc metrics show` prints them as one row of columns, within 120.
    return {"models": len(accuracy), "reproduced": int((accuracy == "reproduced").sum()),
            "deviates": int(accuracy.str.startswith(("DEVIATES", "NO PROGRESS")).sum()),  # off by > 5%, or junk
            "inconclusive": int(accuracy.str.startswith("inconclusive").sum()),
            "not_comparable": int(accuracy.str.startswith("not comparable").sum()),
            "accuracy": round(float(pd.to_numeric(table["accuracy"], errors="coerce").mean()), 2)}


def parse_duration(text: str | None) -> float | None:
    """'2m51s' / '265m' / '1h2m3s' -> seconds."""
    if not text:
        return None
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", text)
    if not parts:
        return None
    return sum(float(v) * {"h": 3600, "m": 60, "s": 1}[u] for v, u in parts)



def _pm(mean: float, std: float | None, digits: int) -> str:
    return f"{mean:.{digits}f}" if not std else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _ci(low, high, digits: int) -> str:
    return "" if low is None or pd.isna(low) else f"[{low:.{digits}f}, {high:.{digits}f}]"


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


def _labels(run: dict) -> str:
    """'all', or 'labelled/train images' when only some training labels were used."""
    labelled, images = run.get("labelled_images"), run.get("train_images")
    return "all" if labelled is None or labelled == images else f"{labelled:,}/{images:,}"


def build_table(dataset: dict, res: Results, papers: dict, models: list[str],
                stuck: dict[str, str | None] | None = None, intervals: dict | None = None) -> pd.DataFrame:
    """`stuck`: per model, why its test numbers show no progress (`Results.no_progress`);
    `intervals`: per (model, metric), its 95% interval (`Results.interval`)."""
    rows = []
    intervals = intervals or {}
    for name in models:
        paper, run = papers.get(name, {}), res.runs[name][0]
        acc, acc_std = res.mean_std(name, "accuracy")
        loss, _ = res.mean_std(name, "loss")
        points, percent, flag = deviation(acc, paper.get("accuracy"))
        setting = run.get("setting_deviations", [])
        acc_ci, loss_ci = intervals.get((name, "accuracy")), intervals.get((name, "loss"))
        if (stuck or {}).get(name):
            flag = "NO PROGRESS"
        elif points is not None and not dataset["paper_dataset"]:
            flag = f"not comparable ({dataset['name']})"
        elif points is not None and setting:
            flag = "not comparable (setting)"
        elif points is not None and verdict(acc, paper["accuracy"], interval=acc_ci).startswith("inconclusive"):
            flag = "inconclusive"
        best = res.best[name]
        row = {
            "model": name,
            "params": run["params"],
            "labels": _labels(run),
            "paper_accuracy": paper.get("accuracy"),
            "accuracy": round(acc, 2),
            "accuracy_std": None if acc_std is None else round(acc_std, 2),
            "accuracy_low": None if acc_ci is None or acc_ci.low is None else round(acc_ci.low, 2),
            "accuracy_high": None if acc_ci is None or acc_ci.high is None else round(acc_ci.high, 2),
            "seeds": len(res.metrics[name]),
            "diff_points": None if points is None else round(points, 2),
            "diff_percent": None if percent is None else round(percent, 2),
            "flag": flag,
            "setting": "; ".join(setting) or "paper's",
            "paper_loss": paper.get("loss"),
            "loss": round(loss, 4),
            "loss_low": None if loss_ci is None or loss_ci.low is None else round(loss_ci.low, 4),
            "loss_high": None if loss_ci is None or loss_ci.high is None else round(loss_ci.high, 4),
            "lr": float(f"{best['lr']:.4g}"),
            "epochs": best["epochs"],
            "hparams": best["source"],
            "train_time": fmt_duration(np.mean([r["duration_s"] for r in res.runs[name]])),
            "paper_time": paper.get("time", ""),
            "device": run["hardware"],
        }
        for extra_name in sorted(res.metrics[name][0].get("extra", {})):
            row[f"accuracy_{extra_name}"] = round(
                float(np.mean([m["extra"][extra_name]["accuracy"] for m in res.metrics[name]])), 2)
        rows.append(row)
    return pd.DataFrame(rows)


def build_verdicts(dataset: dict, res: Results, papers: dict, models: list[str],
                   stuck: dict[str, str | None] | None = None, intervals: dict | None = None) -> pd.DataFrame:
    """Every metric with a reported value: reproduced (mean over seeds) vs reported.
    `stuck`: per model, why its test numbers show no progress: then accuracy and loss get no verdict.
    `intervals`: per (model, metric), its 95% interval: the verdict says whether the reported
    value lies inside it, and is `inconclusive` where it is wider than the tolerance."""
    rows = []
    intervals = intervals or {}
    for name in models:
        paper, run = papers.get(name, {}), res.runs[name][0]
        setting = "setting: " + "; ".join(run["setting_deviations"]) if run.get("setting_deviations") else None
        why = (None if dataset["paper_dataset"] else f"dataset {dataset['name']}") or setting
        no_result = (stuck or {}).get(name)
        metrics = {
            "accuracy": (res.values(name, "accuracy"), paper.get("accuracy"), why, no_result),
            "loss": (res.values(name, "loss"), paper.get("loss"), why, no_result),
            "params": (np.array([run["params"]], float), paper.get("params"), setting, None),
            "train_time_s": (np.array([r["duration_s"] for r in res.runs[name]], float),
                             parse_duration(paper.get("time")), f"hardware: {run['hardware']} vs {paper.get('device')}",
                             None),
        }
        for metric, (values, reported, not_comparable, stuck_why) in metrics.items():
            mean = float(values.mean())
            std = float(values.std(ddof=1)) if len(values) > 1 else None
            points, percent, _ = deviation(mean, reported)
            within = (None if reported is None or len(values) < 2
                      else bool(values.min() <= reported <= values.max()))
            ci = intervals.get((name, metric))
            has_ci = ci is not None and ci.low is not None
            digits = 2 if metric == "accuracy" else 4
            rows.append({"model": name, "metric": metric, "reproduced": round(mean, 4),
                         "reproduced_std": None if std is None else round(std, 4), "seeds": len(values),
                         "interval_low": round(ci.low, digits) if has_ci else None,
                         "interval_high": round(ci.high, digits) if has_ci else None,
                         "interval_from": ci.source if has_ci else None,
                         "reported": reported, "diff": None if points is None else round(points, 4),
                         "diff_percent": None if percent is None else round(percent, 2),
                         "reported_within_seed_spread": within,
                         "reported_in_interval": ci.contains(reported) if has_ci else None,
                         "verdict": verdict(mean, reported, not_comparable, stuck_why, ci)})
    return pd.DataFrame(rows)


def build_ablations(res: Results, papers: dict, ablations: dict) -> pd.DataFrame:
    rows = []
    for name, spec in ablations.items():
        if name not in res.metrics or spec["base"] not in res.metrics:
            continue
        acc, acc_std = res.mean_std(name, "accuracy")
        base_acc, _ = res.mean_std(spec["base"], "accuracy")
        loss, _ = res.mean_std(name, "loss")
        paper, base_paper = papers.get(name, {}), papers.get(spec["base"], {})
        paper_acc = paper.get("accuracy")
        rows.append({
            "variant": name, "base": spec["base"], "what": spec.get("what", ""),
            "accuracy": round(acc, 2), "accuracy_std": None if acc_std is None else round(acc_std, 2),
            "base_accuracy": round(base_acc, 2), "diff_vs_base": round(acc - base_acc, 2),
            "loss": round(loss, 4), "paper_accuracy": paper_acc, "paper_loss": paper.get("loss"),
            "paper_diff_vs_base": (None if paper_acc is None or base_paper.get("accuracy") is None
                                   else round(paper_acc - base_paper["accuracy"], 2)),
            "paper_notes": paper.get("notes", ""),
        })
    return pd.DataFrame(rows)


def build_verification(verify_paths, models: list[str] | None = None) -> pd.DataFrame:
    """The verify records, one per model (of `models`, in order, where given: the CLI's default paths)."""
    rows = []
    models = list(models) if models is not None and len(models) == len(verify_paths) else [None] * len(verify_paths)
    for path, model in zip(verify_paths, models):
        v = read_verify(path, model)
        refs = v["reference"]
        rows.append({
            "model": v["model"], "modules": len(v["modules"]),
            "nan_inf_modules": sum(m["nan"] or m["inf"] for m in v["modules"]),
            "params_with_grad": sum(g["finite"] and not g["all_zero"] for g in v["gradients"]),
            "trainable_params": len(v["gradients"]),
            "expected_zero_grad": ", ".join(v["expected_zero_grad"]) or "",
            "reference_checks": len(refs),
            "worst_max_abs_diff": max((r["max_abs_diff"] for r in refs), default=None),
            "worst_cosine": min((r["cosine"] for r in refs), default=None),
            "passed": v["passed"],
        })
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ the study's claims

ALPHA = 0.05  # each claim's significance level, split over its pairs (Bonferroni)
LR_RATIO = 2.0  # default `min_ratio` of an lr claim: one tuning search cannot separate closer lrs


def _models_of(claim: dict) -> list[str]:
    return list(dict.fromkeys([*claim.get("above", []), *claim.get("below", []), *claim.get("models", [])]))


def _not_comparable(dataset: dict, res: Results, claim: dict, stuck: dict, ablations: dict) -> list[str]:
    """Why the claim's models cannot speak for the study's (empty: they can). Short: the comparison
    table gives each model's setting in full."""
    models = _models_of(claim)
    ran = [m for m in models if m in res.metrics]
    missing = [m for m in models if m not in res.metrics]

    def own_setting(m):  # an ablation's own change is its point, not a departure from the paper
        own = set(ablations.get(m, {}).get("set", {}).get("args", {}))
        return [d for d in res.runs[m][0].get("setting_deviations", []) if d.split("=")[0] not in own]

    groups = [("did not run", missing), ("setting of", [m for m in ran if own_setting(m)]),
              ("no progress:", [m for m in ran if stuck.get(m)]),
              ("lr not tuned:", [m for m in ran if claim["check"] == "lr_above"
                                 and res.best[m].get("source") != "tuned"])]
    reasons = [f"{', '.join(ms)} did not run" if what == "did not run" else f"{what} {', '.join(ms)}"
               for what, ms in groups if ms]
    if not dataset["paper_dataset"]:
        reasons.insert(bool(missing), f"dataset {dataset['name']}")
    return reasons


def _correct(res: Results, name: str) -> list[np.ndarray]:
    return list(res.per_image[name]["accuracy"]) if name in res.per_image else []


def _pair_evidence(res: Results, a: str, b: str, seed: int) -> tuple[stats.Comparison | None, str]:
    ca, cb = _correct(res, a), _correct(res, b)
    if not ca or not cb:
        return None, f"{a} vs {b}: no predictions.csv"
    if {len(x) for x in ca + cb} != {len(ca[0])}:
        return None, f"{a} vs {b}: not the same test images"
    c = stats.compare(ca, cb, seed)
    return c, (f"{a} − {b}: {c.diff:+.2f} points [{c.low:+.2f}, {c.high:+.2f}], McNemar p = {c.p_value:.2g} "
               f"({c.a_only}/{c.b_only} images only one gets right)")


def _above(res: Results, claim: dict, seed: int) -> tuple[str, str]:
    pairs = [(a, b) for a in claim["above"] for b in claim["below"] if a != b]
    alpha, outcomes, evidence = ALPHA / len(pairs), [], []
    for a, b in pairs:
        c, text = _pair_evidence(res, a, b, seed)
        evidence.append(text)
        if c is None:
            outcomes.append("inconclusive")
        elif c.p_value < alpha and c.diff > 0 and all(d > 0 for d in c.seed_diffs):
            outcomes.append("supported")
        elif c.p_value < alpha and c.diff < 0 and all(d < 0 for d in c.seed_diffs):
            outcomes.append("contradicted")
        else:
            outcomes.append("inconclusive")
    found = ("contradicted" if "contradicted" in outcomes else
             "supported" if set(outcomes) == {"supported"} else "inconclusive")
    level = f"; level {alpha:.2g} per pair" if len(pairs) > 1 else ""
    return found, "; ".join(evidence) + level


def _similar(res: Results, claim: dict, seed: int) -> tuple[str, str]:
    a, b = claim["models"]
    margin = claim["margin"]
    c, text = _pair_evidence(res, a, b, seed)
    if c is None:
        return "inconclusive", text
    found = ("supported" if -margin <= c.low and c.high <= margin else
             "contradicted" if c.low > margin or c.high < -margin else "inconclusive")
    return found, f"{text}; similar = within ±{margin:g} points"


def _lr_above(res: Results, claim: dict) -> tuple[str, str]:
    ratio_needed, outcomes, evidence = claim.get("min_ratio", LR_RATIO), [], []
    for a in claim["above"]:
        for b in claim["below"]:
            ratio = res.best[a]["lr"] / res.best[b]["lr"]
            evidence.append(f"lr {a} / {b} = {ratio:.3g}")
            outcomes.append("supported" if ratio >= ratio_needed else
                            "contradicted" if ratio <= 1 / ratio_needed else "inconclusive")
    found = ("contradicted" if "contradicted" in outcomes else
             "supported" if set(outcomes) == {"supported"} else "inconclusive")
    return found, "; ".join(evidence) + f" (one tuning search each: a factor {ratio_needed:g} decides)"


def check_claims(dataset: dict, res: Results, claims: list[dict], stuck: dict | None = None,
                 ablations: dict | None = None) -> pd.DataFrame:
    """Each of the study's claims (config `study.claims`) against our runs: supported, contradicted,
    inconclusive (the paired test cannot tell), not comparable (a model did not run, or ran on
    another dataset or in another setting: never supported) or not testable (the claim's `why`).
    The evidence (differences, intervals, p-values) is shown wherever the runs allow, even when
    the verdict is not comparable."""
    rows = []
    for claim in claims:
        check, models = claim["check"], _models_of(claim)
        if check == "untestable":
            found, evidence = f"not testable ({claim['why']})", ""
        else:
            reasons = _not_comparable(dataset, res, claim, stuck or {}, ablations or {})
            ran = all(m in res.metrics for m in models)
            found, evidence = (("", "") if not ran else
                               _above(res, claim, res.seed) if check == "accuracy_above" else
                               _similar(res, claim, res.seed) if check == "accuracy_similar" else
                               _lr_above(res, claim))
            if reasons:
                found = f"not comparable ({'; '.join(reasons)})"
        rows.append({"claim": claim["id"], "says": claim["says"], "check": check, "models": ", ".join(models),
                     "verdict": found, "evidence": evidence, "where": claim.get("where", "")})
    return pd.DataFrame(rows, columns=["claim", "says", "check", "models", "verdict", "evidence", "where"])


# ------------------------------------------------------------------ figures

def plot_curves(name: str, history: pd.DataFrame, paper_accuracy: float | None, path: Path,
                images: int | None = None) -> None:
    """The study's two-panel figure: losses on the left, test accuracy on the right (one line per seed),
    with each epoch's 95% interval over the `images` test images (binomial, normal approximation)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(7, 3.6))
    seeds = sorted(history["seed"].unique()) if "seed" in history else [None]
    for i, seed in enumerate(seeds):
        h = history if seed is None else history[history["seed"] == seed]
        tag, alpha = ("" if len(seeds) == 1 else f" (seed {seed})"), (1.0 if i == 0 else 0.45)
        ax1.plot(h["epoch"], h["train_loss"], marker="o", color="tab:blue", alpha=alpha, label=f"train loss{tag}")
        ax1.plot(h["epoch"], h["test_loss"], marker="o", color="tab:green", alpha=alpha, label=f"test loss{tag}")
        ax2.plot(h["epoch"], h["test_accuracy"], marker="o", color="tab:orange", alpha=alpha,
                 label=f"test accuracy{tag}")
        if images:
            p = h["test_accuracy"].to_numpy(float) / 100
            half = 100 * stats.Z95 * np.sqrt(p * (1 - p) / images)
            label = f"95% interval, {images:,} test images" if i == 0 else None
            if len(h) > 1:
                ax2.fill_between(h["epoch"], np.clip(h["test_accuracy"] - half, 0, 100),
                                 np.clip(h["test_accuracy"] + half, 0, 100),
                                 color="tab:orange", alpha=0.2 * alpha, linewidth=0, label=label)
            else:  # one epoch: a band has no width, so an error bar
                ax2.errorbar(h["epoch"], h["test_accuracy"], yerr=half, fmt="none", ecolor="tab:orange",
                             alpha=alpha, capsize=4, label=label)
    ax1.set(title=f"{name}: loss", xlabel="epoch", ylabel="cross-entropy")
    if paper_accuracy is not None:
        ax2.axhline(paper_accuracy, ls="--", color="gray", label=f"paper (CIFAR-10, P100): {paper_accuracy:.2f}%")
    ax2.set(title=f"{name}: test accuracy", xlabel="epoch", ylabel="accuracy (%)")
    first, last = history["epoch"].min(), history["epoch"].max()
    for ax in (ax1, ax2):
        ax.set_xlim(first - 0.5, last + 0.5)  # one epoch: a point on its integer tick, not on a 0.95-1.05 axis
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # epochs
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)  # off the data
    fig.tight_layout()
    save_figure(fig, path)


def plot_confusion(name: str, confusion: pd.DataFrame, path: Path) -> None:
    rates = confusion.div(confusion.sum(axis=1).replace(0, 1), axis=0) * 100
    # each true class's image count on its label: a row's percentages are as sure as its n allows
    rates.index = [f"{c} (n={n})" for c, n in zip(confusion.index, confusion.sum(axis=1))]
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    sns.heatmap(rates, annot=True, fmt=".0f", cmap="Blues", vmin=0, vmax=100, cbar_kws={"label": "% of true class"},
                ax=ax, annot_kws={"fontsize": 7})  # the numbers are what the colour shows: row %
    # two lines: a long model name on one line would run past the figure's edge
    ax.set(title=f"{name}: confusion matrix\ntest, % of each true class; n = {int(confusion.values.sum())}",
           xlabel="predicted", ylabel="true")
    fig.tight_layout()
    save_figure(fig, path)


def ablation_chart_rows(dataset: dict, ablation_table: pd.DataFrame, intervals: dict | None = None) -> pd.DataFrame:
    """The accuracy chart's rows for the ablations (from `build_ablations`): model, base, accuracies
    (with the 95% interval from `intervals`, where given) and a flag. An ablation's paper number,
    where the study gives one, is for the ablation's own setting, so only the dataset can make it
    not comparable (the comparison table's rule)."""
    columns = ["model", "base", "paper_accuracy", "accuracy", "accuracy_low", "accuracy_high", "flag"]
    if not len(ablation_table):
        return pd.DataFrame(columns=columns)
    rows = ablation_table.rename(columns={"variant": "model"})[["model", "base", "paper_accuracy", "accuracy"]]
    found = [(intervals or {}).get((m, "accuracy")) for m in rows["model"]]
    rows = rows.assign(accuracy_low=[None if c is None else c.low for c in found],
                       accuracy_high=[None if c is None else c.high for c in found])
    shown = rows["paper_accuracy"].notna() & (not dataset["paper_dataset"])
    return rows.assign(flag=np.where(shown, f"not comparable ({dataset['name']})", "ok"))[columns]


def plot_accuracy(table: pd.DataFrame, dataset: str, path: Path, ablations: pd.DataFrame | None = None,
                  paper_dataset: bool = True) -> None:
    """Test accuracy per model of the comparison table, one row each (horizontal bars: the names stay
    legible at a 7-inch text width), each model's ablations (`ablation_chart_rows`) hatched right
    below it, every reproduced bar with its 95% interval (`accuracy_low`/`accuracy_high`). The
    study's CIFAR-10 bar stands beside the reproduced one only when `paper_dataset` (the run is on
    CIFAR-10): another dataset's accuracy is never drawn beside the study's as if comparable. On
    CIFAR-10, rows the table (or the same rule, for an ablation) calls not comparable are starred."""
    base_of = {} if ablations is None else dict(zip(ablations["model"], ablations["base"]))
    rows = pd.concat([table, ablations], ignore_index=True) if base_of else table
    order = [n for m in table["model"] for n in [m, *(a for a, b in base_of.items() if b == m)]]
    order += [a for a in base_of if a not in order]  # an ablation whose base is not in the table
    rows = rows.set_index("model", drop=False).loc[order]

    gap = 0.5  # between a model (with its ablations) and the next one: groups them
    y = np.arange(len(rows)) + gap * np.cumsum([i > 0 and m not in base_of for i, m in enumerate(order)])
    paper = pd.to_numeric(rows["paper_accuracy"], errors="coerce").to_numpy() if paper_dataset \
        else np.full(len(rows), np.nan)
    ours = pd.to_numeric(rows["accuracy"], errors="coerce").to_numpy()
    low = pd.to_numeric(rows.get("accuracy_low", pd.Series(np.nan, index=rows.index)), errors="coerce").to_numpy()
    high = pd.to_numeric(rows.get("accuracy_high", pd.Series(np.nan, index=rows.index)), errors="coerce").to_numpy()
    pair = ~np.isnan(paper) & ~np.isnan(ours)
    height = 0.4 if pair.any() else 0.6
    offset = np.where(pair, height / 2, 0.0)  # a lone bar sits on its tick, a pair straddles it
    colors = [sns.desaturate(c, 0.75) for c in sns.color_palette(n_colors=2)]
    hatch = np.array(["//" if m in base_of else "" for m in order])

    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.3 * (y[-1] + 1) * (1.5 if pair.any() else 1)), layout="constrained")
    for values, at, color, label in ((paper, y - offset, colors[0], "paper (CIFAR-10, P100)"),
                                     (ours, y + offset, colors[1], f"reproduced ({dataset})")):
        shown = ~np.isnan(values)
        if not shown.any():
            continue
        bars = ax.barh(at[shown], values[shown], height, color=color, label=label, edgecolor="white",
                       linewidth=0.8, hatch=list(hatch[shown]))
        ends = values.copy()
        if values is ours:
            has_ci = shown & ~np.isnan(low)
            if has_ci.any():
                ax.errorbar(ours[has_ci], at[has_ci], xerr=[ours[has_ci] - low[has_ci], high[has_ci] - ours[has_ci]],
                            fmt="none", ecolor="black", elinewidth=0.8, capsize=2, label="95% interval")
                ends = np.where(has_ci, np.fmax(high, ours), ours)
        for bar, end, value in zip(bars, ends[shown], values[shown]):
            ax.text(end + 1, bar.get_y() + bar.get_height() / 2, f"{value:.1f}", va="center", fontsize=7)

    marked = (rows["flag"].astype(str).str.startswith("not comparable").to_numpy() & paper_dataset)
    labels = [m + (" *" if mark else "") + (f" (ablation of {base_of[m]})" if m in base_of else "")
              for m, mark in zip(order, marked)]
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()  # the table's order, top to bottom
    ax.set_ylim(y[-1] + 0.6 + (height / 2 if pair.any() else 0), y[0] - 0.6 - (height / 2 if pair.any() else 0))
    ax.set_xlim(0, 112)
    ax.set_xticks(range(0, 101, 20))
    ax.tick_params(axis="x", labelsize=8)
    ax.set_xlabel("test accuracy (%)", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    handles = ax.get_legend_handles_labels()[0]
    if base_of:
        handles.append(Patch(facecolor="white", edgecolor="dimgray", hatch="//", label="ablation (below its base)"))
    fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 4), frameon=False, fontsize=8)
    # no title: a paper's caption says what the figure shows (workflow/report/accuracy.rst)
    notes = []
    if marked.any():
        notes.append("* not comparable with the paper (its setting differs; see the table)")
    if not paper_dataset:
        notes.append(f"The study's CIFAR-10 accuracies are not drawn: {dataset} is another dataset (see the table).")
    if notes:
        fig.supxlabel("\n".join(notes), fontsize=7, color="dimgray", x=0.01, ha="left")
    save_figure(fig, path)


# ------------------------------------------------------------------ markdown

def claims_md(claims: pd.DataFrame) -> list[str]:
    """The claims section: the testable claims' table, then the untestable ones with their reasons."""
    lines = ["## The study's claims", ""]
    if not len(claims):
        return lines + ["_none listed (config `study.claims`)_", ""]
    untestable = claims["check"] == "untestable"
    lines += ["Each claim of the study our runs can test, checked with a paired test on the same test images "
              "(accuracy: McNemar's exact test and a paired-bootstrap 95% interval of the difference, "
              f"level {ALPHA:g} split over a claim's pairs, the direction required on every seed; "
              "lr: the tuned lrs' ratio). `not comparable`: a model did not run, or ran on another dataset or "
              "in another setting; the evidence is then shown for information only.", ""]
    lines += [_md_table(claims.loc[~untestable, ["claim", "says", "verdict", "evidence"]]), ""]
    if untestable.any():
        lines += ["What the study claims that our runs cannot test:", ""]
        lines += [f"- **{r.claim}**: {r.says}. Why not: {r.verdict[len('not testable ('):-1].rstrip('.')}."
                  for r in claims[untestable].itertuples()] + [""]
    return lines


def _cell(v):
    if isinstance(v, float):
        if np.isnan(v):
            return ""
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else f"{v:.4g}"
    return "" if v is None else str(v)


def _md_table(frame: pd.DataFrame) -> str:
    if not len(frame):
        return "_none_"
    return frame.astype(object).map(_cell).to_markdown(index=False, disable_numparse=True)


# The comparison table's columns for a terminal: (column, heading); the files keep them all.
COMPACT = [("model", "model"), ("accuracy", "acc %"), ("paper_accuracy", "paper"), ("diff_percent", "diff %"),
           ("flag", "verdict"), ("loss", "loss"), ("paper_loss", "paper"), ("lr", "lr"), ("epochs", "epochs"),
           ("train_time", "time")]


def compact_table(table_csv_path) -> str:
    """comparison.csv for a 120-column terminal: accuracy and loss beside the paper's, the verdict,
    the lr and epochs trained with (`python -m reprozoo table`, the end of `make demo`)."""
    table = read_csv(table_csv_path, "report", columns=("model", "flag"))
    shown = table[[c for c, _ in COMPACT if c in table]].rename(columns=dict(COMPACT))
    shown["verdict"] = shown["verdict"].astype(str).str.replace(r"not comparable \((.*)\)", r"n/c (\1)", regex=True)
    return shown.astype(object).map(_cell).to_string(index=False)


def paper_spec_md(study: dict, papers: dict, models: list[str]) -> list[str]:
    lines = ["## Paper spec", ""]
    if study:
        lines += [f"**{study.get('title', '')}** ({study.get('source', '')})", ""]
        lines += [f"- {k}: {v}" for k, v in study.get("reported", {}).items()] + [""]
        if study.get("assumptions"):
            lines += ["Assumptions where the study is silent:", ""] + [f"- {a}" for a in study["assumptions"]] + [""]
        if study.get("missing"):
            lines += ["What the study leaves out:", ""] + [f"- {a}" for a in study["missing"]] + [""]
    for name in models:
        paper = papers.get(name, {})
        reported = {k: v for k, v in paper.items() if k not in ("assumptions", "missing", "notes")}
        lines.append(f"- **{name}**: " + (", ".join(f"{k} {v}" for k, v in reported.items()) or "nothing reported"))
        lines += [f"  - note: {paper['notes']}"] if paper.get("notes") else []
        lines += [f"  - assumed: {a}" for a in paper.get("assumptions", [])]
        lines += [f"  - missing: {a}" for a in paper.get("missing", [])]
    return lines + [""]


def report(dataset: dict, papers: dict, models: list[str], metrics_paths, run_paths, best_paths, history_paths,
           table_csv_path, table_md_path, accuracy_plot_path, *, verify_paths=(), confusion_paths=(),
           predictions_paths=(), study: dict | None = None, ablations: dict | None = None, verdicts_path=None,
           ablation_table_path=None, verification_table_path=None, summary_path=None,
           claims_path=None) -> pd.DataFrame:
    if len({len(models), len(metrics_paths), len(run_paths), len(best_paths), len(history_paths)}) != 1:
        raise ConfigError("--models, --metrics, --run, --best and --history need one entry per run")
    if confusion_paths and len(confusion_paths) != len(models):
        raise ConfigError("--confusion needs one entry per run")
    if predictions_paths and len(predictions_paths) != len(models):
        raise ConfigError("--predictions needs one entry per run")
    res = Results(models, metrics_paths, run_paths, best_paths, history_paths, confusion_paths, predictions_paths)
    all_ablations = dict(ablations or {})
    ablations = {k: v for k, v in all_ablations.items() if k in res.order}
    main = [m for m in res.order if m not in ablations]
    out = Path(table_csv_path).parent

    stuck = {name: res.no_progress(name) for name in res.order}
    intervals = {(name, key): res.interval(name, key) for name in res.order for key in METRICS}
    table = build_table(dataset, res, papers, main, stuck, intervals)
    verdicts = build_verdicts(dataset, res, papers, main, stuck, intervals)
    ablation_table = build_ablations(res, papers, ablations)
    verification = build_verification(verify_paths, res.order)
    claims = check_claims(dataset, res, (study or {}).get("claims", []), stuck, all_ablations)
    write_csv(table_csv_path, table, index=False)
    write_csv(verdicts_path or out / "verdicts.csv", verdicts, index=False)
    write_csv(claims_path or out / "claims.csv", claims, index=False)
    write_csv(ablation_table_path or out / "ablations.csv", ablation_table, index=False)
    write_csv(verification_table_path or out / "verification.csv", verification, index=False)
    if summary_path is not None:
        write_json(summary_path, summarise(verdicts, table))

    lines = [f"# reprozoo: reproduction report on `{dataset['name']}`", "",
             "Reproduced = this pipeline; paper = the study (CIFAR-10 test set, Kaggle P100). "
             f"A metric more than {TOLERANCE_PCT:g}% (relative) off the reported value DEVIATES.",
             "hparams: `tuned` = hyperopt on the tuning split, `paper` = the reported lr and epochs. "
             "setting: where a run departs from the paper's architecture, weights or input size "
             "(such rows are not comparable).",
             "Intervals are 95%: a bootstrap over the test images (predictions.csv) and, with several seeds, "
             "the spread over seeds, combined as sqrt(se_images² + sd_seeds²) × 1.96. A verdict is "
             f"`inconclusive` where that interval is wider than the {TOLERANCE_PCT:g}% tolerance.", ""]
    if not dataset["paper_dataset"]:
        lines += [f"**Not comparable**: `{dataset['name']}` is not CIFAR-10; the paper columns are shown for "
                  "reference only.", ""]
    for name, why in stuck.items():
        if why and name in main:
            lines += [f"**No progress**: `{name}` ({why}); its accuracy and loss are not results.", ""]
    shown = table.drop(columns=["accuracy_std", "accuracy_low", "accuracy_high", "loss_low", "loss_high"]).assign(
        accuracy=[_pm(a, None if pd.isna(sd) else sd, 2) for a, sd in zip(table["accuracy"], table["accuracy_std"])])
    shown.insert(shown.columns.get_loc("accuracy") + 1, "accuracy 95%",
                 [_ci(lo, hi, 2) for lo, hi in zip(table["accuracy_low"], table["accuracy_high"])])
    shown.insert(shown.columns.get_loc("loss") + 1, "loss 95%",
                 [_ci(lo, hi, 4) for lo, hi in zip(table["loss_low"], table["loss_high"])])
    lines += ["## Comparison", "", _md_table(shown), "", "## Verdicts", "", _md_table(verdicts), ""]
    lines += claims_md(claims)
    lines += ["## Ablations", "", _md_table(ablation_table), ""]
    lines += ["## Module verification", "", _md_table(verification), ""]
    lines += paper_spec_md(study or {}, papers, main + list(ablations))
    write_text(table_md_path, "\n".join(lines))

    figures_dir = Path(accuracy_plot_path).parent  # every figure beside the accuracy chart
    for name in res.order:
        # the study's CIFAR-10 line only over a CIFAR-10 run: never beside another dataset's curve
        plot_curves(name, pd.concat(res.histories[name]),
                    papers.get(name, {}).get("accuracy") if dataset["paper_dataset"] else None,
                    figures_dir / f"curves_{name}.png", res.metrics[name][0].get("images"))
        if res.confusions[name]:
            plot_confusion(name, sum(res.confusions[name][1:], res.confusions[name][0]),
                           figures_dir / f"confusion_{name}.png")
    plot_accuracy(table, dataset["name"], accuracy_plot_path, ablation_chart_rows(dataset, ablation_table, intervals),
                  paper_dataset=dataset["paper_dataset"])
    log.info("report for %s: %d models, %d ablations -> %s", dataset["name"], len(main), len(ablations), table_md_path)
    return table
