source .gpu/setup.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch,torchvision,snakemake,hyperopt;print(torch.__version__,torchvision.__version__,snakemake.__version__,hyperopt.__version__)"
timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py tests/test_stages.py > $OUT/pytest.log 2>&1; echo pytest rc=$?; grep -E "passed|failed|Error|assert" $OUT/pytest.log | tail -12
rm -f /tmp/smk.done; date
setsid nohup bash -c '(time snakemake --cores 12 --profile profiles/gpu --resources gpu=3 --keep-going --configfile config/gpu-paper.yaml) > /tmp/smk.log 2>&1; echo done > /tmp/smk.done' >/dev/null 2>&1 &
while [ ! -f /tmp/smk.done ] && [ $SECONDS -lt 565 ]; do sleep 5; done
date; bash .gpu/collect.sh
