source .gpu/setup.sh
T=""; for m in cnn_nobn resnet18_noresidual vit_tiny_heads3 vit_tiny_patch4 acgan acgan_4000; do T="$T results/cifar10_jpeg/eval/$m/seed3407/metrics.json"; done
rm -f /tmp/smk.done; setsid nohup bash -c "(time snakemake $T --cores 16 --profile profiles/gpu --resources gpu=6 --keep-going --configfile config/gpu-paper.yaml) > /tmp/smk.log 2>&1; echo done > /tmp/smk.done" >/dev/null 2>&1 &
while [ ! -f /tmp/smk.done ] && [ $SECONDS -lt 300 ]; do sleep 5; done
date; bash .gpu/collect.sh
timeout $((340 - SECONDS)) python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py > $OUT/pytest.log 2>&1; echo pytest rc=$?; grep -E "passed|failed|^E " $OUT/pytest.log | tail -8
