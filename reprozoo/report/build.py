"""The report stage: reads every run (`runs`), writes the tables, the claims, comparison.md and the
figures of one dataset (reprozoo/report/__init__.py says what each holds)."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from reprozoo.errors import ConfigError
from reprozoo.io import write_csv, write_json, write_text
from reprozoo.report.claims import check_claims, claims_md
from reprozoo.report.figures import ablation_chart_rows, plot_accuracy, plot_confusion, plot_curves
from reprozoo.report.markdown import comparison_md, paper_spec_md
from reprozoo.report.runs import METRICS, Results
from reprozoo.report.tables import build_ablations, build_table, build_verdicts, build_verification
from reprozoo.report.verdicts import summarise
from reprozoo.stages import PATHS

log = logging.getLogger("reprozoo.report")


def beside(path, name: str, **names) -> Path:
    """The file PATHS calls `name` (filled with `names`), in the folder of `path`: the report's other
    files go beside those its caller names, whatever folder that is."""
    return Path(path).parent / Path(PATHS[name]).name.format(**names)


def histories(res: Results) -> pd.DataFrame:
    """Every run's history, one row per model, seed and epoch (wall times left out: the same config
    gives the same bytes); what `dvc plots show` draws one line per model from."""
    rows = pd.concat([h.assign(model=name) for name in res.order for h in res.histories[name]], ignore_index=True)
    first = ["model", "seed", "epoch"]
    return rows[first + [c for c in rows.columns if c not in first and c != "seconds"]]


def report(dataset: dict, papers: dict, models: list[str], metrics_paths, run_paths, best_paths, history_paths,
           table_csv_path, table_md_path, accuracy_plot_path, *, verify_paths=(), confusion_paths=(),
           predictions_paths=(), study: dict | None = None, ablations: dict | None = None, verdicts_path=None,
           ablation_table_path=None, verification_table_path=None, summary_path=None,
           claims_path=None, histories_path=None) -> pd.DataFrame:
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

    stuck = {name: res.no_progress(name) for name in res.order}
    intervals = {(name, key): res.interval(name, key) for name in res.order for key in METRICS}
    table = build_table(dataset, res, papers, main, stuck, intervals)
    verdicts = build_verdicts(dataset, res, papers, main, stuck, intervals)
    ablation_table = build_ablations(res, papers, ablations)
    verification = build_verification(verify_paths, res.order)
    claims = check_claims(dataset, res, (study or {}).get("claims", []), stuck, all_ablations)
    write_csv(table_csv_path, table, index=False)
    write_csv(verdicts_path or beside(table_csv_path, "verdicts"), verdicts, index=False)
    write_csv(claims_path or beside(table_csv_path, "claims"), claims, index=False)
    write_csv(ablation_table_path or beside(table_csv_path, "ablation_table"), ablation_table, index=False)
    write_csv(verification_table_path or beside(table_csv_path, "verification_table"), verification, index=False)
    if summary_path is not None:
        write_json(summary_path, summarise(verdicts, table))
    write_csv(histories_path or beside(table_csv_path, "histories"), histories(res), index=False)

    spec = paper_spec_md(study or {}, papers, main + list(ablations))
    write_text(table_md_path, comparison_md(dataset, table, verdicts, claims_md(claims), ablation_table, verification,
                                            {m: stuck[m] for m in main}, spec))

    for name in res.order:  # every figure beside the accuracy chart
        # the study's CIFAR-10 line only over a CIFAR-10 run: never beside another dataset's curve
        plot_curves(name, pd.concat(res.histories[name]),
                    papers.get(name, {}).get("accuracy") if dataset["paper_dataset"] else None,
                    beside(accuracy_plot_path, "curves", model=name), res.metrics[name][0].get("images"))
        if res.confusions[name]:
            plot_confusion(name, sum(res.confusions[name][1:], res.confusions[name][0]),
                           beside(accuracy_plot_path, "confusion_plot", model=name))
    plot_accuracy(table, dataset["name"], accuracy_plot_path, ablation_chart_rows(dataset, ablation_table, intervals),
                  paper_dataset=dataset["paper_dataset"])
    log.info("report for %s: %d models, %d ablations -> %s", dataset["name"], len(main), len(ablations), table_md_path)
    return table
