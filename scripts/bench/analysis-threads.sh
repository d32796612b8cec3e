#!/usr/bin/env bash
# Sonic analysis throughput of the Plex emulator with LongRunningJobThreads = this machine's vCPU
# count against the default (0 = half the cores, plex.md §3), measured side by side in one run:
# the two settings alternate, ROUNDS times each, on the same generated library, each in a fresh
# server. Timed from `POST /butler/MusicAnalysis` to every track analysed. Prints one line per
# measurement and the ratio of the medians.
#
#   TRACKS   tracks to analyse (default 400)
#   COST     --analysis-cost per track (default 20ms: CPU burnt on top of hashing the file)
#   ROUNDS   measurements per setting (default 3)
#   PROFILE  cargo profile of the emulator binary: dev (default) or release
set -euo pipefail
cd "$(dirname "$0")/../.."

tracks="${TRACKS:-400}"
cost="${COST:-20ms}"
rounds="${ROUNDS:-3}"
profile="${PROFILE:-dev}"
work="$(mktemp -d /tmp/emu-threads.XXXXXX)"
server=
trap 'if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi; rm -rf "$work"' EXIT

cargo build -q --locked --profile "$profile" -p plex-emulator --bin plex-emulator
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
emu="target/$dir/plex-emulator"
vcpus=$(nproc)

now() { date +%s.%N; }
"$emu" gen-library --out "$work/media" --artists $((tracks / 40 + 1)) --albums $((tracks / 10 + 1)) \
    --tracks "$tracks" --seed 7 >/dev/null

# One measurement: a fresh server, LongRunningJobThreads=$1, scan, then time Sonic. Prints seconds.
measure() {
    local threads=$1 data="$work/plex-$RANDOM" port base token db t0 n
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$emu" serve --data-dir "$data" --listen "127.0.0.1:$port" --claim bench --claim-delay 100ms \
        --analysis-cost "$cost" >"$data.out" 2>"$data.err" &
    server=$!
    for _ in $(seq 1 200); do grep -q '^listening on' "$data.out" 2>/dev/null && break; sleep 0.1; done
    local prefs="$data/Library/Application Support/Plex Media Server/Preferences.xml"
    for _ in $(seq 1 200); do grep -q 'PlexOnlineToken=' "$prefs" 2>/dev/null && break; sleep 0.1; done
    token=$(grep -o 'PlexOnlineToken="[^"]*"' "$prefs" | cut -d'"' -f2)
    base="http://127.0.0.1:$port"
    local h=(-H "X-Plex-Token: $token")
    curl -fsS "${h[@]}" -X PUT "$base/:/prefs?ButlerStartHour=0&ButlerEndHour=0&LongRunningJobThreads=$threads" >/dev/null
    local loc
    loc=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$work/media/Music")
    curl -fsS "${h[@]}" -X POST "$base/library/sections?name=Music&type=artist&agent=tv.plex.agents.music&scanner=Plex%20Music&language=en-US&location=$loc" >/dev/null
    db="$data/Library/Application Support/Plex Media Server/Plug-in Support/Databases/com.plexapp.plugins.library.db"
    curl -fsS "${h[@]}" "$base/library/sections/all/refresh?force=1" >/dev/null
    while [ "$(sqlite3 -readonly "$db" 'SELECT count(*) FROM metadata_items WHERE metadata_type=10' 2>/dev/null || echo 0)" != "$tracks" ]; do sleep 0.2; done
    while curl -fsS "${h[@]}" -H 'Accept: application/json' "$base/activities" | grep -q '"Activity"'; do sleep 0.2; done
    t0=$(now)
    curl -fsS "${h[@]}" -X POST "$base/butler/MusicAnalysis" >/dev/null
    while :; do
        n=$(sqlite3 -readonly "$db" "SELECT count(*) FROM metadata_items WHERE metadata_type=10 AND extra_data LIKE '%ms:musicAnalysisVersion%'" 2>/dev/null || echo 0)
        [ "$n" = "$tracks" ] && break
        sleep 0.05
    done
    python3 -c "import sys,time; print(round(time.time() - float(sys.argv[1]), 2))" "$t0"
    kill -TERM "$server"; wait "$server" || true; server=
}

echo "machine: $vcpus vCPUs; $tracks tracks, --analysis-cost $cost, $profile build; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
default=() full=()
for r in $(seq 1 "$rounds"); do
    s=$(measure 0); default+=("$s"); echo "round $r LongRunningJobThreads=0 (default, half): $s s ($(python3 -c "print(round($tracks/$s,1))") tracks/s)"
    s=$(measure "$vcpus"); full+=("$s"); echo "round $r LongRunningJobThreads=$vcpus (vCPUs): $s s ($(python3 -c "print(round($tracks/$s,1))") tracks/s)"
done
python3 - "$tracks" "${default[*]}" "${full[*]}" <<'PY'
import statistics, sys
tracks = int(sys.argv[1])
d = statistics.median(map(float, sys.argv[2].split()))
f = statistics.median(map(float, sys.argv[3].split()))
print(f"median: default {tracks/d:.1f} tracks/s, vCPUs {tracks/f:.1f} tracks/s, ratio {d/f:.2f}x")
PY
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
