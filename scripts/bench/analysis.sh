#!/bin/sh
# Sonic analysis over the rclone mount with and without the prefetcher, against local disk
# (docs/benchmarks.md "Analysis over the mount"), measured side by side in one run. Needs root
# (FUSE), rclone >= 1.68, fuse3, sqlite3, curl, python3.
#
#   TRACKS=60 MIN_MB=20 MAX_MB=60 COST=3s THREADS=1 DELAY_MS=5 BW=50M READERS=4 scripts/bench/analysis.sh
#
# COST is the emulator's --analysis-cost per track, the same in every mode; BW caps the bucket's
# bandwidth (the instance's link), DELAY_MS delays every request (object-storage latency).
set -eu
cd "$(dirname "$0")/../.."
cargo build -q --locked --release -p plex-emulator --bin plex-emulator
EMULATOR="$PWD/target/release/plex-emulator"
export EMULATOR
exec cargo run -q --release -p plexburst --example analysis_bench -- \
    --tracks "${TRACKS:-60}" --min-mb "${MIN_MB:-20}" --max-mb "${MAX_MB:-60}" --cost "${COST:-3s}" \
    --threads "${THREADS:-1}" --delay-ms "${DELAY_MS:-5}" --bw "${BW:-50M}" --readers "${READERS:-4}"
