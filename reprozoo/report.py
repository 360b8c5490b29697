"""`report`: the comparison table (reproduced beside reported, deviation flagged)
and the study's figures: per-model training curves and an accuracy bar chart."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from reprozoo.io import atomic_path, read_json, write_csv, write_text  # noqa: E402

log = logging.getLogger("reprozoo.report")

TOLERANCE_PCT = 5.0  # the methodology's threshold: flag a metric more than 5% (relative) off


def deviation(reproduced: float, reported: float | None) -> tuple[float | None, float | None, str]:
    """Difference in points, in percent of the reported value, and the flag."""
    if reported is None:
        return None, None, "no reported value"
    points = reproduced - reported
    percent = 100 * points / reported
    return points, percent, ("DEVIATES" if abs(percent) > TOLERANCE_PCT else "ok")


def parse_duration(text: str | None) -> float | None:
    """'2m51s' / '265m' / '1h2m3s' -> seconds."""
    if not text:
        return None
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", text)
    if not parts:
        return None
    return sum(float(v) * {"h": 3600, "m": 60, "s": 1}[u] for v, u in parts)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def build_table(dataset: dict, models: list[str], papers: dict, metrics: list[dict], runs: list[dict],
                bests: list[dict]) -> pd.DataFrame:
    comparable = dataset["paper_dataset"]
    rows = []
    for name, m, run, best in zip(models, metrics, runs, bests):
        paper = papers.get(name, {})
        points, percent, flag = deviation(m["accuracy"], paper.get("accuracy"))
        setting = run.get("setting_deviations", [])
        if points is not None and not comparable:
            flag = f"not comparable ({dataset['name']})"
        elif points is not None and setting:
            flag = "not comparable (setting)"
        row = {
            "model": name,
            "params": run["params"],
            "paper_accuracy": paper.get("accuracy"),
            "accuracy": round(m["accuracy"], 2),
            "diff_points": None if points is None else round(points, 2),
            "diff_percent": None if percent is None else round(percent, 2),
            "flag": flag,
            "setting": "; ".join(setting) or "paper's",
            "paper_loss": paper.get("loss"),
            "loss": round(m["loss"], 4),
            "lr": float(f"{best['lr']:.4g}"),
            "epochs": best["epochs"],
            "hparams": best["source"],
            "train_time": fmt_duration(run["duration_s"]),
            "paper_time": paper.get("time", ""),
            "device": run["hardware"],
        }
        for extra_name, extra in sorted(m.get("extra", {}).items()):
            row[f"accuracy_{extra_name}"] = round(extra["accuracy"], 2)
        rows.append(row)
    return pd.DataFrame(rows)


def plot_curves(name: str, history: pd.DataFrame, paper_accuracy: float | None, path: Path) -> None:
    """The study's two-panel figure: losses on the left, test accuracy on the right."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    ax1.plot(history["epoch"], history["train_loss"], marker="o", label="train loss")
    ax1.plot(history["epoch"], history["test_loss"], marker="o", label="test loss")
    ax1.set(title=f"{name}: loss", xlabel="epoch", ylabel="cross-entropy")
    ax2.plot(history["epoch"], history["test_accuracy"], marker="o", color="tab:orange", label="test accuracy")
    if paper_accuracy is not None:
        ax2.axhline(paper_accuracy, ls="--", color="gray", label=f"paper {paper_accuracy:.2f}%")
    ax2.set(title=f"{name}: test accuracy", xlabel="epoch", ylabel="accuracy (%)")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    _save(fig, path)


def plot_accuracy(table: pd.DataFrame, dataset: str, path: Path) -> None:
    long = table.melt(id_vars="model", value_vars=["paper_accuracy", "accuracy"], var_name="source",
                      value_name="test accuracy (%)").dropna()
    long["source"] = long["source"].map({"paper_accuracy": "paper (CIFAR-10, P100)",
                                         "accuracy": f"reproduced ({dataset})"})
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(table)), 5))
    sns.barplot(data=long, x="model", y="test accuracy (%)", hue="source", ax=ax)
    for container in ax.containers:
        ax.bar_label(container, fmt="%.1f", fontsize=8)
    ax.set(ylim=(0, 105), title="Test accuracy: reported vs reproduced")
    sns.move_legend(ax, "upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, title=None, frameon=False)
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def report(dataset: dict, papers: dict, models: list[str], metrics_paths, run_paths, best_paths, history_paths,
           table_csv, table_md, figures_dir) -> pd.DataFrame:
    metrics = [read_json(p) for p in metrics_paths]
    runs = [read_json(p) for p in run_paths]
    bests = [read_json(p) for p in best_paths]
    table = build_table(dataset, models, papers, metrics, runs, bests)
    write_csv(table_csv, table, index=False)

    notes = [f"# reprozoo: comparison on `{dataset['name']}`", "",
             f"Reproduced = this pipeline; paper = the study (CIFAR-10 test set, Kaggle P100). "
             f"flag: DEVIATES when accuracy is more than {TOLERANCE_PCT:g}% (relative) off the reported value.",
             "hparams: `tuned` = hyperopt on the tuning split, `paper` = the reported lr and epochs.",
             "setting: where a run departs from the paper's architecture, weights or input size "
             "(such rows are not comparable).", ""]
    if not dataset["paper_dataset"]:
        notes += [f"**Not comparable**: `{dataset['name']}` is not CIFAR-10; the paper columns are shown for "
                  "reference only.", ""]
    write_text(table_md, "\n".join(notes) + "\n" + table.to_markdown(index=False) + "\n")

    figures_dir = Path(figures_dir)
    for name, path in zip(models, history_paths):
        plot_curves(name, pd.read_csv(path), papers.get(name, {}).get("accuracy"), figures_dir / f"curves_{name}.png")
    plot_accuracy(table, dataset["name"], figures_dir / "accuracy.png")
    log.info("report for %s: %d models -> %s", dataset["name"], len(models), table_md)
    return table
