#!/usr/bin/env bash
# The instance stand-in's Debian root: `debootstrap` of bookworm with Debian's own cloud-init and
# openssh-server plus the tools plexburst runs on a rented instance, written to ROOT (which must not
# exist yet). build-image.sh hashes this file to decide whether the base image is still current, so
# everything that shapes the root lives here and nothing else does.
#
# Usage: rootfs.sh ROOT      (as root; takes about 4 minutes and 400 MB)
#   DEBIAN_MIRROR overrides the archive (default http://deb.debian.org/debian).
set -euo pipefail

root="$(realpath -m "${1:?usage: rootfs.sh ROOT}")"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

# What a Scaleway Debian image has that plexburst relies on, plus what this stand-in needs:
#   openssh-server cloud-init sudo     the instance's own boot and access path
#   python3-cffi-backend               debootstrap does not resolve virtual packages, and without it
#                                      python3-cryptography (a cloud-init dependency) stays unconfigured
#   ca-certificates curl               what cloud-init scripts typically use
#   fuse3                              rclone mount (fusermount3, /etc/fuse.conf)
#   sqlite3 zstd tar                   DB checks and the data-folder export
#   procps iproute2 util-linux findutils coreutils   ps/ss/findmnt/setsid/find
#   locales                            cloud-init's locale module runs update-locale; without it the
#                                      module fails and the status is `error` (`locale: false` avoids
#                                      that too, but cloud-init 22.4's schema flags it as invalid)
include=(
    openssh-server cloud-init sudo locales
    python3 python3-cffi-backend
    ca-certificates curl
    fuse3
    sqlite3 zstd tar
    procps iproute2 util-linux findutils coreutils
)

[ "$(id -u)" = 0 ] || { echo "rootfs: run as root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "rootfs: debootstrap missing; apt-get install debootstrap" >&2; exit 1; }
[ ! -e "$root" ] || { echo "rootfs: $root already exists" >&2; exit 1; }

# debootstrap mounts /proc and /sys in the target while packages configure; make sure nothing stays
# mounted under ROOT if it fails half-way, or the caller's rm -rf would walk into the host's /proc.
cleanup_mounts() {
    awk -v r="$root/" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
}
trap cleanup_mounts EXIT

# `--variant=minbase`: required packages and apt only, like a cloud image before its own extras.
debootstrap --variant=minbase --include="$(IFS=,; echo "${include[*]}")" bookworm "$root" "$mirror" >&2

# Trim what a container never needs: downloaded .debs, package lists (apt-get update restores them).
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
# Per-machine identity must not be baked into the image: cloud-init writes fresh host keys in its
# init stage (ssh_deletekeys), the entrypoint runs `ssh-keygen -A` as a fallback; an empty
# machine-id is what Debian's cloud images ship so that each boot gets its own.
rm -f "$root"/etc/ssh/ssh_host_*
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
