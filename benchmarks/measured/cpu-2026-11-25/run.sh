#!/usr/bin/env bash
# Issue 10 point 5 (mlp): the study's tuning protocol on the CIFAR-10 JPEG tree, on this
# project's 2-core CPU machine, sequential vs concurrent (2 forked workers), then the final
# training and evaluation at the tuned lr and epochs. Run from the repository root with the
# archive unpacked to resources/cifar10-jpeg/ (config/jpeg-paper.yaml says how).
set -euo pipefail
OUT=benchmarks/measured/cpu-2026-11-25
export PATH=$PWD/.venv/bin:$PATH TQDM_DISABLE=1
# data.npz and the study's split, as the pipeline makes them
snakemake --cores 2 results/cifar10_jpeg/split-seed3407.json --configfile config/jpeg-paper.yaml > $OUT/prepare.log 2>&1
# 20 trials, <= 50 epochs, patience 5: hyperopt's sequential fmin, then 2 forked workers
python benchmarks/concurrent_tune.py --model mlp --trials 20 --epochs 50 --patience 5 --workers 2 \
    --data results/cifar10_jpeg/data.npz 2>/dev/null | tee $OUT/concurrent_tune_mlp.txt
# the pipeline itself, as a user runs it: tune (in-process on CPU) -> train -> evaluate -> report
printf 'run: {models: [mlp]}\nprotocol: {hparams: tuned}\n' > $OUT/mlp-tuned.yaml
/usr/bin/time -f "pipeline wall %e s" snakemake --cores 2 --configfile config/jpeg-paper.yaml $OUT/mlp-tuned.yaml \
    > $OUT/pipeline.log 2>&1 || { tail -30 $OUT/pipeline.log; exit 1; }
tail -1 $OUT/pipeline.log
cp results/cifar10_jpeg/tune/mlp/best.json $OUT/best_mlp.json
cp results/cifar10_jpeg/tune/mlp/trials.csv $OUT/trials_mlp.csv
cp results/cifar10_jpeg/report/comparison.md $OUT/comparison.md
python benchmarks/study_timings.py --dataset cifar10_jpeg | tee $OUT/timings.md
