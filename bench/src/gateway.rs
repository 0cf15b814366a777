//! The gateway phase (`opal-bench gateway`): `opal-gateway` as a process on
//! a fresh topic prefix, one WebSocket client subscribed to knowledge events
//! and one webhook route POSTing them to a local receiver. Measures events/s
//! through the gateway to each (a burst published as fast as the publisher
//! goes, timed until the last event arrived), then delivery latency (event
//! time, stamped when the event is built, to arrival at the client or
//! receiver) p50/p95/p99 at each paced rate, and the share delivered.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use opal_producers::{PublishMetrics, Publisher, PublisherConfig};
use opal_schemas::{Environment, Event, EventType, now_millis};
use opal_topics::Catalog;
use opal_topics::provision::Target;
use serde::Serialize;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const TIMEOUT: Duration = Duration::from_secs(120);
/// How long the burst may take to arrive in full.
const DRAIN: Duration = Duration::from_secs(600);
/// How long a latency run's late events are waited for (then counted undelivered).
const LATE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, clap::Args)]
pub struct GatewayOptions {
    // The shared flag groups: their values (a password in REDIS_URL) stay out of --help.
    #[command(flatten)]
    pub kafka: opal_topics::KafkaArgs,
    #[command(flatten)]
    pub registry: opal_topics::RegistryArgs,
    #[command(flatten)]
    pub redis: opal_consumers::config::RedisArgs,
    /// The opal-gateway binary (default: next to this one).
    #[arg(long)]
    pub gateway_bin: Option<PathBuf>,
    /// The gateway's HTTP port.
    #[arg(long, default_value_t = 29200)]
    pub port: u16,
    /// Events of the throughput burst.
    #[arg(long, default_value_t = 20_000)]
    pub events: usize,
    /// Paced rates (events/s) for the latency runs.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub rates: Vec<u64>,
    #[arg(long, default_value_t = 10)]
    pub latency_secs: u64,
    /// The webhook route's batch_size (max_wait_ms 5); 1 is the routes' default.
    #[arg(long, default_value_t = 1)]
    pub webhook_batch: usize,
}

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub p50_ms: i64,
    pub p95_ms: i64,
    pub p99_ms: i64,
    pub delivered: usize,
    pub published: usize,
}

#[derive(Debug, Serialize)]
pub struct LatencyRun {
    pub rate: u64,
    pub seconds: u64,
    pub websocket: Percentiles,
    pub webhook: Percentiles,
}

#[derive(Debug, Serialize)]
pub struct GatewayResult {
    pub events: usize,
    pub publish_events_per_sec: f64,
    pub websocket_events_per_sec: f64,
    pub webhook_events_per_sec: f64,
    pub webhook_batch: usize,
    pub latency: Vec<LatencyRun>,
}

/// Arrivals at one sink: event time → arrival, in milliseconds.
#[derive(Default)]
struct Arrivals {
    latencies: Mutex<Vec<i64>>,
    last: Mutex<Option<Instant>>,
}

impl Arrivals {
    fn record(&self, event: &Value) {
        let at = now_millis();
        if let Some(t) = event["timestamp"].as_i64() {
            lock(&self.latencies).push(at - t);
            *lock(&self.last) = Some(Instant::now());
        }
    }

    fn take(&self) -> Vec<i64> {
        std::mem::take(&mut *lock(&self.latencies))
    }

    fn count(&self) -> usize {
        lock(&self.latencies).len()
    }

    fn last(&self) -> Option<Instant> {
        *lock(&self.last)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn run(options: &GatewayOptions) -> anyhow::Result<GatewayResult> {
    let prefix = format!("bench-gw-{}.", now_millis());
    let mut config = PublisherConfig::local(&options.kafka.brokers, &options.registry.url);
    config.topic_prefix = prefix.clone();
    let plan = Catalog::bundled()?.plan(Environment::Development, &prefix);
    Target::new(
        config.kafka.clone(),
        config.registry.client(TIMEOUT)?,
        TIMEOUT,
    )?
    .init(&plan, false)
    .await
    .context("kafka-init of the bench prefix")?;
    let publisher = Publisher::new(config, PublishMetrics::new(&prometheus::Registry::new())?)?;

    let hook = Arc::new(Arrivals::default());
    let hook_port = receiver(hook.clone()).await?;
    let dir = std::env::temp_dir().join(format!("opal-bench-gateway-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let routes = dir.join("routes.toml");
    std::fs::write(
        &routes,
        format!(
            "[[route]]\nname = \"bench\"\npatterns = [\"knowledge.upserted\"]\n[route.webhook]\n\
             url = \"http://127.0.0.1:{hook_port}/hook\"\n\
             secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\
             batch_size = {}\nmax_wait_ms = 5\n",
            options.webhook_batch
        ),
    )?;
    let bin = match &options.gateway_bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("bin dir")?
            .join("opal-gateway"),
    };
    let _gateway = Process(
        Command::new(&bin)
            .arg("--routes")
            .arg(&routes)
            .env("KAFKA_BROKERS", &options.kafka.brokers)
            .env("SCHEMA_REGISTRY_URL", &options.registry.url)
            .env("REDIS_URL", &options.redis.url)
            .env("OPAL_TOPIC_PREFIX", &prefix)
            .env("OPAL_CONSUMER_GROUP", format!("{prefix}opal-gateway"))
            .env("OPAL_HTTP_LISTEN", format!("127.0.0.1:{}", options.port))
            // The burst measures delivery, not the slow-client policy: the
            // client's buffer holds the whole burst (the bench's reader shares
            // the 2 cores with the gateway, the broker and Redis).
            .env(
                "OPAL_GATEWAY_WS_BUFFER",
                options.events.max(1024).to_string(),
            )
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?,
    );
    wait_ready(options.port).await?;
    let ws = Arc::new(Arrivals::default());
    websocket(options.port, ws.clone()).await?;

    // The route's group starts after readiness: probe until both sinks answer.
    let deadline = Instant::now() + TIMEOUT;
    while ws.count() == 0 || hook.count() == 0 {
        publish(&publisher, 1).await?;
        if Instant::now() > deadline {
            bail!("the gateway never delivered a probe");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    ws.take();
    hook.take();

    tracing::info!(events = options.events, "gateway throughput burst");
    let started = Instant::now();
    for chunk in 0..options.events.div_ceil(1000) {
        let n = (options.events - chunk * 1000).min(1000);
        publish(&publisher, n).await?;
    }
    let published_in = started.elapsed();
    wait_count(&ws, options.events, "websocket", DRAIN).await?;
    wait_count(&hook, options.events, "webhook", DRAIN).await?;
    let rate = |a: &Arrivals| {
        let end = a.last().unwrap_or_else(Instant::now);
        options.events as f64 / end.duration_since(started).as_secs_f64()
    };
    let (ws_rate, hook_rate) = (rate(&ws), rate(&hook));
    ws.take();
    hook.take();

    let mut latency = Vec::new();
    for &r in &options.rates {
        tracing::info!(rate = r, secs = options.latency_secs, "gateway latency run");
        let published = paced(&publisher, r, options.latency_secs).await?;
        // Late arrivals are waited for (a bounded while); missing ones count as undelivered.
        let _ = wait_count(&ws, published, "websocket", LATE).await;
        let _ = wait_count(&hook, published, "webhook", LATE).await;
        latency.push(LatencyRun {
            rate: r,
            seconds: options.latency_secs,
            websocket: percentiles(ws.take(), published),
            webhook: percentiles(hook.take(), published),
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(GatewayResult {
        events: options.events,
        publish_events_per_sec: options.events as f64 / published_in.as_secs_f64(),
        websocket_events_per_sec: ws_rate,
        webhook_events_per_sec: hook_rate,
        webhook_batch: options.webhook_batch,
        latency,
    })
}

fn events(publisher: &Publisher, n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let mut e = opal_schemas::samples::default_example(EventType::KnowledgeUpserted);
            *e.envelope_mut() = publisher.new_envelope(None);
            *e.key_mut() = format!("kb-{}", i % 64);
            e
        })
        .collect()
}

async fn publish(publisher: &Publisher, n: usize) -> anyhow::Result<()> {
    for result in publisher.publish_batch(events(publisher, n)).await {
        result?;
    }
    Ok(())
}

/// `rate` events/s for `secs` seconds, in ticks of 10 ms; the count published.
async fn paced(publisher: &Publisher, rate: u64, secs: u64) -> anyhow::Result<usize> {
    let per_tick = (rate / 100).max(1) as usize;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut published = 0;
    for _ in 0..secs * 100 {
        tick.tick().await;
        let batch = events(publisher, per_tick);
        published += batch.len();
        pending.push(publisher.publish_batch(batch));
        // Acknowledgements are collected as they come, never holding the pace.
        while let Some(Some(done)) = futures::FutureExt::now_or_never(pending.next()) {
            for result in done {
                result?;
            }
        }
    }
    while let Some(done) = pending.next().await {
        for result in done {
            result?;
        }
    }
    Ok(published)
}

fn percentiles(mut latencies: Vec<i64>, published: usize) -> Percentiles {
    latencies.sort_unstable();
    let at = |q: f64| {
        if latencies.is_empty() {
            return -1;
        }
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i]
    };
    Percentiles {
        p50_ms: at(0.50),
        p95_ms: at(0.95),
        p99_ms: at(0.99),
        delivered: latencies.len(),
        published,
    }
}

async fn wait_count(
    arrivals: &Arrivals,
    n: usize,
    what: &str,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while arrivals.count() < n {
        if Instant::now() > deadline {
            bail!("{what}: {} of {n} events arrived", arrivals.count());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn wait_ready(port: u16) -> anyhow::Result<()> {
    let url = format!("http://127.0.0.1:{port}/health/ready");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Ok(r) = reqwest::get(&url).await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("opal-gateway not ready on port {port}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A WebSocket client subscribed to knowledge events, recording arrivals.
async fn websocket(port: u16, arrivals: Arc<Arrivals>) -> anyhow::Result<()> {
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws"))
        .await
        .context("websocket connect")?;
    socket
        .send(Message::text(
            json!({"type": "subscribe", "patterns": ["knowledge.upserted"]}).to_string(),
        ))
        .await?;
    tokio::spawn(async move {
        while let Some(Ok(frame)) = socket.next().await {
            match frame {
                Message::Text(text) => {
                    if let Ok(message) = serde_json::from_str::<Value>(&text)
                        && message["type"] == "event"
                    {
                        arrivals.record(&message["event"]);
                    }
                }
                Message::Close(reason) => {
                    tracing::error!(?reason, "the gateway closed the bench's websocket");
                    break;
                }
                _ => {}
            }
        }
    });
    Ok(())
}

/// A local webhook receiver answering 200, recording arrivals; its port.
async fn receiver(arrivals: Arc<Arrivals>) -> anyhow::Result<u16> {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let arrivals = arrivals.clone();
            async move {
                match serde_json::from_slice::<Value>(&body) {
                    Ok(Value::Array(events)) => events.iter().for_each(|e| arrivals.record(e)),
                    Ok(one) => arrivals.record(&one),
                    Err(_) => {}
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(port)
}

/// The markdown table of a result.
pub fn table(result: &GatewayResult) -> String {
    let mut out = format!(
        "Gateway throughput ({} events, webhook batch_size {}): published {:.0}/s, \
         WebSocket client {:.0}/s, webhook receiver {:.0}/s\n\n\
         | rate (events/s) | sink | p50 ms | p95 ms | p99 ms | delivered |\n|---|---|---|---|---|---|\n",
        result.events,
        result.webhook_batch,
        result.publish_events_per_sec,
        result.websocket_events_per_sec,
        result.webhook_events_per_sec
    );
    for run in &result.latency {
        for (sink, p) in [("websocket", &run.websocket), ("webhook", &run.webhook)] {
            out.push_str(&format!(
                "| {} | {sink} | {} | {} | {} | {} of {} |\n",
                run.rate, p.p50_ms, p.p95_ms, p.p99_ms, p.delivered, p.published
            ));
        }
    }
    out
}
