"""Datasets -> one uint8 array artifact -> a seeded split.

Stages: `download` (fetch or check the raw data, write a manifest), `prepare`
(raw -> results/{dataset}/data.npz with uint8 NHWC images, int64 labels and
class names), `split` (the study's tuning split as index lists + checksum).

An imagefolder's manifest records its content: per class, the number of
images, their bytes and a sha256 over every image's name and content
(`scan_tree`). `tree_fingerprint` is the same digest for a whole folder; the
Snakefile passes it as a `params:` value, so editing, adding or removing an
image reruns the stages that read it (DVC sees the folders as `deps`).

What tune, train and evaluate read comes from here too: `model_inputs`, the
images of data.npz or, for a probe, the features `cache_features` stored
(`load_features`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
import warnings
import zipfile
import zlib
from pathlib import Path
from urllib.error import URLError

import numpy as np

from reprozoo.config import IMAGE_SIZE
from reprozoo.errors import DataError
from reprozoo.io import atomic_path, load_torch, read_json, write_json

log = logging.getLogger("reprozoo.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


def _line(e: BaseException) -> str:
    """An exception as one line: its first line of text, or its type."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


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
        train = _scan_imagefolder(root, "train")
        manifest = {"root": dataset["root"], "train": train,
                    "test": _scan_imagefolder(root, "test", list(train["classes"]))}
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


def _scan_imagefolder(root: Path, split: str, expected: list[str] | None = None) -> dict:
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


# ---------------------------------------------------------------- prepare

def prepare(dataset: dict, data_path: str | Path, manifest_path: str | Path | None = None) -> dict:
    """Raw data -> data.npz (x_* uint8 NHWC, y_* int64, classes); the download stage's manifest, if
    given, must be readable (the pipeline's order: download before prepare)."""
    if manifest_path is not None:
        read_json(manifest_path)
    kind, size = dataset["kind"], dataset.get("image_size", IMAGE_SIZE)
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


def _prepare_imagefolder(root: Path, size: int) -> dict:
    x_train, y_train, classes = read_imagefolder(root, "train", size)
    x_test, y_test, _ = read_imagefolder(root, "test", size, classes)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
            "classes": np.asarray(classes)}


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


def split_checksum(split: dict) -> str:
    lists = {k: split[k] for k in ("tune_train", "tune_val", "train", "test")}
    return hashlib.sha256(json.dumps(lists, sort_keys=True).encode()).hexdigest()


def write_split(data_path: str | Path, split_path: str | Path, seed: int, tune_fraction: float,
                val_fraction: float) -> dict:
    arrays = load_arrays(data_path)
    split = make_split(len(arrays["y_train"]), len(arrays["y_test"]), seed, tune_fraction, val_fraction)
    with atomic_path(split_path) as tmp:  # compact and byte-identical for the same inputs
        tmp.write_text(json.dumps(split, sort_keys=True, separators=(",", ":")) + "\n")
    log.info("split seed %d: %d tune-train / %d tune-val / %d train / %d test", seed, len(split["tune_train"]),
             len(split["tune_val"]), len(split["train"]), len(split["test"]))
    return split


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
