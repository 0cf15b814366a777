#!/usr/bin/env bash
# Apache Kafka's own CLI tools, from the same jars as the local stack's broker
# (fetched once per machine by scripts/dev-stack.sh): the Docker-free way to see
# what Kafka UI shows in the compose stack. Named as in Kafka's bin/ directory.
#
#   scripts/kafka.sh TOOL [ARGS...]
#
#   kafka-topics              --bootstrap-server 127.0.0.1:9092 --describe --topic opal.agent.completed
#   kafka-consumer-groups     --bootstrap-server 127.0.0.1:9092 --describe --group opal-feedback
#   kafka-console-consumer    --bootstrap-server 127.0.0.1:9092 --topic opal-feedback.dlq --from-beginning
#                             --property print.headers=true --property print.key=true
#   kafka-console-producer    --bootstrap-server 127.0.0.1:9092 --topic TOPIC
#   kafka-configs             --bootstrap-server 127.0.0.1:9092 --describe --entity-type topics --entity-name TOPIC
#   kafka-get-offsets         --bootstrap-server 127.0.0.1:9092 --topic TOPIC
#   kafka-producer-perf-test  --topic T --num-records N --record-size B --throughput -1
#                             --producer-props bootstrap.servers=127.0.0.1:9092
#   kafka-consumer-perf-test  --bootstrap-server 127.0.0.1:9092 --topic T --messages N
#   kafka-metadata-quorum     --bootstrap-server 127.0.0.1:9092 describe --status
#   kafka-storage             (the storage tool: random-uuid, format, info)
#
# Logging goes to stderr at WARN, so stdout is only the tool's output.
# KAFKA_TOOLS_HEAP sets the JVM heap (256m).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
    sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

tool=${1:-}
[ -n "$tool" ] || usage
shift
case $tool in
    kafka-topics) main=org.apache.kafka.tools.TopicCommand ;;
    kafka-consumer-groups) main=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
    kafka-console-consumer) main=org.apache.kafka.tools.consumer.ConsoleConsumer ;;
    kafka-console-producer) main=org.apache.kafka.tools.ConsoleProducer ;;
    kafka-configs) main=org.apache.kafka.tools.ConfigCommand ;;
    kafka-get-offsets) main=org.apache.kafka.tools.GetOffsetShell ;;
    kafka-producer-perf-test) main=org.apache.kafka.tools.ProducerPerformance ;;
    kafka-consumer-perf-test) main=org.apache.kafka.tools.ConsumerPerformance ;;
    kafka-metadata-quorum) main=org.apache.kafka.tools.MetadataQuorumCommand ;;
    kafka-storage) main=kafka.tools.StorageTool ;;
    -h | --help | help) usage ;;
    *) echo "kafka.sh: unknown tool '$tool'" >&2; usage ;;
esac

libs=$("$ROOT/scripts/dev-stack.sh" kafka-libs)
exec java "-Xmx${KAFKA_TOOLS_HEAP:-256m}" -cp "$libs/*" \
    -Dlog4j2.configurationFile="$ROOT/scripts/kafka/tools-log4j2.properties" \
    "$main" "$@"
