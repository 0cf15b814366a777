#!/usr/bin/env bash
# The whole pipeline on the embedded local stack:
#   stack up → kafka-init → the four consumers → simulated traffic (decisions first,
#   then feedback) → wait until every group has caught up → a report → consumers stop.
#
#   scripts/demo.sh [--workflows N] [--seed S] [--down]
#
# Each run uses its own topic prefix (demo-<time>.), so runs never mix state.
# The stack stays up afterwards unless --down.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
STACK=scripts/dev-stack.sh
down=0
workflows=90
seed=$(date +%s)  # any seed works again: each run has its own prefix, and idempotency keys are per prefix
while [ $# -gt 0 ]; do
    case $1 in
        --down) down=1; shift ;;
        --workflows) workflows=${2:?}; shift 2 ;;
        --seed) seed=${2:?}; shift 2 ;;
        *) echo "demo.sh: unknown argument '$1' (expected --workflows N, --seed S, --down)" >&2; exit 2 ;;
    esac
done

step() { printf '\n== %s\n' "$*"; }
fail() {
    echo "demo.sh: $*" >&2
    # What each consumer says about itself, to tell why.
    for name in diagnostics recommendations feedback forecast; do
        [ -n "${ports[$name]:-}" ] || continue
        echo "-- $name-consumer: /health/ready $(curl -s "127.0.0.1:${ports[$name]}/health/ready" || echo unreachable)" >&2
        tail -5 "$LOGS/demo-$name.log" >&2 2>/dev/null || true
    done
    exit 1
}

declare -A ports=()
step "local stack"
# The report is formatted with python3; install it where a minimal Debian lacks it.
if ! command -v python3 >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3 >/dev/null
fi
$STACK up
eval "$($STACK env)"
export OPAL_TOPIC_PREFIX="demo-$(date +%Y%m%d%H%M%S)."
export RUST_LOG=${RUST_LOG:-warn}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug
LOGS=${OPAL_STACK_DIR:-$ROOT/.stack}/logs

step "kafka-init (prefix $OPAL_TOPIC_PREFIX)"
scripts/kafka-init.sh --env development
scripts/kafka-init.sh --env development --check

step "starting the four consumers"
pids=()
stop_consumers() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_consumers EXIT
ports=([diagnostics]=9101 [recommendations]=9102 [feedback]=9103 [forecast]=9104)
for name in diagnostics recommendations feedback forecast; do
    $BIN/$name-consumer --http-listen "127.0.0.1:${ports[$name]}" >"$LOGS/demo-$name.log" 2>&1 &
    pids+=($!)
    echo "$name-consumer pid $! on :${ports[$name]} (log $LOGS/demo-$name.log)"
done
for name in "${!ports[@]}"; do
    for _ in $(seq 1 60); do curl -sf "127.0.0.1:${ports[$name]}/health/live" >/dev/null && break; sleep 0.5; done
    curl -sf "127.0.0.1:${ports[$name]}/health/live" >/dev/null || fail "$name-consumer did not start; see $LOGS/demo-$name.log"
done

show_recommendations() {
    curl -sf "127.0.0.1:9102/recommendations/$1" | python3 -c '
import json, sys
m = json.load(sys.stdin)
p = m["preferences"]
print("client", m["client_name"], " decision", m["decision_id"], " preferred", p["preferred_categories"], " excluded", p["excluded_categories"])
for r in m["recommendations"]:
    print("  %.3f  %-8s %s" % (r["score"], r["category"], r["text"]))
'
}

# Events each consumer has settled so far (processed, duplicates, dead letters).
consumed() {
    curl -sf "127.0.0.1:$1/metrics" | awk '/^opal_events_consumed_total/ && !/outcome="retried"/ {n += $NF} END {print n + 0}'
}

# Waits until the consumers have moved past where they were and then stayed
# still, ready and with zero lag, for three seconds.
wait_caught_up() {
    declare -A before
    for name in "${!ports[@]}"; do before[$name]=$(consumed "${ports[$name]}"); done
    local calm=0 last=""
    for _ in $(seq 1 240); do
        sleep 1
        local now="" moved=0 ready=1
        for name in "${!ports[@]}"; do
            local n
            n=$(consumed "${ports[$name]}")
            now="$now $n"
            [ "$n" -gt "${before[$name]}" ] && moved=1
            curl -sf "127.0.0.1:${ports[$name]}/health/ready" | grep -q '"lag":0' || ready=0
        done
        if [ $moved -eq 1 ] && [ $ready -eq 1 ] && [ "$now" = "$last" ]; then calm=$((calm + 1)); else calm=0; fi
        last=$now
        [ $calm -ge 3 ] && { echo "caught up"; return 0; }
    done
    fail "consumers did not catch up within 4 minutes"
}

step "simulating $workflows workflows (seed $seed): workflows, agents, decisions, preferences"
$BIN/opal-producer simulate --workflows "$workflows" --seed "$seed" --phase decisions
wait_caught_up

step "acme's recommendations before feedback"
show_recommendations acme

step "simulating the feedback (acme rejects every pricing recommendation)"
$BIN/opal-producer simulate --workflows "$workflows" --seed "$seed" --phase feedback
wait_caught_up

step "acme's recommendations after the feedback loop"
show_recommendations acme
curl -sf 127.0.0.1:9102/recommendations/acme | grep -q '"excluded_categories":\["pricing"\]' \
    || fail "the feedback loop did not exclude pricing for acme"

step "diagnostics summary"
curl -sf 127.0.0.1:9101/summary | python3 -m json.tool --indent 1

step "degraded alerts"
$BIN/opal-producer read decision.degraded --max 10

step "forecasts"
for series in demand:acme demand:globex latency:slow-agent; do
    curl -s "127.0.0.1:9104/forecasts/$series" | python3 -c "import json,sys; f=json.load(sys.stdin); print(f\"{f['series']:<20} next {f['points'][0]['value']:8.1f} [{f['points'][0]['lower']:.1f}, {f['points'][0]['upper']:.1f}]  MAE {f['mae']}\")" \
        2>/dev/null || echo "$series: no forecast yet"
done
late=$(curl -s 127.0.0.1:9104/metrics | awk '/^opal_forecast_late_events_total/ {print $2}')
echo "events behind their partition's watermark, dropped: ${late:-0}"
conflicts=$(curl -s 127.0.0.1:9104/metrics | awk '/^opal_consumer_state_conflicts_total/ {print $2}')
echo "watermark moves refused by the guard and redone: ${conflicts:-0}"

step "dead letters"
for group in opal-diagnostics opal-recommendations opal-feedback opal-forecasts; do
    $BIN/opal-dlq list --group "$group" | head -3
done

step "stopping the consumers"
stop_consumers
trap - EXIT
if [ $down -eq 1 ]; then
    step "stopping the stack"
    $STACK down
fi
echo
echo "demo complete"
