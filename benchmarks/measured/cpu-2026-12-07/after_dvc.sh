#!/usr/bin/env bash
# The first `snakemake -n` after `dvc repro` on the demo, an older commit against this checkout, side
# by side in one DVC copy of the demo: of the Snakefile, rules/ and the YAML reader, those that differ
# are swapped between the two each round, `benchmarks/engines.py --after-dvc` sampling each. The
# venv is this checkout's for both. Usage: after_dvc.sh <DVC copy of the demo> [rounds] [old commit]
# (a DVC copy: `git clone` this repository, `dvc init`, `python -m reprozoo dvc-yaml --configfile
# config/demo.yaml`, commit, `dvc repro`). Since 2bf6baf DVC's resolve stage depends on all of
# reprozoo/: a copy made from such a commit takes only old commits whose reprozoo/ files are the same.
set -euo pipefail
work=$(realpath "$1"); rounds=${2:-3}; old=${3:-685d26b}; here=$(cd "$(dirname "$0")/../../.." && pwd)
files=(rules)  # replaced whole: a rules file may exist in one commit only
for f in Snakefile workflow/Snakefile reprozoo/schema.py reprozoo/benchmark.py; do
  git -C "$here" diff --quiet "$old" HEAD -- "$f" || files+=("$f")
done
keep=$(mktemp -d); tar c -C "$work" "${files[@]}" | tar x -C "$keep"
trap 'rm -rf "$work/rules"; tar c -C "$keep" . | tar x -C "$work"; rm -rf "$keep"' EXIT
for round in $(seq "$rounds"); do
  for commit in "$old" HEAD; do
    rm -rf "$work/rules"
    git -C "$here" archive "$commit" "${files[@]}" | tar x -C "$work"
    echo "round $round, $commit: $("$here/.venv/bin/python" "$here/benchmarks/engines.py" --after-dvc "$work" --repeats 4 | tail -2 | tr -s ' ' | paste -sd' ')"
  done
done
