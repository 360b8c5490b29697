"""A dataset's files as every stage reads them: data.npz, the split, cached features.

The stages that make them (download, prepare, split) are in reprozoo/prepare.py; image folders
are reprozoo/images.py's. What tune, train and evaluate read comes from here: `model_inputs`,
the images of data.npz or, for a probe, the features `cache_features` stored (`load_features`).
Each file is checked against what its stage writes before anything is computed from it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

from reprozoo.errors import DataError
from reprozoo.io import atomic_path, load_torch

log = logging.getLogger("reprozoo.data")

def _line(e: BaseException) -> str:
    """An exception as one line: its first line of text, or its type."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


# ---------------------------------------------------------------- data.npz


def save_arrays(path: str | Path, arrays: dict) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def load_arrays(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found (run the prepare stage first)")
    try:
        with np.load(path, allow_pickle=False) as npz:  # never unpickle
            arrays = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, zlib.error, KeyError) as e:
        raise DataError(f"{path}: truncated or corrupt ({_line(e)}); rerun the prepare stage") from None
    missing = {"x_train", "y_train", "x_test", "y_test", "classes"} - arrays.keys()
    if missing:
        raise DataError(f"{path}: missing arrays {sorted(missing)}")
    problem = _arrays_problem(arrays)
    if problem:
        raise DataError(f"{path}: {problem}; rerun the prepare stage")
    return arrays


def _arrays_problem(a: dict) -> str | None:
    """How data.npz's arrays differ from what prepare writes, or None: x_* uint8 (N, H, W, 3) with the
    same H and W, y_* int64 (N,) within [0, number of classes), classes 1-D, unique, at least two."""
    classes = a["classes"]
    if classes.ndim != 1 or len(classes) < 2 or len(np.unique(classes)) != len(classes):
        return f"classes must be at least two unique names, not {classes.tolist()!r:.80}"
    for split in ("train", "test"):
        x, y = a[f"x_{split}"], a[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] != 3 or not x.shape[1] or not x.shape[2]:
            return f"x_{split} is {x.dtype} {x.shape}, not uint8 RGB images (N, height, width, 3)"
        if not len(x):
            return f"x_{split} holds no images"
        if y.dtype != np.int64 or y.shape != x.shape[:1]:
            return f"y_{split} is {y.dtype} {y.shape}, not int64 labels ({len(x)},), one per image of x_{split}"
        if y.min() < 0 or y.max() >= len(classes):
            return f"y_{split} holds labels {y.min()}..{y.max()}, outside 0..{len(classes) - 1} (the classes)"
    if a["x_train"].shape[1:] != a["x_test"].shape[1:]:
        return f"x_train's images are {a['x_train'].shape[1:]}, x_test's {a['x_test'].shape[1:]}: not the same size"
    return None


# ---------------------------------------------------------------- split


SPLIT_LISTS = ("tune_train", "tune_val", "train", "test")


def split_checksum(split: dict) -> str:
    lists = {k: split[k] for k in SPLIT_LISTS}
    return hashlib.sha256(json.dumps(lists, sort_keys=True).encode()).hexdigest()


def read_split(path: str | Path, n_train: int, n_test: int) -> dict:
    """The split file at `path`, for a data.npz of n_train training and n_test test images.

    Refused, in one line naming the file, unless it is what the split stage writes: index lists of
    ints, train = every training image once and test = every test image once (0..n-1), tune_train
    and tune_val disjoint parts of train of the sizes its tune_fraction and val_fraction give, and
    its checksum.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found (run the split stage first)")
    name = path.parent.name if re.fullmatch(r"split-seed\d+\.json", path.name) else "<dataset>"
    rerun = f"rerun the split stage (snakemake, or python -m reprozoo split --dataset {name})"
    try:
        split = json.loads(path.read_bytes())
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror}); {rerun}") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError, bad UTF-8, nesting too deep
        raise DataError(f"{path}: not valid JSON, truncated or corrupt ({_line(e)}); {rerun}") from None
    problem = _split_problem(split, n_train, n_test)
    if problem:
        raise DataError(f"{path}: {problem}; {rerun}")
    return split


def _split_problem(split, n_train: int, n_test: int) -> str | None:
    if not isinstance(split, dict):
        return f"not a JSON object but {type(split).__name__}"
    missing = [k for k in (*SPLIT_LISTS, "tune_fraction", "val_fraction", "checksum") if k not in split]
    if missing:
        return f"missing keys {missing}"
    for key in SPLIT_LISTS:
        entries = split[key]
        if not isinstance(entries, list) or not entries:
            return f"'{key}' is not a non-empty list of image indices"
        odd = [i for i in entries if type(i) is not int]  # bool, float, str, null: not an index
        if odd:
            return f"'{key}' holds {json.dumps(odd[0])[:40]}, not an integer index"
    if split["checksum"] != split_checksum(split):
        return "checksum mismatch, the index lists were edited or truncated"
    n = {"train": n_train, "test": n_test}
    for key in SPLIT_LISTS:
        entries, images = split[key], "test" if key == "test" else "train"
        if len(set(entries)) != len(entries):
            return f"'{key}' lists an image twice"
        if min(entries) < 0 or max(entries) >= n[images]:
            return f"'{key}' holds index {min(entries) if min(entries) < 0 else max(entries)}, outside the " \
                   f"{n[images]} {images} images (0..{n[images] - 1})"
    for key in ("train", "test"):
        if len(split[key]) != n[key]:
            return f"'{key}' lists {len(split[key])} of the {n[key]} {key} images, not each of them once"
    tune_train, tune_val = set(split["tune_train"]), set(split["tune_val"])
    if tune_train & tune_val:
        return f"tune_train and tune_val share {len(tune_train & tune_val)} images (leaked validation images)"
    fractions = (split["tune_fraction"], split["val_fraction"])
    if not all(isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f <= 1 for f in fractions):
        return f"tune_fraction and val_fraction {list(fractions)} are not fractions in (0, 1]"
    n_tune = int(n["train"] * fractions[0])
    n_val = int(n_tune * fractions[1])
    if (len(tune_train), len(tune_val)) != (n_tune - n_val, n_val):
        return f"{len(tune_train)} tune_train / {len(tune_val)} tune_val images, but tune_fraction={fractions[0]} " \
               f"and val_fraction={fractions[1]} of {n['train']} give {n_tune - n_val} / {n_val}"
    return None


def labelled_mask(y: np.ndarray, pool: list[int], per_class: int | None, seed: int, classes=None) -> np.ndarray:
    """Which training images keep their label: `per_class` of each class, drawn
    (seeded) from `pool` (the split's full training list); all of them when None.

    A mask over the whole of `y`. The tuning subset, drawn from the same pool,
    keeps the labels of those of its images that are in the labelled set, so the
    labelled share is the same in tuning and in the final training."""
    mask = np.zeros(len(y), dtype=bool)
    pool = np.asarray(pool, dtype=np.int64)
    if per_class is None:
        mask[pool] = True
        return mask
    rng = np.random.default_rng(seed)
    for c in np.unique(y[pool]):
        members = pool[y[pool] == c]
        if per_class > len(members):
            name = classes[c] if classes is not None else c
            raise DataError(f"config key 'labelled_per_class': {per_class} exceeds the {len(members)} training "
                            f"images of class '{name}'")
        mask[rng.permutation(members)[:per_class]] = True
    return mask


# ---------------------------------------------------------------- what a model trains on

def load_features(path) -> dict:
    """A features file as cache_features writes it: x_* floating (N, dim), finite, the same dim for
    train and test; y_* int64 (N,)."""
    import torch

    blob = load_torch(path, "features", "cache_features")
    if not isinstance(blob, dict) or not {"x_train", "y_train", "x_test", "y_test", "meta"} <= blob.keys():
        raise DataError(f"{path}: not a features file (missing arrays)")
    for split in ("train", "test"):
        x, y = blob[f"x_{split}"], blob[f"y_{split}"]
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 2 or not x.shape[1]:
            problem = f"x_{split} is {getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}, " \
                      "not floating features (N, dim)"
        elif not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.shape != x.shape[:1]:
            problem = f"y_{split} is not int64 labels ({len(x)},), one per row of x_{split}"
        elif x.shape[1] != blob["x_train"].shape[1]:
            problem = f"x_test has {x.shape[1]} features per image, x_train {blob['x_train'].shape[1]}"
        elif not torch.isfinite(x).all():
            problem = f"x_{split} holds NaN or infinite values"
        else:
            continue
        raise DataError(f"{path}: {problem}; rerun the cache_features stage")
    return blob


def model_inputs(cfg: dict, data_path, features_path=None) -> dict:
    """x/y arrays a model trains on: images from data.npz, or a probe's cached features."""
    arrays = load_arrays(data_path)
    if not cfg.get("backbone"):
        return arrays
    if features_path is None:
        raise DataError(f"model '{cfg['name']}' trains on cached features of backbone "
                        f"'{cfg['backbone']['name']}': pass --features")
    blob = load_features(features_path)
    for split in ("train", "test"):
        if len(blob[f"x_{split}"]) != len(arrays[f"y_{split}"]):
            raise DataError(f"{features_path}: {len(blob[f'x_{split}'])} {split} feature rows for the "
                            f"{len(arrays[f'y_{split}'])} {split} images of {data_path}; recompute the features")
    if not np.array_equal(blob["y_train"].numpy(), arrays["y_train"]) or \
            not np.array_equal(blob["y_test"].numpy(), arrays["y_test"]):
        raise DataError(f"{features_path}: labels differ from {data_path}; recompute the features")
    return {"x_train": blob["x_train"].numpy(), "y_train": arrays["y_train"], "x_test": blob["x_test"].numpy(),
            "y_test": arrays["y_test"], "classes": arrays["classes"]}
