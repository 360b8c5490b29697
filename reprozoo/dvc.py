"""dvc.yaml from the Snakemake workflow: `python -m reprozoo dvc-yaml [--configfile override.yaml]`.

The Snakefile is the one definition of the DAG. This module asks Snakemake for
every job it would run (`--forceall`) and writes one DVC stage per job, with
the job's input files as `deps` (plus the image folders a job reads, its
`params.trees`: Snakemake sees their content through that digest, DVC through
hashing the folders), its output files as `outs` and its shell command,
rewritten in four ways only:

- `--model JSON` / `--dataset JSON` / `--papers JSON` become `--config config.yaml
  [--config override.yaml] --model-name NAME` (resp. `--dataset-name`; papers come
  from the config). Before rewriting, the JSON Snakemake would pass is checked to
  be exactly what the CLI resolves from the config files, so both engines hand
  every stage the same section. DVC then tracks, as `params`, exactly the config
  keys that section is made of, so `dvc repro` reruns only the model whose
  section changed, and `dvc exp run -S config.yaml:models.mlp...` works.
- the split's fractions come from config.yaml through `vars`, unless an override
  file sets them.
- `--threads N` becomes `--threads 0` (torch's default: DVC runs one stage at a
  time, and the file must not depend on the machine it was written on).
- the `all` target (no command) is dropped.

There is one dvc.yaml, at the repository root, for one configuration at a time:
the study by default, the demo after `--configfile config/demo.yaml`. Two
configurations cannot share a repository's DVC pipeline because some outputs
(results/verify/) do not depend on the dataset. The header records the config
files, and `--check` compares the file with a fresh generation for those.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import yaml

from reprozoo.config import ConfigError, _read_yaml, load_config, resolve_dataset, resolve_model

BASE_CONFIG = "config.yaml"
CONFIG_LINE = "# Config: "
HEADER = """\
# Generated from the Snakemake workflow by `{command}`: do not edit.
# tests/test_dvc.py fails when this file is stale (`python -m reprozoo dvc-yaml --check`).
""" + CONFIG_LINE + "{configs}\n"
# Values the CLI gets on the command line that come straight from config.yaml.
SPLIT_VARS = {"--tune-fraction": "protocol.split.tune_fraction", "--val-fraction": "protocol.split.val_fraction"}


DVC_YAML = Path("dvc.yaml")


def recorded_overrides(path: Path = DVC_YAML) -> list[str]:
    """The override files an existing dvc.yaml was generated for (its `# Config:` line)."""
    for line in path.read_text().splitlines() if path.is_file() else []:
        if line.startswith(CONFIG_LINE):
            return line[len(CONFIG_LINE):].split(" + ")[1:]
    raise ConfigError(f"{path}: no '{CONFIG_LINE.strip()}' line; regenerate it with `python -m reprozoo dvc-yaml`")


def snakemake_jobs(configfiles: list[str]) -> list[dict]:
    """Every job of `snakemake --forceall` in the working directory: rule, wildcards, files, command."""
    try:
        return _snakemake_jobs(configfiles)
    except (ConfigError, SystemExit):
        raise
    except Exception as e:  # the workflow itself does not load: one line, as for config errors
        raise ConfigError(f"Snakemake: {str(e).strip().splitlines()[0]}") from None


def _snakemake_jobs(configfiles: list[str]) -> list[dict]:
    import logging

    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (ConfigSettings, DAGSettings, OutputSettings, Quietness,
                                          ResourceSettings)

    logging.getLogger("snakemake").propagate = False  # its progress lines are not ours to print
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        workflow_api = api.workflow(resource_settings=ResourceSettings(cores=1),
                                    config_settings=ConfigSettings(configfiles=[Path(f) for f in configfiles]),
                                    snakefile=Path("Snakefile"), workdir=Path.cwd())
        workflow_api.dag(DAGSettings(forceall=True))
        # What `snakemake --forceall --dag` does, keeping the jobs instead of printing them.
        workflow = workflow_api._workflow
        workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True)
        workflow._build_dag()
        jobs = []
        for level in workflow.dag.toposorted():
            for job in sorted(level, key=lambda j: (j.rule.name, sorted(j.wildcards_dict.items()))):
                if not job.output and not job.shellcmd:
                    continue  # a target rule such as `all`
                if not job.shellcmd:
                    raise ConfigError(f"rule {job.rule.name}: no shell command, so no DVC stage")
                trees = job.params.get("trees") or {}  # image folders the job reads (rules/common.smk)
                jobs.append({"rule": job.rule.name, "wildcards": dict(job.wildcards_dict),
                             "deps": [str(f) for f in job.input] + list(trees),
                             "outs": [str(f) for f in job.output],
                             "cmd": job.shellcmd})
        return jobs


def _has(data: dict, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


class _Pipeline:
    """Turns Snakemake jobs into DVC stages for one list of config files."""

    def __init__(self, overrides: list[str]):
        self.files = [BASE_CONFIG, *overrides]
        self.raw = {f: _read_yaml(f) for f in self.files}
        self.cfg = load_config(*self.files)
        # `${key}` for values only config.yaml sets (vars cannot merge override files).
        self.vars = {key for key in SPLIT_VARS.values()
                     if not any(_has(self.raw[f], key) for f in overrides)}

    def params(self, keys: list[str]) -> list[dict]:
        """`params:` entries: each key from every config file that sets it (DVC needs the key to exist)."""
        entries = []
        for f in self.files:
            present = [k for k in keys if _has(self.raw[f], k)]
            if present:
                entries.append({f: present})
        return entries

    def section_keys(self, name: str) -> list[str]:
        """models.NAME, or for an ablation its base model's section and ablations.NAME."""
        ablation = self.cfg.get("ablations", {}).get(name)
        return [f"models.{ablation['base']}", f"ablations.{name}"] if ablation else [f"models.{name}"]

    def model_keys(self, name: str) -> list[str]:
        """What resolve_model(cfg, name) is made of: the section, protocol without split, seed (+ backbone)."""
        keys = self.section_keys(name)
        keys += [f"protocol.{k}" for k in self.cfg["protocol"] if k != "split"]
        backbone = self.cfg["models"][name].get("backbone")
        if backbone:
            keys.append(f"backbones.{backbone}")
        return keys + ["seed"]

    def stage(self, job: dict) -> tuple[str, dict]:
        tokens = shlex.split(job["cmd"])
        if tokens[:3] != ["python", "-m", "reprozoo"]:
            raise ConfigError(f"rule {job['rule']}: command does not start with 'python -m reprozoo'")
        wildcards = job["wildcards"]
        cmd, keys, use_config = tokens[:4], [], False
        i = 4
        while i < len(tokens):
            option, value = tokens[i], tokens[i + 1] if i + 1 < len(tokens) else None
            if option == "--model":
                name = wildcards["model"]
                self._same(job, option, value, resolve_model(self.cfg, name))
                cmd += ["--model-name", name]
                keys += self.model_keys(name)
                use_config = True
            elif option == "--dataset":
                name = wildcards["dataset"]
                self._same(job, option, value, resolve_dataset(self.cfg, name))
                cmd += ["--dataset-name", name]
                keys.append(f"datasets.{name}")
                use_config = True
            elif option == "--papers":
                models = tokens[tokens.index("--models") + 1:]
                models = models[:next((k for k, t in enumerate(models) if t.startswith("--")), len(models))]
                self._same(job, option, value, {m: self.cfg["models"][m].get("paper", {}) for m in models})
                # Whole sections, not just `paper`: a model's change reaches the report anyway
                # (through its metrics), and this way `dvc status` lists the report at once.
                keys += [k for m in models for k in self.section_keys(m)]
                use_config = True
            elif option == "--threads":
                cmd += [option, "0"]
            elif option in SPLIT_VARS and SPLIT_VARS[option] in self.vars:
                key = SPLIT_VARS[option]
                expected = self.cfg["protocol"]["split"][key.split(".")[-1]]
                if value != str(expected):
                    raise ConfigError(f"rule {job['rule']}: {option} {value} is not {key} ({expected})")
                cmd += [option, "${" + key + "}"]
            else:
                cmd.append(option)
                i += 1
                continue
            i += 2
        if use_config:
            cmd[4:4] = [a for f in self.files for a in ("--config", f)]

        ours = {"${" + key + "}" for key in SPLIT_VARS.values()}
        for token in [*cmd, *job["deps"]]:
            if "${" in token and token not in ours:  # DVC would substitute it
                raise ConfigError(f"rule {job['rule']}: '{token}' contains '${{', which DVC would read as "
                                  "a variable; rename that path or config value")

        def quote(token: str) -> str:  # the rule's log redirection stays shell syntax
            return token if token in ours or token in (">", "2>&1") else shlex.quote(token)

        stage = {"cmd": " ".join(quote(t) for t in cmd)}
        if ">" in cmd:  # DVC, unlike Snakemake, does not make the log's folder
            stage["cmd"] = f"mkdir -p {shlex.quote(str(Path(cmd[cmd.index('>') + 1]).parent))} && {stage['cmd']}"
        if job["deps"]:
            stage["deps"] = job["deps"]
        if keys:
            stage["params"] = self.params(keys)
        metrics = [f for f in job["outs"] if Path(f).name == "metrics.json"]
        outs = [f for f in job["outs"] if f not in metrics]
        if outs:
            stage["outs"] = outs
        if metrics:
            stage["metrics"] = metrics
        return "-".join([job["rule"], *wildcards.values()]), stage

    @staticmethod
    def _same(job: dict, option: str, value: str | None, resolved: dict) -> None:
        if value is None or json.loads(value) != json.loads(json.dumps(resolved)):
            raise ConfigError(f"rule {job['rule']} {job['wildcards']}: {option} is not what the CLI resolves "
                              "from the config files; the Snakefile and reprozoo.config disagree")


def render(overrides: list[str]) -> str:
    """The dvc.yaml text for config.yaml + overrides (run in the repository root)."""
    pipeline = _Pipeline(overrides)
    stages = dict(pipeline.stage(job) for job in snakemake_jobs(overrides))
    body: dict = {}
    used = sorted(pipeline.vars & {k for k in SPLIT_VARS.values()
                                   if any("${" + k + "}" in s["cmd"] for s in stages.values())})
    if used:
        body["vars"] = [f"{BASE_CONFIG}:" + ",".join(sorted({k.split(".")[0] for k in used}))]
    body["stages"] = stages
    command = " ".join(["python -m reprozoo dvc-yaml", *(f"--configfile {o}" for o in overrides)])
    header = HEADER.format(command=command, configs=" + ".join(pipeline.files))
    return header + yaml.safe_dump(body, sort_keys=False, width=10_000)


def write_dvc_yaml(overrides: list[str], check: bool = False) -> Path:
    """Write dvc.yaml for config.yaml + overrides; with check, compare it with what it was generated for."""
    path = DVC_YAML
    if check:
        overrides = overrides or recorded_overrides(path)
        if path.read_text() != render(overrides):
            command = " ".join(["python -m reprozoo dvc-yaml", *(f"--configfile {o}" for o in overrides)])
            raise ConfigError(f"{path} is stale (the Snakemake workflow or config changed): run `{command}`")
        return path
    text = render(overrides)
    path.write_text(text)
    return path
