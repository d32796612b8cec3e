#!/bin/sh
# plexburst: prepare a rented instance for one run (run by cloud-init's runcmd, as root).
# The values below are filled in by plexburst; nothing secret is ever written here (user data is
# readable by anyone holding an API key of the project).
set -eu

PB_RUNTIME='@RUNTIME@'
PB_IMAGE='@IMAGE@'
PB_DIRS='@DIRS@'
PB_DEADLINE_MINUTES='@DEADLINE_MINUTES@'
PB_RCLONE_URL='@RCLONE_URL@'

export DEBIAN_FRONTEND=noninteractive

log() { echo "plexburst-prepare: $*"; }

# FUSE mounts readable by the Plex user need user_allow_other, before any mount (bootcmd already
# wrote it; kept here so the script is complete on its own).
if ! grep -qx 'user_allow_other' /etc/fuse.conf 2>/dev/null; then
    echo 'user_allow_other' >>/etc/fuse.conf
fi

# The tools plexburst runs on the target, as Debian packages; apt runs only when one is missing.
missing=''
for pair in fusermount3:fuse3 sqlite3:sqlite3 curl:curl zstd:zstd tar:tar findmnt:util-linux \
    setsid:util-linux sha256sum:coreutils find:findutils awk:mawk; do
    tool=${pair%%:*}
    pkg=${pair#*:}
    if ! command -v "$tool" >/dev/null 2>&1; then
        missing="$missing $pkg"
    fi
done
if [ "$PB_RUNTIME" = docker ] && ! command -v docker >/dev/null 2>&1; then
    missing="$missing docker.io"
fi
if [ -n "$missing" ]; then
    log "installing:$missing"
    apt-get update -q
    # shellcheck disable=SC2086 # one word per package
    apt-get install -yq --no-install-recommends $missing
fi

# rclone >= 1.68 (Debian's is older): the official build, unless a recent one is there.
rclone_ok() {
    command -v rclone >/dev/null 2>&1 || return 1
    v=$(rclone version 2>/dev/null | sed -n 's/^rclone v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
    # shellcheck disable=SC2086 # split "MAJOR MINOR" into $1 $2
    set -- $v
    [ "${1:-0}" -gt 1 ] || { [ "${1:-0}" -eq 1 ] && [ "${2:-0}" -ge 68 ]; }
}
if ! rclone_ok; then
    log "installing rclone from $PB_RCLONE_URL"
    command -v unzip >/dev/null 2>&1 || { apt-get update -q && apt-get install -yq --no-install-recommends unzip; }
    tmp=$(mktemp -d)
    curl -fsSL "$PB_RCLONE_URL" -o "$tmp/rclone.zip"
    unzip -q "$tmp/rclone.zip" -d "$tmp"
    install -m 0755 "$tmp"/rclone-*/rclone /usr/local/bin/rclone
    rm -rf "$tmp"
fi

if [ "$PB_RUNTIME" = docker ]; then
    systemctl enable --now docker >/dev/null 2>&1 || true
    # Pulled now, at boot: never inside a claim token's 4 minutes.
    docker image inspect "$PB_IMAGE" >/dev/null 2>&1 || docker pull -q "$PB_IMAGE"
fi

for d in $PB_DIRS; do
    mkdir -p "$d"
done

# The weak deadline: a shutdown inside the guest. It may not stop billing (scaleway.md App. B #8);
# plexburst deletes the instance itself, this is the last resort if plexburst is gone.
if [ "$PB_DEADLINE_MINUTES" -gt 0 ]; then
    if command -v shutdown >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        shutdown -h "+$PB_DEADLINE_MINUTES" 'plexburst: max_lifetime reached' || true
    else
        nohup sh -c "sleep $((PB_DEADLINE_MINUTES * 60)); poweroff -f" >/dev/null 2>&1 &
    fi
fi
log "ready"
