#!/usr/bin/env bash
# Starts dockerd in the background when no Docker daemon answers, then waits until `docker info`
# succeeds. Made for CI and containers: root, no systemd. Idempotent: a running daemon is left alone.
#
#   DOCKERD_LOG      where dockerd's output goes (default /var/log/dockerd.log)
#   DOCKERD_TIMEOUT  seconds to wait for the daemon to answer (default 60)
#   DOCKERD_ARGS     extra dockerd flags, e.g. "--storage-driver=vfs" where overlayfs is unavailable
set -euo pipefail

log="${DOCKERD_LOG:-/var/log/dockerd.log}"
timeout_s="${DOCKERD_TIMEOUT:-60}"

if docker info >/dev/null 2>&1; then
    echo "start-dockerd: docker daemon already running" >&2
    exit 0
fi

command -v dockerd >/dev/null || {
    echo "start-dockerd: dockerd not found; run scripts/install-deps.sh (Debian package docker.io)" >&2
    exit 1
}
[ "$(id -u)" = 0 ] || {
    echo "start-dockerd: must run as root to start dockerd (no daemon answers to 'docker info')" >&2
    exit 1
}

# A stale pid file from a daemon that died (e.g. a previous CI container) makes dockerd refuse to
# start; only remove it when the pid it names is not a live dockerd.
pidfile=/var/run/docker.pid
if [ -f "$pidfile" ]; then
    oldpid="$(cat "$pidfile" 2>/dev/null || true)"
    if [ -z "$oldpid" ] || ! grep -qs dockerd "/proc/$oldpid/comm"; then
        rm -f "$pidfile"
    fi
fi

mkdir -p "$(dirname "$log")"
# setsid + nohup: the daemon must outlive this script and the CI step's process group.
# shellcheck disable=SC2086 # DOCKERD_ARGS is a list of flags
setsid nohup dockerd ${DOCKERD_ARGS:-} >>"$log" 2>&1 </dev/null &
dpid=$!
echo "start-dockerd: started dockerd (pid $dpid), log $log" >&2

deadline=$(( $(date +%s) + timeout_s ))
until docker info >/dev/null 2>&1; do
    if ! kill -0 "$dpid" 2>/dev/null; then
        echo "start-dockerd: dockerd exited during start-up; last lines of $log:" >&2
        tail -n 30 "$log" >&2 || true
        exit 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "start-dockerd: dockerd did not answer 'docker info' within ${timeout_s}s; last lines of $log:" >&2
        tail -n 30 "$log" >&2 || true
        exit 1
    fi
    sleep 0.5 # poll interval, not a wait for a condition: the loop checks 'docker info' itself
done
echo "start-dockerd: docker daemon ready" >&2
