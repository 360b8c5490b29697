"""The report's CSV tables: the comparison (one row per model), the verdicts (per model and metric),
the ablations beside their bases, the module verification."""
from __future__ import annotations

import numpy as np
import pandas as pd

from reprozoo.io import fmt_duration
from reprozoo.report.runs import Results
from reprozoo.report.verdicts import deviation, parse_duration, verdict
from reprozoo.results import read_verify


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
