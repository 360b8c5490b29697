"""A dataset's files as every stage reads them: data.npz, the split, image folders, cached features.

The stages that make them (download, prepare, split) are in reprozoo/prepare.py. What tune,
train and evaluate read comes from here: `model_inputs`, the images of data.npz or, for a
probe, the features `cache_features` stored (`load_features`).

An imagefolder's manifest records its content: per class, the number of
images, their bytes and a sha256 over every image's name and content
(`scan_tree`). `tree_fingerprint` is the same digest for a whole folder; the
section files of the stages that read a folder carry it (reprozoo/sections.py), so
editing, adding or removing an image reruns those stages (DVC sees the folders as `deps`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

from reprozoo.errors import DataError
from reprozoo.io import atomic_path, load_torch

log = logging.getLogger("reprozoo.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


def _line(e: BaseException) -> str:
    """An exception as one line: its first line of text, or its type."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


# ---------------------------------------------------------------- imagefolder content

def class_folders(folder: Path) -> list[Path]:
    return [Path(folder, name) for name in sorted(e.name for e in os.scandir(folder) if e.is_dir())]


def _image_names(class_dir: str | Path) -> list[str]:
    return sorted(e.name for e in os.scandir(class_dir)
                  if os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS and e.is_file())


def image_files(class_dir: Path) -> list[Path]:
    """The files of one class folder that are read as images, by name."""
    return [Path(class_dir, name) for name in _image_names(class_dir)]


def scan_tree(folder: Path) -> dict:
    """{class: {"images", "bytes", "sha256"}} of folder/<class>/*: a digest over each image's name and content.

    Plain os calls, kept cheap: this runs at every Snakemake DAG build, over every image of every tree.
    """
    classes = {}
    for class_dir in class_folders(folder):
        digest, size, names = hashlib.sha256(), 0, _image_names(class_dir)
        for name in names:
            with open(os.path.join(class_dir, name), "rb") as f:
                data = f.read()
            size += len(data)
            digest.update(name.encode("utf-8", "surrogateescape") + b"\0" + hashlib.sha256(data).digest())
        classes[class_dir.name] = {"images": len(names), "bytes": size, "sha256": digest.hexdigest()}
    return classes


def tree_digest(classes: dict) -> str:
    """One digest for a folder from its scan_tree() entries."""
    return hashlib.sha256(json.dumps(classes, sort_keys=True).encode()).hexdigest()


def tree_fingerprint(folder: str | Path) -> str:
    """tree_digest(scan_tree(folder)), or 'missing' / 'unreadable (...)': never raises (DAG time)."""
    try:
        return tree_digest(scan_tree(Path(folder))) if Path(folder).is_dir() else "missing"
    except OSError as e:
        return f"unreadable ({e.strerror})"


def check_classes(folder: Path, counts: dict[str, int]) -> None:
    """At least two classes, none of them empty: else the model and its report are meaningless."""
    if len(counts) < 2:
        raise DataError(f"imagefolder {folder}: {len(counts)} class folder{'s' if len(counts) != 1 else ''} "
                        f"({', '.join(counts) or 'none'}); a classifier needs at least two")
    empty = [name for name, n in counts.items() if n == 0]
    if empty:
        raise DataError(f"imagefolder {folder}: class folder '{empty[0]}/' has no images "
                        f"({', '.join(IMAGE_EXTENSIONS)})")


def scan_imagefolder(root: Path, split: str, expected: list[str] | None = None) -> dict:
    folder = root / split
    if not folder.is_dir():
        raise DataError(f"imagefolder {root}: missing folder '{split}/' "
                        f"(expected {root}/train/<class>/* and {root}/test/<class>/*)")
    try:
        content = scan_tree(folder)
    except OSError as e:
        raise DataError(f"imagefolder {folder}: cannot read {e.filename} ({e.strerror})") from None
    counts = {name: c["images"] for name, c in content.items()}
    check_classes(folder, counts)
    if expected is not None and list(counts) != expected:
        raise DataError(f"imagefolder {folder}: classes {list(counts)} differ from train's {expected}")
    return {"classes": counts, "content": content, "sha256": tree_digest(content)}


# ---------------------------------------------------------------- data.npz


def read_imagefolder(root: Path, split: str, size: int, classes: list[str] | None = None):
    """Decode root/split/<class>/* into (uint8 NHWC, int64 labels, class names).

    Refuses (one line, naming the folder or file) fewer than two classes, an
    empty class, classes other than `classes`, an undecodable image and one
    large enough to be a decompression bomb (PIL's warning counts as an error).
    """
    from PIL import Image, UnidentifiedImageError

    folder = root / split
    if not folder.is_dir():
        raise DataError(f"imagefolder {root}: missing folder '{split}/'")
    files = {d.name: image_files(d) for d in class_folders(folder)}
    found = list(files)
    if classes is None:
        classes = found
    elif found != list(classes):
        raise DataError(f"imagefolder {folder}: classes {found} differ from the expected {list(classes)}")
    check_classes(folder, {name: len(f) for name, f in files.items()})
    for name in classes:  # what is left out is said, not dropped without a word
        skipped = sorted(e.name for e in os.scandir(folder / name) if not e.name.startswith(".")
                         and e.name not in {f.name for f in files[name]})
        if skipped:
            log.warning("%s/%s: %d entr%s not read (not an image file: %s): %s", folder, name, len(skipped),
                        "y" if len(skipped) == 1 else "ies", ", ".join(IMAGE_EXTENSIONS), ", ".join(skipped[:5])
                        + (", ..." if len(skipped) > 5 else ""))
    altered = {"resized": [], "converted": []}
    images, labels = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        for label, name in enumerate(classes):
            for file in files[name]:
                try:
                    with Image.open(file) as img:
                        if img.mode != "RGB":
                            altered["converted"].append(f"{file.name} ({img.mode})")
                            img = img.convert("RGB")
                        if img.size != (size, size):
                            altered["resized"].append(f"{file.name} ({img.size[0]}x{img.size[1]})")
                            img = img.resize((size, size), Image.Resampling.BILINEAR)
                        images.append(np.asarray(img, dtype=np.uint8))
                except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
                    raise DataError(f"{file}: refusing a possible decompression bomb ({_line(e)})") from None
                except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
                    raise DataError(f"{file}: cannot decode image ({_line(e)})") from None
                labels.append(label)
    for how, found in altered.items():
        if found:
            log.warning("%s: %d of %d images %s to %s (first: %s)", folder, len(found), len(images), how,
                        f"{size}x{size} px" if how == "resized" else "RGB", ", ".join(found[:3]))
    return np.stack(images), np.asarray(labels, dtype=np.int64), list(classes)


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
    return arrays


# ---------------------------------------------------------------- split


def split_checksum(split: dict) -> str:
    lists = {k: split[k] for k in ("tune_train", "tune_val", "train", "test")}
    return hashlib.sha256(json.dumps(lists, sort_keys=True).encode()).hexdigest()


def read_split(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found (run the split stage first)")
    split = json.loads(path.read_text())
    if split.get("checksum") != split_checksum(split):
        raise DataError(f"{path}: checksum mismatch, the index lists were edited or truncated")
    return split


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
    blob = load_torch(path, "features", "cache_features")
    if not isinstance(blob, dict) or not {"x_train", "y_train", "x_test", "y_test", "meta"} <= blob.keys():
        raise DataError(f"{path}: not a features file (missing arrays)")
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
    if not np.array_equal(blob["y_train"].numpy(), arrays["y_train"]) or \
            not np.array_equal(blob["y_test"].numpy(), arrays["y_test"]):
        raise DataError(f"{features_path}: labels differ from {data_path}; recompute the features")
    return {"x_train": blob["x_train"].numpy(), "y_train": arrays["y_train"], "x_test": blob["x_test"].numpy(),
            "y_test": arrays["y_test"], "classes": arrays["classes"]}
