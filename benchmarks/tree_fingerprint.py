"""Benchmark: `tree_fingerprint` of an image tree's train/ and test/, as every Snakemake DAG build runs it.

Three ways, side by side in one run, on the same files (already in the OS page cache after a first
pass, for all three alike):

- whole-file reads: the code before the hash cache (`git show 426c717:reprozoo/data.py`), which read each
  image whole into memory and hashed it, at every scan;
- cold: the current code with no hash cache yet (it streams each file through sha256 and fills
  results/.cache/file-hashes.sqlite; here in a temporary folder);
- warm: the current code with that cache filled (only stat() per file; no file is read).

All three must give the same digests (the digest formula did not change). Prints the best of
--repeat runs of each, and the ratios.

    python benchmarks/tree_fingerprint.py /tmp/cifar10-jpeg      # the 55,000-image CIFAR-10 JPEG tree
"""
from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

from reprozoo import images as data
from reprozoo.images import class_folders, tree_digest


def whole_file_fingerprint(folder: Path) -> str:
    """The code before the hash cache: each image read whole, hashed, at every scan."""
    classes = {}
    for class_dir in class_folders(folder):
        digest, size, names = hashlib.sha256(), 0, [f.name for f in data.image_files(class_dir)]
        for name in names:
            with open(os.path.join(class_dir, name), "rb") as f:
                content = f.read()
            size += len(content)
            digest.update(name.encode("utf-8", "surrogateescape") + b"\0" + hashlib.sha256(content).digest())
        classes[class_dir.name] = {"images": len(names), "bytes": size, "sha256": digest.hexdigest()}
    return tree_digest(classes)


def timed(fingerprint, folders: list[Path]) -> tuple[float, list[str]]:
    start = time.perf_counter()
    digests = [fingerprint(folder) for folder in folders]
    return time.perf_counter() - start, digests


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="an imagefolder root: root/train/<class>/*, root/test/<class>/*")
    p.add_argument("--repeat", type=int, default=3, help="runs of each way; the best is printed")
    args = p.parse_args()
    folders = [args.root.resolve() / split for split in ("train", "test")]
    stats = [e.stat() for folder in folders for d in class_folders(folder) for e in os.scandir(d) if e.is_file()]
    wait = (max(max(s.st_mtime_ns, s.st_ctime_ns) for s in stats) + data.RACY_NS - time.time_ns()) / 1e9
    if wait > 0:  # files changed in the last 2 s are never cached (their timestamps may not show a next change)
        time.sleep(wait)
    print(f"{args.root}: {len(stats)} files, {sum(s.st_size for s in stats) / 1e6:.0f} MB "
          f"(train/ and test/), best of {args.repeat}")

    whole, cold, warm, digests = [], [], [], set()
    here = os.getcwd()
    for _ in range(args.repeat):
        seconds, found = timed(whole_file_fingerprint, folders)
        whole.append(seconds)
        digests.add(tuple(found))
        with tempfile.TemporaryDirectory() as work:  # a fresh, empty hash cache
            os.chdir(work)
            try:
                for times in (cold, warm):
                    seconds, found = timed(data.tree_fingerprint, folders)
                    times.append(seconds)
                    digests.add(tuple(found))
            finally:
                os.chdir(here)
    old = min(whole)
    print(f"whole-file reads (before):  {old:7.3f} s")
    print(f"streamed, cold cache:       {min(cold):7.3f} s   ratio before/this {old / min(cold):6.2f} x")
    print(f"streamed, warm cache:       {min(warm):7.3f} s   ratio before/this {old / min(warm):6.2f} x")
    print(f"same digests: {len(digests) == 1}")


if __name__ == "__main__":
    main()
