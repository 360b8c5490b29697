#!/usr/bin/env bash
# The DAG build on the 55,000-file CIFAR-10 JPEG tree, before and after the per-file hash cache
# (issue 41), on this project's 2-core CPU machine. Usage: run.sh <extracted cifar10-jpeg root>
# Before = 426c717 (every image read whole at every build); after = this checkout.
set -euo pipefail
tree=$(realpath "$1"); here=$(cd "$(dirname "$0")/../../.." && pwd); work=$(mktemp -d)
export PATH="$here/.venv/bin:$PATH"
mkdir "$work/before" "$work/after"
git -C "$here" archive 426c717 Snakefile rules reprozoo workflow config.yaml config envs profiles | tar x -C "$work/before"
git -C "$here" archive HEAD Snakefile rules reprozoo workflow config.yaml config envs profiles | tar x -C "$work/after"
for d in before after; do mkdir -p "$work/$d/resources"; ln -s "$tree" "$work/$d/resources/cifar10-jpeg"; done
build() { ( cd "$work/$1" && /usr/bin/time -f "%e" snakemake -n --configfile config/jpeg-paper.yaml 2>&1 >/dev/null | tail -1 ); }
build after >/dev/null  # the models' one-time check (torch import), remembered in ~/.cache/reprozoo
for i in 1 2 3; do
  echo "before, every image read:       $(build before) s"
  rm -rf "$work/after/results/.cache"
  echo "after, no hash cache (cold):    $(build after) s"
  echo "after, hash cache filled (warm): $(build after) s"
done
rm -rf "$work"
