"""`python -m reprozoo <stage>`: one pipeline stage, as a rule runs it or by hand.

    python -m reprozoo train --dataset digits --model mlp

reads the model's section file (results/digits/config/model-mlp.json) and every file at its
place in the paths table (reprozoo/stages.py); `--weights PATH` and the like override one path.
`--config YAML` (repeatable: config.yaml, then overrides) first resolves that config and writes
its section files, as the Snakefile does (`--experiments params.yaml` is applied when the file
exists). Tools besides: `resolve` writes the section files, `check-config` validates a
config, `table` shows a comparison table, `dvc-yaml` writes dvc.yaml, `dvc-dag` draws its
stages in order.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import json
import logging
import os
import sys
import traceback
from pathlib import Path

from tqdm.contrib.logging import logging_redirect_tqdm

from reprozoo import __version__, runlock
from reprozoo.errors import ConfigError, UserError
from reprozoo.io import write_text
from reprozoo.stages import JSON_SECTIONS, PATHS, STAGES, Stage, flag

NAMES = {"dataset": "dataset of the paths (results/<dataset>/...)", "model": "model (or ablation) of the config",
         "backbone": "backbone of the config", "seed": "seed of this run (default: the config's)"}


def _add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", action="append", metavar="YAML",
                   help="resolve this config first: config.yaml, then override files in order")
    p.add_argument("--experiments", metavar="YAML",
                   help="per-model overrides applied last (default: params.yaml, where it exists)")
    p.add_argument("--set", metavar="JSON", help="config values set after the files (as snakemake --config)")


def _add_stage(sub, name: str, stage: Stage) -> None:
    p = sub.add_parser(name, help=stage.help, description=stage.help)
    for n in stage.names:
        p.add_argument(flag(n), type=int if n == "seed" else str, metavar="N" if n == "seed" else "NAME",
                       help=NAMES[n])
    if stage.section in JSON_SECTIONS:
        kind = JSON_SECTIONS[stage.section][0]
        p.add_argument(f"--{kind}-json", metavar="JSON", help=f"the resolved {kind} section itself, instead of a file")
    _add_config_options(p)
    for f in (stage.section, *stage.inputs, *stage.outputs):
        p.add_argument(flag(f), metavar="PATH", help=f"default: {PATHS[f]}")
    for f in stage.each_run + stage.each_model:
        p.add_argument(flag(f), metavar="PATH", nargs="+", help=f"one per model{' and seed' * (f in stage.each_run)} "
                                                                 f"(default: {PATHS[f]} of each)")
    for o, opt in stage.options.items():
        p.add_argument(flag(o), type=opt.type, default=opt.default, help=opt.help)
    if stage.compute:
        p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
        p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--log", metavar="PATH", help="write everything the stage prints to this file (replaced each "
                                                 "run); only a failure's one-line reason goes to the terminal")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reprozoo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"reprozoo {__version__}")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="<stage>")
    p = sub.add_parser("resolve", help="validate the config and write the section files each job reads")
    _add_config_options(p)
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
        _add_stage(sub, name, stage)
    return parser


def resolve(args: argparse.Namespace) -> list[str]:
    """Load the config the options name (config.yaml by default) and write its section files that
    changed (reprozoo/resolve.py); the paths written."""
    from reprozoo.config import EXPERIMENTS, load_config, parse_json_arg
    from reprozoo.resolve import resolve as write_plan

    experiments = args.experiments or (EXPERIMENTS if Path(EXPERIMENTS).is_file() else None)
    values = parse_json_arg(args.set, "--set") if args.set else None
    cfg = load_config(*(args.config or ["config.yaml"]), experiments=experiments, values=values)
    return write_plan(cfg, "check" if os.environ.get(runlock.RUN_ENV) else "stage")


def check_config(args: argparse.Namespace) -> str:
    """`check-config`: what the DAG build checks (the config, its image trees, every model built once),
    then the resolved plan, or models.<name> as its stages get it."""
    from reprozoo.config import load_config, run_models
    from reprozoo.resolve import check
    from reprozoo.sections import resolve_model

    cfg = load_config(args.config_file, *args.overrides)
    if args.model_json:
        return json.dumps(resolve_model(cfg, args.model_json), indent=2, sort_keys=True)
    check(cfg)
    return f"config OK: datasets {cfg['run']['datasets']} x models {run_models(cfg)}"


def _section(args: argparse.Namespace, stage: Stage) -> dict:
    """The stage function's config arguments: from `--<kind>-json`, or its section file."""
    from reprozoo.sections import read_section, section_from_json

    if stage.section in JSON_SECTIONS:
        kind, argument = JSON_SECTIONS[stage.section]
        if getattr(args, f"{kind}_json"):
            return {argument: section_from_json(kind, getattr(args, f"{kind}_json"))}
    given = getattr(args, stage.section)  # a file named on the command line is read as it is
    path = given or _fill(stage.section, vars(args), stage)
    if args.config or args.experiments or args.set or not (given or Path(path).is_file()):
        resolve(args)
        if not Path(path).is_file():
            raise ConfigError(f"{path}: not written by the config's run: check the names against its run.datasets, "
                              "run.models and run.ablations")
    return read_section(path)


def _fill(name: str, values: dict, stage: Stage) -> str:
    """PATHS[name] with the stage's names; one line naming what is missing."""
    try:
        return PATHS[name].format(**{k: v for k, v in values.items() if v is not None})
    except KeyError as e:
        missing = e.args[0]
        what = f"--{missing}" if missing in stage.names else f"the {missing} (given by --{stage.names[-1]})"
        raise ConfigError(f"{flag(name)}: give its path, or {what} to take it from the paths table") from None


def stage_call(args: argparse.Namespace):
    """The stage's function, and the keyword arguments the options (and the paths table) give it."""
    stage = STAGES[args.stage]
    kwargs = _section(args, stage)
    cfg = kwargs.get("cfg", {})
    module, function = stage.run.split(":")
    run = getattr(importlib.import_module(module), function)
    names = {n: getattr(args, n, None) for n in ("dataset", "model", "backbone", "seed")}
    names["seed"] = names["seed"] if names["seed"] is not None else kwargs.get("seed", cfg.get("seed"))
    if names["seed"] is not None and "seed" in inspect.signature(run).parameters:
        kwargs["seed"] = names["seed"]  # the split's seed, a training run's seed
    if names["backbone"] is None and cfg.get("backbone"):
        names["backbone"] = cfg["backbone"]["name"]
    for f in stage.inputs + stage.outputs:
        try:
            kwargs[f"{f}_path"] = getattr(args, f) or _fill(f, names, stage)
        except ConfigError:
            if f not in stage.optional:  # e.g. features: a model without a backbone has none
                raise
    runs = kwargs.pop("runs", None)
    if stage.each_run:
        kwargs["models"] = [m for m, _ in runs]
        for f in stage.each_run:
            kwargs[f"{f}_paths"] = getattr(args, f) or [_fill(f, {**names, "model": m, "seed": s}, stage)
                                                        for m, s in runs]
        for f in stage.each_model:
            kwargs[f"{f}_paths"] = getattr(args, f) or [_fill(f, {**names, "model": m}, stage)
                                                        for m in dict.fromkeys(kwargs["models"])]
    kwargs.update({o: getattr(args, o) for o in stage.options if getattr(args, o) is not None})
    return run, kwargs


def run_stage(args: argparse.Namespace) -> None:
    run, kwargs = stage_call(args)
    if not os.environ.get(runlock.RUN_ENV) and _in_results(kwargs.values()):  # not a job of a Snakemake run
        runlock.begin("stage", {}, write_text)  # shared with other stages; refused beside a run
    if STAGES[args.stage].compute:
        from reprozoo.engine import pick_device

        kwargs["device"] = pick_device(args.device, args.threads)
    run(**kwargs)


def _in_results(values) -> bool:
    """Whether any of these paths (or lists of them) lies in this folder's results/."""
    results = Path("results").resolve()
    for value in values:
        for path in value if isinstance(value, list) else [value]:
            if isinstance(path, (str, Path)) and results in Path(path).resolve().parents:
                return True
    return False


def run_tool(args: argparse.Namespace) -> None:
    if args.stage == "resolve":
        written = resolve(args)
        return print(f"section files: {len(written)} written, the others unchanged")
    if args.stage == "table":
        from reprozoo.report.markdown import compact_table

        return print(compact_table(PATHS["table_csv"].format(dataset=args.dataset)))
    if args.stage == "check-config":
        return print(check_config(args))
    if args.stage == "dvc-dag":
        from reprozoo.dvc import draw_stage_order

        return print(draw_stage_order())
    from reprozoo.dvc import write_dvc_yaml

    print(f"{write_dvc_yaml(args.configfile, check=args.check)}: {'up to date' if args.check else 'written'}")


def _after_experiment() -> str:
    """Under `dvc exp run` (DVC sets DVC_EXP_BASELINE_REV) a failure leaves the experiment's `-S` values in
    params.yaml, and the next run would fail the same way: say how to put the workspace back."""
    if not os.environ.get("DVC_EXP_BASELINE_REV"):
        return ""
    return " (this experiment's values stay in params.yaml: `git checkout params.yaml dvc.lock && dvc checkout` " \
           "puts the workspace back)"


def log_to(path: str):
    """Send everything this process prints (Python, warnings, progress, C libraries: file
    descriptors 1 and 2) to the log at `path`, replaced; return the terminal's stderr, where
    only a failure's one-line reason goes."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    sys.stdout.flush()
    sys.stderr.flush()
    terminal = os.fdopen(os.dup(2), "w", buffering=1)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return terminal


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = getattr(args, "log", None)
    terminal = log_to(log) if log else sys.stderr
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        handlers=[logging.StreamHandler(sys.stderr)], force=True)
    reason = None
    try:
        with contextlib.nullcontext() if log else logging_redirect_tqdm():  # a terminal: bars and lines apart
            run_stage(args) if args.stage in STAGES else run_tool(args)
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
