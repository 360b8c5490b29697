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
if [ ! -x "$dir/root/usr/bin/apptainer" ] || [ ! -x "$dir/root/usr/bin/umount" ]; then
    rm -rf "$dir/root"
    # A mirror that serves a snapshot of unstable has an expired Release file by design.
    mmdebstrap --quiet --variant=apt --aptopt='Acquire::Check-Valid-Until "false"' \
        --include=apptainer,mount unstable "$dir/root" "$mirror"
fi
# Root's containers get the capabilities of Apptainer's capability file (none by default), not
# all of them: "full" asks for capabilities that root lacks in sandboxes and CI runners
# (CAP_SYS_RESOURCE), and fails there. The pipeline's jobs need none.
sed -i 's/^root default capabilities = full$/root default capabilities = file/' "$dir/root/etc/apptainer/apptainer.conf"

# The wrapper: new mount and PID namespaces (nothing stays mounted after it exits), in which
# the host's /sys, /dev, /tmp, /var/tmp, $HOME, the working directory and the folders in
# APPTAINER_HOST_BINDS (colon-separated) appear at their own paths in the tree, with its
# /etc/hosts, /etc/resolv.conf and /etc/localtime, which Apptainer binds into containers; then pivot_root into the tree, because Apptainer refuses
# to run in a chroot ("weak chrooted environment").
cat > "$dir/bin/apptainer" <<WRAPPER
#!/bin/sh
exec unshare --mount --pid --fork --propagation private "$dir/bin/apptainer-in-tree" "\$@"
WRAPPER
cat > "$dir/bin/apptainer-in-tree" <<WRAPPER
#!/bin/sh
set -e
root="$dir/root"
cwd=\$(pwd)
mount --bind "\$root" "\$root"
mount -t proc proc "\$root/proc"
paths="/sys:/dev:/tmp:/var/tmp:\${HOME:-}:\$cwd:\${APPTAINER_HOST_BINDS:-}"
set -f; IFS=:
for path in \$paths; do
    [ -n "\$path" ] && [ -d "\$path" ] || continue
    mkdir -p "\$root\$path"
    mount --rbind "\$path" "\$root\$path"
done
for file in /etc/hosts /etc/resolv.conf /etc/localtime; do
    [ -f "\$file" ] || continue
    [ -f "\$root\$file" ] && [ ! -L "\$root\$file" ] || { rm -f "\$root\$file"; : > "\$root\$file"; }
    mount --bind "\$file" "\$root\$file"
done
mkdir -p "\$root/.host"
cd "\$root"
pivot_root . .host
# The tree's own PATH: Apptainer runs helpers, and itself, by name (not this wrapper again).
exec /usr/bin/env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /bin/sh -c \
    'umount --lazy /.host && cd "\$1" && shift && exec apptainer "\$@"' apptainer "\$cwd" "\$@"
WRAPPER
chmod +x "$dir/bin/apptainer" "$dir/bin/apptainer-in-tree"
ln -sf apptainer "$dir/bin/singularity"
"$dir/bin/apptainer" --version
