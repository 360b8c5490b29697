"""`python -m reprozoo <stage>`: one command per pipeline stage.

Every stage takes explicit input and output paths and, where it needs one, the
config section it works on as JSON (`--model`, `--dataset`): stages never read
config.yaml themselves, so Snakemake, DVC, a cluster job and a person at a
shell all run the same command. `check-config` validates a config file.

DVC cannot put a config section into a command as JSON, so each of these options
has a twin that names the section instead: `--config config.yaml [--config
override.yaml ...] [--experiments params.yaml] --model-name mlp` (likewise
`--dataset-name`; `verify` then takes its expectations, `report` the papers, the
study and the ablations from the config too). The section is resolved by the same
code the Snakefile uses, so both engines hand a stage the same JSON. `dvc-yaml`
writes dvc.yaml from the Snakemake workflow's own DAG.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from reprozoo.config import (BACKBONE_BATCH_SIZE, ConfigError, dataset_section, load_config, parse_json_arg,
                             resolve_dataset, resolve_model, validate_against)
from reprozoo.errors import UserError

log = logging.getLogger("reprozoo")


def _model(text: str) -> dict:
    return parse_json_arg(text, "--model", "resolved_model")


def _dataset(text: str) -> dict:
    value = parse_json_arg(text, "--dataset")
    name = value.pop("name", None)
    if not name:
        raise ConfigError("--dataset: missing key 'name'")
    validate_against(value, "dataset", prefix="--dataset")
    return dataset_section(name, value)


def _config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", action="append", metavar="YAML",
                   help="config.yaml, then override files in order (repeat the option); for --*-name")
    p.add_argument("--experiments", metavar="YAML",
                   help="params.yaml: per-model overrides applied after the --config files (DVC experiments)")


def _dataset_option(p: argparse.ArgumentParser, help: str | None = None) -> None:
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--dataset", metavar="JSON", help=help)
    group.add_argument("--dataset-name", metavar="NAME", help="or: datasets.NAME from the --config files")
    _config_option(p)


def _as_json(value) -> str:
    """As rules/common.smk serialises a section for the command line."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _from_config(args: argparse.Namespace) -> None:
    """--config + --model-name/--dataset-name: fill in the JSON the Snakefile would pass."""
    names = [n for n in ("model_name", "dataset_name") if getattr(args, n, None)]
    config = getattr(args, "config", None)
    if not names:
        if config:
            raise ConfigError("--config: only used with --model-name or --dataset-name")
        return
    if not config:
        raise ConfigError(f"--{names[0].replace('_', '-')}: needs --config config.yaml")
    cfg = load_config(*config, experiments=args.experiments)
    if getattr(args, "model_name", None):
        args.model = _as_json(resolve_model(cfg, args.model_name))
    if args.stage == "verify":  # as rules/common.smk
        args.expect = args.expect or _as_json(cfg["models"][args.model_name].get("verify", {}))
    if getattr(args, "dataset_name", None):
        args.dataset = _as_json(resolve_dataset(cfg, args.dataset_name))
    if args.stage == "report" and args.papers is None:
        unknown = [m for m in args.models if m not in cfg["models"]]
        if unknown:
            raise ConfigError(f"--models: unknown model '{unknown[0]}' (defined: {', '.join(sorted(cfg['models']))})")
        args.papers = _as_json({m: cfg["models"][m].get("paper", {}) for m in args.models})
    if args.stage == "report":  # as rules/common.smk: the study, and the ablations among --models
        args.study = args.study or _as_json(cfg.get("study", {}))
        ablations = cfg.get("ablations", {})
        args.ablations = args.ablations or _as_json({m: ablations[m] for m in args.models if m in ablations})


def _common(p: argparse.ArgumentParser, model: bool = False, compute: bool = False) -> None:
    if model:
        group = p.add_mutually_exclusive_group(required=True)
        group.add_argument("--model", metavar="JSON",
                           help="the model's resolved config section (protocol merged with models.<name>)")
        group.add_argument("--model-name", metavar="NAME", help="or: models.NAME resolved from the --config files")
        _config_option(p)
        p.add_argument("--features", metavar="PATH", help="cached backbone features (models with a backbone)")
    if compute:
        p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
        p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--log", metavar="PATH", help="also write log lines to this file (replaced each run)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reprozoo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", required=True, metavar="<stage>")

    p = sub.add_parser("check-config", help="validate config.yaml (+ overrides) and print the resolved plan")
    p.add_argument("config_file", metavar="config", help="path to config.yaml")
    p.add_argument("overrides", nargs="*", help="override YAML files applied in order")
    p.add_argument("--model-json", metavar="NAME", help="print models.NAME resolved, as the stages receive it")
    p.add_argument("--log", metavar="PATH", help=argparse.SUPPRESS)

    p = sub.add_parser("dvc-yaml", help="write dvc.yaml from the Snakemake workflow's DAG (same stages and files)")
    p.add_argument("--configfile", action="append", default=[], metavar="YAML",
                   help="override file(s) on top of config.yaml, as for snakemake (default: the study)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; fail when dvc.yaml is stale for the config files it records")
    p.add_argument("--log", metavar="PATH", help=argparse.SUPPRESS)

    p = sub.add_parser("download", help="fetch (cifar10) or check (digits, imagefolder) raw data")
    _dataset_option(p, help="the dataset's config section, with its name")
    p.add_argument("--out", required=True, help="manifest JSON to write")
    _common(p)

    p = sub.add_parser("prepare", help="raw data -> one uint8 array file (data.npz)")
    _dataset_option(p)
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

    p = sub.add_parser("cache-features", help="run a frozen backbone once over a dataset; store fp16 features")
    p.add_argument("--backbone", required=True, metavar="JSON",
                   help="the backbone's config section with its name and the normalisation")
    p.add_argument("--data", required=True, help="data.npz")
    p.add_argument("--out", required=True, help="features .pt to write")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--log", metavar="PATH", help="also write log lines to this file (replaced each run)")

    p = sub.add_parser("verify", help="module-level checks of one model (no data): stats, gradients, references")
    _common(p, model=True)
    p.add_argument("--expect", metavar="JSON", help="the model's `verify:` section (documented zero-gradient "
                   "parameters; default {}, with --model-name: the config's)")
    p.add_argument("--out", required=True, help="verify JSON to write")

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
    p.add_argument("--seed", type=int, help="seed of this run (default: the config's); repeats use seed, seed+1, ...")
    p.add_argument("--weights", required=True, help="state_dict to write")
    p.add_argument("--history", required=True, help="history.csv to write")
    p.add_argument("--run", required=True, help="run.json to write")

    p = sub.add_parser("evaluate", help="test metrics, per-class accuracy, confusion matrix")
    _common(p, model=True, compute=True)
    p.add_argument("--data", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--metrics", required=True, help="metrics.json to write")
    p.add_argument("--confusion", required=True, help="confusion.csv to write")
    p.add_argument("--predictions", help="predictions.csv to write: each test image's actual and predicted class")
    p.add_argument("--extra-test", action="append", default=[], metavar="NAME=ROOT",
                   help="also evaluate on ROOT/test/<class>/* (imagefolder); repeatable")

    p = sub.add_parser("attention", help="class-token attention maps per layer of a trained ViT (one test image)")
    _common(p, model=True)
    p.add_argument("--data", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--index", type=int, default=0, help="which test image (default: the first)")

    p = sub.add_parser("samples", help="sample grid (+ reconstructions or G/D losses) of a trained vae or acgan")
    _common(p, model=True)
    p.add_argument("--data", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--history", required=True, help="the training run's history.csv (AC-GAN loss curves)")
    p.add_argument("--out", required=True, help="PNG to write")

    p = sub.add_parser("report", help="comparison table (CSV + Markdown) and figures")
    _dataset_option(p)
    p.add_argument("--papers", metavar="JSON", help="{model: paper block} (default with --config: from the config)")
    p.add_argument("--models", required=True, nargs="+")
    p.add_argument("--metrics", required=True, nargs="+", help="metrics.json per model, same order")
    p.add_argument("--runs", required=True, nargs="+", help="run.json per model, same order")
    p.add_argument("--best", required=True, nargs="+", help="best.json per model, same order")
    p.add_argument("--histories", required=True, nargs="+", help="history.csv per model, same order")
    p.add_argument("--confusions", nargs="*", default=[], help="confusion.csv per model, same order")
    p.add_argument("--verify", nargs="*", default=[], help="verify JSON per model (module verification table)")
    p.add_argument("--study", metavar="JSON", help="the config's `study:` paper spec (default with --config: from it)")
    p.add_argument("--ablations", metavar="JSON",
                   help="the config's `ablations:` among --models (default with --config: from it)")
    p.add_argument("--table-csv", required=True)
    p.add_argument("--table-md", required=True)
    p.add_argument("--verdicts-csv", help="default: verdicts.csv beside --table-csv")
    p.add_argument("--ablations-csv", help="default: ablations.csv beside --table-csv")
    p.add_argument("--verification-csv", help="default: verification.csv beside --table-csv")
    p.add_argument("--summary-json", help="summary.json to write: each model's mean test accuracy and loss")
    p.add_argument("--figures", required=True, help="folder for curves_<model>.png and accuracy.png")
    _common(p)
    return parser


def _setup_logging(path: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path:
        from pathlib import Path

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, mode="w"))
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
    _from_config(args)
    if stage == "dvc-yaml":
        from reprozoo.dvc import write_dvc_yaml

        path = write_dvc_yaml(args.configfile, check=args.check)
        print(f"{path}: {'up to date' if args.check else 'written'}")
        return
    if stage == "check-config":
        cfg = load_config(args.config_file, *args.overrides)
        if args.model_json:
            print(json.dumps(resolve_model(cfg, args.model_json), indent=2, sort_keys=True))
        else:
            from reprozoo.config import run_models

            print(f"config OK: datasets {cfg['run']['datasets']} x models {run_models(cfg)}")
        return
    if stage == "download":
        from reprozoo.data import download

        manifest = download(_dataset(args.dataset), args.out)
        log.info("%s (%s) ready: manifest %s", manifest["dataset"], manifest["kind"], args.out)
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
    elif stage == "cache-features":
        from reprozoo.features import cache_features

        spec = parse_json_arg(args.backbone, "--backbone")
        normalize, name = spec.pop("normalize", None), spec.pop("name", None)
        validate_against(spec, "backbone", prefix="--backbone")
        if not name or not normalize:
            raise ConfigError("--backbone: needs 'name' and 'normalize' besides the backbone section")
        cache_features({"batch_size": BACKBONE_BATCH_SIZE, **spec, "name": name, "normalize": normalize}, args.data, args.out,
                       _device(args))
    elif stage == "verify":
        from reprozoo.verify import verify

        verify(_model(args.model), args.out, parse_json_arg(args.expect or "{}", "--expect", "verify"))
    elif stage == "tune":
        from reprozoo.tune import tune

        cfg = _model(args.model)
        tune(cfg, args.data, args.split, args.trials, args.best, _device(args), args.features)
    elif stage == "train":
        from reprozoo.train import train

        cfg = _model(args.model)
        if args.seed is not None:
            cfg["seed"] = args.seed
        train(cfg, args.data, args.split, args.best, args.weights, args.history, args.run, _device(args),
              args.features)
    elif stage == "evaluate":
        from reprozoo.evaluate import evaluate

        cfg = _model(args.model)
        extra = {}
        for item in args.extra_test:
            name, sep, root = item.partition("=")
            if not sep or not name or not root:
                raise ConfigError(f"--extra-test '{item}': expected NAME=ROOT")
            extra[name] = root
        evaluate(cfg, args.data, args.weights, args.metrics, args.confusion, _device(args), extra, args.features,
                 args.predictions)
    elif stage == "attention":
        from reprozoo.attention import attention_figure

        attention_figure(_model(args.model), args.data, args.weights, args.out, args.index)
    elif stage == "samples":
        from reprozoo.samples import samples_figure

        samples_figure(_model(args.model), args.data, args.weights, args.history, args.out)
    elif stage == "report":
        from reprozoo.report import report

        if args.papers is None:
            raise ConfigError("report: needs --papers JSON (or --config with --dataset-name)")
        counts = {len(args.models), len(args.metrics), len(args.runs), len(args.best), len(args.histories)}
        if len(counts) != 1:
            raise ConfigError("report: --models, --metrics, --runs, --best and --histories need one entry per model")
        if args.confusions and len(args.confusions) != len(args.models):
            raise ConfigError("report: --confusions needs one entry per model")
        report(_dataset(args.dataset), parse_json_arg(args.papers, "--papers"), args.models, args.metrics,
               args.runs, args.best, args.histories, args.table_csv, args.table_md, args.figures,
               verify_paths=args.verify, confusion_paths=args.confusions,
               study=parse_json_arg(args.study or "{}", "--study"),
               ablations=parse_json_arg(args.ablations or "{}", "--ablations"), verdicts_csv=args.verdicts_csv,
               ablations_csv=args.ablations_csv, verification_csv=args.verification_csv,
               summary_json=args.summary_json)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(getattr(args, "log", None))
    try:
        run(args)
    except UserError as e:  # every problem a user can fix (reprozoo/errors.py): one line, exit 2
        print(f"reprozoo {args.stage}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"reprozoo {args.stage}: interrupted (no partial outputs were written)", file=sys.stderr)
        return 130
    return 0
