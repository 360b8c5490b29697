"""Image trees (`imagefolder` datasets and extra test sets): their content digest and their decoding.

An imagefolder's manifest records its content: per class, the number of images, their bytes and a
sha256 over every image's name and content (`scan_tree`). `tree_fingerprint` is the same digest
for a whole folder; the section files of the stages that read a folder carry it
(reprozoo/sections.py), so editing, adding or removing an image reruns those stages (DVC sees the
folders as `deps`). `read_imagefolder` decodes a tree into the arrays of data.npz.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import time
import warnings
from pathlib import Path

import numpy as np

from reprozoo.errors import DataError

log = logging.getLogger("reprozoo.images")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


def _line(e: BaseException) -> str:
    """An exception as one line: its first line of text, or its type."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


# ---------------------------------------------------------------- imagefolder content

def class_folders(folder: Path) -> list[Path]:
    return [Path(folder, name) for name in sorted(e.name for e in os.scandir(folder) if e.is_dir())]


def _image_entries(class_dir: str | Path) -> list[os.DirEntry]:
    return sorted((e for e in os.scandir(class_dir)
                   if os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS and e.is_file()), key=lambda e: e.name)


def image_files(class_dir: Path) -> list[Path]:
    """The files of one class folder that are read as images, by name."""
    return [Path(class_dir, e.name) for e in _image_entries(class_dir)]


# Where scan_tree keeps each image's sha256 between scans, relative to the working directory (the
# workflow's): a scan reads only the files whose size, mtime, ctime, inode or device changed since.
HASH_CACHE = Path("results/.cache/file-hashes.sqlite")
RACY_NS = 2_000_000_000  # a file changed < 2 s before a scan may change again within one tick of its timestamps
CHUNK = 1 << 20  # bytes read at a time: a large file is never in memory whole


class _HashCache:
    """sha256 of files by folder, name and stat (DVC's state database, git's index): a file whose
    size, mtime, ctime, inode or device changed is a file the cache does not know.

    Never an error and never a stale digest: a database that cannot be created, opened, read or
    written (read-only, locked by another scan, corrupt) is a cache that knows and keeps nothing, and
    a file changed in the last RACY_NS is not kept (a change within its timestamps' tick would not show)."""

    def __init__(self):
        self.db, self.new, self.since = None, [], time.time_ns() - RACY_NS
        try:
            HASH_CACHE.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(HASH_CACHE, timeout=0.5)
            self.db.execute("CREATE TABLE IF NOT EXISTS sha256_v1 (dir BLOB, name BLOB, stat TEXT, sha256 BLOB, "
                            "PRIMARY KEY (dir, name)) WITHOUT ROWID")
        except (OSError, sqlite3.Error) as e:
            self.close(e)

    def known(self, folder: bytes) -> dict:
        """{(name, stat): sha256} of the files recorded in folder."""
        try:
            rows = self.db.execute("SELECT name, stat, sha256 FROM sha256_v1 WHERE dir = ? AND typeof(sha256) = "
                                   "'blob' AND length(sha256) = 32", (folder,)) if self.db else []
            return {(name, stat): sha for name, stat, sha in rows}
        except sqlite3.Error as e:
            self.close(e)
            return {}

    def add(self, row: tuple, changed_ns: int) -> None:
        """Keep (folder, name, stat, sha256) once closed, unless the file changed in the last RACY_NS."""
        if self.db is not None and changed_ns < self.since:
            self.new.append(row)

    def close(self, error: Exception | None = None) -> None:
        """Keep what was hashed (best effort); a corrupt database is removed, to be made anew next time."""
        try:
            if self.db is not None and error is None and self.new:
                with self.db:
                    self.db.executemany("INSERT OR REPLACE INTO sha256_v1 VALUES (?, ?, ?, ?)", self.new)
        except sqlite3.Error as e:
            error = e
        if self.db is not None:
            self.db.close()
        self.db = None
        if isinstance(error, sqlite3.DatabaseError) and not isinstance(error, sqlite3.OperationalError):
            with contextlib.suppress(OSError):
                HASH_CACHE.unlink()


def _file_sha256(path: str) -> bytes:
    with open(path, "rb", buffering=0) as f:  # in chunks into one digest: never the whole file in memory
        digest = hashlib.sha256(f.read(CHUNK))
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.digest()


def scan_tree(folder: Path) -> dict:
    """{class: {"images", "bytes", "sha256"}} of folder/<class>/*: a digest over each image's name and content.

    This runs at every Snakemake DAG build, over every image of every tree: an image is read only
    when its stat changed since the last scan (HASH_CACHE), else only stat'ed.
    """
    classes, cache = {}, _HashCache()
    try:
        for class_dir in class_folders(folder):
            digest, size, entries = hashlib.sha256(), 0, _image_entries(class_dir)
            where = os.fsencode(os.path.abspath(class_dir))
            known = cache.known(where)
            for entry in entries:
                name, st = entry.name.encode("utf-8", "surrogateescape"), entry.stat()
                stat = f"{st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {st.st_ino} {st.st_dev}"
                sha = known.get((name, stat))
                if sha is None:
                    sha = _file_sha256(entry.path)
                    cache.add((where, name, stat, sha), max(st.st_mtime_ns, st.st_ctime_ns))
                size += st.st_size
                digest.update(name + b"\0" + sha)
            classes[class_dir.name] = {"images": len(entries), "bytes": size, "sha256": digest.hexdigest()}
    finally:
        cache.close()
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


# Modes that become 8-bit RGB as they are (alpha, if any, only when every pixel is opaque).
RGB_FAITHFUL = {"1", "L", "P", "RGB", "YCbCr", "RGBX", "RGBA", "LA", "PA"}


def _not_8bit_rgb(img) -> str | None:
    """Why convert("RGB") would not show what the image shows (its mode named), or None."""
    mode, frames = img.mode, getattr(img, "n_frames", 1)
    if frames > 1:
        return (f"{frames} frames ({img.format}, mode {mode}); only the first would be read: save each frame as "
                "an image of its own, or remove the file")
    if mode == "CMYK":
        return ("mode CMYK; its RGB colours depend on a colour profile this reader does not apply: convert it "
                "to RGB with an image editor, or remove the file")
    if mode not in RGB_FAITHFUL:
        depth = "more than 8 bits per channel" if mode[0] in "IF" else "no faithful RGB conversion"  # I, I;16, F
        return (f"mode {mode} ({depth}); reading it as 8-bit RGB would clip or distort its values: convert it to "
                "8-bit RGB yourself (scaling its range), or remove the file")
    if img.has_transparency_data and img.convert("RGBA").getchannel("A").getextrema()[0] < 255:
        return (f"mode {mode} with transparent pixels; their colour is undefined: flatten it onto a background "
                "and save it as RGB, or remove the file")
    return None


def read_imagefolder(root: Path, split: str, size: int, classes: list[str] | None = None):
    """Decode root/split/<class>/* into (uint8 NHWC, int64 labels, class names).

    Refuses (one line, naming the folder or file) fewer than two classes, an
    empty class, classes other than `classes`, an undecodable image, one
    large enough to be a decompression bomb (PIL's warning counts as an error)
    and one that 8-bit RGB cannot show as it is (`_not_8bit_rgb`: more than 8 bits
    per channel, transparent pixels, several frames, CMYK).
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
                        problem = _not_8bit_rgb(img)
                        if problem:
                            raise DataError(f"{file}: {problem}")
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
