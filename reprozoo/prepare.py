"""Datasets -> one uint8 array artifact -> a seeded split: the download, prepare and split stages.

`download` fetches or checks the raw data and writes a manifest, `prepare` decodes it into
results/{dataset}/data.npz (uint8 NHWC images, int64 labels, class names), `split` writes the
study's tuning split as index lists with a checksum. What they write is read through
reprozoo/data.py (image trees: reprozoo/images.py).
"""
from __future__ import annotations

import json
import logging
import os
import tarfile
import zlib
from pathlib import Path
from urllib.error import URLError

import numpy as np

from reprozoo.data import load_arrays, save_arrays, split_checksum
from reprozoo.errors import DataError
from reprozoo.images import read_imagefolder, scan_imagefolder
from reprozoo.io import atomic_path, read_json, write_json

log = logging.getLogger("reprozoo.prepare")


# ---------------------------------------------------------------- download

def download(dataset: dict, manifest_path: str | Path) -> dict:
    """Fetch (cifar10) or check (digits, imagefolder) the raw data; write a manifest."""
    kind = dataset["kind"]
    if kind == "cifar10":
        manifest = _download_cifar10(Path(dataset["root"]))
    elif kind == "digits":
        from sklearn.datasets import load_digits

        manifest = {"source": "sklearn.datasets.load_digits", "images": int(len(load_digits().target))}
    elif kind == "imagefolder":
        root = Path(dataset["root"])
        train = scan_imagefolder(root, "train")
        manifest = {"root": dataset["root"], "train": train,
                    "test": scan_imagefolder(root, "test", list(train["classes"]))}
    else:  # the schema rules this out; keep the error explicit all the same
        raise DataError(f"dataset '{dataset['name']}': unknown kind '{kind}'")
    manifest = {"dataset": dataset["name"], "kind": kind, **manifest}
    write_json(manifest_path, manifest)
    log.info("%s (%s) ready: manifest %s", dataset["name"], kind, manifest_path)
    return manifest


def _download_cifar10(root: Path) -> dict:
    """torchvision's download and MD5 check, then our own extraction (members stay inside `root`)."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity, download_url

    batches = root / CIFAR10.base_folder
    if not all(check_integrity(str(batches / name), md5) for name, md5 in CIFAR10.train_list + CIFAR10.test_list):
        try:
            download_url(CIFAR10.url, str(root), CIFAR10.filename, CIFAR10.tgz_md5)  # skips a placed, verified file
        except (URLError, OSError, RuntimeError) as e:
            raise DataError(
                f"cannot get CIFAR-10 into {root}/ ({getattr(e, 'reason', e)}). Without network access, "
                f"download {CIFAR10.url} elsewhere and place {CIFAR10.filename} (MD5 {CIFAR10.tgz_md5}) "
                f"in {root}/, then rerun") from None
        extract_tar(root / CIFAR10.filename, root)
    try:
        CIFAR10(root, train=True)  # verifies every batch file's MD5
    except RuntimeError:
        raise DataError(f"{root / CIFAR10.filename}: extracted, but the batch files under {batches}/ fail their "
                        "MD5 check; delete the folder and rerun") from None
    return {"root": str(root), "archive": CIFAR10.filename, "md5": CIFAR10.tgz_md5,
            "files": {name: md5 for name, md5 in CIFAR10.train_list + CIFAR10.test_list}}


def extract_tar(archive: Path, dest: Path) -> None:
    """Extract a tar archive into `dest`, refusing it whole if any member would land outside.

    Every member passes tarfile's "data" filter (no absolute paths, no `..`, no
    links pointing out of `dest`, no devices) before anything is written.
    """
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                if member.name.startswith(("/", os.sep)):  # the filter would strip the slash; refuse it
                    raise tarfile.AbsolutePathError(member)
                tarfile.data_filter(member, str(dest))
            tar.extractall(dest, members=members, filter="data")
    except tarfile.FilterError as e:
        raise DataError(f"{archive}: refusing to extract into {dest}/, unsafe member ({e}); "
                        "delete the archive and get a genuine one") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{archive}: cannot extract ({e}); delete it and rerun") from None


# ---------------------------------------------------------------- prepare

def prepare(dataset: dict, data_path: str | Path, manifest_path: str | Path | None = None) -> dict:
    """Raw data -> data.npz (x_* uint8 NHWC, y_* int64, classes); the download stage's manifest, if
    given, must be readable (the pipeline's order: download before prepare)."""
    if manifest_path is not None:
        read_json(manifest_path)
    kind, size = dataset["kind"], dataset["image_size"]
    if kind == "cifar10":
        arrays = _prepare_cifar10(Path(dataset["root"]))
    elif kind == "digits":
        arrays = _prepare_digits(size)
    else:
        arrays = _prepare_imagefolder(Path(dataset["root"]), size)
    save_arrays(data_path, arrays)
    shapes = {k: list(v.shape) for k, v in arrays.items()}
    log.info("prepared %s: %s", data_path, shapes)
    return shapes


def _prepare_cifar10(root: Path) -> dict:
    from torchvision.datasets import CIFAR10

    try:
        train, test = CIFAR10(root, train=True), CIFAR10(root, train=False)
    except RuntimeError:
        raise DataError(f"CIFAR-10 not found or corrupt under {root}/ (run the download stage)") from None
    return {"x_train": np.asarray(train.data, dtype=np.uint8), "y_train": np.asarray(train.targets, np.int64),
            "x_test": np.asarray(test.data, dtype=np.uint8), "y_test": np.asarray(test.targets, np.int64),
            "classes": np.asarray(train.classes)}


def _prepare_digits(size: int) -> dict:
    """scikit-learn's 1,797 8x8 digits (values 0-16) -> size x size RGB uint8.

    The train/test split is the dataset's own, fixed (stratified, 20% test,
    random_state=0), not the study's seed: it defines the dataset.
    """
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0          # (N, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)    # (N, 3, size, size)
    x = x.permute(0, 2, 3, 1).contiguous().numpy()                           # NHWC
    y = digits.target.astype(np.int64)
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=0)
    return {"x_train": x[idx_train], "y_train": y[idx_train], "x_test": x[idx_test], "y_test": y[idx_test],
            "classes": np.asarray([str(d) for d in digits.target_names])}


def _prepare_imagefolder(root: Path, size: int) -> dict:
    x_train, y_train, classes = read_imagefolder(root, "train", size)
    x_test, y_test, _ = read_imagefolder(root, "test", size, classes)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
            "classes": np.asarray(classes)}


# ---------------------------------------------------------------- split

def make_split(n_train: int, n_test: int, seed: int, tune_fraction: float, val_fraction: float) -> dict:
    """The study's protocol: a random `tune_fraction` of train, split into tune-train/tune-val.

    Mirrors the notebook: randperm -> first 20% -> random_split 80/20, but with
    a dedicated generator so nothing else consumes the seed's random stream.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n_train, generator=gen)
    n_tune = int(n_train * tune_fraction)
    tune = perm[:n_tune]
    n_val = int(n_tune * val_fraction)
    order = torch.randperm(n_tune, generator=gen)
    split = {
        "seed": seed, "tune_fraction": tune_fraction, "val_fraction": val_fraction,
        "tune_train": tune[order[:n_tune - n_val]].tolist(),
        "tune_val": tune[order[n_tune - n_val:]].tolist(),
        "train": list(range(n_train)),
        "test": list(range(n_test)),
    }
    if not split["tune_train"] or not split["tune_val"]:
        raise DataError(f"split: {n_train} training images are too few for tune_fraction={tune_fraction}, "
                        f"val_fraction={val_fraction} (an empty tune-train or tune-val set)")
    split["checksum"] = split_checksum(split)
    return split


def write_split(data_path: str | Path, split_path: str | Path, seed: int, tune_fraction: float,
                val_fraction: float) -> dict:
    arrays = load_arrays(data_path)
    split = make_split(len(arrays["y_train"]), len(arrays["y_test"]), seed, tune_fraction, val_fraction)
    with atomic_path(split_path) as tmp:  # compact and byte-identical for the same inputs
        tmp.write_text(json.dumps(split, sort_keys=True, separators=(",", ":")) + "\n")
    log.info("split seed %d: %d tune-train / %d tune-val / %d train / %d test", seed, len(split["tune_train"]),
             len(split["tune_val"]), len(split["train"]), len(split["test"]))
    return split
