"""How a stage's command line becomes its function's arguments (reprozoo/cli.py runs the function).

A stage's declaration (reprozoo/stages.py) gives its options: the names its paths are filled with
(`--dataset digits --model mlp`), one `--<file> PATH` per file it reads or writes, its own options.
Its function then receives the arguments of its section file (or of `--<kind>-json`), and
`<file>_path` for each file, taken from the paths table unless given on the command line
(`--best PATH` becomes `best_path`); a report-like stage takes `<file>_paths`, one per model and seed.
"""
from __future__ import annotations

import argparse
import inspect
import os
from pathlib import Path

from reprozoo import runlock
from reprozoo.errors import ConfigError
from reprozoo.stages import JSON_SECTIONS, PATHS, Stage, flag

NAMES = {"dataset": "dataset of the paths (results/<dataset>/...)", "model": "model (or ablation) of the config",
         "backbone": "backbone of the config", "seed": "seed of this run (default: the config's)"}


def add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", action="append", metavar="YAML",
                   help="resolve this config first: config.yaml, then override files in order")
    p.add_argument("--experiments", metavar="YAML",
                   help="per-model overrides applied last (default: params.yaml, where it exists)")
    p.add_argument("--set", metavar="JSON", help="config values set after the files (as snakemake --config)")


def add_stage(sub, name: str, stage: Stage) -> None:
    """The subcommand of one stage, from its declaration."""
    p = sub.add_parser(name, help=stage.help, description=stage.help)
    for n in stage.names:
        p.add_argument(flag(n), type=int if n == "seed" else str, metavar="N" if n == "seed" else "NAME",
                       help=NAMES[n])
    if stage.section in JSON_SECTIONS:
        kind = JSON_SECTIONS[stage.section][0]
        p.add_argument(f"--{kind}-json", metavar="JSON", help=f"the resolved {kind} section itself, instead of a file")
    add_config_options(p)
    for f in (stage.section, *stage.inputs, *stage.outputs):
        p.add_argument(flag(f), metavar="PATH", help=f"default: {PATHS[f]}")
    for f in stage.each_run + stage.each_model:
        p.add_argument(flag(f), metavar="PATH", nargs="+", help=f"one per model{' and seed' * (f in stage.each_run)} "
                                                                 f"(default: {PATHS[f]} of each)")
    for o, opt in stage.options.items():
        p.add_argument(flag(o), type=opt.type, default=opt.default, help=opt.help)
    if stage.compute:
        p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--log", metavar="PATH", help="write everything the stage prints to this file (replaced each "
                                                 "run); only a failure's one-line reason goes to the terminal")
    p.add_argument("--benchmark", metavar="PATH", help="after the stage succeeds, write its wall time, memory and CPU "
                                                       "time here, as Snakemake's `benchmark:` does (DVC's jobs)")


def resolve(args: argparse.Namespace) -> list[str]:
    """Load the config the options name (config.yaml by default) and write its section files that
    changed (reprozoo/resolve.py); the paths written."""
    from reprozoo.config import EXPERIMENTS, load_config, parse_json_arg
    from reprozoo.resolve import resolve as write_plan

    experiments = args.experiments or (EXPERIMENTS if Path(EXPERIMENTS).is_file() else None)
    values = parse_json_arg(args.set, "--set") if args.set else None
    cfg = load_config(*(args.config or ["config.yaml"]), experiments=experiments, values=values)
    return write_plan(cfg, "check" if os.environ.get(runlock.RUN_ENV) else "stage")


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


def stage_arguments(args: argparse.Namespace, stage: Stage, function) -> dict:
    """The keyword arguments the options, the section file and the paths table give `function`."""
    kwargs = _section(args, stage)
    cfg = kwargs.get("cfg", {})
    names = {n: getattr(args, n, None) for n in ("dataset", "model", "backbone", "seed")}
    names["seed"] = names["seed"] if names["seed"] is not None else kwargs.get("seed", cfg.get("seed"))
    if names["seed"] is not None and "seed" in inspect.signature(function).parameters:
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
    return kwargs


def in_results(values) -> bool:
    """Whether any of these paths (or lists of them) lies in this folder's results/."""
    results = Path("results").resolve()
    for value in values:
        for path in value if isinstance(value, list) else [value]:
            if isinstance(path, (str, Path)) and results in Path(path).resolve().parents:
                return True
    return False
