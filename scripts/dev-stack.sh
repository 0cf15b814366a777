#!/usr/bin/env bash
# The local stack on loopback, without Docker: Apache Kafka 4.x in KRaft mode (one
# node, or three with OPAL_KAFKA_NODES=3; each broker + controller, from Maven
# Central jars), opal-registry (Confluent-compatible Schema Registry) and Redis.
#
#   scripts/dev-stack.sh up                  start what is not running, wait until all answer
#   scripts/dev-stack.sh down [--clean] [SERVICE...]
#                                            stop what this script started (--clean: wipe state)
#   scripts/dev-stack.sh status              one line per service; non-zero if any is down
#   scripts/dev-stack.sh env                 print the export line for the other tools
#   scripts/dev-stack.sh start|stop|restart SERVICE   one service (kafka, registry, redis;
#                                            with three nodes also kafka-1, kafka-2, kafka-3)
#   scripts/dev-stack.sh started             the services this script is running now
#   scripts/dev-stack.sh kafka-libs          fetch Kafka's jars if needed; print their directory
#
# Settings (environment):
#   OPAL_KAFKA_PORT (9092)  OPAL_KAFKA_CONTROLLER_PORT (Kafka port + 1)
#   OPAL_REGISTRY_PORT (8081)  OPAL_REDIS_PORT (6379)
#   OPAL_KAFKA_SASL=1        also start a SASL_SSL listener (SCRAM-SHA-512) on
#                            OPAL_KAFKA_SASL_PORT (Kafka port + 2)
#   OPAL_KAFKA_HEAP          each broker's heap (512m; 256m per node with three nodes)
#   OPAL_KAFKA_NODES (1)     3: a cluster of three nodes, each broker + controller
#                            (dynamic quorum of three voters). Node i (1..3) takes
#                            every Kafka port above plus 10*(i-1): by default
#                            9092/9093/9094, 9102/9103/9104, 9112/9113/9114. Its
#                            state is in kafka/node-i, its log logs/kafka-i.log,
#                            its pid pids/kafka-i.pid; `start|stop kafka-i` acts
#                            on it alone, `start|stop kafka` on all.
#   OPAL_STACK_DIR   state, logs and pid files (default: <repo>/.stack, git-ignored)
#   OPAL_KAFKA_CACHE where Kafka's jars are fetched once per machine
#                    (default: ${XDG_CACHE_HOME:-~/.cache}/opal/kafka-<version>, outside the clone)
#   OPAL_STACK_TIMEOUT seconds to wait for each service (60; 180 with three nodes)
#   OPAL_STACK_BUILD=0 start the binaries already in target/ without building
#                    (benchmarks of other builds while the tree is mid-change)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Absolute: services are launched from their own state directories.
STATE_DIR=$(realpath -m "${OPAL_STACK_DIR:-$ROOT/.stack}")
LOG_DIR=$STATE_DIR/logs
PID_DIR=$STATE_DIR/pids
KAFKA_POM=$ROOT/scripts/kafka/pom.xml
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM")
KAFKA_CACHE=${OPAL_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/opal/kafka-$KAFKA_VERSION}
KAFKA_LIBS=$KAFKA_CACHE/libs
KAFKA_STATE=$STATE_DIR/kafka
HOST=127.0.0.1
KAFKA_PORT=${OPAL_KAFKA_PORT:-9092}
CONTROLLER_PORT=${OPAL_KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}
SASL_ENABLED=${OPAL_KAFKA_SASL:-0}
SASL_PORT=${OPAL_KAFKA_SASL_PORT:-$((KAFKA_PORT + 2))}
KAFKA_NODES=${OPAL_KAFKA_NODES:-1}
case $KAFKA_NODES in
    1 | 3) ;;
    *) printf 'dev-stack: OPAL_KAFKA_NODES=%s: expected 1 or 3\n' "$KAFKA_NODES" >&2; exit 2 ;;
esac
# Three JVMs share the machine with everything else: a smaller heap each.
if [ "$KAFKA_NODES" = 1 ]; then KAFKA_HEAP=${OPAL_KAFKA_HEAP:-512m}; else KAFKA_HEAP=${OPAL_KAFKA_HEAP:-256m}; fi
# Three JVMs starting together on two cores may take minutes.
if [ "$KAFKA_NODES" = 1 ]; then WAIT_SECS=${OPAL_STACK_TIMEOUT:-60}; else WAIT_SECS=${OPAL_STACK_TIMEOUT:-180}; fi
REGISTRY_PORT=${OPAL_REGISTRY_PORT:-8081}
REDIS_PORT=${OPAL_REDIS_PORT:-6379}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN_DIR=$TARGET_DIR/debug
SERVICES=(kafka registry redis)
# The SCRAM user created when the broker's storage is formatted.
SASL_USER=opal

# Node i of a cluster listens on every Kafka port plus NODE_PORT_STEP*(i-1).
NODE_PORT_STEP=10
node_port() { echo $((KAFKA_PORT + NODE_PORT_STEP * ($1 - 1))); }
node_controller_port() { echo $((CONTROLLER_PORT + NODE_PORT_STEP * ($1 - 1))); }
node_sasl_port() { echo $((SASL_PORT + NODE_PORT_STEP * ($1 - 1))); }
# Every node's address, comma-separated (the bootstrap list clients get).
node_addresses() {
    local port_of=$1 i list=()
    for i in $(seq 1 "$KAFKA_NODES"); do list+=("$HOST:$("$port_of" "$i")"); done
    local IFS=,
    echo "${list[*]}"
}

KAFKA_BROKERS_URL=$(node_addresses node_port)
SASL_BROKERS_URL=$(node_addresses node_sasl_port)
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
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Java and Maven run and fetch the broker; installed from Debian where missing.
ensure_java() {
    command -v java >/dev/null || ensure_packages openjdk-17-jre-headless
    command -v mvn >/dev/null || ensure_packages maven
}

# Kafka's jars are fetched from Maven Central once per machine into a cache
# outside the clone; a changed pom fetches them again.
ensure_kafka() {
    local stamp want
    stamp=$KAFKA_CACHE/pom.sha256
    want=$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -d "$KAFKA_LIBS" ] && return 0
    ensure_java
    mkdir -p "$KAFKA_CACHE" "$LOG_DIR"
    # One fetch at a time, even when two checkouts ask together.
    exec 9>"$KAFKA_CACHE.lock"
    flock 9
    if ! { [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -d "$KAFKA_LIBS" ]; }; then
        local log=$LOG_DIR/kafka-fetch.log started=$SECONDS
        say "fetching Apache Kafka $KAFKA_VERSION from Maven Central once for this machine into $KAFKA_CACHE; log: $log"
        rm -rf "$KAFKA_LIBS.new"
        if ! mvn -B -q -f "$KAFKA_POM" dependency:copy-dependencies \
            -DoutputDirectory="$KAFKA_LIBS.new" -DincludeScope=runtime >"$log" 2>&1; then
            tail -20 "$log" >&2
            die "fetching Kafka failed: mvn -f $KAFKA_POM dependency:copy-dependencies; see $log"
        fi
        rm -rf "$KAFKA_LIBS"
        mv "$KAFKA_LIBS.new" "$KAFKA_LIBS"
        echo "$want" >"$stamp"
        say "Kafka $KAFKA_VERSION fetched in $((SECONDS - started))s ($(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars)"
    fi
    flock -u 9
}

# The workspace's binaries (opal-registry, opal-admin, ...), in the shared target/.
build_workspace_bins() {
    if [ "${OPAL_STACK_BUILD:-1}" = 0 ]; then
        [ -x "$BIN_DIR/opal-registry" ] || die "OPAL_STACK_BUILD=0 but $BIN_DIR/opal-registry is not built"
        return 0
    fi
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
        kafka | kafka-[0-9]) echo kafka.Kafka ;;
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

# Whether anything accepts connections on PORT.
port_taken() {
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

# Refuses to start SERVICE when one of its ports is taken by something else.
require_free_ports() {
    local service=$1
    shift
    local spec name port
    for spec in "$@"; do
        name=${spec%%=*}
        port=${spec#*=}
        if port_taken "$port"; then
            die "$service: port $port ($name) is already taken by another process; free it or set $(port_variable "$name")"
        fi
    done
}

port_variable() {
    case $1 in
        kafka) echo OPAL_KAFKA_PORT ;;
        "kafka controller") echo OPAL_KAFKA_CONTROLLER_PORT ;;
        "kafka SASL_SSL") echo OPAL_KAFKA_SASL_PORT ;;
        registry) echo OPAL_REGISTRY_PORT ;;
        redis) echo OPAL_REDIS_PORT ;;
    esac
}

# ---------- Kafka nodes ----------
# One node (the default) is the service `kafka`, state in kafka/. A cluster's
# node i is the service `kafka-i`, state in kafka/node-i; `kafka` is all of them.

node_service() { if [ "$KAFKA_NODES" = 1 ]; then echo kafka; else echo "kafka-$1"; fi; }
node_dir() { if [ "$KAFKA_NODES" = 1 ]; then echo "$KAFKA_STATE"; else echo "$KAFKA_STATE/node-$1"; fi; }
node_numbers() { seq 1 "$KAFKA_NODES"; }

# The node number of a service name kafka-i, if it names a node of this cluster.
node_of() {
    [ "$KAFKA_NODES" != 1 ] || return 1
    case $1 in
        kafka-[0-9]) [ "${1#kafka-}" -ge 1 ] && [ "${1#kafka-}" -le "$KAFKA_NODES" ] && echo "${1#kafka-}" ;;
        *) return 1 ;;
    esac
}

# The nodes a service name stands for: all for `kafka`, one for `kafka-i`.
nodes_of() {
    if [ "$1" = kafka ]; then node_numbers; else node_of "$1"; fi
}

# ---------- health probes ----------

# Node I answers on its own port (a KRaft broker opens its listeners to
# requests only once the controller has unfenced it) and its metadata lists
# at least AT_LEAST brokers.
node_answers() {
    local i=$1 at_least=${2:-1} reply
    [ -x "$BIN_DIR/opal-admin" ] || return 1
    reply=$("$BIN_DIR/opal-admin" --brokers "$HOST:$(node_port "$i")" ping --timeout 2s 2>/dev/null) || return 1
    [[ $reply =~ \(([0-9]+)\ broker ]] && [ "${BASH_REMATCH[1]}" -ge "$at_least" ]
}

# The whole cluster: every node answers and sees every node registered.
kafka_answers() {
    local i
    for i in $(node_numbers); do
        node_answers "$i" "$KAFKA_NODES" || return 1
    done
}

# Node I's SASL_SSL listener answers and accepts the SCRAM user.
node_sasl_answers() {
    [ -x "$BIN_DIR/opal-admin" ] && [ -f "$KAFKA_STATE/sasl/password" ] || return 1
    KAFKA_USERNAME=$SASL_USER KAFKA_PASSWORD=$(cat "$KAFKA_STATE/sasl/password") \
        KAFKA_SSL_CA_LOCATION=$KAFKA_STATE/sasl/ca.crt \
        "$BIN_DIR/opal-admin" --brokers "$HOST:$(node_sasl_port "$1")" ping --timeout 5s >/dev/null 2>&1
}

kafka_sasl_answers() {
    local i
    for i in $(node_numbers); do
        node_sasl_answers "$i" || return 1
    done
}

registry_answers() {
    curl -sf --max-time 2 "$REGISTRY_URL/subjects" >/dev/null 2>&1
}

redis_answers() {
    local reply
    reply=$(
        exec 2>/dev/null
        exec 3<>"/dev/tcp/$HOST/$REDIS_PORT" || exit 1
        printf 'PING\r\n' >&3
        timeout 2 head -c 7 <&3
    ) || return 1
    [[ $reply == "+PONG"* ]]
}

answers() {
    local i
    if i=$(node_of "$1"); then
        node_answers "$i" || return 1
        [ "$SASL_ENABLED" = 1 ] || return 0
        node_sasl_answers "$i"
        return
    fi
    "${1}_answers" || return 1
    if [ "$1" = kafka ] && [ "$SASL_ENABLED" = 1 ]; then
        kafka_sasl_answers
    fi
}

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

# ---------- Kafka ----------

# Runs a Kafka main class from the cached jars (tools log warnings to stderr only).
kafka_java() {
    java -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$ROOT/scripts/kafka/tools-log4j2.properties" "$@"
}

# A TLS key and certificate for the SASL_SSL listener, signed by a CA of this
# stack's own (clients verify the broker with ca.crt), and the SCRAM user's
# random password. Made once per state directory.
make_sasl_material() {
    local dir=$KAFKA_STATE/sasl
    [ -f "$dir/keystore.pem" ] && [ -f "$dir/password" ] && return 0
    command -v openssl >/dev/null || ensure_packages openssl
    mkdir -p "$dir"
    chmod 700 "$dir"
    (
        cd "$dir"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=opal-local-ca" \
            -keyout ca.key -out ca.crt 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
            -keyout broker.key -out broker.csr 2>/dev/null
        printf 'subjectAltName=IP:%s,DNS:localhost\n' "$HOST" >san.ext
        openssl x509 -req -in broker.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile san.ext -out broker.crt 2>/dev/null
        # Kafka reads PEM keystores with an unencrypted PKCS#8 key (KIP-651).
        openssl pkcs8 -topk8 -nocrypt -in broker.key -out broker.pk8
        cat broker.pk8 broker.crt >keystore.pem
        rm -f broker.csr broker.key broker.pk8 san.ext ca.srl
        umask 077
        head -c 18 /dev/urandom | base64 | tr '+/' '-_' >password
        echo "$SASL_USER" >username
    ) || die "kafka: generating the SASL_SSL key, certificate and password in $dir failed"
}

# The internal topics' replication: one broker cannot hold more than one
# replica (consumers and transactions would hang waiting for replicas that
# never come); a cluster keeps Kafka's defaults (3, min ISR 2).
internal_topic_settings() {
    if [ "$KAFKA_NODES" = 1 ]; then
        cat <<EOF
# One broker: every internal topic with one replica, or consumers and
# transactions hang waiting for replicas that never come.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
EOF
    else
        cat <<EOF
# $KAFKA_NODES brokers: internal topics as in production (replication 3, min ISR 2).
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
# Three JVMs share two cores with the rest of the stack: fewer threads each.
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
EOF
    fi
}

# Node I's server.properties, written at every start from the current settings.
write_kafka_config() {
    local i=$1 dir port controller_port sasl_port
    dir=$(node_dir "$i")
    port=$(node_port "$i")
    controller_port=$(node_controller_port "$i")
    sasl_port=$(node_sasl_port "$i")
    local listeners="PLAINTEXT://$HOST:$port,CONTROLLER://$HOST:$controller_port"
    local advertised="PLAINTEXT://$HOST:$port"
    local protocols="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    if [ "$SASL_ENABLED" = 1 ]; then
        listeners="$listeners,SASL_SSL://$HOST:$sasl_port"
        advertised="$advertised,SASL_SSL://$HOST:$sasl_port"
        protocols="$protocols,SASL_SSL:SASL_SSL"
    fi
    local shape="One node in KRaft combined mode: broker and controller in one process."
    [ "$KAFKA_NODES" = 1 ] || shape="Node $i of $KAFKA_NODES in KRaft combined mode: broker and controller in one process."
    mkdir -p "$dir"
    cat >"$dir/server.properties" <<EOF
# Written by scripts/dev-stack.sh at every start; edits are lost.
# $shape
process.roles=broker,controller
node.id=$i
controller.quorum.bootstrap.servers=$(node_addresses node_controller_port)
controller.listener.names=CONTROLLER
listeners=$listeners
advertised.listeners=$advertised
listener.security.protocol.map=$protocols
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data

$(internal_topic_settings)
# A group forms as soon as its first member joins (the default waits 3 s).
group.initial.rebalance.delay.ms=0
# Topics come from kafka-init, as in docker-compose.yml.
auto.create.topics.enable=false
# The log cleaner's dedupe buffer (128 MiB by default) must fit the small heap.
log.cleaner.dedupe.buffer.size=33554432

# SASL_SSL listener (OPAL_KAFKA_SASL=1): SCRAM users are created when the
# storage is formatted; the TLS key and certificate are this stack's own.
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location=$KAFKA_STATE/sasl/keystore.pem
EOF
}

# A state directory holds one node or a cluster, never both: starting it in
# the other shape would leave an old, unrelated cluster half-used.
check_kafka_layout() {
    if [ "$KAFKA_NODES" = 1 ] && [ -d "$KAFKA_STATE/node-1" ]; then
        die "kafka: $KAFKA_STATE holds a cluster of several nodes; set OPAL_KAFKA_NODES=3, or wipe it (down --clean) or use another OPAL_STACK_DIR"
    fi
    if [ "$KAFKA_NODES" != 1 ] && [ -f "$KAFKA_STATE/data/meta.properties" ]; then
        die "kafka: $KAFKA_STATE holds a single node; unset OPAL_KAFKA_NODES, or wipe it (down --clean) or use another OPAL_STACK_DIR"
    fi
}

# The cluster id, made once per state directory.
kafka_cluster_id() {
    if [ ! -f "$KAFKA_STATE/cluster.id" ]; then
        kafka_java kafka.tools.StorageTool random-uuid >"$KAFKA_STATE/cluster.id.new" ||
            die "kafka: StorageTool random-uuid failed"
        mv "$KAFKA_STATE/cluster.id.new" "$KAFKA_STATE/cluster.id"
    fi
    cat "$KAFKA_STATE/cluster.id"
}

# A cluster's initial voters, `id@host:controller-port:directory-id,...`
# (Kafka's dynamic quorum, KIP-853): every node is formatted with the same
# list, so it is made once and kept.
initial_controllers() {
    local file=$KAFKA_STATE/initial-controllers
    if [ ! -f "$file" ]; then
        local i dir_id voters=()
        for i in $(node_numbers); do
            dir_id=$(kafka_java kafka.tools.StorageTool random-uuid) || die "kafka: StorageTool random-uuid failed"
            voters+=("$i@$HOST:$(node_controller_port "$i"):$dir_id")
        done
        local IFS=,
        echo "${voters[*]}" >"$file.new"
        mv "$file.new" "$file"
    fi
    cat "$file"
}

# Formats node I's storage once (KRaft needs a cluster id and a formatted log
# dir); the SCRAM user is created here, since a KRaft cluster takes SCRAM
# credentials at format time or later through the admin API. One node is a
# standalone quorum; a cluster's nodes are its initial voters.
format_kafka_storage() {
    local i=$1 dir cluster_id log quorum
    dir=$(node_dir "$i")
    log=$(service_log "$(node_service "$i")")
    [ -f "$dir/data/meta.properties" ] && return 0
    cluster_id=$(kafka_cluster_id)
    if [ "$KAFKA_NODES" = 1 ]; then
        quorum=(--standalone)
    else
        quorum=(--initial-controllers "$(initial_controllers)")
    fi
    say "$(node_service "$i"): formatting storage (cluster id $cluster_id) in $dir/data"
    if ! kafka_java kafka.tools.StorageTool format "${quorum[@]}" -t "$cluster_id" \
        -c "$dir/server.properties" --ignore-formatted \
        --add-scram "SCRAM-SHA-512=[name=$SASL_USER,password=$(cat "$KAFKA_STATE/sasl/password")]" \
        >>"$log" 2>&1; then
        tail -15 "$log" >&2
        die "$(node_service "$i"): formatting the storage failed; log: $log"
    fi
}

# Checks node I's ports, writes its config and formats its storage if new.
prepare_kafka_node() {
    local i=$1 service dir
    service=$(node_service "$i")
    dir=$(node_dir "$i")
    local ports=("kafka=$(node_port "$i")" "kafka controller=$(node_controller_port "$i")")
    [ "$SASL_ENABLED" = 1 ] && ports+=("kafka SASL_SSL=$(node_sasl_port "$i")")
    require_free_ports "$service" "${ports[@]}"
    ensure_kafka
    check_kafka_layout
    mkdir -p "$dir/data" "$LOG_DIR"
    make_sasl_material
    write_kafka_config "$i"
    format_kafka_storage "$i"
}

# One GC thread: with two on two shared cores, a young pause that copies 1-2 MB
# sometimes lasted 60-270 ms, one worker stuck in the copy while the other
# waited for it (5-11 of ~40 pauses per benchmark run over 50 ms; with one
# thread, 0-1, the longest 61 ms), and the broker answered nobody meanwhile.
launch_kafka_node() {
    local i=$1 service dir
    service=$(node_service "$i")
    dir=$(node_dir "$i")
    launch "$service" "$dir" java -cp "$KAFKA_LIBS/*" \
        "-Xmx$KAFKA_HEAP" "-Xms$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:ParallelGCThreads=1 -XX:ConcGCThreads=1 \
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$ROOT/scripts/kafka/broker-log4j2.properties" \
        kafka.Kafka "$dir/server.properties"
}

# ---------- registry and Redis ----------

start_registry() {
    [ -x "$BIN_DIR/opal-registry" ] || die "registry: missing ($BIN_DIR/opal-registry was not built)"
    require_free_ports registry "registry=$REGISTRY_PORT"
    launch registry "$STATE_DIR/registry" "$BIN_DIR/opal-registry" \
        --listen "$HOST:$REGISTRY_PORT" --data-dir "$STATE_DIR/registry/data"
}

start_redis() {
    if ! command -v redis-server >/dev/null; then
        ensure_packages redis-server
        # Debian's package may start its own server on the default port.
        answers redis && return 0
    fi
    require_free_ports redis "redis=$REDIS_PORT"
    # A private server. Exactly-once rests on the done-marks surviving a crash:
    # append-only with an fsync per write (`everysec` would lose up to a second
    # of marks on kill -9 or power loss, and those events would apply twice).
    launch redis "$STATE_DIR/redis" redis-server --bind "$HOST" --port "$REDIS_PORT" \
        --dir "$STATE_DIR/redis" --appendonly yes --appendfsync always --save "" --daemonize no
}

# Starts the Kafka nodes SERVICE stands for (all, or one) that do not answer
# yet and waits for each; `kafka` on a cluster then waits until every node
# sees every node registered.
bring_up_kafka() {
    local service=$1 i node to_start=()
    for i in $(nodes_of "$service"); do
        node=$(node_service "$i")
        answers "$node" && continue
        if [ "$SASL_ENABLED" = 1 ] && node_answers "$i" && ! node_sasl_answers "$i"; then
            die "$node at $HOST:$(node_port "$i") runs without the SASL_SSL listener on $HOST:$(node_sasl_port "$i"); restart it with OPAL_KAFKA_SASL=1 scripts/dev-stack.sh restart $node"
        fi
        our_pid "$node" >/dev/null || to_start+=("$i")
    done
    # Every node is formatted before any starts: the storage tool's JVMs do
    # not compete with starting brokers for the CPU.
    for i in "${to_start[@]}"; do prepare_kafka_node "$i"; done
    for i in "${to_start[@]}"; do launch_kafka_node "$i"; done
    for i in $(nodes_of "$service"); do
        wait_for "$(node_service "$i")" || return 1
    done
    { [ "$service" = kafka ] && [ "$KAFKA_NODES" != 1 ]; } || return 0
    local deadline=$((SECONDS + WAIT_SECS))
    until kafka_answers; do
        if [ $SECONDS -ge $deadline ]; then
            say "kafka: not every node saw $KAFKA_NODES brokers registered within ${WAIT_SECS}s; logs: $LOG_DIR/kafka-*.log"
            return 1
        fi
        sleep 0.5
    done
}

# Starts SERVICE unless something already answers at its address.
bring_up() {
    local service=$1
    if [ "$service" = kafka ] || node_of "$service" >/dev/null; then
        bring_up_kafka "$service"
        return
    fi
    if answers "$service"; then
        return 0
    fi
    if ! our_pid "$service" >/dev/null; then
        "start_$service"
    fi
    wait_for "$service"
}

# Sends SIGTERM to the processes of the SERVICES given, all at once (a
# cluster's nodes stop together, so none is left waiting for a quorum the
# others already left), and waits up to 30 s for each before killing it.
stop_processes() {
    local service pid pids=() names=()
    for service in "$@"; do
        pid=$(our_pid "$service") || continue
        kill -TERM "$pid" 2>/dev/null || true
        pids+=("$pid")
        names+=("$service")
    done
    local n
    for n in "${!pids[@]}"; do
        pid=${pids[$n]}
        service=${names[$n]}
        # Kafka's controlled shutdown takes a few seconds.
        for _ in $(seq 1 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "$service (pid $pid) ignored SIGTERM for 30s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$(pid_file "$service")"
        say "$service stopped (pid $pid)"
    done
}

stop_service() {
    local service=$1 i nodes=()
    if [ "$service" = kafka ] && [ "$KAFKA_NODES" != 1 ]; then
        for i in $(node_numbers); do nodes+=("$(node_service "$i")"); done
        stop_processes "${nodes[@]}"
    else
        stop_processes "$service"
    fi
}

status_line() {
    local service=$1 address pid origin i up
    if [ "$service" = kafka ] && [ "$KAFKA_NODES" != 1 ]; then
        local failed=0
        for i in $(node_numbers); do
            status_line "$(node_service "$i")" || failed=1
        done
        return $failed
    fi
    case $service in
        kafka*) i=$(node_of "$service") || i=1; address=$HOST:$(node_port "$i") ;;
        registry) address=$REGISTRY_URL ;;
        redis) address=$REDIS_URL_LOCAL ;;
    esac
    if pid=$(our_pid "$service"); then origin="pid $pid, started by dev-stack"; else origin="not started by dev-stack"; fi
    case $service in
        kafka*) if node_answers "$i"; then up=1; else up=0; fi ;;
        *) if "${service}_answers"; then up=1; else up=0; fi ;;
    esac
    if [ $up = 1 ]; then
        printf '%-10s up    %-26s (%s)\n' "$service" "$address" "$origin"
    else
        printf '%-10s DOWN  %-26s (%s; log: %s)\n' "$service" "$address" "$origin" "$(service_log "$service")"
        return 1
    fi
    if [[ $service == kafka* ]] && [ "$SASL_ENABLED" = 1 ]; then
        local name=${service/kafka/kafka-sasl} sasl_address
        sasl_address=$HOST:$(node_sasl_port "$i")
        if node_sasl_answers "$i"; then
            printf '%-10s up    %-26s (SASL_SSL, SCRAM-SHA-512, user %s; CA %s)\n' \
                "$name" "$sasl_address" "$SASL_USER" "$KAFKA_STATE/sasl/ca.crt"
        else
            printf '%-10s DOWN  %-26s (SASL_SSL; log: %s)\n' "$name" "$sasl_address" "$(service_log "$service")"
            return 1
        fi
    fi
}

env_line() {
    local line="export KAFKA_BROKERS=$KAFKA_BROKERS_URL SCHEMA_REGISTRY_URL=$REGISTRY_URL REDIS_URL=$REDIS_URL_LOCAL"
    # The SASL_SSL listener's address and the directory holding its CA
    # certificate, user name and password (the password is not printed).
    if [ "$SASL_ENABLED" = 1 ]; then
        line="$line OPAL_KAFKA_SASL_BROKERS=$SASL_BROKERS_URL OPAL_KAFKA_SASL_DIR=$KAFKA_STATE/sasl"
    fi
    echo "$line"
}

check_service_name() {
    case ${1:-} in
        kafka | registry | redis) ;;
        *)
            node_of "${1:-}" >/dev/null && return 0
            local names=("${SERVICES[@]}") i
            if [ "$KAFKA_NODES" != 1 ]; then
                for i in $(node_numbers); do names+=("$(node_service "$i")"); done
            fi
            die "unknown service '${1:-}': expected one of ${names[*]}"
            ;;
    esac
}

# ---------- commands ----------

cmd_up() {
    mkdir -p "$STATE_DIR" "$LOG_DIR" "$PID_DIR"
    ensure_packages curl pkg-config libssl-dev make g++
    ensure_kafka
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

# A cluster counts as `kafka` while any of its nodes runs (`down kafka` stops all).
cmd_started() {
    local service i
    for service in "${SERVICES[@]}"; do
        if [ "$service" = kafka ] && [ "$KAFKA_NODES" != 1 ]; then
            for i in $(node_numbers); do
                if our_pid "$(node_service "$i")" >/dev/null; then
                    echo kafka
                    break
                fi
            done
        else
            our_pid "$service" >/dev/null && echo "$service"
        fi
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
        kafka-libs)
            ensure_kafka
            echo "$KAFKA_LIBS"
            ;;
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
            sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//' >&2
            exit 2
            ;;
    esac
}

main "$@"
