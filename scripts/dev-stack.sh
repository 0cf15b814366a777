#!/usr/bin/env bash
# The local stack on loopback, without Docker: a Kafka-protocol broker (Tansu),
# opal-registry (Confluent-compatible Schema Registry) and Redis.
#
#   scripts/dev-stack.sh up                  start what is not running, wait until all answer
#   scripts/dev-stack.sh down [--clean] [SERVICE...]
#                                            stop what this script started (--clean: wipe state)
#   scripts/dev-stack.sh status              one line per service; non-zero if any is down
#   scripts/dev-stack.sh env                 print the export line for the other tools
#   scripts/dev-stack.sh start|stop|restart SERVICE   one service (kafka, registry, redis)
#   scripts/dev-stack.sh started             the services this script is running now
#
# Settings (environment):
#   OPAL_KAFKA_PORT (9092)  OPAL_REGISTRY_PORT (8081)  OPAL_REDIS_PORT (6379)
#   OPAL_STACK_DIR   state, logs and pid files (default: <repo>/.stack, git-ignored)
#   OPAL_TANSU_CACHE where the Tansu binary is built once per machine
#                    (default: ${XDG_CACHE_HOME:-~/.cache}/opal/tansu-0.6.0, outside the clone)
#   OPAL_STACK_TIMEOUT seconds to wait for each service (60)
#   OPAL_KAFKA_STORAGE Tansu storage engine (sqlite://tansu.db, relative to the
#                    broker's state dir; memory://tansu/ keeps nothing on disk)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE_DIR=${OPAL_STACK_DIR:-$ROOT/.stack}
LOG_DIR=$STATE_DIR/logs
PID_DIR=$STATE_DIR/pids
TANSU_VERSION=0.6.0
TANSU_CACHE=${OPAL_TANSU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/opal/tansu-$TANSU_VERSION}
TANSU_BIN=$TANSU_CACHE/bin/tansu
HOST=127.0.0.1
KAFKA_PORT=${OPAL_KAFKA_PORT:-9092}
REGISTRY_PORT=${OPAL_REGISTRY_PORT:-8081}
REDIS_PORT=${OPAL_REDIS_PORT:-6379}
WAIT_SECS=${OPAL_STACK_TIMEOUT:-60}
KAFKA_STORAGE=${OPAL_KAFKA_STORAGE:-sqlite://tansu.db}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN_DIR=$TARGET_DIR/debug
SERVICES=(kafka registry redis)

KAFKA_BROKERS_URL=$HOST:$KAFKA_PORT
REGISTRY_URL=http://$HOST:$REGISTRY_PORT
REDIS_URL_LOCAL=redis://$HOST:$REDIS_PORT

say() { printf 'dev-stack: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# ---------- installation ----------

# Debian packages the build and the stack need; installed only when missing.
ensure_packages() {
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing Debian packages: ${missing[*]}"
    command -v apt-get >/dev/null || die "apt-get not found; install ${missing[*]} by hand"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Tansu is built once per machine into a cache outside the clone.
ensure_tansu() {
    [ -x "$TANSU_BIN" ] && return 0
    mkdir -p "$TANSU_CACHE" "$LOG_DIR"
    # One build at a time, even when two checkouts ask together.
    exec 9>"$TANSU_CACHE.lock"
    flock 9
    if [ ! -x "$TANSU_BIN" ]; then
        say "building Tansu $TANSU_VERSION once for this machine (about 9 minutes on 2 cores); log: $LOG_DIR/tansu-install.log"
        if ! cargo install "tansu@$TANSU_VERSION" --locked --features dynostore,libsql \
            --root "$TANSU_CACHE" >"$LOG_DIR/tansu-install.log" 2>&1; then
            tail -20 "$LOG_DIR/tansu-install.log" >&2
            die "building Tansu failed; see $LOG_DIR/tansu-install.log"
        fi
    fi
    flock -u 9
}

# The workspace's binaries (opal-registry, opal-admin, ...), in the shared target/.
build_workspace_bins() {
    say "building workspace binaries"
    if ! (cd "$ROOT" && cargo build --workspace --bins --quiet); then
        die "cargo build failed"
    fi
}

# ---------- process bookkeeping ----------

pid_file() { echo "$PID_DIR/$1.pid"; }

# The pid this script started for SERVICE, if that process still runs.
our_pid() {
    local file pid
    file=$(pid_file "$1")
    [ -f "$file" ] || return 1
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null && grep -qa -- "$(service_binary_name "$1")" "/proc/$pid/cmdline" 2>/dev/null; then
        echo "$pid"
        return 0
    fi
    rm -f "$file"  # stale: the process is gone or the pid was reused
    return 1
}

service_binary_name() {
    case $1 in
        kafka) echo tansu ;;
        registry) echo opal-registry ;;
        redis) echo redis-server ;;
    esac
}

# Starts a command detached from this shell, recording its pid.
launch() {
    local service=$1 workdir=$2
    shift 2
    mkdir -p "$PID_DIR" "$LOG_DIR" "$workdir"
    (cd "$workdir" && exec setsid "$@" >>"$LOG_DIR/$service.log" 2>&1 </dev/null) &
    echo $! >"$(pid_file "$service")"
}

# ---------- health probes ----------

kafka_answers() {
    [ -x "$BIN_DIR/opal-admin" ] || return 1
    "$BIN_DIR/opal-admin" --brokers "$KAFKA_BROKERS_URL" ping --timeout 2s >/dev/null 2>&1
}

registry_answers() {
    curl -sf --max-time 2 "$REGISTRY_URL/subjects" >/dev/null 2>&1
}

redis_answers() {
    local reply
    reply=$(
        exec 3<>"/dev/tcp/$HOST/$REDIS_PORT" || exit 1
        printf 'PING\r\n' >&3
        timeout 2 head -c 7 <&3
    ) 2>/dev/null || return 1
    [[ $reply == "+PONG"* ]]
}

answers() { "${1}_answers"; }

service_log() { echo "$LOG_DIR/$1.log"; }

wait_for() {
    local service=$1 deadline=$((SECONDS + WAIT_SECS))
    until answers "$service"; do
        if [ $SECONDS -ge $deadline ]; then
            say "$service did not answer within ${WAIT_SECS}s; log: $(service_log "$service")"
            [ -f "$(service_log "$service")" ] && tail -15 "$(service_log "$service")" >&2
            return 1
        fi
        # Only a process that is gone counts as exited: just after the launch its
        # command line is still the launching shell's, which our_pid would
        # mistake for a reused pid.
        if [ -f "$(pid_file "$service")" ] && ! kill -0 "$(cat "$(pid_file "$service")")" 2>/dev/null; then
            say "$service exited during start-up; log: $(service_log "$service")"
            tail -15 "$(service_log "$service")" >&2
            return 1
        fi
        sleep 0.5
    done
}

# ---------- services ----------

start_kafka() {
    launch kafka "$STATE_DIR/kafka" "$TANSU_BIN" broker \
        --cluster-id opal-local \
        --listener-url "tcp://$HOST:$KAFKA_PORT" \
        --advertised-listener-url "tcp://$HOST:$KAFKA_PORT" \
        --storage-engine "$KAFKA_STORAGE"
}

start_registry() {
    [ -x "$BIN_DIR/opal-registry" ] || die "registry: missing ($BIN_DIR/opal-registry was not built)"
    launch registry "$STATE_DIR/registry" "$BIN_DIR/opal-registry" \
        --listen "$HOST:$REGISTRY_PORT" --data-dir "$STATE_DIR/registry/data"
}

start_redis() {
    if ! command -v redis-server >/dev/null; then
        ensure_packages redis-server
        # Debian's package may start its own server on the default port.
        answers redis && return 0
    fi
    # A private server; append-only so consumer state survives its restart.
    launch redis "$STATE_DIR/redis" redis-server --bind "$HOST" --port "$REDIS_PORT" \
        --dir "$STATE_DIR/redis" --appendonly yes --save "" --daemonize no
}

# Starts SERVICE unless something already answers at its address.
bring_up() {
    local service=$1
    if answers "$service"; then
        return 0
    fi
    if ! our_pid "$service" >/dev/null; then
        "start_$service"
    fi
    wait_for "$service"
}

stop_service() {
    local service=$1 pid
    pid=$(our_pid "$service") || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$service (pid $pid) ignored SIGTERM for 10s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$(pid_file "$service")"
    say "$service stopped (pid $pid)"
}

status_line() {
    local service=$1 address pid origin
    case $service in
        kafka) address=$KAFKA_BROKERS_URL ;;
        registry) address=$REGISTRY_URL ;;
        redis) address=$REDIS_URL_LOCAL ;;
    esac
    if pid=$(our_pid "$service"); then origin="pid $pid, started by dev-stack"; else origin="not started by dev-stack"; fi
    if answers "$service"; then
        printf '%-9s up    %-26s (%s)\n' "$service" "$address" "$origin"
    else
        printf '%-9s DOWN  %-26s (%s; log: %s)\n' "$service" "$address" "$origin" "$(service_log "$service")"
        return 1
    fi
}

env_line() {
    echo "export KAFKA_BROKERS=$KAFKA_BROKERS_URL SCHEMA_REGISTRY_URL=$REGISTRY_URL REDIS_URL=$REDIS_URL_LOCAL"
}

check_service_name() {
    case ${1:-} in
        kafka | registry | redis) ;;
        *) die "unknown service '${1:-}': expected one of ${SERVICES[*]}" ;;
    esac
}

# ---------- commands ----------

cmd_up() {
    mkdir -p "$STATE_DIR" "$LOG_DIR" "$PID_DIR"
    ensure_packages curl pkg-config libssl-dev make g++
    ensure_tansu
    build_workspace_bins
    local failed=0
    for service in "${SERVICES[@]}"; do
        bring_up "$service" || failed=1
    done
    env_line >"$STATE_DIR/env"
    [ $failed -eq 0 ] || die "the stack is not up (see above)"
    cmd_status
    say "ready; for your shell: eval \"\$(scripts/dev-stack.sh env)\" (also in $STATE_DIR/env)"
}

cmd_down() {
    local clean=0 targets=()
    for arg in "$@"; do
        case $arg in
            --clean) clean=1 ;;
            *) check_service_name "$arg"; targets+=("$arg") ;;
        esac
    done
    [ ${#targets[@]} -gt 0 ] || targets=("${SERVICES[@]}")
    for service in "${targets[@]}"; do
        stop_service "$service"
    done
    if [ $clean -eq 1 ]; then
        rm -rf "$STATE_DIR"
        say "state wiped ($STATE_DIR)"
    fi
}

cmd_status() {
    local failed=0
    for service in "${SERVICES[@]}"; do
        status_line "$service" || failed=1
    done
    return $failed
}

cmd_started() {
    for service in "${SERVICES[@]}"; do
        our_pid "$service" >/dev/null && echo "$service"
    done
    return 0
}

main() {
    local command=${1:-}
    shift || true
    case $command in
        up) cmd_up ;;
        down) cmd_down "$@" ;;
        status) cmd_status ;;
        env) env_line ;;
        started) cmd_started ;;
        start)
            check_service_name "${1:-}"
            bring_up "$1"
            ;;
        stop)
            check_service_name "${1:-}"
            stop_service "$1"
            ;;
        restart)
            check_service_name "${1:-}"
            stop_service "$1"
            bring_up "$1"
            ;;
        *)
            sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
            exit 2
            ;;
    esac
}

main "$@"
