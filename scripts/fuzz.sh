#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/, docs/fuzzing.md) and runs each for SECONDS (default 20), one after
# the other; exits 1 when a target crashed (a panic, a failed assertion, a timeout or running out
# of memory), naming the input libFuzzer saved. scripts/test.sh runs it with the default.
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]     e.g. `bash scripts/fuzz.sh 600 plex_xml`
#
# Each target starts from its seeds (fuzz/seeds/TARGET, real data: committed) and the corpus it
# grew before (fuzz/corpus/TARGET, not committed), so later runs go on where earlier ones stopped.
# Needs cargo-fuzz (scripts/install-deps.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-20}"
shift || true
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
    echo "fuzz.sh: SECONDS must be a whole number of seconds, got '$secs'" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is missing; install it with 'cargo install cargo-fuzz --locked' (or run scripts/install-deps.sh)" >&2
    exit 1
fi
targets=("$@")
if [ "${#targets[@]}" = 0 ]; then
    mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi

# The stable toolchain has no sanitizers (-Zsanitizer is nightly-only): `-s none` keeps libFuzzer's
# coverage instrumentation, debug assertions and overflow checks, which is what finds panics in
# safe Rust. One build for every target; `cargo fuzz run` then finds it up to date.
fuzz_flags=(--sanitizer none)
start=$SECONDS
(cd fuzz && cargo fuzz build "${fuzz_flags[@]}")
echo "fuzz.sh: built in $((SECONDS - start)) s" >&2

failed=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    log="fuzz/artifacts/$t/last-run.log"
    echo "==> fuzz $t for ${secs}s" >&2
    # -timeout: one input taking 10 s is a hang, reported as a crash.
    if (cd fuzz && cargo fuzz run "${fuzz_flags[@]}" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1) >"$log" 2>&1; then
        execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)"
        corpus="$(find "fuzz/corpus/$t" -type f | wc -l)"
        echo "fuzz.sh: $t: ok, ${execs:-?} runs in ${secs}s, corpus $corpus inputs" >&2
    else
        failed+=("$t")
        echo "fuzz.sh: $t CRASHED; the end of its log ($log):" >&2
        tail -n 40 "$log" >&2
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz.sh: crashed: ${failed[*]}; the inputs are in fuzz/artifacts/TARGET/ (docs/fuzzing.md: reproduce, fix, keep as a unit test)" >&2
    exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, ${secs}s each, no crash ($((SECONDS - start)) s in all)" >&2
