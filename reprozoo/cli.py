"""`python -m reprozoo <stage>`: one command per pipeline stage.

Every stage takes explicit input and output paths and, where it needs one, the
config section it works on as JSON (`--model`, `--dataset`): stages never read
config.yaml themselves, so Snakemake, DVC, a cluster job and a person at a
shell all run the same command. `check-config` validates a config file.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from reprozoo.config import ConfigError, load_config, parse_json_arg, resolve_model, validate_against

log = logging.getLogger("reprozoo")


def _model(text: str) -> dict:
    return parse_json_arg(text, "--model", "resolved_model")


def _dataset(text: str) -> dict:
    value = parse_json_arg(text, "--dataset")
    name = value.pop("name", None)
    if not name:
        raise ConfigError("--dataset: missing key 'name'")
    validate_against(value, "dataset", prefix="--dataset")
    return {"name": name, "image_size": 32, "paper_dataset": value["kind"] == "cifar10", **value}


def _common(p: argparse.ArgumentParser, model: bool = False, compute: bool = False) -> None:
    if model:
        p.add_argument("--model", required=True, metavar="JSON",
                       help="the model's resolved config section (protocol merged with models.<name>)")
    if compute:
        p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
        p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--log", metavar="PATH", help="also append log lines to this file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reprozoo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", required=True, metavar="<stage>")

    p = sub.add_parser("check-config", help="validate config.yaml (+ overrides) and print the resolved plan")
    p.add_argument("config", help="path to config.yaml")
    p.add_argument("overrides", nargs="*", help="override YAML files applied in order")
    p.add_argument("--model-json", metavar="NAME", help="print models.NAME resolved, as the stages receive it")
    p.add_argument("--log", metavar="PATH", help=argparse.SUPPRESS)

    p = sub.add_parser("download", help="fetch (cifar10) or check (digits, imagefolder) raw data")
    p.add_argument("--dataset", required=True, metavar="JSON", help="the dataset's config section, with its name")
    p.add_argument("--out", required=True, help="manifest JSON to write")
    _common(p)

    p = sub.add_parser("prepare", help="raw data -> one uint8 array file (data.npz)")
    p.add_argument("--dataset", required=True, metavar="JSON")
    p.add_argument("--manifest", required=True, help="the download stage's manifest")
    p.add_argument("--out", required=True, help="data.npz to write")
    _common(p)

    p = sub.add_parser("split", help="the study's seeded tuning split as index lists + checksum")
    p.add_argument("--data", required=True, help="data.npz")
    p.add_argument("--seed", required=True, type=int)
    p.add_argument("--tune-fraction", required=True, type=float, help="share of train used for tuning")
    p.add_argument("--val-fraction", required=True, type=float, help="share of the tuning subset for validation")
    p.add_argument("--out", required=True, help="split JSON to write")
    _common(p)

    p = sub.add_parser("tune", help="hyperopt TPE over lr (or the paper's lr/epochs)")
    _common(p, model=True, compute=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--trials", required=True, help="trials.csv to write")
    p.add_argument("--best", required=True, help="best.json to write")

    p = sub.add_parser("train", help="final training on the full training set")
    _common(p, model=True, compute=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--best", required=True, help="best.json from tune")
    p.add_argument("--weights", required=True, help="state_dict to write")
    p.add_argument("--history", required=True, help="history.csv to write")
    p.add_argument("--run", required=True, help="run.json to write")

    p = sub.add_parser("evaluate", help="test metrics, per-class accuracy, confusion matrix")
    _common(p, model=True, compute=True)
    p.add_argument("--data", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--metrics", required=True, help="metrics.json to write")
    p.add_argument("--confusion", required=True, help="confusion.csv to write")
    p.add_argument("--extra-test", action="append", default=[], metavar="NAME=ROOT",
                   help="also evaluate on ROOT/test/<class>/* (imagefolder); repeatable")

    p = sub.add_parser("report", help="comparison table (CSV + Markdown) and figures")
    p.add_argument("--dataset", required=True, metavar="JSON")
    p.add_argument("--papers", required=True, metavar="JSON", help="{model: paper block}")
    p.add_argument("--models", required=True, nargs="+")
    p.add_argument("--metrics", required=True, nargs="+", help="metrics.json per model, same order")
    p.add_argument("--runs", required=True, nargs="+", help="run.json per model, same order")
    p.add_argument("--best", required=True, nargs="+", help="best.json per model, same order")
    p.add_argument("--histories", required=True, nargs="+", help="history.csv per model, same order")
    p.add_argument("--table-csv", required=True)
    p.add_argument("--table-md", required=True)
    p.add_argument("--figures", required=True, help="folder for curves_<model>.png and accuracy.png")
    _common(p)
    return parser


def _setup_logging(path: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path:
        from pathlib import Path

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        handlers=handlers, force=True)


def _device(args):
    import torch

    from reprozoo.engine import pick_device

    if args.threads:
        torch.set_num_threads(args.threads)
    return pick_device(args.device)


def run(args: argparse.Namespace) -> None:
    stage = args.stage
    if stage == "check-config":
        cfg = load_config(args.config, *args.overrides)
        if args.model_json:
            print(json.dumps(resolve_model(cfg, args.model_json), indent=2, sort_keys=True))
        else:
            print(f"config OK: datasets {cfg['run']['datasets']} x models {cfg['run']['models']}")
        return
    if stage == "download":
        from reprozoo.data import download

        download(_dataset(args.dataset), args.out)
    elif stage == "prepare":
        from reprozoo.data import prepare
        from reprozoo.io import read_json

        read_json(args.manifest)
        shapes = prepare(_dataset(args.dataset), args.out)
        log.info("prepared %s: %s", args.out, shapes)
    elif stage == "split":
        from reprozoo.data import write_split

        split = write_split(args.data, args.out, args.seed, args.tune_fraction, args.val_fraction)
        log.info("split seed %d: %d tune-train / %d tune-val / %d train / %d test", args.seed,
                 len(split["tune_train"]), len(split["tune_val"]), len(split["train"]), len(split["test"]))
    elif stage == "tune":
        from reprozoo.tune import tune

        cfg = _model(args.model)
        tune(cfg, args.data, args.split, args.trials, args.best, _device(args))
    elif stage == "train":
        from reprozoo.train import train

        cfg = _model(args.model)
        train(cfg, args.data, args.split, args.best, args.weights, args.history, args.run, _device(args))
    elif stage == "evaluate":
        from reprozoo.evaluate import evaluate

        cfg = _model(args.model)
        extra = {}
        for item in args.extra_test:
            name, sep, root = item.partition("=")
            if not sep or not name or not root:
                raise ConfigError(f"--extra-test '{item}': expected NAME=ROOT")
            extra[name] = root
        evaluate(cfg, args.data, args.weights, args.metrics, args.confusion, _device(args), extra)
    elif stage == "report":
        from reprozoo.report import report

        counts = {len(args.models), len(args.metrics), len(args.runs), len(args.best), len(args.histories)}
        if len(counts) != 1:
            raise ConfigError("report: --models, --metrics, --runs, --best and --histories need one entry per model")
        report(_dataset(args.dataset), parse_json_arg(args.papers, "--papers"), args.models, args.metrics,
               args.runs, args.best, args.histories, args.table_csv, args.table_md, args.figures)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(getattr(args, "log", None))
    from reprozoo.data import DataError

    expected: tuple[type[BaseException], ...] = (ConfigError, DataError, FileNotFoundError)
    try:
        from reprozoo.train import TrainError
        from reprozoo.tune import TuneError

        expected += (TrainError, TuneError)
    except ImportError:  # torch missing: only check-config can work
        pass
    try:
        run(args)
    except expected as e:
        print(f"reprozoo {args.stage}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"reprozoo {args.stage}: interrupted (no partial outputs were written)", file=sys.stderr)
        return 130
    return 0
