"""`report`: every reproduced number beside the reported one, with a verdict.

Writes, for one dataset:
- comparison.csv: one row per model (mean over seeds), deviation in points and %;
- verdicts.csv: per model and metric, reproduced vs reported and the verdict
  (reproduced within 5% / deviates / not comparable / no progress);
- ablations.csv: each variant beside its base and, where reported, the paper;
- verification.csv: the module verifier's summary per model;
- summary.json: the study in six numbers (models, how many reproduced, deviate, are not
  comparable or made no progress on accuracy, their mean test accuracy): DVC's metrics, few
  enough that `dvc metrics show` and `dvc exp show` fit a terminal;
- comparison.md: all of the above plus the paper spec, for people;
- figures: training curves (all seeds), confusion matrices, the accuracy chart (each
  ablation hatched beside its base model); each as PNG and as a PDF twin for papers
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

from reprozoo.errors import ConfigError  # noqa: E402
from reprozoo.progress import no_progress  # noqa: E402
from reprozoo.io import fmt_duration, read_json, save_figure, write_csv, write_json, write_text  # noqa: E402

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
            stuck: str | None = None) -> str:
    """no progress (why: the run is no result) / reproduced (within tolerance) / deviates
    (flagged) / not comparable (why)."""
    if stuck:
        return f"NO PROGRESS ({stuck})"
    if reported is None:
        return "not comparable (no reported value)"
    if not_comparable:
        return f"not comparable ({not_comparable})"
    return "reproduced" if deviation(reproduced, reported)[2] == "ok" else "DEVIATES"


def summarise(verdicts: pd.DataFrame, table: pd.DataFrame) -> dict:
    """summary.json: per verdict on test accuracy, how many models got it; their mean accuracy."""
    accuracy = verdicts.loc[verdicts["metric"] == "accuracy", "verdict"].astype(str)
    return {"models": len(accuracy), "reproduced": int((accuracy == "reproduced").sum()),
            "deviates": int(accuracy.str.startswith("DEVIATES").sum()),
            "not_comparable": int(accuracy.str.startswith("not comparable").sum()),
            "no_progress": int(accuracy.str.startswith("NO PROGRESS").sum()),
            "mean_accuracy": round(float(pd.to_numeric(table["accuracy"], errors="coerce").mean()), 2)}


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


class Results:
    """Per-model results over seeds: metrics, runs, histories, tuned hparams."""

    def __init__(self, models, metrics_paths, run_paths, best_paths, history_paths, confusion_paths=()):
        self.order: list[str] = list(dict.fromkeys(models))
        self.metrics, self.runs, self.histories, self.confusions = (defaultdict(list) for _ in range(4))
        self.best = {}
        confusion_paths = list(confusion_paths) or [None] * len(models)
        for name, m, r, b, h, c in zip(models, metrics_paths, run_paths, best_paths, history_paths, confusion_paths):
            self.metrics[name].append(read_json(m))
            self.runs[name].append(read_json(r))
            self.histories[name].append(pd.read_csv(h).assign(seed=self.runs[name][-1]["seed"]))
            if c is not None:
                self.confusions[name].append(pd.read_csv(c, index_col=0))
            self.best[name] = read_json(b)

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
                stuck: dict[str, str | None] | None = None) -> pd.DataFrame:
    """`stuck`: per model, why its test numbers show no progress (`Results.no_progress`)."""
    rows = []
    for name in models:
        paper, run = papers.get(name, {}), res.runs[name][0]
        acc, acc_std = res.mean_std(name, "accuracy")
        loss, _ = res.mean_std(name, "loss")
        points, percent, flag = deviation(acc, paper.get("accuracy"))
        setting = run.get("setting_deviations", [])
        if (stuck or {}).get(name):
            flag = "NO PROGRESS"
        elif points is not None and not dataset["paper_dataset"]:
            flag = f"not comparable ({dataset['name']})"
        elif points is not None and setting:
            flag = "not comparable (setting)"
        best = res.best[name]
        row = {
            "model": name,
            "params": run["params"],
            "labels": _labels(run),
            "paper_accuracy": paper.get("accuracy"),
            "accuracy": round(acc, 2),
            "accuracy_std": None if acc_std is None else round(acc_std, 2),
            "seeds": len(res.metrics[name]),
            "diff_points": None if points is None else round(points, 2),
            "diff_percent": None if percent is None else round(percent, 2),
            "flag": flag,
            "setting": "; ".join(setting) or "paper's",
            "paper_loss": paper.get("loss"),
            "loss": round(loss, 4),
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
                   stuck: dict[str, str | None] | None = None) -> pd.DataFrame:
    """Every metric with a reported value: reproduced (mean over seeds) vs reported.
    `stuck`: per model, why its test numbers show no progress: then accuracy and loss get no verdict."""
    rows = []
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
            rows.append({"model": name, "metric": metric, "reproduced": round(mean, 4),
                         "reproduced_std": None if std is None else round(std, 4), "seeds": len(values),
                         "reported": reported, "diff": None if points is None else round(points, 4),
                         "diff_percent": None if percent is None else round(percent, 2),
                         "reported_within_seed_spread": within,
                         "verdict": verdict(mean, reported, not_comparable, stuck_why)})
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


def build_verification(verify_paths) -> pd.DataFrame:
    rows = []
    for path in verify_paths:
        v = read_json(path)
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


# ------------------------------------------------------------------ figures

def plot_curves(name: str, history: pd.DataFrame, paper_accuracy: float | None, path: Path) -> None:
    """The study's two-panel figure: losses on the left, test accuracy on the right (one line per seed)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    seeds = sorted(history["seed"].unique()) if "seed" in history else [None]
    for i, seed in enumerate(seeds):
        h = history if seed is None else history[history["seed"] == seed]
        tag, alpha = ("" if len(seeds) == 1 else f" (seed {seed})"), (1.0 if i == 0 else 0.45)
        ax1.plot(h["epoch"], h["train_loss"], marker="o", color="tab:blue", alpha=alpha, label=f"train loss{tag}")
        ax1.plot(h["epoch"], h["test_loss"], marker="o", color="tab:green", alpha=alpha, label=f"test loss{tag}")
        ax2.plot(h["epoch"], h["test_accuracy"], marker="o", color="tab:orange", alpha=alpha,
                 label=f"test accuracy{tag}")
    ax1.set(title=f"{name}: loss", xlabel="epoch", ylabel="cross-entropy")
    if paper_accuracy is not None:
        ax2.axhline(paper_accuracy, ls="--", color="gray", label=f"paper (CIFAR-10, P100): {paper_accuracy:.2f}%")
    ax2.set(title=f"{name}: test accuracy", xlabel="epoch", ylabel="accuracy (%)")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def plot_confusion(name: str, confusion: pd.DataFrame, path: Path) -> None:
    rates = confusion.div(confusion.sum(axis=1).replace(0, 1), axis=0) * 100
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    sns.heatmap(rates, annot=True, fmt=".0f", cmap="Blues", vmin=0, vmax=100, cbar_kws={"label": "% of true class"},
                ax=ax, annot_kws={"fontsize": 7})  # the numbers are what the colour shows: row %
    # two lines: a long model name on one line would run past the figure's edge
    ax.set(title=f"{name}: confusion matrix\ntest, % of each true class; n = {int(confusion.values.sum())}",
           xlabel="predicted", ylabel="true")
    fig.tight_layout()
    save_figure(fig, path)


def ablation_chart_rows(dataset: dict, ablation_table: pd.DataFrame) -> pd.DataFrame:
    """The accuracy chart's rows for the ablations (from `build_ablations`): model, base, accuracies
    and a flag. An ablation's paper number, where the study gives one, is for the ablation's own
    setting, so only the dataset can make it not comparable (the comparison table's rule)."""
    if not len(ablation_table):
        return pd.DataFrame(columns=["model", "base", "paper_accuracy", "accuracy", "flag"])
    rows = ablation_table.rename(columns={"variant": "model"})[["model", "base", "paper_accuracy", "accuracy"]]
    shown = rows["paper_accuracy"].notna() & (not dataset["paper_dataset"])
    return rows.assign(flag=np.where(shown, f"not comparable ({dataset['name']})", "ok"))


def plot_accuracy(table: pd.DataFrame, dataset: str, path: Path, ablations: pd.DataFrame | None = None) -> None:
    """Paper vs reproduced test accuracy, one pair of bars per model of the comparison table,
    each model's ablations (`ablation_chart_rows`) hatched right after it. Rows the table (or the
    same rule, for an ablation) calls not comparable are starred."""
    base_of = {} if ablations is None else dict(zip(ablations["model"], ablations["base"]))
    rows = pd.concat([table, ablations], ignore_index=True) if base_of else table
    order = [n for m in table["model"] for n in [m, *(a for a, b in base_of.items() if b == m)]]
    order += [a for a in base_of if a not in order]  # an ablation whose base is not in the table
    rows = rows.set_index("model", drop=False).loc[order]

    gap = 0.6  # between a model (with its ablations) and the next one: groups them
    x = np.arange(len(rows)) + gap * np.cumsum([i > 0 and m not in base_of for i, m in enumerate(order)])
    width, colors = 0.4, [sns.desaturate(c, 0.75) for c in sns.color_palette(n_colors=2)]
    hatch = ["//" if m in base_of else "" for m in order]
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(rows)), 5.5))
    for offset, column, color, label in ((-width / 2, "paper_accuracy", colors[0], "paper (CIFAR-10, P100)"),
                                         (width / 2, "accuracy", colors[1], f"reproduced ({dataset})")):
        values = pd.to_numeric(rows[column], errors="coerce").to_numpy()
        shown = ~np.isnan(values)
        bars = ax.bar(x[shown] + offset, values[shown], width, color=color, label=label, edgecolor="white",
                      linewidth=0.8, hatch=[h for h, s in zip(hatch, shown) if s])
        ax.bar_label(bars, fmt="%.1f", fontsize=8)

    marked = rows["flag"].astype(str).str.startswith("not comparable").to_numpy()  # the table's mark
    labels = [m + (" *" if mark else "") + (f"\n(ablation of {base_of[m]})" if m in base_of else "")
              for m, mark in zip(order, marked)]
    ax.set_xticks(x, labels, rotation=30, ha="right", rotation_mode="anchor")
    ax.set(ylim=(0, 105), xlim=(x[0] - 0.6, x[-1] + 0.6), xlabel="model", ylabel="test accuracy (%)",
           title="Test accuracy: reported vs reproduced")
    handles = ax.get_legend_handles_labels()[0]
    if base_of:
        handles.append(Patch(facecolor="white", edgecolor="dimgray", hatch="//", label="ablation (beside its base)"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    if marked.any():
        fig.text(0.01, 0.01, "* not comparable with the paper (its setting or dataset differs; see the table)",
                 fontsize=8, color="dimgray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    save_figure(fig, path)


# ------------------------------------------------------------------ markdown

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
    try:
        table = pd.read_csv(table_csv_path)
    except (OSError, pd.errors.ParserError) as e:
        raise ConfigError(f"{table_csv_path}: no comparison table to show ({e}); run the report first") from None
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
           study: dict | None = None, ablations: dict | None = None, verdicts_path=None, ablation_table_path=None,
           verification_table_path=None, summary_path=None) -> pd.DataFrame:
    if len({len(models), len(metrics_paths), len(run_paths), len(best_paths), len(history_paths)}) != 1:
        raise ConfigError("--models, --metrics, --run, --best and --history need one entry per run")
    if confusion_paths and len(confusion_paths) != len(models):
        raise ConfigError("--confusion needs one entry per run")
    res = Results(models, metrics_paths, run_paths, best_paths, history_paths, confusion_paths)
    ablations = {k: v for k, v in (ablations or {}).items() if k in res.order}
    main = [m for m in res.order if m not in ablations]
    out = Path(table_csv_path).parent

    stuck = {name: res.no_progress(name) for name in main}
    table = build_table(dataset, res, papers, main, stuck)
    verdicts = build_verdicts(dataset, res, papers, main, stuck)
    ablation_table = build_ablations(res, papers, ablations)
    verification = build_verification(verify_paths)
    write_csv(table_csv_path, table, index=False)
    write_csv(verdicts_path or out / "verdicts.csv", verdicts, index=False)
    write_csv(ablation_table_path or out / "ablations.csv", ablation_table, index=False)
    write_csv(verification_table_path or out / "verification.csv", verification, index=False)
    if summary_path is not None:
        write_json(summary_path, summarise(verdicts, table))

    lines = [f"# reprozoo: reproduction report on `{dataset['name']}`", "",
             "Reproduced = this pipeline; paper = the study (CIFAR-10 test set, Kaggle P100). "
             f"A metric more than {TOLERANCE_PCT:g}% (relative) off the reported value DEVIATES.",
             "hparams: `tuned` = hyperopt on the tuning split, `paper` = the reported lr and epochs. "
             "setting: where a run departs from the paper's architecture, weights or input size "
             "(such rows are not comparable).", ""]
    if not dataset["paper_dataset"]:
        lines += [f"**Not comparable**: `{dataset['name']}` is not CIFAR-10; the paper columns are shown for "
                  "reference only.", ""]
    for name, why in stuck.items():
        if why:
            lines += [f"**No progress**: `{name}` ({why}); its accuracy and loss are not results.", ""]
    shown = table.drop(columns="accuracy_std").assign(accuracy=[
        _pm(a, None if pd.isna(sd) else sd, 2) for a, sd in zip(table["accuracy"], table["accuracy_std"])])
    lines += ["## Comparison", "", _md_table(shown), "", "## Verdicts", "", _md_table(verdicts), ""]
    lines += ["## Ablations", "", _md_table(ablation_table), ""]
    lines += ["## Module verification", "", _md_table(verification), ""]
    lines += paper_spec_md(study or {}, papers, main + list(ablations))
    write_text(table_md_path, "\n".join(lines))

    figures_dir = Path(accuracy_plot_path).parent  # every figure beside the accuracy chart
    for name in res.order:
        plot_curves(name, pd.concat(res.histories[name]), papers.get(name, {}).get("accuracy"),
                    figures_dir / f"curves_{name}.png")
        if res.confusions[name]:
            plot_confusion(name, sum(res.confusions[name][1:], res.confusions[name][0]),
                           figures_dir / f"confusion_{name}.png")
    plot_accuracy(table, dataset["name"], accuracy_plot_path, ablation_chart_rows(dataset, ablation_table))
    log.info("report for %s: %d models, %d ablations -> %s", dataset["name"], len(main), len(ablations), table_md_path)
    return table
