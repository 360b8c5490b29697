# reprozoo pipeline image: the pinned requirements + the package.
# Build: docker build -t reprozoo:0.1.0 .   (torch wheels bring their CUDA 13 runtime)
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLBACKEND=Agg

WORKDIR /opt/reprozoo
COPY requirements.txt pyproject.toml README.md ./
RUN pip install --no-cache-dir -r requirements.txt
COPY reprozoo ./reprozoo
COPY workflow ./workflow
RUN pip install --no-cache-dir --no-deps . \
    && useradd --create-home --uid 1000 reprozoo

USER reprozoo
WORKDIR /work
CMD ["python", "-m", "reprozoo", "--help"]
