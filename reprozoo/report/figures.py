"""The report's figures: training curves, confusion matrices, the accuracy chart; each as PNG and PDF."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from reprozoo import stats  # noqa: E402
from reprozoo.io import save_figure  # noqa: E402


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
