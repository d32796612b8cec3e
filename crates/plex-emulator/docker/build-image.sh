#!/usr/bin/env bash
# Builds the plex-emulator Docker image (plexburst/plex-emulator:dev) without any registry: a
# rootfs assembled here (static busybox, the emulator binary at Plex's own path, the shared
# libraries it needs, sqlite3 as "Plex SQLite", /etc/passwd with a `plex` user, zoneinfo) becomes
# a `FROM scratch` image keeping pms-docker's contract (see Dockerfile and docker/README.md).
#
# Usage: build-image.sh [--release | --debug | PATH_TO_PLEX_EMULATOR_BINARY]   (default --release)
#   IMAGE=name:tag overrides the image name.
# Idempotent: the image carries a hash of its inputs as a label and is not rebuilt when they are
# unchanged. Concurrent runs are serialized with a lock. Prints the image id on stdout, nothing else.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
image="${IMAGE:-plexburst/plex-emulator:dev}"
mode="${1:---release}"

die() { echo "build-image: $*" >&2; exit 1; }

command -v docker >/dev/null || die "docker not found; run scripts/install-deps.sh"
docker info >/dev/null 2>&1 || die "no Docker daemon answers 'docker info'; run scripts/start-dockerd.sh"
[ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 ||
    die "/bin/busybox missing or not runnable; apt-get install busybox-static"
file_is_static() { ! ldd "$1" >/dev/null 2>&1; }
file_is_static /bin/busybox || die "/bin/busybox is dynamically linked; install busybox-static"

case "$mode" in
--release | --debug)
    profile_flag=""; profile_dir=debug
    if [ "$mode" = --release ]; then profile_flag="--release"; profile_dir=release; fi
    (cd "$repo" && cargo build -p plex-emulator --bin plex-emulator --locked $profile_flag >&2)
    target_dir="$(cd "$repo" && cargo metadata --no-deps --format-version 1 |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
    [ -n "$target_dir" ] || die "could not find cargo's target directory"
    bin="$target_dir/$profile_dir/plex-emulator"
    ;;
-*) die "unknown option $mode (use --release, --debug or a path to the plex-emulator binary)" ;;
*) bin="$mode" ;;
esac
[ -x "$bin" ] || die "plex-emulator binary not found or not executable: $bin"

# One build at a time: tests and scripts may call this concurrently.
lock="${TMPDIR:-/tmp}/plexburst-build-image.lock"
exec 9>"$lock"
flock 9

inputs="$(cat "$bin" "$here/Dockerfile" "$0" /bin/busybox | sha256sum | cut -c1-64)"
current="$(docker image inspect "$image" \
    --format '{{ index .Config.Labels "org.plexburst.inputs" }}' 2>/dev/null || true)"
if [ "$current" = "$inputs" ]; then
    echo "build-image: $image is up to date" >&2
    docker image inspect "$image" --format '{{.Id}}'
    exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/plex-emulator-image.XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
pms="$root/usr/lib/plexmediaserver"
mkdir -p "$root"/{bin,sbin,etc,tmp,root,config,data,transcode,usr/bin,usr/sbin,usr/local/bin} "$pms"
chmod 1777 "$root/tmp"

# Shell and tools: one static busybox, an applet symlink for each command it provides.
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done

# The server at pms-docker's path (its process name is what CPU monitoring looks for); debug
# info is stripped to keep the build context small, symbols stay for backtraces.
strip --strip-debug -o "$pms/Plex Media Server" "$bin" 2>/dev/null || cp "$bin" "$pms/Plex Media Server"
chmod 0755 "$pms/Plex Media Server"
ln -s "../../lib/plexmediaserver/Plex Media Server" "$root/usr/local/bin/plex-emulator"

# "Plex SQLite": the real image ships one for DB checks inside the container (plex.md §5).
copy_libs() {
    # Every shared object ldd resolves, at the same path, symlinks dereferenced.
    { ldd "$1" 2>/dev/null || true; } | { grep -oE '/[^ ]+' || true; } | sort -u | while read -r lib; do
        [ -e "$root$lib" ] && continue
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
}
copy_libs "$bin"
if command -v sqlite3 >/dev/null; then
    cp -L "$(command -v sqlite3)" "$pms/Plex SQLite"
    copy_libs "$(command -v sqlite3)"
fi

# Users: the server drops to `plex`; the entrypoint rewrites its uid/gid from PLEX_UID/PLEX_GID
# as pms-docker's usermod/groupmod do.
cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
plex:x:1000:1000:plex:/config:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat >"$root/etc/group" <<'GROUP'
root:x:0:
users:x:100:plex
plex:x:1000:
nogroup:x:65534:
GROUP
echo 'hosts: files dns' >"$root/etc/nsswitch.conf"
if [ -d /usr/share/zoneinfo ]; then
    mkdir -p "$root/usr/share"
    cp -a /usr/share/zoneinfo "$root/usr/share/zoneinfo"
    ln -sf /usr/share/zoneinfo/UTC "$root/etc/localtime"
fi

cp "$here/Dockerfile" "$work/Dockerfile"
# The legacy builder is all Debian's docker.io offers without buildx; it handles FROM scratch.
DOCKER_BUILDKIT=0 docker build -q --label "org.plexburst.inputs=$inputs" -t "$image" "$work" 2>/dev/null >&2 ||
    DOCKER_BUILDKIT=0 docker build --label "org.plexburst.inputs=$inputs" -t "$image" "$work" >&2 ||
    die "docker build failed"
docker image inspect "$image" --format '{{.Id}}'
