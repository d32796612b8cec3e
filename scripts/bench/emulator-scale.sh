#!/usr/bin/env bash
# Scale figures for the Plex emulator (issue: 500,000 tracks generate in under a minute, scan in a
# few minutes, DB readable by another process while it writes). Prints one line per figure.
#
#   TRACKS   tracks to generate (default 500000; artists = TRACKS/40, albums = TRACKS/10)
#   PROFILE  cargo profile of the emulator binary: release (default) or dev
#   WORK     scratch directory (default: a new temp dir, removed at the end)
set -euo pipefail
cd "$(dirname "$0")/../.."

tracks="${TRACKS:-500000}"
profile="${PROFILE:-release}"
work="${WORK:-$(mktemp -d /tmp/emu-scale.XXXXXX)}"
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; [ -n "${WORK:-}" ] || rm -rf "$work"' EXIT
server=

cargo build -q --locked --profile "$profile" -p plex-emulator --bin plex-emulator
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
emu="target/$dir/plex-emulator"

now() { date +%s.%N; }
since() { python3 -c "import sys,time; print(round(time.time() - float(sys.argv[1]), 1))" "$1"; }

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
t0=$(now)
"$emu" gen-library --out "$work/media" --artists $((tracks / 40)) --albums $((tracks / 10)) \
    --tracks "$tracks" --seed 7 >"$work/gen.json"
echo "gen-library: $tracks tracks in $(since "$t0") s ($(du -sh "$work/media" | cut -f1) on disk)"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$emu" serve --data-dir "$work/plex" --listen "127.0.0.1:$port" --analysis-cost 0ms >"$work/serve.out" 2>"$work/serve.err" &
server=$!
for _ in $(seq 1 200); do grep -q '^listening on' "$work/serve.out" && break; sleep 0.1; done
grep -q '^listening on' "$work/serve.out" || { echo "emulator did not start" >&2; cat "$work/serve.err" >&2; exit 1; }
base="http://127.0.0.1:$port"
loc=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$work/media/Music")
curl -fsS -X POST "$base/library/sections?name=Music&type=artist&agent=tv.plex.agents.music&scanner=Plex%20Music&language=en-US&location=$loc" >/dev/null
db="$work/plex/Library/Application Support/Plex Media Server/Plug-in Support/Databases/com.plexapp.plugins.library.db"

t0=$(now)
curl -fsS "$base/library/sections/all/refresh?force=1" >/dev/null
reads=()
while :; do
    refreshing=$(curl -fsS -H 'Accept: application/json' "$base/library/sections" |
        python3 -c 'import json,sys; d=json.load(sys.stdin)["MediaContainer"].get("Directory",[]); print(int(any(x.get("refreshing") for x in d)))')
    # Another process reads the DB while the scan writes (WAL): count tracks read-only.
    reads+=("$(sqlite3 -readonly "$db" 'SELECT count(*) FROM metadata_items WHERE metadata_type=10' 2>&1)")
    [ "$refreshing" = 0 ] && break
    sleep 1
done
scan=$(since "$t0")
final=$(sqlite3 -readonly "$db" 'SELECT count(*) FROM metadata_items WHERE metadata_type=10 AND deleted_at IS NULL')
echo "scan: $final tracks in $scan s (from refresh to not refreshing)"
echo "concurrent read-only counts during the scan: ${reads[*]}"
kill -TERM "$server"; wait "$server" || true; server=
echo "DB after a clean stop: $(stat -c %s "$db") bytes; WAL left: $(stat -c %s "$db-wal" 2>/dev/null || echo none)"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
[ "$final" = "$tracks" ] || { echo "expected $tracks tracks, found $final" >&2; exit 1; }
