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

pub fn codec_results(criterion_dir: &Path) -> anyhow::Result<Vec<CodecResult>> {
    codec_events()
        .into_iter()
        .map(|(name, event)| {
            Ok(CodecResult {
                event: name.to_owned(),
                bytes: opal_schemas::codec::encode_with_id(&event, 1)?.len(),
                encode_ns: criterion_mean(criterion_dir, "encode", name),
                decode_ns: criterion_mean(criterion_dir, "decode", name),
            })
        })
        .collect()
}

pub fn latest(run_files: &[impl AsRef<Path>], criterion_dir: &Path) -> anyhow::Result<Latest> {
    let runs = run_files
        .iter()
        .map(|p| {
            let p = p.as_ref();
            let text =
                std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parse {}", p.display()))
        })
        .collect::<anyhow::Result<Vec<serde_json::Value>>>()?;
    Ok(Latest {
        generated_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        machine: Machine::this(),
        reproduce: "scripts/bench.sh",
        runs,
        codec: codec_results(criterion_dir)?,
    })
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
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
        "| broker storage | events × bytes | raw produce/s | opal produce/s | ratio | raw consume/s | pipeline consume/s | ratio | Redis round trips / batch | events / batch |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &latest.runs {
        let _ = writeln!(
            out,
            "| {} | {} × {} B | {:.0} | {:.0} | **{:.2}** | {:.0} | {:.0} | **{:.2}** | {:.2} | {:.0} |",
            r["storage"].as_str().unwrap_or("?"),
            r["events"],
            r["record_bytes"],
            f(&r["produce"]["raw"]["records_per_sec"]),
            f(&r["produce"]["opal"]["records_per_sec"]),
            f(&r["produce"]["ratio"]),
            f(&r["consume"]["raw"]["events_per_sec"]),
            f(&r["consume"]["pipeline"]["events_per_sec"]),
            f(&r["consume"]["ratio"]),
            f(&r["consume"]["redis_round_trips_per_batch"]),
            f(&r["consume"]["events_per_batch"]),
        );
    }
    let _ = writeln!(
        out,
        "\nEnd-to-end latency, produce time → handler (ms; timestamps have 1 ms resolution):\n"
    );
    let _ = writeln!(
        out,
        "| broker storage | rate/s | raw p50 | raw p95 | raw p99 | pipeline p50 | pipeline p95 | pipeline p99 | p95 − raw p95 |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &latest.runs {
        for row in r["latency"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:+.1} |",
                r["storage"].as_str().unwrap_or("?"),
                row["rate"],
                f(&row["raw"]["p50_ms"]),
                f(&row["raw"]["p95_ms"]),
                f(&row["raw"]["p99_ms"]),
                f(&row["pipeline"]["p50_ms"]),
                f(&row["pipeline"]["p95_ms"]),
                f(&row["pipeline"]["p99_ms"]),
                f(&row["pipeline"]["p95_ms"]) - f(&row["raw"]["p95_ms"]),
            );
        }
    }
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
