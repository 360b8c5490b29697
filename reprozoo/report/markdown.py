"""comparison.md and a terminal's compact table (`python -m reprozoo table`): pandas only (no plotting
library, no scipy), so that printing a table stays quick."""
from __future__ import annotations

import numpy as np
import pandas as pd

from reprozoo.io import read_csv
from reprozoo.report.verdicts import TOLERANCE_PCT


def plus_minus(mean: float, std: float | None, digits: int) -> str:
    return f"{mean:.{digits}f}" if not std else f"{mean:.{digits}f} ± {std:.{digits}f}"


def interval_text(low, high, digits: int) -> str:
    return "" if low is None or pd.isna(low) else f"[{low:.{digits}f}, {high:.{digits}f}]"


def cell(v):
    if isinstance(v, float):
        if np.isnan(v):
            return ""
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else f"{v:.4g}"
    return "" if v is None else str(v)


def md_table(frame: pd.DataFrame) -> str:
    if not len(frame):
        return "_none_"
    return frame.astype(object).map(cell).to_markdown(index=False, disable_numparse=True)


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
    return shown.astype(object).map(cell).to_string(index=False)


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


def comparison_md(dataset: dict, table: pd.DataFrame, verdicts: pd.DataFrame, claims: list[str],
                  ablation_table: pd.DataFrame, verification: pd.DataFrame, stuck: dict, spec: list[str]) -> str:
    """comparison.md: the tables for people, with the claims' section (`claims.claims_md`) and the paper
    spec (`paper_spec_md`); `stuck`: per model of the table, why it made no progress, if it did not."""
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
        if why:
            lines += [f"**No progress**: `{name}` ({why}); its accuracy and loss are not results.", ""]
    shown = table.drop(columns=["accuracy_std", "accuracy_low", "accuracy_high", "loss_low", "loss_high"]).assign(
        accuracy=[plus_minus(a, None if pd.isna(sd) else sd, 2) for a, sd in zip(table["accuracy"], table["accuracy_std"])])
    shown.insert(shown.columns.get_loc("accuracy") + 1, "accuracy 95%",
                 [interval_text(lo, hi, 2) for lo, hi in zip(table["accuracy_low"], table["accuracy_high"])])
    shown.insert(shown.columns.get_loc("loss") + 1, "loss 95%",
                 [interval_text(lo, hi, 4) for lo, hi in zip(table["loss_low"], table["loss_high"])])
    lines += ["## Comparison", "", md_table(shown), "", "## Verdicts", "", md_table(verdicts), ""]
    lines += claims
    lines += ["## Ablations", "", md_table(ablation_table), ""]
    lines += ["## Module verification", "", md_table(verification), ""]
    lines += spec
    return "\n".join(lines)
