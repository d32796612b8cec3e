#!/usr/bin/env bash
# THE test command (README, .ci/run): installs dependencies, starts dockerd, checks formatting and
# lints, builds the plex-emulator and instance stand-in images, runs every test of the workspace,
# then each fuzz target for a short while (scripts/fuzz.sh).
# Run as root on Debian 12 (a fresh machine is fine): `bash scripts/test.sh`.
# Extra arguments go to `cargo test` (e.g. `bash scripts/test.sh -- image`).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo "==> $*" >&2; }

if [ "$(id -u)" = 0 ]; then
    step "install dependencies"
    bash scripts/install-deps.sh
else
    # The suite itself needs root too (chown to other uids, FUSE, dockerd); say so up front.
    echo "test.sh: not root: skipping scripts/install-deps.sh; tests that chown, mount or start dockerd will fail" >&2
fi
# A toolchain install-deps just put under ~/.cargo is not on this shell's PATH yet.
if ! command -v cargo >/dev/null && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
step "start dockerd"
bash scripts/start-dockerd.sh

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

# Compile the tests first, exactly as the test run will (same profile and feature unification), so
# the image is built from the very plex-emulator binary the tests use: the image test and the
# docker runtime tests then find it up to date instead of rebuilding it mid-run.
step "cargo test --no-run"
cargo test --workspace --locked --no-run
step "build the plex-emulator image"
target_dir="$(cargo metadata --no-deps --format-version 1 | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
bash crates/plex-emulator/docker/build-image.sh "$target_dir/debug/plex-emulator" >/dev/null
step "build the instance stand-in image"
bash scripts/instance/build-image.sh >/dev/null

step "cargo test"
cargo test --workspace --locked "$@"

# A short run of every fuzz target (docs/fuzzing.md); FUZZ_SECONDS per target, 10 by default.
step "fuzz"
bash scripts/fuzz.sh "${FUZZ_SECONDS:-10}"
