# sourced at the start of every device call: packages, python, data (kept on a warm machine)
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
if [ ! -d /tmp/site/snakemake ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
command -v python >/dev/null || ln -s "$(command -v python3)" /usr/local/bin/python
[ -d resources/cifar10-jpeg ] || tar xzf .gpu/cifar10-jpeg.tar.gz -C resources 2>/dev/null || { mkdir -p resources; tar xzf .gpu/cifar10-jpeg.tar.gz -C resources; }
