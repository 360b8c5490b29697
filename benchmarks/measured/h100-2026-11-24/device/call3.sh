source .gpu/setup.sh
if [ ! -f /tmp/smk.done ] && ! pgrep -f "bin/snakemake" >/dev/null; then echo "fresh machine: rerun"; setsid nohup bash -c '(time snakemake --cores 12 --profile profiles/gpu --resources gpu=3 --keep-going --configfile config/gpu-paper.yaml) > /tmp/smk.log 2>&1; echo done > /tmp/smk.done' >/dev/null 2>&1 & fi
while [ ! -f /tmp/smk.done ] && [ $SECONDS -lt 330 ]; do sleep 5; done
date; bash .gpu/collect.sh
if [ -f /tmp/smk.done ]; then
  timeout $((590 - SECONDS)) python3 benchmarks/concurrent_tune.py --model cnn --trials 20 --epochs 50 --patience 5 --workers 4 8 --device cuda --data results/cifar10_jpeg/data.npz 2>&1 | grep -E "^(sequential|x[0-9]|\()" | tee $OUT/bench_cnn.txt
fi
