#!/usr/bin/env bash
# Packs what a GPU machine without network needs for benchmarks/gpu/session.sh into .gpu/
# (git-ignored; carry it): the CIFAR-10 JPEG archive and the wheels of the pinned snakemake
# and hyperopt with their dependencies, built for that machine's Python 3.12 (x86-64), minus
# the packages its image already has. Run here, where the package index is reachable:
#
#   bash benchmarks/gpu/bundle.sh [ARCHIVE]      # default ARCHIVE: ../shared/data/cifar10-jpeg.tar.gz
set -euo pipefail
cd "$(dirname "$0")/../.."
archive=${1:-../shared/data/cifar10-jpeg.tar.gz}
[ -f "$archive" ] || { echo "bundle: no CIFAR-10 JPEG archive at $archive (give its path)" >&2; exit 2; }
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3
pin() { grep -E "^$1==" requirements.txt || { echo "bundle: $1 is not pinned in requirements.txt" >&2; exit 2; }; }

# The device image's Python packages (/work/.library/device/KINDS.md):
# whatever is already there is not carried; its own versions are used.
ON_DEVICE="absl-py accelerate attrs certifi charset-normalizer click cloudpickle contourpy cycler filelock
fonttools fsspec idna jinja2 joblib kiwisolver markupsafe matplotlib mpmath networkx numpy packaging pandas
pillow pluggy psutil pygments pyparsing pytest python-dateutil pyyaml requests scikit-learn scipy seaborn six
sympy tabulate threadpoolctl torch torchvision tqdm typing-extensions urllib3 wrapt"

rm -rf .gpu/whl && mkdir -p .gpu/whl
# connection_pool (a snakemake dependency) is published as a source archive only: build its wheel first.
"$python" -m pip wheel -q --no-deps -w .gpu/whl connection_pool==0.0.3
"$python" -m pip download -q --find-links .gpu/whl --only-binary=:all: --python-version 3.12 \
    --implementation cp --abi cp312 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .gpu/whl "$(pin snakemake)" "$(pin hyperopt)"
for wheel in .gpu/whl/*.whl; do
    name=$(basename "$wheel" | cut -d- -f1 | tr '[:upper:]_.' '[:lower:]--')
    if [[ " $(tr '\n' ' ' <<<"$ON_DEVICE") " == *" $name "* ]]; then rm "$wheel"; fi   # exact names only
done
cp "$archive" .gpu/cifar10-jpeg.tar.gz
echo "bundle: .gpu/ holds $(ls .gpu/whl | wc -l) wheels and the archive, $(du -sh .gpu | cut -f1) in all" \
     "(a device call carries at most 64 MiB with the working tree)"
