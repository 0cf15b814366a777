//! The group member's librdkafka settings, on top of the connection's.

use rdkafka::config::ClientConfig;

use crate::config::RuntimeArgs;

/// Settings librdkafka only takes from us when `--kafka-option` names none:
/// defaults we chose, not rules of the runtime.
///
/// `fetch.queue.backoff.ms`: how long librdkafka waits before fetching a
/// partition again once its local queue is over `queued.min.messages`
/// (100 000 records by default). Its own default, 1 000 ms, starved the
/// pipeline under a backlog: it drained those 100 000 records in ~0.6 s, then
/// waited ~0.4 s with nothing fetched (a 300 000-record backlog: 108 000 →
/// 145 000 events/s with 10 ms, see the README's Performance section). A
/// re-check every 10 ms costs librdkafka nothing measurable.
///
/// `statistics.interval.ms`: how often librdkafka reports the consumer lag
/// that the metrics and readiness show (see `context`).
const DEFAULTS: [(&str, &str); 2] = [
    ("fetch.queue.backoff.ms", "10"),
    ("statistics.interval.ms", "5000"),
];

/// The consumer's settings: the connection's (`kafka`, which carries the
/// `--kafka-option`s), the runtime's own rules (offsets stored only once
/// settled, the group, the session), and our defaults where the options set
/// none.
pub(super) fn member_config(kafka: &ClientConfig, args: &RuntimeArgs, group: &str) -> ClientConfig {
    let mut config = kafka.clone();
    for (key, value) in DEFAULTS {
        if config.get(key).is_none() {
            config.set(key, value);
        }
    }
    config
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        // Stored by the run loop once every event before them is settled.
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", args.session_timeout_ms.to_string());
    if let Some(instance) = &args.group_instance_id {
        config.set("group.instance.id", instance);
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(options: &[&str]) -> ClientConfig {
        let mut args = RuntimeArgs::local(
            "127.0.0.1:9092",
            "http://127.0.0.1:8081",
            "redis://127.0.0.1",
        );
        args.kafka.options = options.iter().map(|o| o.to_string()).collect();
        let kafka = args.kafka.client_config().expect("valid options");
        member_config(&kafka, &args, "opal-diagnostics")
    }

    #[test]
    fn a_full_local_queue_is_fetched_again_after_10_ms_not_librdkafkas_second() {
        let config = config(&[]);
        assert_eq!(config.get("fetch.queue.backoff.ms"), Some("10"));
        assert_eq!(config.get("statistics.interval.ms"), Some("5000"));
        assert_eq!(config.get("group.id"), Some("opal-diagnostics"));
        assert_eq!(config.get("enable.auto.offset.store"), Some("false"));
    }

    #[test]
    fn a_kafka_option_overrides_a_default_but_not_a_rule_of_the_runtime() {
        let config = config(&[
            "fetch.queue.backoff.ms=250",
            "queued.min.messages=20000",
            "statistics.interval.ms=1000",
            "enable.auto.offset.store=true",
        ]);
        assert_eq!(config.get("fetch.queue.backoff.ms"), Some("250"));
        assert_eq!(config.get("statistics.interval.ms"), Some("1000"));
        assert_eq!(config.get("queued.min.messages"), Some("20000"));
        assert_eq!(
            config.get("enable.auto.offset.store"),
            Some("false"),
            "storing offsets before their events are settled would break the runtime's guarantee"
        );
    }
}
