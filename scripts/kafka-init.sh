#!/usr/bin/env bash
# Creates every topic (with the consumer groups' DLQs) and registers every schema,
# or with --check reports drift from the catalog and exits 1 if there is any.
#
#   scripts/kafka-init.sh [--env development|staging|production] [--check] [opal-admin flags...]
#
# Reads KAFKA_BROKERS, KAFKA_USERNAME, KAFKA_PASSWORD, SCHEMA_REGISTRY_URL,
# SCHEMA_REGISTRY_USERNAME, SCHEMA_REGISTRY_PASSWORD, OPAL_ENV and OPAL_TOPIC_PREFIX
# from the environment; unset, they point at the local stack (scripts/dev-stack.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

env_name=${OPAL_ENV:-development}
command=init
passthrough=()
while [ $# -gt 0 ]; do
    case $1 in
        --env) env_name=${2:?--env needs a value}; shift 2 ;;
        --env=*) env_name=${1#--env=}; shift ;;
        --check) command=check; shift ;;
        -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) passthrough+=("$1"); shift ;;
    esac
done

# In a checkout, use the workspace's build; in an image, the opal-admin on PATH.
if [ -f "$ROOT/Cargo.toml" ]; then
    (cd "$ROOT" && cargo build --quiet -p opal-topics --bin opal-admin)
    admin=${CARGO_TARGET_DIR:-$ROOT/target}/debug/opal-admin
else
    admin=$(command -v opal-admin) || { echo "kafka-init: opal-admin not found" >&2; exit 1; }
fi

exec "$admin" "$command" --env "$env_name" "${passthrough[@]}"
