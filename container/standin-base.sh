#!/usr/bin/env bash
# A local stand-in for the Dockerfile's base image, python:3.11-slim-bookworm, for hosts
# that reach Debian's mirror but no image registry: Debian 12's own Python 3.11 (with
# venv and pip), made by mmdebstrap and imported into the engine under the base's name,
# so that the Dockerfile builds unchanged.
#
#   container/standin-base.sh [podman|docker]     # default: $ENGINE, else podman, else docker
#
# pip in the build trusts the host's CA bundle (PIP_CERT), so that it also works behind
# a proxy that inspects TLS with a certificate of its own.
set -euo pipefail
engine=${1:-${ENGINE:-$(command -v podman >/dev/null && echo podman || echo docker)}}
base=$(sed -n 's/^FROM \([^ ]*\).*/\1/p' "$(dirname "$0")/../Dockerfile" | head -n 1)
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
bundle=${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
command -v mmdebstrap >/dev/null || { echo "standin-base.sh: mmdebstrap not found (Debian: apt-get install mmdebstrap)" >&2; exit 1; }
[ -r "$bundle" ] || { echo "standin-base.sh: no CA bundle at $bundle (set HOST_CA_BUNDLE)" >&2; exit 1; }
tarball=$(mktemp --suffix=.tar)
trap 'rm -f "$tarball"' EXIT
mmdebstrap --quiet --variant=apt --include=python3,python3-venv,python-is-python3,ca-certificates \
    --customize-hook="cat '$bundle' > \"\$1/etc/ssl/certs/host-ca-bundle.crt\"" \
    bookworm "$tarball" "$mirror"
"$engine" import --change 'CMD ["python3"]' --change 'ENV PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt' \
    "$tarball" "docker.io/library/$base" >/dev/null
echo "standin-base.sh: $base is a local stand-in: Debian 12 (mmdebstrap) with its Python 3.11"
