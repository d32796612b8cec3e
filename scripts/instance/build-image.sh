#!/usr/bin/env bash
# Builds the instance stand-in image (plexburst/instance:dev) without any registry, in two layers:
#
#   plexburst/instance-base:dev  rootfs.sh's debootstrapped Debian bookworm root (real cloud-init,
#                                openssh-server, fuse3, ...), `tar | docker import`ed. About 4
#                                minutes, so it carries the hash of rootfs.sh as a label and is only
#                                rebuilt when that file changes.
#   plexburst/instance:dev       FROM the base: the cloud-init drop-in and the boot entrypoint
#                                (Dockerfile). Seconds; rebuilt when any of its inputs changes.
#
# Usage: build-image.sh          (as root, with dockerd running)
#   IMAGE=name:tag, BASE_IMAGE=name:tag override the image names; DEBIAN_MIRROR the archive.
# Idempotent and cached as above; concurrent runs are serialized with a lock. Prints the image id on
# stdout, nothing else.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
image="${IMAGE:-plexburst/instance:dev}"
base="${BASE_IMAGE:-plexburst/instance-base:dev}"
label=org.plexburst.inputs

die() { echo "build-image: $*" >&2; exit 1; }
log() { echo "build-image: $*" >&2; }

command -v docker >/dev/null || die "docker not found; run scripts/install-deps.sh"
docker info >/dev/null 2>&1 || die "no Docker daemon answers 'docker info'; run scripts/start-dockerd.sh"

inputs_of() { docker image inspect "$1" --format "{{ index .Config.Labels \"$label\" }}" 2>/dev/null || true; }
id_of() { docker image inspect "$1" --format '{{.Id}}' 2>/dev/null || true; }

# One build at a time: test.sh and the tests may call this concurrently.
lock="${TMPDIR:-/tmp}/plexburst-instance-image.lock"
exec 9>"$lock"
flock 9

# The base: everything that shapes the root is in rootfs.sh (the mirror only changes where the same
# packages come from, so it is not part of the hash).
base_inputs="$(sha256sum "$here/rootfs.sh" | cut -c1-64)"
if [ "$(inputs_of "$base")" = "$base_inputs" ]; then
    log "$base is up to date"
else
    [ "$(id -u)" = 0 ] || die "building $base needs root (debootstrap)"
    command -v debootstrap >/dev/null || die "debootstrap not found; run scripts/install-deps.sh"
    old_base="$(id_of "$base")"
    # Not under /tmp: it may be a small tmpfs, and the root is about 400 MB.
    work="$(mktemp -d "${TMPDIR:-/var/tmp}/plexburst-instance-rootfs.XXXXXX")"
    # rootfs.sh unmounts what debootstrap mounted under the root before this removes it.
    trap 'rm -rf --one-file-system "$work"' EXIT
    started=$SECONDS
    log "debootstrapping Debian bookworm for $base (about 4 minutes)"
    bash "$here/rootfs.sh" "$work/root"
    # --numeric-owner: the root's own uids, not this host's names for them.
    tar -C "$work/root" --numeric-owner -c . |
        docker import \
            --change "LABEL $label=$base_inputs" \
            --change 'CMD ["/bin/bash"]' \
            - "$base" >/dev/null
    rm -rf --one-file-system "$work"
    trap - EXIT
    log "built $base in $((SECONDS - started)) s"
    # The previous base is dangling now; drop it (it fails, harmlessly, while an image or a
    # container still uses it).
    if [ -n "$old_base" ] && [ "$old_base" != "$(id_of "$base")" ]; then
        docker image rm "$old_base" >/dev/null 2>&1 || true
    fi
fi

# The image on top: its inputs are the base it builds on and the files it copies.
base_id="$(id_of "$base")"
files=(Dockerfile 99-plexburst-standin.cfg standin-boot)
inputs="$(
    {
        echo "$base_id"
        for f in "${files[@]}" build-image.sh; do cat "$here/$f"; done
    } | sha256sum | cut -c1-64
)"
if [ "$(inputs_of "$image")" = "$inputs" ]; then
    log "$image is up to date"
    id_of "$image"
    exit 0
fi

old_image="$(id_of "$image")"
context="$(mktemp -d "${TMPDIR:-/tmp}/plexburst-instance-image.XXXXXX")"
trap 'rm -rf "$context"' EXIT
for f in "${files[@]}"; do cp "$here/$f" "$context/$f"; done
# The legacy builder is all Debian's docker.io offers without buildx.
DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE=$base" --label "$label=$inputs" -t "$image" "$context" >/dev/null 2>&1 ||
    DOCKER_BUILDKIT=0 docker build --build-arg "BASE=$base" --label "$label=$inputs" -t "$image" "$context" >&2 ||
    die "docker build of $image failed"
if [ -n "$old_image" ] && [ "$old_image" != "$(id_of "$image")" ]; then
    docker image rm "$old_image" >/dev/null 2>&1 || true
fi
log "built $image"
id_of "$image"
