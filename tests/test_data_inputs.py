"""Data inputs: config values never reach a shell unquoted, image content drives reruns in
both engines, degenerate datasets and hostile files are refused with one line.

The end-to-end part runs the tiny pipeline once (one model) on an imagefolder dataset
and an extra test set whose folder names carry shell syntax, then edits images and asks
`snakemake -n` and `dvc status` what they would rerun.
"""
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import sqlite3
import struct
import subprocess
import tarfile
import threading
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import (BIN, ROOT, copy_workflow, one_line_error, run_cli, run_snakemake, split_section,
                      write_imagefolder)
from reprozoo import data, images
from reprozoo.data import DataError, load_arrays, load_features, model_inputs, read_split, split_checksum
from reprozoo.images import read_imagefolder, tree_fingerprint
from reprozoo.prepare import download, make_split, prepare

# Every shell metacharacter the issue names: spaces, both quotes, `;`, `$()`, backticks (+ braces).
NASTY = "x y; touch INJECTED_1; $(touch INJECTED_2) `touch INJECTED_3` 'q\" {z}"


def imagefolder(root: Path) -> str:
    return json.dumps({"name": "shapes", "kind": "imagefolder", "root": str(root), "image_size": 32})


def repaint(path: Path, value: int) -> None:
    """Overwrite an image in place with different pixels (same name, same size)."""
    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(path)


# ------------------------------------------------------------------ content digests
def test_manifest_records_content_and_follows_edits_not_timestamps(tmp_path):
    root = write_imagefolder(tmp_path / "tree", per_class=(4, 2))
    ds = {"name": "t", "kind": "imagefolder", "root": str(root)}
    manifest = download(ds, tmp_path / "m.json")
    assert manifest["train"]["classes"] == {"cat": 4, "dog": 4}
    cat = manifest["train"]["content"]["cat"]
    assert cat["images"] == 4 and cat["bytes"] == sum(f.stat().st_size for f in (root / "train/cat").iterdir())
    assert manifest["train"]["sha256"] == tree_fingerprint(root / "train")  # what the Snakefile passes as params
    image = root / "train/cat/0001.png"
    data = image.read_bytes()

    image.write_bytes(data)  # same content, new mtime: nothing changed
    assert tree_fingerprint(root / "train") == manifest["train"]["sha256"]
    repaint(image, 7)  # one image edited
    assert download(ds, tmp_path / "m.json")["train"]["content"]["cat"]["sha256"] != cat["sha256"]
    image.write_bytes(data)
    (root / "train/cat/0000.png").unlink()  # one image removed
    assert tree_fingerprint(root / "train") != manifest["train"]["sha256"]
    assert tree_fingerprint(root / "nope") == "missing"


# ------------------------------------------------------------------ degenerate datasets
@pytest.mark.parametrize("case", ["one class", "empty train class", "empty test class"])
def test_degenerate_imagefolders_are_refused(tmp_path, case):
    """download (through the CLI) and prepare refuse them, naming the folder."""
    if case == "one class":
        root = write_imagefolder(tmp_path / "tree", classes=("cat",))
        expected = f"imagefolder {root / 'train'}: 1 class folder (cat); a classifier needs at least two"
    else:
        root = write_imagefolder(tmp_path / "tree", classes=("cat", "dog", "zebra"))
        split = "train" if case == "empty train class" else "test"
        for f in (root / split / "zebra").iterdir():
            f.unlink()
        (root / split / "zebra" / "notes.txt").write_text("not an image")
        expected = f"imagefolder {root / split}: class folder 'zebra/' has no images"
    result = run_cli("download", "--dataset-json", imagefolder(root), "--manifest", tmp_path / "m.json")
    assert one_line_error(result, "download").split("error: ", 1)[1].startswith(expected)
    assert not (tmp_path / "m.json").exists()
    with pytest.raises(DataError) as err:
        prepare(json.loads(imagefolder(root)), tmp_path / "data.npz")
    assert str(err.value).startswith(expected) and not (tmp_path / "data.npz").exists()


def test_extra_test_set_with_an_empty_class_is_refused(tmp_path):
    root = write_imagefolder(tmp_path / "extra", classes=("cat", "dog"))
    shutil.rmtree(root / "test/dog")
    (root / "test/dog").mkdir()
    with pytest.raises(DataError, match=r"class folder 'dog/' has no images"):
        read_imagefolder(root, "test", 32, ["cat", "dog"])


# ------------------------------------------------------------------ hostile files
def png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (what a decompression bomb shows PIL first)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


# PIL warns above 89,478,485 pixels and raises above twice that: both are refused.
@pytest.mark.parametrize("side", [10_000, 20_000], ids=["warning-size", "error-size"])
def test_decompression_bomb_is_one_line_naming_the_file(tmp_path, side):
    root = write_imagefolder(tmp_path / "tree", per_class=(3, 2))
    bomb = root / "train/dog/bomb.png"
    bomb.write_bytes(png_header(side, side))
    if side == 10_000:  # in process: PIL's DecompressionBombWarning is an error here
        with pytest.raises(DataError, match=f"^{re.escape(str(bomb))}: refusing a possible decompression bomb"):
            prepare(json.loads(imagefolder(root)), tmp_path / "data.npz")
        return
    (tmp_path / "m.json").write_text("{}")
    result = run_cli("prepare", "--dataset-json", imagefolder(root), "--manifest", tmp_path / "m.json",
                     "--data", tmp_path / "data.npz")
    line = one_line_error(result, "prepare")
    assert f"error: {bomb}: refusing a possible decompression bomb" in line and "pixels" in line
    assert not (tmp_path / "data.npz").exists()


@pytest.mark.parametrize("damage", ["cut in half", "zeroed middle"])
def test_truncated_npz_is_one_line_saying_rerun_prepare(digits_npz, tmp_path, damage):
    data = bytearray(digits_npz.read_bytes())
    if damage == "cut in half":
        data = data[:len(data) // 2]
    else:
        middle = len(data) // 2
        data[middle - 4096:middle + 4096] = bytes(8192)
    broken = tmp_path / "data.npz"
    broken.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"^{re.escape(str(broken))}: truncated or corrupt .*rerun the prepare stage$"):
        load_arrays(broken)
    if damage == "cut in half":  # and through the CLI
        result = run_cli("split", "--split-cfg", split_section(tmp_path), "--data", broken, "--seed", 3407,
                         "--split", tmp_path / "split.json")
        line = one_line_error(result, "split")
        assert line.startswith(f"reprozoo split: error: {broken}: truncated or corrupt (")
        assert line.endswith("rerun the prepare stage") and not (tmp_path / "split.json").exists()


def _crafted_archive(path: Path, outside: Path, kind: str) -> Path:
    """A .tar.gz with one harmless member first, then one that points outside the extraction root."""
    def add(tar, name, data=b"x", **fields):
        info = tarfile.TarInfo(name)
        info.size = len(data) if fields.get("type", tarfile.REGTYPE) == tarfile.REGTYPE else 0
        for key, value in fields.items():
            setattr(info, key, value)
        tar.addfile(info, io.BytesIO(data) if info.size else None)

    with tarfile.open(path, "w:gz") as tar:
        add(tar, "cifar-10-batches-py/readme.html")
        if kind == "dotdot":
            add(tar, "../evil", b"owned")
        elif kind == "absolute":
            add(tar, str(outside / "evil"), b"owned")
        else:  # a symlink out of the root, then a file written through it
            add(tar, "cifar-10-batches-py/out", type=tarfile.SYMTYPE, linkname="../../outside")
            add(tar, "cifar-10-batches-py/out/evil", b"owned")
    return path


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_archive_members_outside_the_root_are_refused(tmp_path, monkeypatch, kind):
    from torchvision.datasets import CIFAR10

    root, outside = tmp_path / "data" / "cifar10", tmp_path / "outside"
    root.mkdir(parents=True)
    outside.mkdir()
    archive = _crafted_archive(root / CIFAR10.filename, outside, kind)
    monkeypatch.setattr(CIFAR10, "tgz_md5", hashlib.md5(archive.read_bytes()).hexdigest())  # passes the check
    monkeypatch.setattr("torchvision.datasets.utils._urlretrieve", lambda *a, **k: pytest.fail("tried to download"))
    with pytest.raises(DataError) as err:
        download({"name": "cifar10", "kind": "cifar10", "root": str(root)}, tmp_path / "m.json")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{archive}: refusing to extract into {root}/, unsafe member (")
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert written == [Path("data"), Path("data/cifar10"), Path("data/cifar10") / CIFAR10.filename,
                       Path("outside")]  # nothing extracted, inside or out
    assert not (tmp_path / "m.json").exists()


# ------------------------------------------------------------------ the image-tree fingerprint's hash cache
def byte_tree(root: Path) -> Path:
    """root/{cat,dog}/{0,1,2}.png with fixed bytes (not real images: the digest reads bytes, never pixels)."""
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            (root / cls / f"{i}.png").write_bytes(f"{cls} image {i}".encode() * (i + 1))
    (root / "cat/notes.txt").write_text("not an image")
    return root


def expected_digest(folder: Path) -> str:
    """The fingerprint's formula, computed here without scan_tree or its cache."""
    classes = {}
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        digest, files = hashlib.sha256(), sorted(p for p in class_dir.iterdir() if p.suffix in images.IMAGE_EXTENSIONS)
        for f in files:
            with open(f, "rb") as content:
                digest.update(f.name.encode() + b"\0" + hashlib.file_digest(content, "sha256").digest())
        classes[class_dir.name] = {"images": len(files), "bytes": sum(f.stat().st_size for f in files),
                                   "sha256": digest.hexdigest()}
    return images.tree_digest(classes)


@pytest.fixture
def opened(tmp_path, monkeypatch):
    """The cache in its default place under a fresh working folder; files kept as soon as hashed (no 2 s
    wait); returns the list of files whose content scans read."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(images, "RACY_NS", 0)
    paths = []

    def counting_open(path, *args, **kwargs):
        paths.append(Path(path).name)
        return open(path, *args, **kwargs)

    monkeypatch.setattr(images, "open", counting_open, raising=False)
    return paths


def test_fingerprint_digest_is_unchanged_by_the_cache(tmp_path, opened):
    root = byte_tree(tmp_path / "tree")
    before = "ae24f44963cdc51d73d32ecb6875a891edaf79e996fffebfdd8a6a5dc686051a"  # the code before the cache
    assert tree_fingerprint(root) == before == expected_digest(root)
    assert (tmp_path / "results/.cache/file-hashes.sqlite").is_file()  # created on demand, under the cwd
    assert tree_fingerprint(root) == before


def test_a_second_scan_reads_no_file_but_sees_every_change(tmp_path, opened):
    root = byte_tree(tmp_path / "tree")
    first = tree_fingerprint(root)
    assert sorted(opened) == ["0.png", "0.png", "1.png", "1.png", "2.png", "2.png"]
    opened.clear()
    assert tree_fingerprint(root) == first and opened == []  # stat only
    image = root / "cat/1.png"

    image.write_bytes(b"longer, other content")  # content and size
    assert tree_fingerprint(root) == expected_digest(root) != first and opened == ["1.png"]
    opened.clear()
    st = image.stat()
    image.write_bytes(b"same size, new bytes!")  # same size: the new mtime tells
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert image.stat().st_size == st.st_size
    assert tree_fingerprint(root) == expected_digest(root) and opened == ["1.png"]
    opened.clear()
    (root / "dog/3.png").write_bytes(b"added")
    assert tree_fingerprint(root) == expected_digest(root) and opened == ["3.png"]
    opened.clear()
    (root / "cat/0.png").unlink()
    assert tree_fingerprint(root) == expected_digest(root) and opened == []


def test_a_copied_tree_has_the_same_digest(tmp_path, opened):
    root = byte_tree(tmp_path / "tree")
    digest = tree_fingerprint(root)
    copy = shutil.copytree(root, tmp_path / "elsewhere/tree")
    opened.clear()
    assert tree_fingerprint(copy) == digest and len(opened) == 6  # new inodes: read, same content
    shutil.rmtree(root)
    shutil.copytree(copy, root)  # the same path again, new inodes, same bytes
    assert tree_fingerprint(root) == digest


def test_a_file_changed_in_the_last_seconds_is_not_cached(tmp_path, opened, monkeypatch):
    """Its timestamp may not show a change made within the same tick: hashed again at the next scan."""
    monkeypatch.setattr(images, "RACY_NS", 2_000_000_000)
    root = byte_tree(tmp_path / "tree")
    tree_fingerprint(root)
    opened.clear()
    tree_fingerprint(root)
    assert len(opened) == 6


@pytest.mark.parametrize("broken", ["results is a file", "cache is a folder", "corrupt database", "junk rows",
                                    "locked database", "read-only database"])
def test_a_broken_cache_still_gives_the_right_digest(tmp_path, opened, monkeypatch, broken):
    root, db = byte_tree(tmp_path / "tree"), None
    cache = tmp_path / "results/.cache/file-hashes.sqlite"
    if broken == "results is a file":
        (tmp_path / "results").write_text("not a folder")
    elif broken == "cache is a folder":
        cache.mkdir(parents=True)
    else:
        tree_fingerprint(root)
    if broken == "corrupt database":
        cache.write_bytes(b"SQLite format 3\0" + os.urandom(4000))
    elif broken == "junk rows":  # the right stat, a digest of the wrong type or length
        with sqlite3.connect(cache) as db:
            db.execute("UPDATE sha256_v1 SET sha256 = CASE WHEN name = ? THEN 'text' ELSE x'00' END", (b"0.png",))
    elif broken == "locked database":  # another scan writing, for longer than this one waits
        db = sqlite3.connect(cache)
        db.execute("BEGIN EXCLUSIVE")
    elif broken == "read-only database":  # as on a read-only mount (chmod does not stop root)
        connect = sqlite3.connect
        monkeypatch.setattr(sqlite3, "connect", lambda path, **kw: connect(f"file:{path}?mode=ro", uri=True, **kw))
    (root / "dog/3.png").write_bytes(b"added")
    opened.clear()
    start = time.perf_counter()
    assert tree_fingerprint(root) == expected_digest(root)
    assert time.perf_counter() - start < 2  # a locked database is given up on, not waited for
    if broken == "read-only database":  # read, not written: the new file is read again next time
        assert opened == ["3.png"] and tree_fingerprint(root) == expected_digest(root) and opened == ["3.png"] * 2
    else:
        assert len(opened) == 7  # nothing usable in the cache: every file read
    if broken == "corrupt database":
        assert not cache.exists()  # removed: the next scan makes a new one
        tree_fingerprint(root)
        assert cache.is_file()
    if db is not None:
        db.close()


def test_scans_side_by_side_agree(tmp_path, opened):
    """Four scans at once, on one cache: each gets the right digest, whoever wins the writes."""
    root = byte_tree(tmp_path / "tree")
    expected = expected_digest(root)
    found = []
    threads = [threading.Thread(target=lambda: found.append(tree_fingerprint(root))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert found == [expected] * 4 and tree_fingerprint(root) == expected


def test_a_large_image_is_hashed_in_chunks_not_read_whole(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = byte_tree(tmp_path / "tree")
    big = root / "cat/big.tif"
    with open(big, "wb") as f:
        f.truncate(256 << 20)  # 256 MiB, sparse: cheap to make and to read
    tracemalloc.start()
    try:
        assert tree_fingerprint(root) == expected_digest(root)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak / 2**20:.0f} MiB held while hashing a 256 MiB file"


# ------------------------------------------------------------------ images 8-bit RGB cannot show
def _save_hostile(path: Path, case: str) -> None:
    from PIL import Image

    if case == "16-bit grey":
        Image.fromarray(np.full((32, 32), 4000, np.uint16)).save(path)  # I;16: convert('RGB') clips to 255
    elif case == "32-bit int":
        Image.fromarray(np.full((32, 32), 70000, np.int32)).save(path)
    elif case == "float":
        Image.fromarray(np.full((32, 32), 0.5, np.float32)).save(path)
    elif case in ("RGBA transparent", "LA transparent"):
        pixels = np.full((32, 32, 4 if case.startswith("RGBA") else 2), 200, np.uint8)
        pixels[3, 5, -1] = 0  # one transparent pixel
        Image.fromarray(pixels, case.split()[0]).save(path)
    elif case == "P transparent":
        img = Image.new("P", (32, 32), 0)
        img.putpalette([0, 0, 0, 255, 255, 255])
        img.save(path, transparency=0)
    elif case in ("multi-page TIFF", "animated PNG"):
        frames = [Image.new("RGB", (32, 32), (v, v, v)) for v in (10, 200)]
        frames[0].save(path, save_all=True, append_images=frames[1:])
    else:
        Image.new("CMYK", (32, 32), (0, 50, 100, 0)).save(path)


HOSTILE = {"16-bit grey": ("a.png", r"mode I;16 \(more than 8 bits per channel\)"),
           "32-bit int": ("a.tif", r"mode I \(more than 8 bits per channel\)"),
           "float": ("a.tif", r"mode F \(more than 8 bits per channel\)"),
           "RGBA transparent": ("a.png", "mode RGBA with transparent pixels"),
           "LA transparent": ("a.png", "mode LA with transparent pixels"),
           "P transparent": ("a.png", "mode P with transparent pixels"),
           "multi-page TIFF": ("a.tif", r"2 frames \(TIFF, mode RGB\); only the first would be read"),
           "animated PNG": ("a.png", r"2 frames \(PNG, mode RGB\); only the first would be read"),
           "CMYK": ("a.jpg", "mode CMYK; its RGB colours depend on a colour profile")}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_images_8bit_rgb_cannot_show_are_refused_naming_file_and_mode(tmp_path, case):
    root = write_imagefolder(tmp_path / "tree", per_class=(2, 1))
    name, message = HOSTILE[case]
    image = root / "train/dog" / name
    _save_hostile(image, case)
    with pytest.raises(DataError, match=f"^{re.escape(str(image))}: {message}.*, or remove the file$") as err:
        prepare(json.loads(imagefolder(root)), tmp_path / "data.npz")
    assert "\n" not in str(err.value) and not (tmp_path / "data.npz").exists()


def test_an_unfaithful_extra_test_image_is_one_line_from_the_cli(tmp_path):
    root = write_imagefolder(tmp_path / "tree", per_class=(2, 1))
    image = root / "train/cat/deep.png"
    _save_hostile(image, "16-bit grey")
    (tmp_path / "m.json").write_text("{}")
    result = run_cli("prepare", "--dataset-json", imagefolder(root), "--manifest", tmp_path / "m.json",
                     "--data", tmp_path / "data.npz")
    assert one_line_error(result, "prepare").startswith(
        f"reprozoo prepare: error: {image}: mode I;16 (more than 8 bits per channel)")
    assert not (tmp_path / "data.npz").exists()


def test_images_8bit_rgb_shows_as_they_are_are_read(tmp_path):
    """1, L, P (opaque, or a transparent colour no pixel uses), YCbCr, opaque RGBA and LA: read as before."""
    from PIL import Image

    root = write_imagefolder(tmp_path / "tree", per_class=(1, 1))
    palette = Image.new("P", (32, 32), 1)
    palette.putpalette([0, 0, 0, 90, 120, 150])
    made = {"one.png": Image.new("1", (32, 32), 1), "grey.png": Image.new("L", (32, 32), 77),
            "p.png": palette, "ycbcr.tif": Image.new("YCbCr", (32, 32), (120, 100, 150)),
            "rgba.png": Image.new("RGBA", (32, 32), (10, 20, 30, 255)), "la.png": Image.new("LA", (32, 32), (60, 255))}
    for name, img in made.items():
        img.save(root / "train/cat" / name, **({"transparency": 0} if name == "p.png" else {}))
    x, y, _ = read_imagefolder(root, "train", 32)
    assert x.shape == (8, 32, 32, 3)
    with Image.open(root / "train/cat/rgba.png") as img:
        assert np.array_equal(x[list(sorted([*made, "0000.png"])).index("rgba.png")], np.asarray(img.convert("RGB")))


# ------------------------------------------------------------------ split files
N_TRAIN, N_TEST = 50, 10


def _hostile_split(case: str) -> dict | str:
    s = make_split(N_TRAIN, N_TEST, 3407, 0.2, 0.5)  # tune_train 5, tune_val 5
    edits = {
        "string index": {"tune_train": [str(s["tune_train"][0]), *s["tune_train"][1:]]},
        "float index": {"tune_val": [*s["tune_val"][:-1], float(s["tune_val"][-1])]},
        "bool index": {"test": [True, *s["test"][1:]]},
        "null index": {"train": [None, *s["train"][1:]]},
        "empty list": {"tune_val": []},
        "nested list": {"test": [s["test"]]},
        "duplicate in tune_train": {"tune_train": [*s["tune_train"][:-1], s["tune_train"][0]]},
        "negative index": {"tune_val": [-1, *s["tune_val"][1:]]},
        "train index out of range": {"tune_train": [*s["tune_train"][:-1], N_TRAIN]},
        "test index out of range": {"test": [*s["test"][:-1], N_TEST]},
        "tune_val overlaps tune_train": {"tune_val": [s["tune_train"][0], *s["tune_val"][1:]]},
        "test images added to train": {"train": s["train"] + s["test"]},
        "an image left out of train": {"train": s["train"][:-1]},
        "tune sizes off the fractions": {"tune_val": s["tune_val"][:-1]},
        "other fractions": {"tune_fraction": 0.4},
        "fraction not a number": {"val_fraction": "half"},
    }
    if case in edits:
        return {**s, **edits[case]}
    if case == "missing key":
        return {k: v for k, v in s.items() if k != "tune_val"}
    return s


SPLIT_ERRORS = {
    "string index": r"'tune_train' holds \"\d+\", not an integer index",
    "float index": r"'tune_val' holds \d+\.0, not an integer index",
    "bool index": "'test' holds true, not an integer index",
    "null index": "'train' holds null, not an integer index",
    "empty list": "'tune_val' is not a non-empty list of image indices",
    "nested list": r"'test' holds \[0, 1, .*, not an integer index",
    "duplicate in tune_train": "'tune_train' lists an image twice",
    "negative index": "'tune_val' holds index -1, outside the 50 train images \\(0..49\\)",
    "train index out of range": "'tune_train' holds index 50, outside the 50 train images \\(0..49\\)",
    "test index out of range": "'test' holds index 10, outside the 10 test images \\(0..9\\)",
    "tune_val overlaps tune_train": "tune_train and tune_val share 1 images \\(leaked validation images\\)",
    "test images added to train": "'train' lists an image twice",
    "an image left out of train": "'train' lists 49 of the 50 train images, not each of them once",
    "tune sizes off the fractions": "5 tune_train / 4 tune_val images, but tune_fraction=0.2 and val_fraction=0.5 "
                                    "of 50 give 5 / 5",
    "other fractions": "5 tune_train / 5 tune_val images, but tune_fraction=0.4 and val_fraction=0.5 of 50 "
                       "give 10 / 10",
    "fraction not a number": r"tune_fraction and val_fraction \[0.2, 'half'\] are not fractions in \(0, 1\]",
    "missing key": r"missing keys \['tune_val'\]",
}


@pytest.mark.parametrize("case", list(SPLIT_ERRORS))
def test_a_malformed_or_leaking_split_is_refused_even_with_a_recomputed_checksum(tmp_path, case):
    split = _hostile_split(case)
    path = tmp_path / "split-seed3407.json"
    path.write_text(json.dumps({**split, "checksum": split_checksum(split)} if "tune_val" in split else split))
    expected = f"^{re.escape(str(path))}: {SPLIT_ERRORS[case]}; rerun the split stage " \
               rf"\(snakemake, or python -m reprozoo split --dataset {tmp_path.name}\)$"
    with pytest.raises(DataError, match=expected):
        read_split(path, N_TRAIN, N_TEST)


@pytest.mark.parametrize("content, problem", [
    ('{"tune_train": [1, 2', "not valid JSON, truncated or corrupt"),
    ("", "not valid JSON, truncated or corrupt"),
    (b"\xff\xfe\x00garbage", "not valid JSON, truncated or corrupt"),
    ("[1, 2, 3]", "not a JSON object but list"),
    ("null", "not a JSON object but NoneType"),
])
def test_a_split_that_is_not_a_json_object_is_one_line(tmp_path, content, problem):
    path = tmp_path / "split.json"
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    with pytest.raises(DataError, match=f"^{re.escape(str(path))}: {problem}.*; rerun the split stage "
                                        r"\(snakemake, or python -m reprozoo split --dataset <dataset>\)$"):
        read_split(path, N_TRAIN, N_TEST)


def test_an_edited_split_without_a_new_checksum_is_refused(tmp_path):
    split = make_split(N_TRAIN, N_TEST, 3407, 0.2, 0.5)
    path = tmp_path / "split.json"
    path.write_text(json.dumps({**split, "tune_val": split["tune_val"][::-1]}))
    with pytest.raises(DataError, match="checksum mismatch, the index lists were edited or truncated"):
        read_split(path, N_TRAIN, N_TEST)


def test_a_split_of_another_dataset_is_refused(tmp_path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps(make_split(N_TRAIN, N_TEST, 3407, 0.2, 0.5)))
    assert read_split(path, N_TRAIN, N_TEST)["train"] == list(range(N_TRAIN))
    with pytest.raises(DataError, match="'train' lists 50 of the 60 train images, not each of them once"):
        read_split(path, 60, N_TEST)
    with pytest.raises(DataError, match="'test' holds index 9, outside the 9 test images"):
        read_split(path, N_TRAIN, 9)


def test_train_refuses_a_leaking_split_in_one_line_and_writes_nothing(demo_cfg, digits_npz, digits_split, tmp_path):
    from conftest import tiny_model_cfg

    split = json.loads(digits_split.read_text())
    split["train"] = split["train"] + split["test"]  # test images trained on: the checksum recomputed
    split["checksum"] = split_checksum(split)
    leaky = tmp_path / "split-seed3407.json"
    leaky.write_text(json.dumps(split))
    (tmp_path / "best.json").write_text('{"source": "tuned", "lr": 0.001, "epochs": 1}')
    out = tmp_path / "out"
    result = run_cli("train", "--model-json", json.dumps(tiny_model_cfg(demo_cfg, "mlp")), "--data", digits_npz,
                     "--split", leaky, "--best", tmp_path / "best.json", "--weights", out / "w.pt",
                     "--history", out / "h.csv", "--run", out / "r.json", "--device", "cpu")
    assert one_line_error(result, "train") == f"reprozoo train: error: {leaky}: 'train' lists an image twice; rerun " \
        f"the split stage (snakemake, or python -m reprozoo split --dataset {tmp_path.name})"
    assert not out.exists()


# ------------------------------------------------------------------ data.npz and cached features
def small_arrays(**changes) -> dict:
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8), "y_train": np.arange(6) % 2,
              "x_test": rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8), "y_test": np.arange(4) % 2,
              "classes": np.asarray(["cat", "dog"])}
    return {**arrays, **changes}


BAD_ARRAYS = {
    "float images": ({"x_train": np.zeros((6, 8, 8, 3), np.float32)},
                     r"x_train is float32 \(6, 8, 8, 3\), not uint8 RGB images \(N, height, width, 3\)"),
    "grey images (no channel axis)": ({"x_test": np.zeros((4, 8, 8), np.uint8)},
                                      r"x_test is uint8 \(4, 8, 8\), not uint8 RGB images"),
    "RGBA images": ({"x_train": np.zeros((6, 8, 8, 4), np.uint8)}, r"x_train is uint8 \(6, 8, 8, 4\), not uint8 RGB"),
    "channels first": ({"x_train": np.zeros((6, 3, 8, 8), np.uint8)}, r"x_train is uint8 \(6, 3, 8, 8\)"),
    "no test images": ({"x_test": np.zeros((0, 8, 8, 3), np.uint8), "y_test": np.zeros(0, np.int64)},
                       "x_test holds no images"),
    "other sizes": ({"x_test": np.zeros((4, 9, 8, 3), np.uint8)},
                    r"x_train's images are \(8, 8, 3\), x_test's \(9, 8, 3\): not the same size"),
    "int32 labels": ({"y_train": np.zeros(6, np.int32)}, r"y_train is int32 \(6,\), not int64 labels \(6,\)"),
    "a label short": ({"y_test": np.zeros(3, np.int64)}, r"y_test is int64 \(3,\), not int64 labels \(4,\), one per"),
    "2-D labels": ({"y_train": np.zeros((6, 1), np.int64)}, r"y_train is int64 \(6, 1\)"),
    "label = number of classes": ({"y_test": np.asarray([0, 1, 2, 1])}, r"y_test holds labels 0..2, outside 0..1"),
    "negative label": ({"y_train": np.asarray([0, 1, -1, 1, 0, 1])}, r"y_train holds labels -1..1, outside 0..1"),
    "one class": ({"classes": np.asarray(["cat"]), "y_train": np.zeros(6, np.int64), "y_test": np.zeros(4, np.int64)},
                  r"classes must be at least two unique names, not \['cat'\]"),
    "duplicate class": ({"classes": np.asarray(["cat", "cat"])}, r"classes must be at least two unique names"),
    "2-D classes": ({"classes": np.asarray([["cat", "dog"]])}, r"classes must be at least two unique names"),
}


@pytest.mark.parametrize("case", list(BAD_ARRAYS))
def test_data_npz_that_prepare_would_not_write_is_refused(tmp_path, case):
    changes, message = BAD_ARRAYS[case]
    path = tmp_path / "data.npz"
    data.save_arrays(path, small_arrays(**changes))
    with pytest.raises(DataError, match=f"^{re.escape(str(path))}: {message}.*; rerun the prepare stage$"):
        load_arrays(path)


def test_a_bad_data_npz_is_one_line_from_the_cli_and_nothing_is_written(tmp_path):
    path = tmp_path / "data.npz"
    data.save_arrays(path, small_arrays(y_train=np.asarray([0, 1, 5, 1, 0, 1])))
    result = run_cli("split", "--split-cfg", split_section(tmp_path), "--data", path, "--seed", 3407,
                     "--split", tmp_path / "split.json")
    assert one_line_error(result, "split") == (f"reprozoo split: error: {path}: y_train holds labels 0..5, outside "
                                               "0..1 (the classes); rerun the prepare stage")
    assert not (tmp_path / "split.json").exists()


def _features(**changes) -> dict:
    import torch

    blob = {"x_train": torch.ones(6, 4, dtype=torch.float16), "y_train": torch.arange(6) % 2,
            "x_test": torch.ones(4, 4, dtype=torch.float16), "y_test": torch.arange(4) % 2, "meta": {"dim": 4}}
    return {**blob, **changes}


def _bad_features(case: str) -> dict:
    import torch

    nan = torch.ones(6, 4, dtype=torch.float16)
    nan[2, 1] = float("nan")
    return _features(**{
        "a NaN feature": {"x_train": nan},
        "an infinite feature": {"x_test": torch.full((4, 4), float("inf"))},
        "3-D features": {"x_train": torch.ones(6, 2, 2)},
        "integer features": {"x_test": torch.ones(4, 4, dtype=torch.int64)},
        "a list, not a tensor": {"x_train": [[1.0] * 4] * 6},
        "int32 labels": {"y_test": torch.zeros(4, dtype=torch.int32)},
        "a label short": {"y_train": torch.zeros(5, dtype=torch.int64)},
        "other dims": {"x_test": torch.ones(4, 5, dtype=torch.float16)},
    }[case])


BAD_FEATURES = {"a NaN feature": "x_train holds NaN or infinite values",
                "an infinite feature": "x_test holds NaN or infinite values",
                "3-D features": r"x_train is torch.float32 \(6, 2, 2\), not floating features \(N, dim\)",
                "integer features": r"x_test is torch.int64 \(4, 4\), not floating features \(N, dim\)",
                "a list, not a tensor": r"x_train is list \(\), not floating features \(N, dim\)",
                "int32 labels": r"y_test is not int64 labels \(4,\), one per row of x_test",
                "a label short": r"y_train is not int64 labels \(6,\), one per row of x_train",
                "other dims": "x_test has 5 features per image, x_train 4"}


@pytest.mark.parametrize("case", list(BAD_FEATURES))
def test_features_cache_features_would_not_write_are_refused(tmp_path, case):
    import torch

    path = tmp_path / "f.pt"
    torch.save(_bad_features(case), path)
    with pytest.raises(DataError, match=f"^{re.escape(str(path))}: {BAD_FEATURES[case]}; rerun the cache_features "
                                        "stage$"):
        load_features(path)


def test_features_of_another_data_npz_are_refused(tmp_path):
    import torch

    data.save_arrays(tmp_path / "data.npz", small_arrays())
    cfg = {"name": "probe", "backbone": {"name": "b"}}
    torch.save(_features(), tmp_path / "f.pt")
    assert model_inputs(cfg, tmp_path / "data.npz", tmp_path / "f.pt")["x_train"].shape == (6, 4)
    torch.save(_features(x_test=torch.ones(3, 4), y_test=torch.arange(3) % 2), tmp_path / "f.pt")
    with pytest.raises(DataError, match=f"^{re.escape(str(tmp_path / 'f.pt'))}: 3 test feature rows for the 4 test "
                                        f"images of {re.escape(str(tmp_path / 'data.npz'))}; recompute the features$"):
        model_inputs(cfg, tmp_path / "data.npz", tmp_path / "f.pt")


# ------------------------------------------------------------------ config values and the shell
def _shell_commands(output: str, stage: str) -> list[list[str]]:
    """The commands `snakemake -n -p` prints for a stage, split as the shell would."""
    lines = [line.removeprefix("Shell command:").strip() for line in output.splitlines()]
    return [shlex.split(line) for line in lines if line.startswith(f"python -m reprozoo {stage} ")]


def test_extra_test_roots_reach_evaluate_through_the_config_not_the_shell(tmp_path):
    """Dry run: no root is on a command line (evaluate reads them from its section file, which also
    tracks their content, so a new root reruns evaluate), and dvc.yaml's resolve stage has their folders as deps."""
    work = copy_workflow(tmp_path)
    shutil.copy2(ROOT / "dvc.yaml", work / "dvc.yaml")
    roots = {"spaces": "my extra set", "semicolon": "a; touch INJECTED; exit 0; ", "subshell": "$(touch INJECTED)",
             "backticks": "`touch INJECTED`", "quotes": "it's \"quoted\"", "all": NASTY}
    for root in roots.values():  # the DAG build checks that each holds test/<class>/<images>
        write_imagefolder(work / root, classes=("a", "b"), per_class=(1, 1))
    (work / "extra.yaml").write_text(yaml.safe_dump({"extra_test": {k: {"root": v} for k, v in roots.items()}}))
    result = run_snakemake("-n", "-p", "--forceall", "--configfile", "tests/tiny.yaml", "extra.yaml", cwd=work)
    assert result.returncode == 0, result.stderr + result.stdout
    commands = _shell_commands(result.stdout + result.stderr, "evaluate")
    assert len(commands) == 2  # mlp, cnn
    for argv in commands:
        assert not any(root in word for root in roots.values() for word in argv)
        section = json.loads((work / f"results/digits/config/evaluate-{argv[argv.index('--model') + 1]}.json").read_text())
        assert section["extra_tests"] == roots  # what evaluate gets
        assert set(section["tracks"]) >= {f"{root}/test" for root in roots.values()}  # their content
    result = run_cli("dvc-yaml", "--configfile", "tests/tiny.yaml", "--configfile", "extra.yaml", cwd=work)
    assert result.returncode == 0, result.stderr
    stages = yaml.safe_load((work / "dvc.yaml").read_text())["stages"]
    assert not any(root in stage["cmd"] for stage in stages.values() for root in roots.values())
    assert [d for d in stages["resolve"]["deps"] if d.endswith("/test")] == [f"{roots[k]}/test" for k in sorted(roots)]
    assert {"extra.yaml": []} in stages["resolve"]["params"]  # a new root reruns resolve, then evaluate
    assert not list(work.rglob("INJECTED*"))


def test_a_dvc_variable_in_a_root_is_refused_in_one_line(tmp_path):
    work = copy_workflow(tmp_path)
    shutil.copy2(ROOT / "dvc.yaml", work / "dvc.yaml")
    (work / "extra.yaml").write_text(yaml.safe_dump({"extra_test": {"odd": {"root": "data/${HOME}"}}}))
    result = run_cli("dvc-yaml", "--configfile", "tests/tiny.yaml", "--configfile", "extra.yaml", cwd=work)
    line = one_line_error(result, "dvc-yaml")
    assert "'data/${HOME}/test' contains '${', which DVC would read as a variable" in line


# ------------------------------------------------------------------ end to end, both engines
MODEL = "mlp"
STAGES = {"download", "prepare", "split", "tune", "train", "evaluate", "report"}


def sh(*args, cwd, check=True):
    import os

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, env=env, timeout=900)
    if check:
        assert result.returncode == 0, f"{args}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


CONFIGS = ["tests/tiny.yaml", "images.yaml"]


def snakemake_plans(work) -> set[str]:
    """The rules `snakemake -n` would run, but the `all` target (empty when nothing)."""
    result = run_snakemake("-n", "--configfile", *CONFIGS, cwd=work)
    assert result.returncode == 0, result.stderr + result.stdout
    return set(re.findall(r"^(?:local)?rule (\w+):$", result.stdout, re.M)) - {"all"}


def dvc_changed(work) -> set[str]:
    """The stages `dvc status` says changed, once DVC's resolve stage has written the section files."""
    sh(BIN / "dvc", "repro", "--single-item", "resolve", cwd=work)
    status = json.loads(sh(BIN / "dvc", "status", "--json", cwd=work).stdout or "{}")
    return {name.split(":")[-1] for name in status}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The tiny pipeline, one model, run once by Snakemake on an imagefolder dataset and an extra test set
    whose folder names carry shell syntax; then recorded by DVC in a no-SCM DVC repo the way docs/dvc.md
    says (`make dvc-commit`: `dvc commit`; Snakemake then takes the outputs as its own by itself)."""
    work = copy_workflow(tmp_path_factory.mktemp("inputs"))
    for name in (".dvcignore", "Makefile"):
        shutil.copy2(ROOT / name, work / name)
    data_root, extra_root = f"data/shapes {NASTY}", f"extra/{NASTY}"
    write_imagefolder(work / data_root, per_class=(20, 4))
    write_imagefolder(work / extra_root, per_class=(1, 3), seed=1)
    (work / "images.yaml").write_text(yaml.safe_dump({
        "run": {"datasets": ["shapes"], "models": [MODEL], "ablations": []},
        "datasets": {"shapes": {"kind": "imagefolder", "root": data_root}},
        "extra_test": {"odd": {"root": extra_root}},
    }))
    result = run_snakemake("--cores", "2", "--configfile", *CONFIGS, cwd=work)
    assert result.returncode == 0, result.stderr[-4000:]
    sh(BIN / "dvc", "init", "--no-scm", "-q", cwd=work)
    assert run_cli("dvc-yaml", *[a for c in CONFIGS for a in ("--configfile", c)], cwd=work).returncode == 0
    assert (work / f"logs/shapes/benchmarks/evaluate/{MODEL}/seed3407.tsv").is_file()
    sh("make", "--no-print-directory", "dvc-commit", f"DVC_CONFIG={' '.join(CONFIGS)}", f"VENV={BIN.parent}", cwd=work)
    return work, Path(work / data_root), Path(work / extra_root), result


def _metrics(work) -> dict:
    return json.loads((work / f"results/shapes/eval/{MODEL}/seed3407/metrics.json").read_text())


@pytest.mark.slow
def test_shell_syntax_in_roots_runs_nothing_and_is_read_literally(pipeline):
    work, data_root, extra_root, result = pipeline
    assert not list(work.rglob("INJECTED*")) and not list(Path.cwd().glob("INJECTED*"))
    assert _metrics(work)["extra"]["odd"]["images"] == 6  # the extra set's own 2 x 3 images
    manifest = json.loads((work / "resources/shapes/manifest.json").read_text())
    assert manifest["root"] == str(data_root.relative_to(work)) and manifest["train"]["classes"] == {"cat": 20,
                                                                                                      "dog": 20}
    assert snakemake_plans(work) == set() and dvc_changed(work) == set()


@pytest.mark.slow
@pytest.mark.parametrize("change", ["edit train image", "remove test image", "add train image"])
def test_changing_an_image_reruns_prepare_and_everything_after_it_in_both_engines(pipeline, change):
    work, data_root, _, _ = pipeline
    target = data_root / {"edit train image": "train/dog/0003.png", "remove test image": "test/cat/0001.png",
                          "add train image": "train/cat/new.png"}[change]
    before = target.read_bytes() if target.exists() else None
    try:
        if change == "remove test image":
            target.unlink()
        else:
            repaint(target, 99)
        assert STAGES <= snakemake_plans(work)
        assert dvc_changed(work) == {"download@shapes", "prepare@shapes"}
    finally:
        target.unlink(missing_ok=True)
        if before is not None:
            target.write_bytes(before)  # the same bytes, a new mtime: nothing to do again
    assert snakemake_plans(work) == set() and dvc_changed(work) == set()


@pytest.mark.slow
def test_changing_an_extra_test_image_reruns_evaluation_not_training(pipeline):
    work, _, extra_root, _ = pipeline
    repaint(extra_root / "test/dog/0000.png", 3)
    repaint(extra_root / "test/cat/added.png", 250)
    assert snakemake_plans(work) == {"evaluate", "report"}
    assert dvc_changed(work) == {f"evaluate@shapes-{MODEL}-3407"}
    metrics = f"results/shapes/eval/{MODEL}/seed3407/metrics.json"  # the report needs no rerun to prove it
    result = run_snakemake(metrics, "--cores", "2", "--configfile", *CONFIGS, cwd=work)
    assert result.returncode == 0, result.stderr[-4000:]
    assert re.findall(r"^(?:local)?rule (\w+):$", result.stdout + result.stderr, re.M) == ["evaluate"]
    assert _metrics(work)["extra"]["odd"]["images"] == 7  # the new image counted: the folder read literally
    assert snakemake_plans(work) == {"report"}
