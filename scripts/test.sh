#!/usr/bin/env bash
# Runs every test in the workspace against the real local stack.
# Brings the stack up (installing what is missing), runs the tests, stops what it
# started, and exits with the tests' result. Extra arguments go to `cargo test`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
STACK=scripts/dev-stack.sh

already_running=$($STACK started)
stop_what_we_started() {
    local ours=()
    for service in $($STACK started); do
        grep -qx "$service" <<<"$already_running" || ours+=("$service")
    done
    if [ ${#ours[@]} -gt 0 ]; then
        $STACK down "${ours[@]}" || true
    fi
}
trap stop_what_we_started EXIT

started_at=$SECONDS
$STACK up
eval "$($STACK env)"
echo "test.sh: stack ready after $((SECONDS - started_at))s; running tests" >&2

set +e
cargo test --workspace --no-fail-fast "$@"
result=$?
set -e
echo "test.sh: tests finished with exit code $result after $((SECONDS - started_at))s" >&2
exit $result
