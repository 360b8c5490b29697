"""`python -m reprozoo <stage>`: one pipeline stage, as a rule runs it or by hand.

    python -m reprozoo train --dataset digits --model mlp

reads the model's section file (results/digits/config/model-mlp.json) and every file at its
place in the paths table (reprozoo/stages.py); `--weights PATH` and the like override one path
(reprozoo/arguments.py). `--config YAML` (repeatable: config.yaml, then overrides) first resolves
that config and writes its section files, as the Snakefile does (`--experiments params.yaml` is
applied when the file exists). Tools besides: `resolve` writes the section files, `check-config`
validates a config, `table` shows a comparison table, `dvc-yaml` writes dvc.yaml, `dvc-dag` draws
its stages in order.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback

from tqdm.contrib.logging import logging_redirect_tqdm

from reprozoo import __version__, gpus, runlock
from reprozoo.arguments import add_config_options, add_stage, in_results, resolve, stage_arguments
from reprozoo.errors import UserError
from reprozoo.benchmark import benchmark
from reprozoo.io import log_to, write_text
from reprozoo.stages import PATHS, STAGES


def stage_function(stage: str):
    """The function each stage runs, imported when it runs: a stage loads what it needs, no more."""
    match stage:
        case "download":
            from reprozoo.prepare import download as run
        case "prepare":
            from reprozoo.prepare import prepare as run
        case "split":
            from reprozoo.prepare import write_split as run
        case "cache-features":
            from reprozoo.features import cache_features as run
        case "verify":
            from reprozoo.verify import verify as run
        case "tune":
            from reprozoo.tune import tune as run
        case "train":
            from reprozoo.train import train as run
        case "evaluate":
            from reprozoo.evaluate import evaluate as run
        case "attention":
            from reprozoo.attention import attention_figure as run
        case "samples":
            from reprozoo.samples import samples_figure as run
        case "report":
            from reprozoo.report.build import report as run
    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reprozoo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"reprozoo {__version__}")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="<stage>")
    add_config_options(sub.add_parser("resolve", help="validate the config and write the section files each job reads"))
    p = sub.add_parser("check-config", help="validate config.yaml (+ overrides) and print the resolved plan")
    p.add_argument("config_file", metavar="config", help="path to config.yaml")
    p.add_argument("overrides", nargs="*", help="override YAML files applied in order")
    p.add_argument("--model-json", metavar="NAME", help="print models.NAME resolved, as the stages receive it")
    p = sub.add_parser("table", help="the comparison table of a dataset, compact enough for a terminal")
    p.add_argument("--dataset", required=True, metavar="NAME", help="its report: results/<dataset>/report/")
    p = sub.add_parser("dvc-yaml", help="write dvc.yaml for config.yaml (+ an override), in DVC's matrix idiom")
    p.add_argument("--configfile", action="append", default=[], metavar="YAML",
                   help="override file(s) on top of config.yaml, as for snakemake (default: the study)")
    p.add_argument("--check", action="store_true", help="write nothing; fail when dvc.yaml is stale")
    sub.add_parser("dvc-dag", help="draw dvc.yaml's stages in order, a matrix as one stage (`dvc dag` draws each job)")
    for name, stage in STAGES.items():
        add_stage(sub, name, stage)
    return parser


def run_stage(args: argparse.Namespace) -> None:
    run = stage_function(args.stage)
    kwargs = stage_arguments(args, STAGES[args.stage], run)
    if not os.environ.get(runlock.RUN_ENV) and in_results(kwargs.values()):  # not a job of a Snakemake run
        runlock.begin("stage", {}, write_text)  # shared with other stages; refused beside a run
    if STAGES[args.stage].compute:  # torch's threads: the section's, so that both engines compute the same sums
        from reprozoo.engine import pick_device
        gpus.claim(args.device)  # a slot on one card, before CUDA starts: the job sees that card alone
        kwargs["device"] = pick_device(args.device, (kwargs.get("cfg") or kwargs["spec"])["threads"])
    with benchmark(args.benchmark) if args.benchmark else contextlib.nullcontext():  # DVC's jobs: rules/dvc.smk
        run(**kwargs)


def run_tool(args: argparse.Namespace) -> str:
    if args.stage == "resolve":
        return f"section files: {len(resolve(args))} written, the others unchanged"
    if args.stage == "table":
        from reprozoo.report.markdown import compact_table

        return compact_table(PATHS["table_csv"].format(dataset=args.dataset))
    if args.stage == "check-config":
        from reprozoo.resolve import check_config

        return check_config(args.config_file, *args.overrides, model=args.model_json)
    from reprozoo.dvc import draw_stage_order, write_dvc_yaml

    if args.stage == "dvc-dag":
        return draw_stage_order()
    return f"{write_dvc_yaml(args.configfile, check=args.check)}: {'up to date' if args.check else 'written'}"


def _after_experiment() -> str:
    """Under `dvc exp run` (DVC_EXP_BASELINE_REV) a failure leaves its `-S` values in params.yaml: the way back."""
    if not os.environ.get("DVC_EXP_BASELINE_REV"):
        return ""
    return " (this experiment's values stay in params.yaml: `git checkout params.yaml dvc.lock && dvc checkout` " \
           "puts the workspace back)"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = getattr(args, "log", None)
    terminal = log_to(log) if log else sys.stderr
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        handlers=[logging.StreamHandler(sys.stderr)], force=True)
    reason = None
    try:
        with contextlib.nullcontext() if log else logging_redirect_tqdm():  # a terminal: bars and lines apart
            run_stage(args) if args.stage in STAGES else print(run_tool(args))
    except UserError as e:  # every problem a user can fix (reprozoo/errors.py): one line, exit 2
        reason, code = f"reprozoo {args.stage}: error: {e}{_after_experiment()}", 2
    except KeyboardInterrupt:
        reason, code = f"reprozoo {args.stage}: interrupted (no partial outputs were written)", 130
    except Exception as e:  # a bug: its traceback in the log, its name on the terminal
        if not log:
            raise
        traceback.print_exc()
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        reason, code = f"reprozoo {args.stage}: internal error: {type(e).__name__}: {first} (traceback in {log})", 1
    if reason is None:
        return 0
    print(reason, file=sys.stderr, flush=True)
    if log:  # the log has it; so does the terminal (a library may have rewrapped sys.stderr meanwhile)
        print(reason, file=terminal, flush=True)
    return code
