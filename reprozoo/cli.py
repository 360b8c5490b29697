"""`python -m reprozoo <stage>`: each stage's options and dispatch come from its declaration in
reprozoo/stages.py. A stage reads its config section by name from the config files, as the rules
pass them (`--config config.yaml [--config override.yaml] [--experiments params.yaml]
--model-name mlp`), or for one-off runs as JSON (`--model JSON`). Two tools besides:
`check-config` validates a config file, `dvc-yaml` writes dvc.yaml from the Snakemake workflow.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import sys
from pathlib import Path

from reprozoo.config import (CONFIG_VALUES, SECTIONS, ConfigError, check_config, load_config, parse_json_arg,
                             section_from_json)
from reprozoo.errors import UserError
from reprozoo.stages import PATHS, STAGES, Stage, flag


def _add_stage(sub, name: str, stage: Stage) -> None:
    p = sub.add_parser(name, help=stage.help, description=stage.help)
    if stage.section or stage.from_config:
        p.add_argument("--config", action="append", metavar="YAML", help="config.yaml, then override files in order")
        p.add_argument("--experiments", metavar="YAML", help="params.yaml: per-model overrides (DVC experiments)")
        p.add_argument("--set", metavar="JSON", help="config values set after the files (snakemake --config)")
    if stage.section:
        group = p.add_mutually_exclusive_group(required=True)
        group.add_argument(f"--{stage.section}-name", metavar="NAME", help=f"{stage.section}s.NAME from --config")
        group.add_argument(f"--{stage.section}", metavar="JSON", help="or the resolved section itself, as JSON")
    for f in stage.inputs + stage.outputs:
        p.add_argument(flag(f), metavar="PATH", required=f not in stage.optional, help=f"pipeline: {PATHS[f]}")
    for f in stage.each_run + stage.each_model:
        p.add_argument(flag(f), metavar="PATH", nargs="*" if f in stage.optional else "+", default=[],
                       required=f not in stage.optional, help=f"one per model{' and seed' * (f in stage.each_run)}")
    for o, opt in stage.options.items():
        p.add_argument(flag(o), type=opt.type, default=opt.default, required=opt.required, help=opt.help,
                       nargs="+" if opt.many else None)
    if stage.compute:
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
    p = sub.add_parser("dvc-yaml", help="write dvc.yaml from the Snakemake workflow's DAG (same stages and files)")
    p.add_argument("--configfile", action="append", default=[], metavar="YAML",
                   help="override file(s) on top of config.yaml, as for snakemake (default: the study)")
    p.add_argument("--check", action="store_true", help="write nothing; fail when dvc.yaml is stale")
    for name, stage in STAGES.items():
        _add_stage(sub, name, stage)
    return parser


def _config(args: argparse.Namespace, stage: Stage) -> dict | None:
    """The config the --config files (+ --set, --experiments) make; None without them."""
    if not args.config:
        needs = [o for o in (f"{stage.section}_name", "experiments", "set") if getattr(args, o, None)]
        if needs:
            raise ConfigError(f"{flag(needs[0])}: needs --config config.yaml")
        return None
    values = parse_json_arg(args.set, "--set") if args.set else None
    return load_config(*args.config, experiments=args.experiments, values=values)


def run_stage(args: argparse.Namespace) -> None:
    stage = STAGES[args.stage]
    cfg = _config(args, stage) if stage.section or stage.from_config else None
    positional, kwargs, name = [], {}, None
    if stage.section:
        name = getattr(args, f"{stage.section}_name")
        positional.append(SECTIONS[stage.section](cfg, name) if name else
                          section_from_json(stage.section, getattr(args, stage.section)))
    if cfg is not None:
        kwargs.update({v: CONFIG_VALUES[v](cfg, name, getattr(args, "models", [])) for v in stage.from_config})
    kwargs.update({f"{f}_path": getattr(args, f) for f in stage.inputs + stage.outputs})
    kwargs.update({f"{f}_paths": getattr(args, f) for f in stage.each_run + stage.each_model})
    kwargs.update({o: getattr(args, o) for o in stage.options})
    if stage.compute:
        from reprozoo.engine import pick_device

        kwargs["device"] = pick_device(args.device, args.threads)
    module, function = stage.run.split(":")
    run = getattr(importlib.import_module(module), function)
    if cfg is None and stage.from_config:  # a section given as JSON: the function's defaults, if it has them
        params = inspect.signature(run).parameters
        if needed := [v for v in stage.from_config if params[v].default is inspect.Parameter.empty]:
            raise ConfigError(f"needs --config config.yaml (its {', '.join(needed)} come from the config)")
    run(*positional, **kwargs)


def run_tool(args: argparse.Namespace) -> None:
    if args.stage == "check-config":
        return print(check_config(args.config_file, *args.overrides, model=args.model_json))
    from reprozoo.dvc import write_dvc_yaml

    print(f"{write_dvc_yaml(args.configfile, check=args.check)}: {'up to date' if args.check else 'written'}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if getattr(args, "log", None):
        Path(args.log).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(args.log, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        handlers=handlers, force=True)
    try:
        run_stage(args) if args.stage in STAGES else run_tool(args)
    except UserError as e:  # every problem a user can fix (reprozoo/errors.py): one line, exit 2
        print(f"reprozoo {args.stage}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"reprozoo {args.stage}: interrupted (no partial outputs were written)", file=sys.stderr)
        return 130
    return 0
