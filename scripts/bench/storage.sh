#!/bin/sh
# Storage benchmarks (docs/benchmarks.md "Storage"): scan-walk of a mounted tree and export of a
# Plex data folder, against `rclone serve s3` on loopback, plain and behind a proxy that delays
# each request by DELAY_MS. Both columns are measured side by side in one run.
# Needs root (FUSE mounts, a shared bind of the mount's parent), rclone >= 1.70, fuse3, zstd.
#
#   scripts/bench/storage.sh                      # 20,000 files each (fits a 2-core box in ~15 min)
#   WALK_FILES=100000 EXPORT_FILES=200000 scripts/bench/storage.sh   # the issue's full sizes
#   ONLY=walk scripts/bench/storage.sh            # or ONLY=export; REPEAT=N rounds of the export ceiling (3)
#   BWLIMIT=80M (default) adds a bandwidth-capped export comparison on loopback; BWLIMIT= skips it
set -eu
cd "$(dirname "$0")/../.."
set -- --walk-files "${WALK_FILES:-20000}" --export-files "${EXPORT_FILES:-20000}" --delay-ms "${DELAY_MS:-5}" --repeat "${REPEAT:-3}" --bwlimit "${BWLIMIT-80M}"
if [ -n "${ONLY:-}" ]; then set -- "$@" --only "$ONLY"; fi
exec cargo run -q -p plexburst --example storage_bench -- "$@"
