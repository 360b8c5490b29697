"""Shared fixtures. Tests load the real config and shrink it; data is made here."""
from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from reprozoo.config import deep_merge, load_config
from reprozoo.sections import resolve_model

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TQDM_DISABLE", "1")  # keep test output readable
# On a pytest-xdist worker (`make test` runs two, on two cores) torch computes on one thread,
# and so do the commands the tests start (they inherit it): two workers with two threads each
# oversubscribe the cores, and OpenMP's spin-waiting threads then slow tests down severalfold.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


# `make test` runs the suite on two pytest-xdist workers with --dist loadfile: a file's tests
# stay on one worker, so each module fixture (a SLURM cluster, a DVC repository) is built once.
# The longest files start first, so that no worker is left alone with one at the end: the demo
# image (building it is mostly download and disk), the demo pipeline, the SLURM cluster (mostly
# waiting on status polls), the DVC round trips.
LONGEST_FIRST = ["test_image.py", "test_pipeline.py", "test_slurm.py", "test_dvc.py"]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order otherwise
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def study_cfg() -> dict:
    """The full study config, as published."""
    return load_config(ROOT / "config.yaml")


@pytest.fixture(scope="session")
def demo_cfg() -> dict:
    return load_config(ROOT / "config.yaml", ROOT / "config" / "demo.yaml")


def tiny_model_cfg(cfg: dict, name: str, **overrides) -> dict:
    """A model's resolved section with a tiny budget for fast tests."""
    small = {"tune": {"max_evals": 2, "max_epochs": 2, "patience": 1}, "batch_size": 32}
    return deep_merge(resolve_model(cfg, name), deep_merge(small, overrides))


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory) -> Path:
    from reprozoo.prepare import prepare

    path = tmp_path_factory.mktemp("digits") / "data.npz"
    prepare({"name": "digits", "kind": "digits", "image_size": 32}, path)
    return path


@pytest.fixture(scope="session")
def digits_split(digits_npz) -> Path:
    from reprozoo.prepare import write_split

    path = digits_npz.parent / "split-seed3407.json"
    write_split(digits_npz, path, 3407, 0.2, 0.2)
    return path


def write_imagefolder(root: Path, classes=("cat", "dog"), per_class=(6, 3), size=32, seed=0) -> Path:
    """A tiny root/{train,test}/<class>/*.png tree; class c is brighter than class c-1."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "test"), per_class):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = 40 + 160 * c // max(1, len(classes) - 1)
                img = np.clip(rng.normal(base, 10, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{i:04d}.png")
    return root


def write_cifar_archive(folder: Path, n_per_batch=20, seed=0) -> Path:
    """A CIFAR-10-format cifar-10-python.tar.gz (python pickles, as the real one) with random images."""
    rng = np.random.default_rng(seed)
    src = folder / "build" / "cifar-10-batches-py"
    src.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, n_per_batch).tolist()}
        with open(src / name, "wb") as f:
            pickle.dump(batch, f)
    with open(src / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"]}, f)
    archive = folder / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
    shutil.rmtree(folder / "build")
    return archive


def run_cli(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reprozoo", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


BIN = Path(sys.executable).parent


def run_snakemake(*args, cwd=ROOT, timeout=1800) -> subprocess.CompletedProcess:
    """Snakemake from this venv, with this venv's python first on PATH for the rules' shell commands."""
    import os

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "TQDM_DISABLE": "1"}
    return subprocess.run([str(BIN / "snakemake"), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


# The tiny pipeline with one model (digits, mlp): for tests that check a mechanism (resume, SLURM,
# containers) rather than the number of models. Paths relative to a copy_workflow() folder.
TINY_MLP = ["tests/tiny.yaml", "tests/tiny_mlp.yaml"]
WORKFLOW_FILES = ["Snakefile", "rules", "reprozoo", "workflow", "config.yaml", "config", "envs", "profiles"]


def copy_workflow(work: Path) -> Path:
    """A runnable copy of the workflow (code, rules, configs, profiles) in `work`."""
    for name in WORKFLOW_FILES:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, work / name)
    for cache in work.rglob("__pycache__"):
        shutil.rmtree(cache)
    (work / "tests").mkdir(exist_ok=True)
    for tiny in TINY_MLP:
        shutil.copy2(ROOT / tiny, work / tiny)
    return work


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The demo (`snakemake --cores 2 --configfile config/demo.yaml`), run once per test session
    in a copy of the workflow: every test that needs a finished demo pipeline reads this one.
    Returns (work folder, wall seconds). Tests that change files in it restore them."""
    import time

    work = copy_workflow(tmp_path_factory.mktemp("demo"))
    start = time.perf_counter()
    result = run_snakemake("--cores", "2", "--configfile", "config/demo.yaml", cwd=work)
    assert result.returncode == 0, result.stderr[-5000:]
    return work, time.perf_counter() - start


def split_section(folder: Path) -> Path:
    """A split section file (results/<dataset>/config/split.json): the study's fractions."""
    path = folder / "split-section.json"
    path.write_text('{"seed": 3407, "tune_fraction": 0.2, "val_fraction": 0.2}\n')
    return path


def one_line_error(result, stage: str) -> str:
    """The CLI's error: exit 2, one line `reprozoo <stage>: error: ...`, no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"reprozoo {stage}: error: "), result.stderr
    return lines[0]
