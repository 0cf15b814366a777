//! The soak: every fault at once, and exactly-once through all of it.
//!
//! Two instances of the counting consumer (a counter per published event, and
//! each knowledge key's apply order) and the four OPAL consumers run on a
//! private stack (`scripts/dev-stack.sh` with its own state and ports, so its
//! broker, Redis and registry may be killed) while paced traffic flows and a
//! fault driver, at random moments, kills consumer instances with -9 (each
//! restarted), kills the broker and Redis with -9 (each restarted at once)
//! and restarts the registry. At the end: every event applied exactly once
//! (0 missing, 0 repeated), every key's events applied in produced order,
//! nothing dead-lettered, and the four consumers' views and emitted events
//! equal to those of a control run of the same traffic without faults.
//!
//! Sized by `OPAL_SOAK_EVENTS` (10 000 by default, as `scripts/test.sh` runs
//! it; `scripts/soak.sh` runs 100 000), `OPAL_SOAK_CONSUMER_KILLS` (4; 20),
//! `OPAL_SOAK_RATE` (events/s published while faults happen) and
//! `OPAL_SOAK_SEED`. The report (faults with their times, counts, wall time)
//! is printed and, with `OPAL_SOAK_REPORT=FILE`, written as JSON.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::apps::*;
use common::*;
use opal_producers::simulate::{Phase, Scenario, generate};
use opal_producers::{PublishMetrics, Publisher, PublisherConfig};
use opal_schemas::{Event, EventType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How big the soak is, from the environment.
#[derive(Debug, Clone, Copy)]
struct Sizing {
    events: usize,
    consumer_kills: usize,
    rate: usize,
    seed: u64,
}

impl Sizing {
    fn from_env() -> Sizing {
        let var = |name: &str, default: u64| -> u64 {
            std::env::var(name).map_or(default, |v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
            })
        };
        Sizing {
            events: var("OPAL_SOAK_EVENTS", 10_000) as usize,
            consumer_kills: var("OPAL_SOAK_CONSUMER_KILLS", 4) as usize,
            rate: var("OPAL_SOAK_RATE", 250).max(10) as usize,
            seed: var("OPAL_SOAK_SEED", 20_261_125),
        }
    }
}

/// `scripts/dev-stack.sh` on a state directory and ports of its own: its
/// broker, registry and Redis may be killed without harming other tests.
/// Stopped and wiped when dropped.
struct PrivateStack {
    dir: PathBuf,
    kafka: u16,
    controller: u16,
    registry: u16,
    redis: u16,
}

impl PrivateStack {
    fn up() -> PrivateStack {
        let stack = PrivateStack {
            dir: std::env::temp_dir().join(opal_e2e::unique("opal-soak")),
            kafka: free_port(),
            controller: free_port(),
            registry: free_port(),
            redis: free_port(),
        };
        stack.run(&["up"]);
        stack
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.kafka)
    }

    fn registry_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.registry)
    }

    fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.redis)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(opal_e2e::repo_root().join("scripts/dev-stack.sh"));
        command
            .args(args)
            .env("OPAL_STACK_DIR", &self.dir)
            .env("OPAL_KAFKA_PORT", self.kafka.to_string())
            .env("OPAL_KAFKA_CONTROLLER_PORT", self.controller.to_string())
            .env("OPAL_REGISTRY_PORT", self.registry.to_string())
            .env("OPAL_REDIS_PORT", self.redis.to_string())
            .env_remove("OPAL_KAFKA_SASL")
            .env_remove("OPAL_KAFKA_NODES");
        command
    }

    /// Runs `dev-stack.sh ARGS` for this stack; panics with its output if it fails.
    fn run(&self, args: &[&str]) {
        let output = self.command(args).output().expect("run dev-stack.sh");
        assert!(
            output.status.success(),
            "dev-stack.sh {args:?} for the soak's stack failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `kill -9` of the process dev-stack started for `service`; returns once
    /// it is gone, with its pid.
    fn kill9(&self, service: &str) -> u32 {
        let file = self.dir.join("pids").join(format!("{service}.pid"));
        let pid: u32 = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .trim()
            .parse()
            .expect("a pid");
        let alive = || {
            Command::new("kill")
                .args(["-0", &pid.to_string()])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        let killed = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(killed.success(), "kill -9 {service} (pid {pid})");
        let deadline = Instant::now() + TIMEOUT;
        while alive() {
            assert!(Instant::now() < deadline, "{service} survived kill -9");
            std::thread::sleep(Duration::from_millis(50));
        }
        pid
    }
}

impl Drop for PrivateStack {
    fn drop(&mut self) {
        let _ = self.command(&["down", "--clean"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the counting consumers consume: every type the traffic publishes.
const COUNTED: &str = "workflow.started,agent.completed,workflow.completed,decision.generated,\
                       user.preferences.updated,feedback.submitted,knowledge.upserted";

/// Knowledge keys the counted stream cycles through: each key's events must
/// be applied in the order they were produced.
const KNOWLEDGE_KEYS: usize = 200;

/// The six consumer processes of the faulted run: two counting instances
/// (one group, static members) and the four OPAL consumers.
struct Fleet<'a> {
    env: &'a Env,
    counting_ports: [u16; 2],
    app_ports: [u16; 4],
    running: Vec<Option<Process>>,
}

impl<'a> Fleet<'a> {
    const MEMBERS: usize = 6;

    fn start(env: &'a Env) -> Fleet<'a> {
        let mut fleet = Fleet {
            env,
            counting_ports: [free_port(), free_port()],
            app_ports: [free_port(), free_port(), free_port(), free_port()],
            running: (0..Self::MEMBERS).map(|_| None).collect(),
        };
        for member in 0..Self::MEMBERS {
            fleet.spawn(member);
        }
        fleet
    }

    fn name(member: usize) -> String {
        match member {
            0 | 1 => format!("counting-{member}"),
            app => APP_GROUPS[app - 2].to_owned(),
        }
    }

    fn spawn(&mut self, member: usize) {
        let process = match member {
            0 | 1 => {
                let instance = format!("{}-counting-{member}", self.env.group);
                self.env.spawn_counting_for(
                    COUNTED,
                    self.counting_ports[member],
                    &[
                        ("OPAL_GROUP_INSTANCE_ID", instance.as_str()),
                        ("OPAL_SESSION_TIMEOUT_MS", "10000"),
                        ("OPAL_DRAIN_TIMEOUT_MS", "5000"),
                    ],
                )
            }
            app => start_app(self.env, app - 2, self.app_ports[app - 2]),
        };
        self.running[member] = Some(process);
    }

    /// Restarts, as a supervisor would, every member that exited on its own
    /// (a consumer exits non-zero on a fatal Kafka client error); returns
    /// each with how it ended.
    fn restart_exited(&mut self) -> Vec<(usize, String)> {
        let mut restarted = Vec::new();
        for member in 0..Self::MEMBERS {
            let exited = self.running[member]
                .as_mut()
                .and_then(|p| p.0.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.running[member] = None;
                self.spawn(member);
                restarted.push((member, status.to_string()));
            }
        }
        restarted
    }

    /// `kill -9` of `member`; returns its pid, or None while it is down (an
    /// earlier fault's restart of it is still pending).
    fn kill9(&mut self, member: usize) -> Option<u32> {
        let mut process = self.running[member].take()?;
        let pid = process.0.id();
        process.0.kill().expect("kill -9");
        let _ = process.0.wait();
        Some(pid)
    }
}

/// One fault the driver injected.
#[derive(Debug, Clone, serde::Serialize)]
struct Fault {
    /// Seconds since the faulted traffic began.
    at_s: f64,
    kind: &'static str,
    target: String,
    /// How long until the target was back (seconds).
    back_after_s: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultKind {
    /// `kill -9` of fleet member `member`, restarted after `down`.
    KillConsumer {
        member: usize,
        down: Duration,
    },
    KillBroker,
    KillRedis,
    RestartRegistry,
}

impl FaultKind {
    fn name(self) -> &'static str {
        match self {
            FaultKind::KillConsumer { .. } => "kill -9 consumer",
            FaultKind::KillBroker => "kill -9 broker",
            FaultKind::KillRedis => "kill -9 redis",
            FaultKind::RestartRegistry => "restart registry",
        }
    }
}

/// The faults, each at a random moment of the first `window`.
fn plan(sizing: &Sizing, window: Duration, rng: &mut StdRng) -> Vec<(Duration, FaultKind)> {
    let consumers: Vec<FaultKind> = (0..sizing.consumer_kills)
        .map(|_| FaultKind::KillConsumer {
            member: rng.random_range(0..Fleet::MEMBERS),
            // Back after a moment, as a supervisor would restart it.
            down: Duration::from_millis(rng.random_range(200..2_000)),
        })
        .collect();
    let mut plan: Vec<(Duration, FaultKind)> = consumers
        .into_iter()
        .chain([
            FaultKind::KillBroker,
            FaultKind::KillRedis,
            FaultKind::RestartRegistry,
        ])
        .map(|kind| (window.mul_f64(rng.random_range(0.05..0.9)), kind))
        .collect();
    plan.sort_by_key(|(at, _)| *at);
    plan
}

/// Injects the planned faults while the traffic flows, each at its moment
/// whatever the others are doing (a consumer may be killed while the broker
/// restarts); returns what it did.
async fn drive_faults(
    stack: Arc<PrivateStack>,
    fleet: &Mutex<Fleet<'_>>,
    plan: Vec<(Duration, FaultKind)>,
    started: Instant,
) -> Vec<Fault> {
    let faults = plan.into_iter().map(|(at, kind)| {
        let stack = stack.clone();
        async move {
            tokio::time::sleep_until((started + at).into()).await;
            let at_s = started.elapsed().as_secs_f64();
            let t = Instant::now();
            let target = match kind {
                FaultKind::KillConsumer { member, down } => {
                    // Faults overlap: a member still down from an earlier
                    // kill is killed once it is back.
                    let pid = loop {
                        if let Some(pid) = lock(fleet).kill9(member) {
                            break pid;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    };
                    tokio::time::sleep(down).await;
                    lock(fleet).spawn(member);
                    format!("{} (pid {pid})", Fleet::name(member))
                }
                _ => tokio::task::spawn_blocking(move || match kind {
                    FaultKind::KillBroker => {
                        let pid = stack.kill9("kafka");
                        stack.run(&["start", "kafka"]);
                        format!("kafka (pid {pid})")
                    }
                    FaultKind::KillRedis => {
                        let pid = stack.kill9("redis");
                        stack.run(&["start", "redis"]);
                        format!("redis (pid {pid})")
                    }
                    _ => {
                        stack.run(&["restart", "registry"]);
                        "registry".to_owned()
                    }
                })
                .await
                .expect("fault"),
            };
            let fault = Fault {
                at_s,
                kind: kind.name(),
                target,
                back_after_s: t.elapsed().as_secs_f64(),
            };
            eprintln!(
                "soak: {:7.1}s  {:<18} {} (back after {:.1}s)",
                fault.at_s, fault.kind, fault.target, fault.back_after_s
            );
            fault
        }
    });
    futures::future::join_all(faults).await
}

fn lock<'m, 'e>(fleet: &'m Mutex<Fleet<'e>>) -> std::sync::MutexGuard<'m, Fleet<'e>> {
    fleet.lock().unwrap_or_else(|p| p.into_inner())
}

/// Restarts members that exited on their own, every half second, until
/// dropped; records each restart in `restarts`.
async fn watchdog(fleet: &Mutex<Fleet<'_>>, started: Instant, restarts: &Mutex<Vec<Fault>>) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for (member, status) in lock(fleet).restart_exited() {
            let fault = Fault {
                at_s: started.elapsed().as_secs_f64(),
                kind: "exited, restarted",
                target: format!("{} ({status})", Fleet::name(member)),
                back_after_s: 0.0,
            };
            eprintln!(
                "soak: {:7.1}s  {:<18} {}",
                fault.at_s, fault.kind, fault.target
            );
            restarts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(fault);
        }
    }
}

/// A publisher for `env`'s topics whose deliveries outlast a broker restart
/// (the soak's broker is killed while it publishes).
fn patient_publisher(env: &Env) -> Publisher {
    let mut config = PublisherConfig::local(&env.args.kafka.brokers, &env.args.registry.url);
    config.topic_prefix = env.prefix.clone();
    config.delivery_timeout_ms = 600_000;
    Publisher::new(
        config,
        PublishMetrics::new(&prometheus::Registry::new()).expect("metrics"),
    )
    .expect("publisher")
}

/// The knowledge events of the counted stream: keys cycle, and each event's
/// `content_hash` is its sequence number, so a key's apply order is checkable.
fn knowledge(publisher: &Publisher, n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let mut e = opal_schemas::samples::default_example(EventType::KnowledgeUpserted);
            *e.envelope_mut() = publisher.new_envelope(None);
            if let Event::KnowledgeUpserted(k) = &mut e {
                k.kind = "policy".to_owned();
                k.knowledge_id = format!("kb-{}", i % KNOWLEDGE_KEYS);
                k.content_hash = format!("{i:08}");
            }
            e
        })
        .collect()
}

/// `scenario` (kept in order) with `knowledge` spread evenly through it.
fn interleave(scenario: Vec<Event>, knowledge: Vec<Event>) -> Vec<Event> {
    let (s_total, k_total) = (scenario.len(), knowledge.len());
    let (mut s, mut k) = (scenario.into_iter(), knowledge.into_iter());
    let (mut taken_s, mut taken_k) = (0, 0);
    let mut out = Vec::with_capacity(s_total + k_total);
    while taken_s < s_total || taken_k < k_total {
        // The stream behind its share goes next.
        if taken_k == k_total || (taken_s < s_total && taken_s * k_total <= taken_k * s_total) {
            out.extend(s.next());
            taken_s += 1;
        } else {
            out.extend(k.next());
            taken_k += 1;
        }
    }
    out
}

/// Publishes `events` in chunks, `rate` events a second; returns their ids.
async fn publish_paced_all(publisher: &Publisher, events: Vec<Event>, rate: usize) -> Vec<String> {
    let chunk = (rate / 10).max(1);
    let mut ids = Vec::with_capacity(events.len());
    for batch in events.chunks(chunk) {
        let t = Instant::now();
        for delivery in publisher.publish_batch(batch.to_vec()).await {
            ids.push(
                delivery
                    .expect("published (acknowledged by the broker)")
                    .event_id,
            );
        }
        tokio::time::sleep(Duration::from_millis(100).saturating_sub(t.elapsed())).await;
    }
    ids
}

async fn publish_all(publisher: &Publisher, events: Vec<Event>) -> Vec<String> {
    let mut ids = Vec::with_capacity(events.len());
    for batch in events.chunks(1000) {
        for delivery in publisher.publish_batch(batch.to_vec()).await {
            ids.push(delivery.expect("published").event_id);
        }
    }
    ids
}

/// Records in the dead-letter topics of the counting group and the four consumers.
fn dead_letters(env: &Env) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = env.kafka().client_config().expect("c").create().expect("c");
    std::iter::once(env.group.clone())
        .chain(APP_GROUPS.iter().map(|g| format!("{}{g}", env.prefix)))
        .map(|group| {
            let dlq = opal_topics::dlq_topic(&env.prefix, &group);
            consumer
                .fetch_watermarks(&dlq, 0, TIMEOUT)
                .map(|(_, high)| high)
                .unwrap_or_else(|e| panic!("{dlq}: {e}"))
        })
        .sum()
}

#[derive(serde::Serialize)]
struct Report {
    events: usize,
    scenario_events: usize,
    faults: Vec<Fault>,
    faults_by_kind: std::collections::BTreeMap<&'static str, usize>,
    missing: usize,
    repeated: usize,
    keys_out_of_order: usize,
    dead_lettered: i64,
    views_equal_to_control: bool,
    traffic_seconds: f64,
    faulted_run_seconds: f64,
    wall_seconds: f64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_at_once_leaves_every_effect_applied_exactly_once() {
    let wall = Instant::now();
    let sizing = Sizing::from_env();
    eprintln!("soak: {sizing:?}");
    let mut rng = StdRng::seed_from_u64(sizing.seed);
    let stack = Arc::new(
        tokio::task::spawn_blocking(PrivateStack::up)
            .await
            .expect("stack"),
    );

    // About 40% of the events are the four consumers' scenario, the rest the
    // counted knowledge stream.
    let per_workflow = {
        let probe = Scenario {
            workflows: 100,
            seed: sizing.seed,
            start_ms: 0,
            spacing_ms: 20_000,
        };
        (generate(&probe, Phase::All).len() / 100).max(1)
    };
    let workflows = (sizing.events * 2 / 5 / per_workflow).max(30);
    let now = opal_consumers::apps::clock::Clock::now_ms(&opal_consumers::apps::clock::SystemClock);
    let scenario = Scenario {
        workflows,
        seed: sizing.seed,
        start_ms: now - workflows as i64 * 20_000,
        spacing_ms: 20_000,
    };
    let decisions = generate(&scenario, Phase::Decisions);
    let feedback = generate(&scenario, Phase::Feedback);
    let scenario_events = decisions.len() + feedback.len();
    let knowledge_events = sizing.events.saturating_sub(scenario_events);

    let on_stack = || async {
        let mut env = with_app_dlqs(Env::on(&stack.brokers(), &stack.registry_url()).await).await;
        env.args.redis.url = stack.redis_url();
        env
    };

    // The control run: the same scenario, no faults.
    let control = on_stack().await;
    let control_publisher = patient_publisher(&control);
    let control_ports = [free_port(), free_port(), free_port(), free_port()];
    let running = start_all(&control, control_ports);
    publish_all(&control_publisher, decisions.clone()).await;
    views_settled(&control, control_ports, false, SETTLE).await;
    publish_all(&control_publisher, feedback.clone()).await;
    let expected = views_settled(&control, control_ports, true, SETTLE).await;
    drop(running);

    // The faulted run.
    let faulted_started = Instant::now();
    let env = on_stack().await;
    let publisher = patient_publisher(&env);
    let fleet = Mutex::new(Fleet::start(&env));
    let restarts = Mutex::new(Vec::new());
    let stream = interleave(decisions, knowledge(&publisher, knowledge_events));
    let window = Duration::from_secs_f64(stream.len() as f64 / sizing.rate as f64);
    let faults = plan(&sizing, window, &mut rng);
    eprintln!(
        "soak: control run done; {} events over about {:.0}s with {} faults under prefix {}",
        stream.len(),
        window.as_secs_f64(),
        faults.len(),
        env.prefix
    );
    let traffic = Instant::now();
    let counted_topics: Vec<String> = COUNTED
        .split(',')
        .map(|t| format!("{}{t}", env.prefix))
        .collect();
    let app_ports = lock(&fleet).app_ports;
    let run = async {
        let (mut ids, faults) = tokio::join!(
            publish_paced_all(&publisher, stream, sizing.rate),
            drive_faults(stack.clone(), &fleet, faults, traffic)
        );
        let traffic_seconds = traffic.elapsed().as_secs_f64();
        views_settled(&env, app_ports, false, SETTLE).await;
        ids.extend(publish_all(&publisher, feedback).await);
        let got = views_settled(&env, app_ports, true, SETTLE).await;
        wait_until(SETTLE, "the counting group's lag at 0", || {
            let (kafka, group, topics) = (env.kafka(), env.group.clone(), counted_topics.clone());
            async move { tokio::task::block_in_place(|| group_lag(&kafka, &group, &topics) == 0) }
        })
        .await;
        (ids, faults, traffic_seconds, got)
    };
    let (ids, mut faults, traffic_seconds, got) = tokio::select! {
        done = run => done,
        () = watchdog(&fleet, traffic, &restarts) => unreachable!("the watchdog never ends"),
    };
    faults.extend(restarts.into_inner().unwrap_or_else(|p| p.into_inner()));
    faults.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    let faulted_run_seconds = faulted_started.elapsed().as_secs_f64();

    // Every event applied exactly once; every key in produced order.
    let mut redis = redis_at(&stack.redis_url()).await;
    let applied = counts(&mut redis, &env.count_prefix, &ids).await;
    let missing = applied.iter().filter(|c| **c == 0).count();
    let repeated = applied.iter().filter(|c| **c > 1).count();
    let mut keys_out_of_order = 0;
    for key in 0..KNOWLEDGE_KEYS.min(knowledge_events) {
        let order: Vec<String> = redis::cmd("LRANGE")
            .arg(format!("{}:order:kb-{key}", env.count_prefix))
            .arg(0)
            .arg(-1)
            .query_async(&mut redis)
            .await
            .expect("LRANGE");
        let produced: Vec<String> = (key..knowledge_events)
            .step_by(KNOWLEDGE_KEYS)
            .map(|i| format!("{i:08}"))
            .collect();
        if order != produced {
            keys_out_of_order += 1;
        }
    }
    let dead_lettered = tokio::task::block_in_place(|| dead_letters(&env));
    let views_equal = got == expected;

    let mut faults_by_kind = std::collections::BTreeMap::new();
    for fault in &faults {
        *faults_by_kind.entry(fault.kind).or_insert(0) += 1;
    }
    let report = Report {
        events: ids.len(),
        scenario_events,
        faults,
        faults_by_kind,
        missing,
        repeated,
        keys_out_of_order,
        dead_lettered,
        views_equal_to_control: views_equal,
        traffic_seconds,
        faulted_run_seconds,
        wall_seconds: wall.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_string_pretty(&report).expect("json");
    eprintln!("soak report:\n{json}");
    if let Ok(path) = std::env::var("OPAL_SOAK_REPORT") {
        std::fs::write(&path, &json).unwrap_or_else(|e| panic!("{path}: {e}"));
    }

    assert_eq!(report.faults_by_kind.get("kill -9 broker"), Some(&1));
    assert_eq!(report.faults_by_kind.get("kill -9 redis"), Some(&1));
    assert_eq!(report.faults_by_kind.get("restart registry"), Some(&1));
    assert_eq!(
        report.faults_by_kind.get("kill -9 consumer"),
        Some(&sizing.consumer_kills)
    );
    assert_eq!(
        (missing, repeated),
        (0, 0),
        "every event applied exactly once"
    );
    assert_eq!(
        keys_out_of_order, 0,
        "every key's events applied in produced order"
    );
    assert_eq!(dead_lettered, 0, "an outage dead-letters nothing");
    assert_same_as_control(&env, &got, &control, &expected).await;
}

/// How long the views may take to settle after a phase (the faulted run may
/// end with a backlog).
const SETTLE: Duration = Duration::from_secs(900);
