"""download / prepare / split on data the tests make themselves."""
import hashlib
import json
from urllib.error import URLError

import numpy as np
import pytest

from conftest import run_cli, write_cifar_archive, write_imagefolder
from reprozoo.data import DataError, load_arrays, read_split
from reprozoo.prepare import download, make_split, prepare, write_split


def test_digits_are_32px_rgb_uint8(digits_npz):
    a = load_arrays(digits_npz)
    assert a["x_train"].shape == (1437, 32, 32, 3) and a["x_test"].shape == (360, 32, 32, 3)
    assert a["x_train"].dtype == np.uint8 and a["y_train"].dtype == np.int64
    assert list(a["classes"]) == [str(d) for d in range(10)]
    assert a["x_train"].max() == 255 and a["x_train"].min() == 0
    assert (a["x_train"][..., 0] == a["x_train"][..., 2]).all()  # grey replicated to RGB
    assert sorted(np.unique(a["y_test"])) == list(range(10))


def test_imagefolder_prepare(tmp_path):
    root = write_imagefolder(tmp_path / "tree", per_class=(5, 2), size=40)  # resized to 32
    ds = {"name": "tiny", "kind": "imagefolder", "root": str(root), "image_size": 32}
    manifest = download(ds, tmp_path / "manifest.json")
    assert manifest["train"]["classes"] == {"cat": 5, "dog": 5}
    prepare(ds, tmp_path / "data.npz")
    a = load_arrays(tmp_path / "data.npz")
    assert a["x_train"].shape == (10, 32, 32, 3) and a["x_test"].shape == (4, 32, 32, 3)
    assert list(a["classes"]) == ["cat", "dog"] and a["y_train"].tolist() == [0] * 5 + [1] * 5
    assert a["x_train"][a["y_train"] == 1].mean() > a["x_train"][a["y_train"] == 0].mean() + 50


def test_imagefolder_missing_split_names_the_folder(tmp_path):
    root = write_imagefolder(tmp_path / "tree")
    import shutil

    shutil.rmtree(root / "test")
    result = run_cli("download", "--dataset-json", json.dumps({"name": "t", "kind": "imagefolder", "root": str(root)}),
                     "--manifest", tmp_path / "m.json")
    assert result.returncode == 2
    assert result.stderr.strip() .splitlines()[-1] == (
        f"reprozoo download: error: imagefolder {root}: missing folder 'test/' "
        f"(expected {root}/train/<class>/* and {root}/test/<class>/*)")


def _patch_cifar_md5(monkeypatch, archive, root):
    """Point torchvision's MD5 table at the fixture archive, so the real reader runs on it."""
    import tarfile

    from torchvision.datasets import CIFAR10

    md5 = lambda data: hashlib.md5(data).hexdigest()  # noqa: E731
    with tarfile.open(archive) as tar:
        sums = {m.name.split("/")[-1]: md5(tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()}
    monkeypatch.setattr(CIFAR10, "tgz_md5", md5(archive.read_bytes()))
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", sums[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", sums["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": sums["batches.meta"]})


def test_cifar10_from_a_placed_archive(tmp_path, monkeypatch):
    root = tmp_path / "cifar10"
    root.mkdir()
    archive = write_cifar_archive(root)
    _patch_cifar_md5(monkeypatch, archive, root)
    # with the archive in place, no network is touched
    monkeypatch.setattr("torchvision.datasets.utils._urlretrieve",
                        lambda *a, **k: pytest.fail("tried to download"))
    ds = {"name": "cifar10", "kind": "cifar10", "root": str(root), "image_size": 32}
    manifest = download(ds, tmp_path / "manifest.json")
    assert manifest["archive"] == "cifar-10-python.tar.gz"
    prepare(ds, tmp_path / "data.npz")
    a = load_arrays(tmp_path / "data.npz")
    assert a["x_train"].shape == (100, 32, 32, 3) and a["x_test"].shape == (20, 32, 32, 3)
    assert a["classes"][0] == "airplane"


def test_cifar10_offline_says_where_to_put_the_archive(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise URLError("Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.datasets.utils._urlretrieve", no_network)
    monkeypatch.setattr("torchvision.datasets.utils.urllib.request.urlopen", no_network, raising=False)
    root = tmp_path / "cifar10"
    with pytest.raises(DataError) as err:
        download({"name": "cifar10", "kind": "cifar10", "root": str(root)}, tmp_path / "m.json")
    message = str(err.value)
    assert f"place cifar-10-python.tar.gz" in message and str(root) in message and "\n" not in message
    assert not (tmp_path / "m.json").exists()


def test_split_follows_the_protocol():
    s = make_split(50_000, 10_000, seed=3407, tune_fraction=0.2, val_fraction=0.2)
    assert len(s["tune_train"]) == 8000 and len(s["tune_val"]) == 2000
    tune = set(s["tune_train"]) | set(s["tune_val"])
    assert len(tune) == 10_000 and not set(s["tune_train"]) & set(s["tune_val"])
    assert tune <= set(range(50_000))
    assert s["train"] == list(range(50_000)) and len(s["test"]) == 10_000
    assert make_split(50_000, 10_000, 3408, 0.2, 0.2)["tune_val"] != s["tune_val"]


def test_split_file_is_byte_identical_for_the_same_seed(digits_npz, tmp_path):
    write_split(digits_npz, tmp_path / "a.json", 3407, 0.2, 0.2)
    (tmp_path / "split-cfg.json").write_text(json.dumps({"tune_fraction": 0.2, "val_fraction": 0.2, "seed": 1}))
    result = run_cli("split", "--split-cfg", tmp_path / "split-cfg.json", "--data", digits_npz, "--seed", 3407,
                     "--split", tmp_path / "b.json")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_split_checksum_catches_edits(digits_split, tmp_path):
    split = json.loads(digits_split.read_text())
    split["tune_val"] = split["tune_val"][:-1]
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(split))
    with pytest.raises(DataError, match="checksum mismatch"):
        read_split(edited, 1437, 360)  # digits: 1,437 training and 360 test images


def test_prepare_without_download_names_the_missing_file(tmp_path):
    result = run_cli("prepare", "--dataset-json", '{"name":"digits","kind":"digits"}', "--manifest",
                     tmp_path / "nope.json", "--data", tmp_path / "d.npz")
    assert result.returncode == 2
    assert f"{tmp_path / 'nope.json'}: not found" in result.stderr and "Traceback" not in result.stderr
