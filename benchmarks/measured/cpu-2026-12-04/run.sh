#!/usr/bin/env bash
# Issue 10 point 5 (cnn): the study's tuning protocol on the CIFAR-10 JPEG tree, on this
# project's 2-core CPU machine. First the pipeline itself, as a user runs it, with the tune
# job's 20 trials on 2 forked workers (REPROZOO_TUNE_WORKERS=2): tune -> train -> evaluate ->
# report. Then hyperopt's sequential fmin on the same model, data and budget, timed alone and
# checked against the pipeline's trials. Run from the repository root with the archive
# unpacked to resources/cifar10-jpeg/ (config/jpeg-paper.yaml says how):
#   bash benchmarks/measured/cpu-2026-12-04/run.sh pipeline     # ~1 h on 2 cores
#   bash benchmarks/measured/cpu-2026-12-04/run.sh sequential   # ~52 min, after the pipeline
set -euo pipefail
PART=${1:?usage: run.sh pipeline|sequential}
OUT=benchmarks/measured/cpu-2026-12-04
export PATH=$PWD/.venv/bin:$PATH TQDM_DISABLE=1
if [ "$PART" = pipeline ]; then
snakemake --cores 2 results/cifar10_jpeg/split-seed3407.json --configfile config/jpeg-paper.yaml > $OUT/prepare.log 2>&1
printf 'run: {models: [cnn], ablations: []}\nprotocol: {hparams: tuned}\n' > $OUT/cnn-tuned.yaml
# one model's chain runs one job at a time: train and evaluate get both cores (the rules ask for
# half of them, so that two jobs can run side by side); tune's 2 workers take a core each
REPROZOO_TUNE_WORKERS=2 /usr/bin/time -f "pipeline wall %e s" \
    snakemake --cores 2 --set-threads train=2 evaluate=2 --configfile config/jpeg-paper.yaml $OUT/cnn-tuned.yaml \
    > $OUT/pipeline.log 2>&1 || { tail -30 $OUT/pipeline.log; exit 1; }
tail -1 $OUT/pipeline.log
cp results/cifar10_jpeg/tune/cnn/best.json $OUT/best_cnn.json
cp results/cifar10_jpeg/tune/cnn/trials.csv $OUT/trials_cnn.csv
cp results/cifar10_jpeg/report/comparison.md $OUT/comparison.md
python benchmarks/study_timings.py --dataset cifar10_jpeg | tee $OUT/timings.md
fi
if [ "$PART" = sequential ]; then
# hyperopt's sequential fmin (2 threads), the same 20 lrs: its wall time, and its rows vs the pipeline's
python benchmarks/concurrent_tune.py --model cnn --trials 20 --epochs 50 --patience 5 --workers \
    --data results/cifar10_jpeg/data.npz --compare-to $OUT/trials_cnn.csv 2>/dev/null | tee $OUT/concurrent_tune_cnn.txt
fi
