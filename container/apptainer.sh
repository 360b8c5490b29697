#!/usr/bin/env bash
# A real Apptainer where the host's distribution ships none (Debian 12 has no apptainer
# package): Debian unstable's own package, installed by mmdebstrap into a root tree of
# its own, and a small wrapper that runs it there with the host's files in view.
#
#   container/apptainer.sh DIR        # makes DIR/root (about 260 MB) and DIR/bin/apptainer
#   export PATH="$PWD/DIR/bin:$PATH"  # then `apptainer` and `singularity` are that one
#
# Needs root (mmdebstrap's root mode, unshare, mount, chroot) and a Debian mirror
# (DEBIAN_MIRROR, default deb.debian.org). Running it again reuses the tree.
set -euo pipefail
dir=${1:?usage: container/apptainer.sh DIR}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
for tool in mmdebstrap unshare chroot; do
    command -v "$tool" >/dev/null || { echo "apptainer.sh: $tool not found (Debian: apt-get install mmdebstrap)" >&2; exit 1; }
done
mkdir -p "$dir/bin"
dir=$(cd "$dir" && pwd)
if [ ! -x "$dir/root/usr/bin/apptainer" ]; then
    rm -rf "$dir/root"
    # A mirror that serves a snapshot of unstable has an expired Release file by design.
    mmdebstrap --quiet --variant=apt --aptopt='Acquire::Check-Valid-Until "false"' \
        --include=apptainer unstable "$dir/root" "$mirror"
fi

# The wrapper: a private mount namespace (nothing stays mounted after it exits) in which
# the host's /proc, /sys, /dev, /tmp, /var/tmp, $HOME, the working directory and the
# folders in APPTAINER_HOST_BINDS (colon-separated) appear at their own paths in the tree,
# and its /etc/hosts and /etc/resolv.conf over the tree's.
cat > "$dir/bin/apptainer" <<WRAPPER
#!/bin/sh
exec unshare --mount --propagation private "$dir/bin/apptainer-in-tree" "\$@"
WRAPPER
cat > "$dir/bin/apptainer-in-tree" <<WRAPPER
#!/bin/sh
set -e
root="$dir/root"
cwd=\$(pwd)
# The tree's root as a mount point of its own: apptainer build changes the propagation of "/".
mount --bind "\$root" "\$root"
paths="/proc:/sys:/dev:/tmp:/var/tmp:\${HOME:-}:\$cwd:\${APPTAINER_HOST_BINDS:-}"
set -f; IFS=:
for path in \$paths; do
    [ -n "\$path" ] && [ -d "\$path" ] || continue
    mkdir -p "\$root\$path"
    mount --rbind "\$path" "\$root\$path"
done
# The host's name resolution, which Apptainer copies into the containers it builds and runs.
for file in /etc/hosts /etc/resolv.conf; do
    [ -f "\$file" ] || continue
    [ -e "\$root\$file" ] || : > "\$root\$file"
    mount --bind "\$file" "\$root\$file"
done
exec chroot "\$root" /bin/sh -c 'cd "\$1" && shift && exec apptainer "\$@"' apptainer "\$cwd" "\$@"
WRAPPER
chmod +x "$dir/bin/apptainer" "$dir/bin/apptainer-in-tree"
ln -sf apptainer "$dir/bin/singularity"
"$dir/bin/apptainer" --version
