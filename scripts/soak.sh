#!/usr/bin/env bash
# The soak: every fault at once, and exactly-once through all of it.
#
#   scripts/soak.sh [EVENTS]        (default 100000; not part of scripts/test.sh)
#
# Runs consumers/tests/soak.rs at full size: EVENTS events through two
# instances of the counting consumer and the four OPAL consumers, on a private
# stack of its own (scripts/dev-stack.sh: Apache Kafka, opal-registry, Redis
# as shipped, appendfsync always), while a fault driver injects at random
# moments OPAL_SOAK_CONSUMER_KILLS (20) kill -9 of consumer instances, one
# kill -9 of the broker, one of Redis and one registry restart. It compares
# the end state with a control run of the same traffic without faults.
# scripts/test.sh runs the same test at 10 000 events with 4 consumer kills.
#
# Environment: OPAL_SOAK_CONSUMER_KILLS (20), OPAL_SOAK_RATE (events/s while
# the faults happen; 400), OPAL_SOAK_SEED, OPAL_SOAK_REPORT (where the JSON
# report goes; bench/results/soak.json). The consumers' own logs (noisy while
# the broker is down) go to .stack/soak.log.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

export OPAL_SOAK_EVENTS=${1:-100000}
export OPAL_SOAK_CONSUMER_KILLS=${OPAL_SOAK_CONSUMER_KILLS:-20}
export OPAL_SOAK_RATE=${OPAL_SOAK_RATE:-400}
export OPAL_SOAK_REPORT=${OPAL_SOAK_REPORT:-$ROOT/bench/results/soak.json}
case $OPAL_SOAK_EVENTS in
    '' | *[!0-9]*) echo "soak.sh: EVENTS must be a number, not '$OPAL_SOAK_EVENTS'" >&2; exit 2 ;;
esac

# Kafka's jars, redis-server and the C headers come the way the test suite
# gets them: dev-stack.sh installs what is missing when the soak starts its stack.
cargo build --workspace --bins
log=$ROOT/.stack/soak.log
mkdir -p "$(dirname "$log")"
echo "soak.sh: $OPAL_SOAK_EVENTS events, $OPAL_SOAK_CONSUMER_KILLS consumer kills, $OPAL_SOAK_RATE events/s; consumer logs in $log" >&2
rm -f "$OPAL_SOAK_REPORT"
started=$SECONDS
set +e
cargo test -p opal-consumers --test soak -- --nocapture 2>"$log"
result=$?
set -e
# The driver's lines (faults as they happen) and the report, from the test's output.
grep -a '^soak' "$log" | grep -v '^soak report' >&2 || true
[ -f "$OPAL_SOAK_REPORT" ] && cat "$OPAL_SOAK_REPORT"
if [ $result -ne 0 ]; then
    grep -a -A20 'panicked' "$log" | head -40 >&2
    echo "soak.sh: FAILED after $((SECONDS - started))s (see $log)" >&2
else
    echo "soak.sh: passed in $((SECONDS - started))s; report in $OPAL_SOAK_REPORT" >&2
fi
exit $result
