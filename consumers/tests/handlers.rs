//! Handlers without a broker: decoded events in, effects out, state in a real
//! Redis, time from a clock the test sets.

use opal_consumers::apps::clock::ManualClock;
use opal_consumers::apps::diagnostics::{self, DiagnosticsHandler, DiagnosticsSettings};
use opal_consumers::apps::feedback::{self, FeedbackHandler, FeedbackSettings};
use opal_consumers::apps::forecasts::{self, ForecastHandler, ForecastSettings};
use opal_consumers::idempotency::{Applied, Idempotency, Lease};
use opal_consumers::{Effects, Handler, HandlerError, Source, StateReader};
use opal_schemas::samples::default_example;
use opal_schemas::{Event, EventType};

async fn state() -> StateReader {
    let client = redis::Client::open(opal_e2e::redis_url()).expect("url");
    StateReader::new(client.get_connection_manager().await.expect("redis"))
}

/// A single-partition source, for handlers that ignore it.
fn source() -> Source {
    Source::test("opal.test", 0, 1)
}

/// Applies the handler's state changes, as the runtime would after the lease.
async fn apply(state: &StateReader, effects: &Effects) {
    let mut connection = state.connection();
    for op in effects.ops() {
        let parts = op.parts();
        let mut cmd = redis::cmd(std::str::from_utf8(&parts[0]).expect("name"));
        for arg in &parts[1..] {
            cmd.arg(arg.as_slice());
        }
        let _: redis::Value = cmd.query_async(&mut connection).await.expect("op");
    }
}

fn feedback_event(decision: &str, recommendation: &str, accepted: bool, ts: i64) -> Event {
    let mut e = default_example(EventType::FeedbackSubmitted);
    if let Event::FeedbackSubmitted(f) = &mut e {
        f.decision_id = decision.into();
        f.recommendation_id = recommendation.into();
        f.accepted = accepted;
        f.client_name = "acme".into();
        f.envelope.timestamp = ts;
    }
    e
}

#[tokio::test]
async fn feedback_waits_for_its_decision_then_is_invalid_after_the_join_ttl() {
    let state = state().await;
    let clock = ManualClock::at(1_000_000);
    let ns = feedback::namespace(&format!("{}.", opal_e2e::unique("h")));
    let handler = FeedbackHandler {
        settings: FeedbackSettings::default(),
        clock: Box::new(clock.clone()),
        ns,
    };
    let orphan = feedback_event("dec-never", "rec-1", false, 1_000_000);
    assert!(
        matches!(
            handler.handle(&orphan, &source(), &state).await,
            Err(HandlerError::NotYet(_))
        ),
        "may still arrive: wait without spending retries"
    );
    clock.set(1_000_000 + FeedbackSettings::default().join_ttl_ms + 1);
    assert!(
        matches!(
            handler.handle(&orphan, &source(), &state).await,
            Err(HandlerError::Invalid(_))
        ),
        "too late: invalid"
    );
}

#[tokio::test]
async fn five_consecutive_rejections_exclude_the_category_once() {
    let state = state().await;
    let ns = feedback::namespace(&format!("{}.", opal_e2e::unique("h")));
    let handler = FeedbackHandler {
        settings: FeedbackSettings::default(),
        clock: Box::new(ManualClock::at(2_000_000)),
        ns,
    };
    let decision = default_example(EventType::DecisionGenerated); // rec-1 is "pricing"
    apply(
        &state,
        &handler
            .handle(&decision, &source(), &state)
            .await
            .expect("decision"),
    )
    .await;
    let mut emitted = Vec::new();
    for i in 0..7 {
        let effects = handler
            .handle(
                &feedback_event("dec-5001", "rec-1", false, 2_000_000 + i),
                &source(),
                &state,
            )
            .await
            .expect("fb");
        apply(&state, &effects).await;
        emitted.push(
            effects
                .emits()
                .iter()
                .map(|e| e.event_type())
                .collect::<Vec<_>>(),
        );
    }
    let exclusions: Vec<usize> = emitted
        .iter()
        .enumerate()
        .filter(|(_, e)| e.contains(&EventType::UserPreferencesUpdated))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        exclusions,
        vec![4],
        "the fifth rejection, and only it: {emitted:?}"
    );
}

#[tokio::test]
async fn diagnostics_calls_a_workflow_stuck_only_after_its_sla() {
    let state = state().await;
    let ns = diagnostics::namespace(&format!("{}.", opal_e2e::unique("h")));
    let settings = DiagnosticsSettings::default();
    let handler = DiagnosticsHandler {
        settings: settings.clone(),
        ns: ns.clone(),
    };
    let mut started = default_example(EventType::WorkflowStarted); // estimate 120 s → SLA 240 s
    started.envelope_mut().timestamp = 10_000_000;
    apply(
        &state,
        &handler
            .handle(&started, &source(), &state)
            .await
            .expect("started"),
    )
    .await;
    let clock = ManualClock::at(10_000_000 + 239_000);
    let before = diagnostics::summary(&state, &ns, &clock, &settings)
        .await
        .expect("summary");
    assert_eq!((before.workflows_in_flight, before.workflows_stuck), (1, 0));
    clock.set(10_000_000 + 241_000);
    let after = diagnostics::summary(&state, &ns, &clock, &settings)
        .await
        .expect("summary");
    assert_eq!(after.stuck_workflows, vec!["wf-1001".to_owned()]);
}

fn forecast_handler(ns: &str) -> ForecastHandler {
    ForecastHandler {
        settings: ForecastSettings {
            bucket_ms: 60_000,
            lateness_ms: 30_000,
            ..ForecastSettings::default()
        },
        ns: ns.to_owned(),
        late_events: prometheus::IntCounter::new("late", "late").expect("counter"),
    }
}

/// acme starts a workflow at `secs` (event time), read from `partition` of two.
fn demand_at(secs: i64, partition: i32) -> (Event, Source) {
    let mut e = default_example(EventType::WorkflowStarted);
    if let Event::WorkflowStarted(w) = &mut e {
        w.client_name = "acme".into();
        w.envelope.timestamp = secs * 1000;
        w.envelope.event_id = uuid::Uuid::new_v4().to_string();
    }
    (e, Source::test("opal.workflow.started", partition, 2))
}

async fn idempotency(state: &StateReader) -> Idempotency {
    Idempotency::new(
        state.connection(),
        "",
        &opal_e2e::unique("fc"),
        std::time::Duration::from_secs(60),
        std::time::Duration::from_secs(10),
    )
}

/// Leases and applies `effects` as the runtime does; what the apply said.
async fn commit(idempotency: &Idempotency, event: &Event, effects: &Effects) -> Applied {
    let id = event.envelope().event_id.as_str();
    assert_eq!(
        idempotency.lease(&[id]).await.expect("lease"),
        vec![Lease::Acquired]
    );
    idempotency
        .apply(&[(id, effects)])
        .await
        .expect("apply")
        .remove(0)
        .expect("no state command refused")
}

#[tokio::test]
async fn forecasts_do_not_depend_on_how_partitions_interleave() {
    // Event times in seconds; buckets of 60 s, lateness 30 s. 20 on partition 0
    // and 50 on partition 1 are late on their own partition (its watermark has
    // passed their bucket's end); everything else counts.
    let p0 = [0, 10, 70, 65, 130, 20, 200, 250];
    let p1 = [5, 61, 125, 50, 190, 260, 300];
    let first_p0: Vec<(i64, i32)> = p0
        .iter()
        .map(|t| (*t, 0))
        .chain(p1.iter().map(|t| (*t, 1)))
        .collect();
    let first_p1: Vec<(i64, i32)> = p1
        .iter()
        .map(|t| (*t, 1))
        .chain(p0.iter().map(|t| (*t, 0)))
        .collect();
    let mut alternating = Vec::new();
    for i in 0..p0.len().max(p1.len()) {
        alternating.extend(p0.get(i).map(|t| (*t, 0)));
        alternating.extend(p1.get(i).map(|t| (*t, 1)));
    }
    let state = state().await;
    let mut results = Vec::new();
    for order in [first_p0, first_p1, alternating] {
        let ns = forecasts::namespace(&format!("{}.", opal_e2e::unique("h")));
        let handler = forecast_handler(&ns);
        let idempotency = idempotency(&state).await;
        for (secs, partition) in order {
            let (event, source) = demand_at(secs, partition);
            let effects = handler
                .handle(&event, &source, &state)
                .await
                .expect("handled");
            assert_eq!(
                commit(&idempotency, &event, &effects).await,
                Applied::Applied
            );
        }
        let latest = forecasts::latest(&state, &ns, "demand:acme")
            .await
            .expect("redis")
            .expect("a forecast");
        let model: String =
            redis::AsyncCommands::get(&mut state.connection(), format!("{ns}model:demand:acme"))
                .await
                .expect("model");
        results.push((latest, model, handler.late_events.get()));
    }
    // Both partitions end past 220 s: buckets ending at 60, 120 and 180 s closed,
    // holding 3 (0, 10, 5), 3 (70, 65, 61) and 2 (130, 125) workflows.
    let (latest, model, late) = &results[0];
    assert_eq!(*late, 2, "20 s and 50 s dropped");
    assert_eq!(latest["generated_at"], 180_000);
    assert_eq!(latest["last_observed"], 2.0);
    let model: serde_json::Value = serde_json::from_str(model).expect("json");
    assert_eq!(model["n"], 3, "three buckets closed: {model}");
    assert!(
        results.iter().all(|r| r == &results[0]),
        "every interleaving gives the same forecast: {results:#?}"
    );
}

#[tokio::test]
async fn a_watermark_move_computed_on_stale_state_is_refused_and_redone() {
    let state = state().await;
    let ns = forecasts::namespace(&format!("{}.", opal_e2e::unique("h")));
    let handler = forecast_handler(&ns);
    let idempotency = idempotency(&state).await;
    for (secs, partition) in [(0, 0), (5, 1)] {
        let (event, source) = demand_at(secs, partition);
        let effects = handler
            .handle(&event, &source, &state)
            .await
            .expect("handled");
        assert_eq!(
            commit(&idempotency, &event, &effects).await,
            Applied::Applied,
            "setting up the watermarks"
        );
    }
    // Both move their partition's watermark past the first bucket, each
    // computed without the other's move: only the first applies as computed.
    let (a, a_source) = demand_at(100, 0);
    let (b, b_source) = demand_at(110, 1);
    let a_effects = handler.handle(&a, &a_source, &state).await.expect("a");
    let b_effects = handler.handle(&b, &b_source, &state).await.expect("b");
    assert!(a_effects.emits().is_empty() && b_effects.emits().is_empty());
    assert_eq!(commit(&idempotency, &a, &a_effects).await, Applied::Applied);
    assert_eq!(
        commit(&idempotency, &b, &b_effects).await,
        Applied::Conflict,
        "b read the watermarks before a moved one"
    );
    // Handled again on fresh state, b sees both moves and closes the bucket [0, 60 s).
    let b_effects = handler
        .handle(&b, &b_source, &state)
        .await
        .expect("b again");
    assert_eq!(b_effects.emits().len(), 1, "the first bucket's forecast");
    assert_eq!(
        idempotency
            .apply(&[(b.envelope().event_id.as_str(), &b_effects)])
            .await
            .expect("apply"),
        vec![Ok(Applied::Applied)]
    );
    let latest = forecasts::latest(&state, &ns, "demand:acme")
        .await
        .expect("redis")
        .expect("a forecast");
    assert_eq!(latest["last_observed"], 2.0);
}

#[tokio::test]
async fn a_decision_ranked_with_preferences_that_changed_under_it_is_refused_and_redone() {
    use opal_consumers::apps::recommendations::{self, RecommendationsHandler};
    let state = state().await;
    let ns = recommendations::namespace(&format!("{}.", opal_e2e::unique("h")));
    let handler = RecommendationsHandler {
        top_n: 10,
        ns: ns.clone(),
    };
    let idempotency = idempotency(&state).await;
    let mut decision = default_example(EventType::DecisionGenerated);
    let mut prefs = default_example(EventType::UserPreferencesUpdated);
    for (e, id) in [(&mut decision, "d-1"), (&mut prefs, "p-1")] {
        e.envelope_mut().event_id = format!("{id}-{}", opal_e2e::unique("e"));
    }
    let client = match (&decision, &mut prefs) {
        (Event::DecisionGenerated(d), Event::UserPreferencesUpdated(p)) => {
            p.client_name = d.client_name.clone();
            p.excluded_categories = vec!["pricing".into()];
            d.client_name.clone()
        }
        _ => unreachable!("sample types"),
    };
    // Read concurrently: the decision sees no preferences yet.
    let decision_effects = handler
        .handle(&decision, &source(), &state)
        .await
        .expect("decision");
    let prefs_effects = handler
        .handle(&prefs, &source(), &state)
        .await
        .expect("prefs");
    assert_eq!(
        commit(&idempotency, &prefs, &prefs_effects).await,
        Applied::Applied
    );
    assert_eq!(
        commit(&idempotency, &decision, &decision_effects).await,
        Applied::Conflict,
        "ranked without the preferences that arrived meanwhile"
    );
    let decision_effects = handler
        .handle(&decision, &source(), &state)
        .await
        .expect("again");
    let id = decision.envelope().event_id.as_str();
    assert_eq!(
        idempotency
            .apply(&[(id, &decision_effects)])
            .await
            .expect("apply"),
        vec![Ok(Applied::Applied)]
    );
    let model = recommendations::read_model(&state, &ns, &client)
        .await
        .expect("redis")
        .expect("ranked");
    assert_eq!(
        model.preferences.excluded_categories,
        vec!["pricing".to_owned()]
    );
    assert!(
        model
            .recommendations
            .iter()
            .all(|r| r.category != "pricing"),
        "{model:?}"
    );
    assert!(!model.recommendations.is_empty());
}

#[tokio::test]
async fn one_event_closing_several_buckets_updates_the_model_once_per_bucket() {
    let state = state().await;
    let ns = forecasts::namespace(&format!("{}.", opal_e2e::unique("h")));
    let handler = forecast_handler(&ns);
    let idempotency = idempotency(&state).await;
    // One partition: buckets [0, 60), [60, 120), [120, 180) hold 2, 1 and 3
    // workflows; the event at 400 s moves the watermark to 370 s and closes all three.
    let mut emitted = 0;
    for secs in [0, 10, 70, 130, 140, 150, 400] {
        let (event, _) = demand_at(secs, 0);
        let source = Source::test("opal.workflow.started", 0, 1);
        let effects = handler
            .handle(&event, &source, &state)
            .await
            .expect("handled");
        emitted += effects.emits().len();
        assert_eq!(
            commit(&idempotency, &event, &effects).await,
            Applied::Applied
        );
    }
    assert_eq!(emitted, 3, "one forecast per closed bucket");
    let mut expected = forecasts::Holt::default();
    for y in [2.0, 1.0, 3.0] {
        expected.update(y, 0.5, 0.3);
    }
    let stored: String =
        redis::AsyncCommands::get(&mut state.connection(), format!("{ns}model:demand:acme"))
            .await
            .expect("model");
    let stored: forecasts::Holt = serde_json::from_str(&stored).expect("json");
    assert_eq!(stored, expected, "three updates in order, none lost");
}
