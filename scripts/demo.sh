#!/usr/bin/env bash
# The main job, end to end on this machine, with no cloud and no real Plex: build plexburst and the
# Plex Media Server emulator, generate a sample library, write a plexburst.toml (local target,
# "command" runtime running the emulator), run `plexburst run`, and print where the report and the
# exported data-folder archive are.
#
#   DEMO_DIR      working directory (default /tmp/plexburst-demo); its media/, plex/, export/,
#                 work/ and .plexburst/ are recreated on every run
#   DEMO_PORT     the emulator's port on 127.0.0.1 (default 32500)
#   DEMO_RELEASE  1 builds with --release (default: the dev profile, already optimized for deps)
#   DEMO_DEPS     0 skips scripts/install-deps.sh (default: run it when root)
#   Extra arguments go to `plexburst run` (e.g. --skip-analysis, --keep).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

demo="${DEMO_DIR:-/tmp/plexburst-demo}"
port="${DEMO_PORT:-32500}"
step() { echo "==> $*" >&2; }

if [ "${DEMO_DEPS:-1}" = 1 ] && [ "$(id -u)" = 0 ]; then
    step "install dependencies (scripts/install-deps.sh)"
    bash scripts/install-deps.sh
fi
for tool in cargo sqlite3 zstd tar; do
    command -v "$tool" >/dev/null || { echo "demo: $tool is missing; run scripts/install-deps.sh as root" >&2; exit 1; }
done

step "build plexburst and plex-emulator"
profile=debug; flags=()
if [ "${DEMO_RELEASE:-0}" = 1 ]; then profile=release; flags=(--release); fi
cargo build --locked "${flags[@]}" -p plexburst -p plex-emulator --bins
target_dir="$(cargo metadata --no-deps --format-version 1 | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
plexburst="$target_dir/$profile/plexburst"
emulator="$target_dir/$profile/plex-emulator"

if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
    echo "demo: 127.0.0.1:$port is already in use; set DEMO_PORT to a free port" >&2
    exit 1
fi

step "generate a sample library in $demo/media"
mkdir -p "$demo"
rm -rf "$demo/media" "$demo/plex" "$demo/export" "$demo/work" "$demo/.plexburst"
"$emulator" gen-library --out "$demo/media" --seed 42 \
    --artists 12 --albums 40 --tracks 480 \
    --movies 30 \
    --shows 4 --seasons 8 --episodes 80 \
    --photos 120 >"$demo/library.json"
echo "demo: library $(cat "$demo/library.json")" >&2

# plex.tv, emulated too: the demo's account token signs the server in the way a user's would
# (`plexburst login` or PLEX_TOKEN): plexburst fetches a fresh claim right before Plex starts.
step "start the emulated plex.tv"
"$emulator" plextv --listen 127.0.0.1:0 --account-token demo-account-token >"$demo/plextv.out" 2>/dev/null &
plextv_pid=$!
trap 'kill "$plextv_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    plextv_url="$(sed -n 's/^listening on //p' "$demo/plextv.out")"
    [ -n "$plextv_url" ] && break
    sleep 0.1
done
[ -n "$plextv_url" ] || { echo "demo: the emulated plex.tv did not start" >&2; exit 1; }

# The rates make the progress visible (a real server walks a library at a few hundred files per
# second over a network mount); drop them to see the emulator go as fast as it can.
step "write $demo/plexburst.toml"
cat >"$demo/plexburst.toml" <<TOML
# Written by scripts/demo.sh: the local machine, the Plex Media Server emulator as "Plex".
[target]
kind = "local"
work_dir = "$demo/work"

[storage]
kind = "path"
path = "$demo/media"

[plex]
runtime = "command"
command = "'$emulator' serve --data-dir {data_dir} --listen 127.0.0.1:{port} --plextv-url $plextv_url --scan-rate 400 --analysis-rate 150 --thumb-rate 100"
plextv_url = "$plextv_url"
data_dir = "$demo/plex"
port = $port
startup_timeout = "1m"
stop_grace = "30s"

[timeouts]
scan = "10m"
analysis = "10m"
photo = "10m"

[monitor]
poll_interval = "1s"
stall_window = "1m"
stable_samples = 3
log_interval = "5s"

[export]
destination = "$demo/export"

[[sections]]
name = "Music"
type = "music"
paths = ["$demo/media/Music"]

[[sections]]
name = "Movies"
type = "movie"
paths = ["$demo/media/Movies"]

[[sections]]
name = "TV Shows"
type = "show"
paths = ["$demo/media/TV Shows"]

[[sections]]
name = "Photos"
type = "photo"
paths = ["$demo/media/Photos"]
TOML

step "plexburst plan"
"$plexburst" --config "$demo/plexburst.toml" plan

# The account token plexburst uses to fetch the claim (never sent anywhere but plex.tv).
export PLEX_TOKEN=demo-account-token
step "plexburst run"
"$plexburst" --config "$demo/plexburst.toml" run "$@"

step "results"
archive="$(find "$demo/export" -maxdepth 1 -name '*.tar.zst' -print -quit 2>/dev/null || true)"
if [ -z "$archive" ]; then
    echo "demo: no archive in $demo/export (with --keep, Plex is left running and nothing is exported)" >&2
    exit 1
fi
run_id="$(basename "$archive" .tar.zst)"
# What a home server would get back: the exported library DB, read straight from the archive.
db_in_archive="Library/Application Support/Plex Media Server/Plug-in Support/Databases/com.plexapp.plugins.library.db"
tmpdb="$(mktemp "${TMPDIR:-/tmp}/plexburst-demo-db.XXXXXX")"
trap 'rm -f "$tmpdb"; kill "$plextv_pid" 2>/dev/null || true' EXIT
tar --zstd -xOf "$archive" "$db_in_archive" >"$tmpdb"
echo "exported library (read from the archive's DB):"
sqlite3 -readonly "$tmpdb" "
  SELECT printf('  %-9s %6d', CASE metadata_type WHEN 1 THEN 'movies' WHEN 4 THEN 'episodes'
         WHEN 10 THEN 'tracks' WHEN 13 THEN 'photos' END, count(*))
    FROM metadata_items WHERE metadata_type IN (1, 4, 10, 13) AND deleted_at IS NULL
   GROUP BY metadata_type ORDER BY metadata_type;
  SELECT printf('  %-9s %6d', 'sonic', count(*)) FROM metadata_items
   WHERE metadata_type = 10 AND extra_data LIKE '%ms:musicAnalysisVersion%';"
echo
echo "config:   $demo/plexburst.toml"
echo "report:   $demo/.plexburst/runs/$run_id/report.md (and report.json, and report.html: the run drawn)"
echo "archive:  $archive"
echo "manifest: $demo/export/$run_id.manifest.json"
