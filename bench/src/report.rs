//! Merges benchmark runs and the codec microbenchmarks (criterion's estimates)
//! into `bench/results/latest.json`, and renders the README's markdown tables.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use opal_schemas::samples::default_example;
use opal_schemas::{Event, EventType, ForecastPoint};
use serde::{Deserialize, Serialize};

/// The events the codec microbenchmarks encode and decode, by name.
pub fn codec_events() -> Vec<(&'static str, Event)> {
    let mut large = default_example(EventType::ForecastGenerated);
    if let Event::ForecastGenerated(f) = &mut large {
        let step = f.bucket_ms.max(1);
        f.points = (0..48)
            .map(|i| ForecastPoint {
                timestamp: f.generated_at + i * step,
                value: 100.0 + i as f64,
                lower: 90.0 + i as f64,
                upper: 110.0 + i as f64,
            })
            .collect();
    }
    vec![
        (
            "small (feedback.submitted)",
            default_example(EventType::FeedbackSubmitted),
        ),
        (
            "typical (agent.completed)",
            default_example(EventType::AgentCompleted),
        ),
        ("large (forecast.generated, 48 points)", large),
    ]
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
}

impl Machine {
    pub fn this() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        let memory_kib: f64 = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_default();
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: (memory_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CodecResult {
    pub event: String,
    pub bytes: usize,
    pub encode_ns: Option<f64>,
    pub decode_ns: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Latest {
    pub generated_at: String,
    pub machine: Machine,
    pub reproduce: &'static str,
    pub runs: Vec<serde_json::Value>,
    /// scripts/bench-instructions.sh's counts (one object per build and phase), if it ran.
    pub instructions: Vec<serde_json::Value>,
    pub codec: Vec<CodecResult>,
}

/// Criterion's mean estimate (ns) for `<group>/<bench>`, if it ran.
fn criterion_mean(criterion_dir: &Path, group: &str, bench: &str) -> Option<f64> {
    let path = criterion_dir
        .join(group)
        .join(bench)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

pub fn codec_results(criterion_dir: &Path) -> Vec<CodecResult> {
    codec_events()
        .into_iter()
        .map(|(name, event)| CodecResult {
            event: name.to_owned(),
            bytes: opal_schemas::codec::encode_with_id(&event, 1).len(),
            encode_ns: criterion_mean(criterion_dir, "encode", name),
            decode_ns: criterion_mean(criterion_dir, "decode", name),
        })
        .collect()
}

fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

pub fn latest(
    run_files: &[impl AsRef<Path>],
    instructions: Option<&Path>,
    criterion_dir: &Path,
) -> anyhow::Result<Latest> {
    let runs = run_files
        .iter()
        .map(|p| read_json(p.as_ref()))
        .collect::<anyhow::Result<Vec<serde_json::Value>>>()?;
    let instructions = match instructions {
        Some(path) => match read_json(path)? {
            serde_json::Value::Array(rows) => rows,
            _ => anyhow::bail!("{}: expected a JSON array", path.display()),
        },
        None => Vec::new(),
    };
    Ok(Latest {
        generated_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        machine: Machine::this(),
        reproduce: "scripts/bench.sh",
        runs,
        instructions,
        codec: codec_results(criterion_dir),
    })
}

/// Instructions per event of `phase` for `build`, if counted.
fn per_event(latest: &Latest, build: &str, phase: &str) -> f64 {
    latest
        .instructions
        .iter()
        .find(|row| row["build"].as_str() == Some(build) && row["phase"].as_str() == Some(phase))
        .map_or(f64::NAN, |row| f(&row["per_event"]))
}

/// `v` with `decimals`, or a dash where it was not measured.
fn shown(v: f64, decimals: usize) -> String {
    if v.is_nan() {
        "—".to_owned()
    } else {
        format!("{v:.decimals$}")
    }
}

/// The instructions table: one row per build, opal and plain rdkafka side by side.
fn instructions_markdown(latest: &Latest, out: &mut String) {
    let mut builds: Vec<&str> = latest
        .instructions
        .iter()
        .filter_map(|row| row["build"].as_str())
        .collect();
    builds.dedup();
    if builds.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nInstructions per event (callgrind, all threads; difference between two event counts, so start-up cancels):\n"
    );
    let _ = writeln!(
        out,
        "| build | raw rdkafka publish, same headers | raw, no headers | raw, one delivery callback | opal publish | raw ÷ opal (same headers) | raw ÷ opal (no headers) | plain consume | pipeline | plain ÷ pipeline |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for build in builds {
        // Builds from before the raw record carried headers measured only the bare one, as raw-publish.
        let (raw_publish, raw_bare) = match per_event(latest, build, "raw-publish-bare") {
            bare if bare.is_nan() => (f64::NAN, per_event(latest, build, "raw-publish")),
            bare => (per_event(latest, build, "raw-publish"), bare),
        };
        // Same headers, a `ThreadedProducer` instead of a future per record.
        let raw_callback = per_event(latest, build, "raw-publish-callback");
        let publish = per_event(latest, build, "publish");
        let (raw_consume, pipeline) = (
            per_event(latest, build, "raw-consume"),
            per_event(latest, build, "pipeline"),
        );
        let _ = writeln!(
            out,
            "| {build} | {} | {} | {} | {} | **{}** | {} | {} | {} | **{}** |",
            shown(raw_publish, 0),
            shown(raw_bare, 0),
            shown(raw_callback, 0),
            shown(publish, 0),
            shown(raw_publish / publish, 2),
            shown(raw_bare / publish, 2),
            shown(raw_consume, 0),
            shown(pipeline, 0),
            shown(raw_consume / pipeline, 2),
        );
    }
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// The `side` ("raw" or "pipeline") latency of the round with the median p95
/// among `rows` (one rate's rounds), and the (min, max) p95 over them.
fn median_by_p95(rows: &[&serde_json::Value], side: &str) -> (serde_json::Value, (f64, f64)) {
    let mut sides: Vec<&serde_json::Value> = rows.iter().map(|row| &row[side]).collect();
    sides.sort_by(|a, b| f(&a["p95_ms"]).total_cmp(&f(&b["p95_ms"])));
    let range = (
        sides.first().map_or(f64::NAN, |v| f(&v["p95_ms"])),
        sides.last().map_or(f64::NAN, |v| f(&v["p95_ms"])),
    );
    let median = sides
        .get(sides.len() / 2)
        .map_or(serde_json::Value::Null, |v| (*v).clone());
    (median, range)
}

/// Every throughput round's events/s and ratio, for runs that had rounds (the
/// tables above show each run's round with the median ratio).
fn throughput_rounds_markdown(latest: &Latest, out: &mut String) {
    let listed = |rounds: &serde_json::Value| -> Option<String> {
        let rounds = rounds.as_array().filter(|r| !r.is_empty())?;
        Some(
            rounds
                .iter()
                .map(|r| {
                    format!(
                        "{:.0} vs {:.0} ({:.2})",
                        f(&r["opal"]),
                        f(&r["raw"]),
                        f(&r["opal"]) / f(&r["raw"])
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
        )
    };
    let mut any = false;
    for r in &latest.runs {
        let (Some(produce), Some(consume)) = (
            listed(&r["produce"]["rounds"]),
            listed(&r["consume"]["rounds"]),
        ) else {
            continue;
        };
        if !any {
            let _ = writeln!(
                out,
                "\nThroughput rounds, interleaved (events/s, ours vs the baseline, and the ratio); the tables show the round with the median ratio:\n"
            );
            any = true;
        }
        let _ = writeln!(
            out,
            "- {}: opal produce vs raw rdkafka: {produce}; pipeline vs plain consume: {consume}.",
            r["broker"].as_str().unwrap_or("?")
        );
    }
}

/// Redis's CPU per pipeline event beside the floor of one bare `SET` per key
/// and plain consume's wall clock per event, for runs that measured them: the
/// pipeline shares the cores with Redis, so these bound its ratio to plain consume.
fn redis_cost_markdown(latest: &Latest, out: &mut String) {
    let mut any = false;
    for r in &latest.runs {
        let consume = &r["consume"];
        let (per_event, floor) = (
            f(&consume["redis_cpu_us_per_event"]),
            f(&consume["redis_floor_us_per_key"]),
        );
        if per_event.is_nan() {
            continue;
        }
        if !any {
            let _ = writeln!(
                out,
                "\nRedis's CPU (all its threads, `INFO cpu`) while the pipeline read, against the least a durable key per event costs it on the same Redis (bare `SET key done EX`, pipelined 2 000 at a time):\n"
            );
            any = true;
        }
        let plain = f(&consume["raw"]["events_per_sec"]);
        // Redis runs commands on one thread: µs of its CPU per event cap
        // events/s at 10⁶ ÷ that, whatever else the pipeline does.
        let cap = |us: f64| format!("{:.0}/s = {:.2}× plain", 1e6 / us, 1e6 / us / plain);
        let rounds = consume["redis_cpu_us_per_event_rounds"]
            .as_array()
            .map(|r| {
                r.iter()
                    .map(|v| format!("{:.2}", f(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "- {}: **{per_event:.2} µs per event** in the pipeline, over all rounds ({rounds} in turn, {}; Redis alone caps it at {}); bare `SET` into an empty database: {} µs per key (caps any such design at {}); plain consume: {plain:.0}/s.",
            r["broker"].as_str().unwrap_or("?"),
            if consume["redis_emptied_each_round"].as_bool() == Some(true) {
                "each from an empty Redis"
            } else {
                "each among the keys of the rounds before"
            },
            cap(per_event),
            shown(floor, 2),
            if floor.is_nan() {
                "—".to_owned()
            } else {
                cap(floor)
            },
        );
    }
}

/// Each latency round's send → acknowledgement p95 beside its end-to-end p95,
/// both sides: a round whose end-to-end tail is already in its producer's
/// acknowledgements was slowed at the broker, not in the consumer. The
/// warm-up round, which the tables above leave out, is listed first.
fn rounds_markdown(latest: &Latest, out: &mut String) {
    let rows: Vec<(&str, String, &serde_json::Value)> = latest
        .runs
        .iter()
        .flat_map(|r| {
            let broker = r["broker"].as_str().unwrap_or("?");
            let warmup = r["latency_warmup"].as_array().into_iter().flatten();
            let measured = r["latency"].as_array().into_iter().flatten();
            warmup
                .map(move |row| (broker, "warm-up".to_owned(), row))
                .chain(measured.map(move |row| (broker, row["round"].to_string(), row)))
        })
        // Runs from before the acknowledgement was recorded have no such rounds.
        .filter(|(_, _, row)| row["opal_ack_p95_ms"].is_number())
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nEvery round: p95 of send → broker acknowledgement (the producer's own) and of end to end (ms):\n"
    );
    let _ = writeln!(
        out,
        "| broker | rate/s | round | raw ack p95 | raw end-to-end p95 | opal ack p95 | pipeline end-to-end p95 | pipeline − raw |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for (broker, round, row) in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:+.1} |",
            broker,
            row["rate"],
            round,
            f(&row["raw_ack_p95_ms"]),
            f(&row["raw"]["p95_ms"]),
            f(&row["opal_ack_p95_ms"]),
            f(&row["pipeline"]["p95_ms"]),
            f(&row["pipeline"]["p95_ms"]) - f(&row["raw"]["p95_ms"]),
        );
    }
}

/// The tables for the README's Performance section.
pub fn markdown(latest: &Latest) -> String {
    let mut out = String::new();
    let m = &latest.machine;
    let _ = writeln!(
        out,
        "Machine: {} ({} cores, {} GiB), Linux {}; generated {}.\n",
        m.cpu, m.cores, m.memory_gib, m.kernel, latest.generated_at
    );
    let _ = writeln!(
        out,
        "| broker | events × bytes | kafka-producer-perf-test/s | raw rdkafka produce/s | opal produce/s | opal ÷ raw | opal ÷ kafka-perf |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|");
    for r in &latest.runs {
        let opal = f(&r["produce"]["opal"]["records_per_sec"]);
        let java = f(&r["kafka_perf"]["producer"]["records_per_sec"]);
        let _ = writeln!(
            out,
            "| {} | {} × {} B | {:.0} | {:.0} | {:.0} | **{:.2}** | **{:.2}** |",
            r["broker"].as_str().unwrap_or("?"),
            r["events"],
            r["record_bytes"],
            java,
            f(&r["produce"]["raw"]["records_per_sec"]),
            opal,
            f(&r["produce"]["ratio"]),
            opal / java,
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| broker | kafka-consumer-perf-test/s (fetch) | plain rdkafka consume/s | pipeline consume/s | pipeline ÷ plain | pipeline ÷ kafka-perf | Redis round trips / batch | events / batch |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &latest.runs {
        let pipeline = f(&r["consume"]["pipeline"]["events_per_sec"]);
        let java = f(&r["kafka_perf"]["consumer"]["fetch_records_per_sec"]);
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.0} | **{:.2}** | **{:.2}** | {:.2} | {:.0} |",
            r["broker"].as_str().unwrap_or("?"),
            java,
            f(&r["consume"]["raw"]["events_per_sec"]),
            pipeline,
            f(&r["consume"]["ratio"]),
            pipeline / java,
            f(&r["consume"]["redis_round_trips_per_batch"]),
            f(&r["consume"]["events_per_batch"]),
        );
    }
    throughput_rounds_markdown(latest, &mut out);
    redis_cost_markdown(latest, &mut out);
    let warmed: Vec<&str> = latest
        .runs
        .iter()
        .filter(|r| {
            r["latency_warmup"]
                .as_array()
                .is_some_and(|w| !w.is_empty())
        })
        .filter_map(|r| r["broker"].as_str())
        .collect();
    let _ = writeln!(
        out,
        "\nEnd-to-end latency, produce time → handler (ms; timestamps have 1 ms resolution); each rate's median round of {} by p95, and the range of p95 over the rounds{}:\n",
        latest
            .runs
            .iter()
            .filter_map(|r| r["latency"].as_array())
            .flatten()
            .filter_map(|row| row["round"].as_u64())
            .max()
            .map_or(1, |m| m + 1),
        if warmed.is_empty() {
            String::new()
        } else {
            format!(
                " (after a warm-up round at every rate, not measured, in {})",
                warmed.join(", ")
            )
        }
    );
    let _ = writeln!(
        out,
        "| broker | rate/s | raw p50 | raw p95 | raw p99 | pipeline p50 | pipeline p95 | pipeline p99 | p95 − raw p95 | raw p95 range | pipeline p95 range |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &latest.runs {
        let rows: Vec<&serde_json::Value> = r["latency"].as_array().into_iter().flatten().collect();
        let mut rates: Vec<u64> = rows.iter().filter_map(|row| row["rate"].as_u64()).collect();
        rates.sort_unstable();
        rates.dedup();
        for rate in rates {
            let of_rate: Vec<&serde_json::Value> = rows
                .iter()
                .copied()
                .filter(|row| row["rate"].as_u64() == Some(rate))
                .collect();
            let (raw, raw_range) = median_by_p95(&of_rate, "raw");
            let (pipeline, pipeline_range) = median_by_p95(&of_rate, "pipeline");
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:+.1} | {:.0}–{:.0} | {:.0}–{:.0} |",
                r["broker"].as_str().unwrap_or("?"),
                rate,
                f(&raw["p50_ms"]),
                f(&raw["p95_ms"]),
                f(&raw["p99_ms"]),
                f(&pipeline["p50_ms"]),
                f(&pipeline["p95_ms"]),
                f(&pipeline["p99_ms"]),
                f(&pipeline["p95_ms"]) - f(&raw["p95_ms"]),
                raw_range.0,
                raw_range.1,
                pipeline_range.0,
                pipeline_range.1,
            );
        }
    }
    rounds_markdown(latest, &mut out);
    for r in &latest.runs {
        let p = &r["kafka_perf"]["producer"];
        let _ = writeln!(
            out,
            "\nkafka-producer-perf-test's own latency ({}, unpaced, send → acknowledgement): avg {:.1} ms, p50 {:.0}, p95 {:.0}, p99 {:.0}, max {:.0} ms.",
            r["broker"].as_str().unwrap_or("?"),
            f(&p["avg_latency_ms"]),
            f(&p["p50_ms"]),
            f(&p["p95_ms"]),
            f(&p["p99_ms"]),
            f(&p["max_latency_ms"]),
        );
    }
    instructions_markdown(latest, &mut out);
    let _ = writeln!(out, "\nCodec (criterion, mean per event):\n");
    let _ = writeln!(out, "| event | bytes | encode | decode |");
    let _ = writeln!(out, "|---|---:|---:|---:|");
    let ns = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{:.2} µs", v / 1000.0));
    for c in &latest.codec {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            c.event,
            c.bytes,
            ns(c.encode_ns),
            ns(c.decode_ns)
        );
    }
    out
}
