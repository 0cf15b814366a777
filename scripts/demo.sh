#!/usr/bin/env bash
# The pipeline scenario on the embedded local stack.
#
# Today it runs what exists: the stack comes up, kafka-init provisions topics and
# schemas, and the drift check is clean. The producer test suite runs and an event is
# published from JSON. The four consumers join as their issue lands.
#   --down   stop the stack afterwards
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
STACK=scripts/dev-stack.sh
down=0
for arg in "$@"; do
    case $arg in
        --down) down=1 ;;
        *) echo "demo.sh: unknown argument '$arg' (expected --down)" >&2; exit 2 ;;
    esac
done

step() { printf '\n== %s\n' "$*"; }

step "local stack"
$STACK up
eval "$($STACK env)"

step "broker metadata"
target/debug/opal-admin ping

step "kafka-init: topics, DLQs and schemas (twice: the second run changes nothing)"
scripts/kafka-init.sh --env development
scripts/kafka-init.sh --env development

step "drift check"
scripts/kafka-init.sh --env development --check

step "the producer test suite"
target/debug/opal-producer test

step "publishing from JSON"
target/debug/opal-producer example feedback.submitted | target/debug/opal-producer publish feedback.submitted

step "what the cluster and registry hold"
target/debug/opal-admin describe --topic-prefix opal  # tests leave prefixed topics beside these

if [ $down -eq 1 ]; then
    step "stopping the stack"
    $STACK down
fi
