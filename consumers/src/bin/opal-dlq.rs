//! opal-dlq: list, show and replay a consumer group's dead letters.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use opal_consumers::dlq::{header_text, headers};
use opal_consumers::dlq_tool::{self, ReplayAction, ReplayFilter};
use opal_schemas::Codec;
use opal_topics::{KafkaArgs, RegistryArgs};
use rdkafka::Message;
use rdkafka::producer::FutureProducer;

#[derive(Debug, Parser)]
#[command(name = "opal-dlq", version, about = "Inspect and replay dead letters")]
struct Cli {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Prefix of every topic name (must match kafka-init's).
    #[arg(long, env = "OPAL_TOPIC_PREFIX", default_value = "", global = true)]
    topic_prefix: String,
    #[command(flatten)]
    log: opal_topics::telemetry::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Counts by error class, with first and last failure time.
    List {
        #[arg(long)]
        group: String,
    },
    /// Every dead letter: where it came from, why, and its value decoded where possible.
    Show {
        #[arg(long)]
        group: String,
        /// Show at most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Republish dead letters to their original topics.
    Replay {
        #[arg(long)]
        group: String,
        /// Only this error class (e.g. opal.TransientExhausted).
        #[arg(long)]
        error_class: Option<String>,
        /// Only dead letters that failed at or after this time (RFC 3339 or ms since the epoch).
        #[arg(long, value_parser = parse_time)]
        since: Option<i64>,
        /// Say what would be replayed and parked, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// At most this many records per second.
        #[arg(long)]
        rate: Option<f64>,
        /// Park a record that has already been replayed this many times.
        #[arg(long, default_value_t = 3)]
        max_replays: u32,
    },
}

fn parse_time(raw: &str) -> Result<i64, String> {
    if let Ok(ms) = raw.parse::<i64>() {
        return Ok(ms);
    }
    humantime::parse_rfc3339_weak(raw)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .ok_or_else(|| format!("'{raw}' is neither RFC 3339 (2026-11-24T10:00:00Z) nor milliseconds since the epoch"))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cli.log.init();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("opal-dlq: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.kafka.client_config()?;
    let timeout = Duration::from_secs(10);
    match cli.command {
        Command::List { group } => {
            let dlq = opal_topics::dlq_topic(&cli.topic_prefix, &group);
            let (_, records) = dlq_tool::read_to_end(&config, &dlq, None, timeout)?;
            println!("{dlq}: {} dead letter(s)", records.len());
            println!(
                "{:<28} {:>7}  {:<24}  {:<24}",
                "ERROR CLASS", "COUNT", "FIRST SEEN", "LAST SEEN"
            );
            for s in dlq_tool::summarise(&records) {
                let at = |t: Option<i64>| t.map(format_ms).unwrap_or_else(|| "-".into());
                println!(
                    "{:<28} {:>7}  {:<24}  {:<24}",
                    s.error_class,
                    s.count,
                    at(s.first_failed_at),
                    at(s.last_failed_at)
                );
            }
        }
        Command::Show { group, limit } => {
            let dlq = opal_topics::dlq_topic(&cli.topic_prefix, &group);
            let (_, records) = dlq_tool::read_to_end(&config, &dlq, None, timeout)?;
            let codec = Codec::new(cli.registry.client(timeout)?);
            for m in records.iter().take(limit) {
                let h = |name| header_text(m, name).unwrap_or_default();
                println!("--- {}/{}@{}", dlq, m.partition(), m.offset());
                println!(
                    "  from      {}/{}@{} (group {})",
                    h(headers::ORIGINAL_TOPIC),
                    h(headers::ORIGINAL_PARTITION),
                    h(headers::ORIGINAL_OFFSET),
                    h(headers::ORIGINAL_CONSUMER_GROUP)
                );
                println!(
                    "  error     {}: {}",
                    h(headers::EXCEPTION_FQCN),
                    h(headers::EXCEPTION_MESSAGE)
                );
                println!(
                    "  attempts  {}  failed at {}",
                    h(headers::ATTEMPTS),
                    h(headers::FAILED_AT)
                        .parse()
                        .map(format_ms)
                        .unwrap_or_default()
                );
                println!(
                    "  key       {}",
                    m.key()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .unwrap_or_default()
                );
                match m.payload() {
                    None => println!("  value     (empty)"),
                    Some(v) => match codec.decode(v).await {
                        Ok(d) => println!("  value     {}", d.event.to_json()),
                        Err(e) => println!("  value     {} bytes, not decodable: {e}", v.len()),
                    },
                }
            }
        }
        Command::Replay {
            group,
            error_class,
            since,
            dry_run,
            rate,
            max_replays,
        } => {
            let dlq = opal_topics::dlq_topic(&cli.topic_prefix, &group);
            let parked = format!("{dlq}.parked");
            let replayer = format!("{group}.dlq-replayer");
            let (consumer, records) =
                dlq_tool::read_to_end(&config, &dlq, Some(&replayer), timeout)?;
            let filter = ReplayFilter {
                error_class,
                since_ms: since,
                max_replays,
            };
            let mut producer_config = config.clone();
            producer_config
                .set("enable.idempotence", "true")
                .set("acks", "all");
            let producer: FutureProducer = producer_config.create().context("producer")?;
            let (mut replayed, mut parked_count, mut skipped) = (0, 0, 0);
            let needs_parking = records.iter().any(|m| {
                matches!(
                    dlq_tool::plan(m, &filter, &parked),
                    ReplayAction::Park { .. }
                )
            });
            if needs_parking && !dry_run {
                ensure_topic(&config, &parked, timeout).await?;
            }
            for m in &records {
                let action = dlq_tool::plan(m, &filter, &parked);
                let at = format!("{}/{}@{}", dlq, m.partition(), m.offset());
                match &action {
                    ReplayAction::Skip { reason } => {
                        skipped += 1;
                        println!("skip    {at}: {reason}");
                        continue;
                    }
                    ReplayAction::Replay {
                        topic,
                        replay_count,
                    } => {
                        replayed += 1;
                        println!(
                            "{}  {at} → {topic} (replay {replay_count})",
                            if dry_run { "would replay" } else { "replay" }
                        );
                        if !dry_run {
                            dlq_tool::republish(&producer, m, topic, *replay_count, false).await?;
                        }
                    }
                    ReplayAction::Park {
                        topic,
                        replay_count,
                    } => {
                        parked_count += 1;
                        println!(
                            "{}  {at} → {topic} (replayed {replay_count} times already)",
                            if dry_run { "would park" } else { "park" }
                        );
                        if !dry_run {
                            dlq_tool::republish(&producer, m, topic, *replay_count, true).await?;
                        }
                    }
                }
                if let Some(rate) = rate.filter(|r| *r > 0.0) {
                    tokio::time::sleep(Duration::from_secs_f64(1.0 / rate)).await;
                }
            }
            if !dry_run {
                dlq_tool::commit_progress(&consumer, &dlq, &records)?;
            }
            println!(
                "{}{replayed} replayed, {parked_count} parked, {skipped} skipped",
                if dry_run { "dry run: " } else { "" }
            );
        }
    }
    Ok(())
}

/// Creates `topic` (one partition, 30 days) unless it exists.
async fn ensure_topic(
    config: &rdkafka::ClientConfig,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::types::RDKafkaErrorCode;
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = config.create()?;
    let new =
        NewTopic::new(topic, 1, TopicReplication::Fixed(-1)).set("retention.ms", "2592000000");
    for result in admin
        .create_topics(
            &[new],
            &AdminOptions::new().operation_timeout(Some(timeout)),
        )
        .await?
    {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => anyhow::bail!("cannot create {t}: {code}"),
        }
    }
    Ok(())
}

fn format_ms(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn times_parse_and_print_round_trip() {
        let ms = parse_time("2026-11-24T10:20:30.250Z").expect("rfc3339");
        assert_eq!(ms, 1_795_515_630_250);
        assert_eq!(format_ms(ms), "2026-11-24T10:20:30Z");
        assert_eq!(parse_time("1767225600000"), Ok(1_767_225_600_000));
        assert!(parse_time("yesterday").is_err());
    }
}
