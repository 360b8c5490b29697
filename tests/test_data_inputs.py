"""Data inputs: config values never reach a shell unquoted, image content drives reruns in
both engines, degenerate datasets and hostile files are refused with one line.

The end-to-end part runs the tiny pipeline once (one model) on an imagefolder dataset
and an extra test set whose folder names carry shell syntax, then edits images and asks
`snakemake -n` and `dvc status` what they would rerun.
"""
import hashlib
import io
import json
import re
import shlex
import shutil
import struct
import subprocess
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import (BIN, ROOT, copy_workflow, one_line_error, run_cli, run_snakemake, split_section,
                      write_imagefolder)
from reprozoo.data import DataError, load_arrays, read_imagefolder, tree_fingerprint
from reprozoo.prepare import download, prepare

# Every shell metacharacter the issue names: spaces, both quotes, `;`, `$()`, backticks (+ braces).
NASTY = "x y; touch INJECTED_1; $(touch INJECTED_2) `touch INJECTED_3` 'q\" {z}"


def imagefolder(root: Path) -> str:
    return json.dumps({"name": "shapes", "kind": "imagefolder", "root": str(root)})


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
    (work / "extra.yaml").write_text(yaml.safe_dump({"extra_test": {k: {"root": v} for k, v in roots.items()}}))
    result = run_snakemake("-n", "-p", "--forceall", "--configfile", "tests/tiny.yaml", "extra.yaml", cwd=work)
    assert result.returncode == 0, result.stderr + result.stdout
    commands = _shell_commands(result.stdout + result.stderr, "evaluate")
    assert len(commands) == 2  # mlp, cnn
    for argv in commands:
        assert not any(root in word for root in roots.values() for word in argv)
        section = json.loads((work / f"results/digits/config/evaluate-{argv[argv.index('--model') + 1]}.json").read_text())
        assert section["extra_tests"] == roots  # what evaluate gets
        assert set(section["tracks"]) >= {f"{root}/test" for root in roots.values()}  # their content: missing here
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
