#!/usr/bin/env bash
# Fuzzes the code that reads untrusted input (cargo-fuzz / libFuzzer), one
# target at a time, then prints executions, crashes and corpus size per target.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 60; FUZZ_TARGETS="a b" picks targets)
#
# Targets (fuzz/fuzz_targets/):
#   decode           wire-format split + Avro read with every writer schema + typed event
#   registry_schema  the registry's schema parsing and compatibility check, on schema pairs
#   registry_http    the registry's router in process: arbitrary request sequences
#   producer_input   opal-producer publish's JSON input parsing and validation
#
# Seeds: fuzz/seeds/<target>/ and, for decode, the golden records schemas/fixtures/*.bin
# (wire-format records of every schema version).
# The corpus the fuzzer grows (fuzz/corpus/), crash artifacts (fuzz/artifacts/<target>/),
# logs (fuzz/logs/) and the instrumented build (fuzz/target/) are git-ignored.
# A crash is a panic, abort, OOM (-rss_limit_mb) or timeout (-timeout): libFuzzer stops
# that target and keeps the input; reproduce with
#   cd fuzz && cargo fuzz run --sanitizer none --debug-assertions TARGET artifacts/TARGET/crash-...
# Exits 1 if any target crashed.
#
# Runs on stable Rust: `--sanitizer none` makes cargo-fuzz pass only stable rustc flags
# (-Cpasses=sancov-module and -Cllvm-args for coverage); AddressSanitizer would need
# -Zsanitizer (nightly, or RUSTC_BOOTSTRAP=1). Our crates forbid unsafe code, and every
# crash class sought here (panic, abort, OOM, timeout) is caught without a sanitizer,
# which would also halve the executions per second. --debug-assertions turns on
# overflow checks and debug_assert!s, so wrapping arithmetic is a crash too.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECONDS_PER_TARGET=${1:-60}
CARGO_FUZZ_VERSION=0.13.2
read -r -a TARGETS <<<"${FUZZ_TARGETS:-decode registry_schema registry_http producer_input}"
BUILD=(--sanitizer none --debug-assertions)

if [[ ! $SECONDS_PER_TARGET =~ ^[1-9][0-9]*$ ]]; then
  echo "fuzz.sh: SECONDS_PER_TARGET must be a positive whole number, got '$SECONDS_PER_TARGET'" >&2
  exit 2
fi
if [[ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
  echo "fuzz.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
# libfuzzer-sys compiles libFuzzer (C++).
command -v c++ >/dev/null || { echo "fuzz.sh: needs a C++ compiler (apt-get install g++)" >&2; exit 2; }

cd "$ROOT/fuzz"
# The instrumented build stays apart from the workspace's target/.
export CARGO_TARGET_DIR="$ROOT/fuzz/target"
echo "fuzz.sh: building the fuzz targets (instrumented, release)" >&2
cargo fuzz build "${BUILD[@]}"

mkdir -p logs
rows=()
crashed=0
for target in "${TARGETS[@]}"; do
  corpus="corpus/$target"
  artifacts="artifacts/$target"
  log="logs/$target.log"
  mkdir -p "$corpus" "$artifacts"
  seeds=()
  [[ -d seeds/$target ]] && seeds+=("seeds/$target")
  [[ $target == decode ]] && seeds+=("$ROOT/schemas/fixtures")
  before=$(find "$artifacts" -type f | wc -l)
  echo "fuzz.sh: $target for ${SECONDS_PER_TARGET}s (log: fuzz/$log)" >&2
  # The first corpus directory receives new inputs; the seed directories are only read.
  status=0
  cargo fuzz run "${BUILD[@]}" "$target" "$corpus" "${seeds[@]}" -- \
    -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 \
    -timeout=10 -rss_limit_mb=2048 >"$log" 2>&1 || status=$?
  executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  per_sec=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  crashes=$(($(find "$artifacts" -type f | wc -l) - before))
  if ((status != 0)) && ((crashes == 0)); then
    echo "fuzz.sh: $target failed without an artifact (exit $status); see fuzz/$log:" >&2
    tail -20 "$log" >&2
    crashes="?"
  fi
  [[ $crashes != 0 ]] && crashed=1
  rows+=("$(printf '%-16s %14s %8s %8s %8s' "$target" "${executions:-?}" "${per_sec:-?}" "$crashes" "$(find "$corpus" -type f | wc -l)")")
done

printf '%-16s %14s %8s %8s %8s\n' target executions exec/s crashes corpus
printf '%s\n' "${rows[@]}"
if ((crashed)); then
  echo "fuzz.sh: crash inputs are in fuzz/artifacts/<target>/ (see the logs in fuzz/logs/)" >&2
  exit 1
fi
