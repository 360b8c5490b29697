#!/usr/bin/env bash
# The first `snakemake -n` after `dvc repro` on the demo, before and after the forked touch
# (rules/dvc.smk, issue 45), side by side in one DVC copy of the demo: the Snakefile, rules/ and the
# YAML reader (none of them a DVC stage's dependency) swapped between 685d26b and this checkout
# each round, `benchmarks/engines.py --after-dvc` sampling each. The venv is this checkout's for
# both (ruamel.yaml.clib included). Usage: after_dvc.sh <DVC copy of the demo> [rounds]
# (a DVC copy: `git clone` this repository, `dvc init`, `python -m reprozoo dvc-yaml --configfile
# config/demo.yaml`, commit, `dvc repro`).
set -euo pipefail
work=$(realpath "$1"); rounds=${2:-3}; here=$(cd "$(dirname "$0")/../../.." && pwd)
files=(Snakefile workflow/Snakefile rules reprozoo/schema.py reprozoo/benchmark.py)
keep=$(mktemp -d); tar c -C "$work" "${files[@]}" | tar x -C "$keep"
trap 'rm -rf "$work/rules"; tar c -C "$keep" . | tar x -C "$work"; rm -rf "$keep"' EXIT
for round in $(seq "$rounds"); do
  for commit in 685d26b HEAD; do
    rm -rf "$work/rules"
    git -C "$here" archive "$commit" "${files[@]}" | tar x -C "$work"
    echo "round $round, $commit: $("$here/.venv/bin/python" "$here/benchmarks/engines.py" --after-dvc "$work" --repeats 4 | tail -2 | tr -s ' ' | paste -sd' ')"
  done
done
