//! Handlers without a broker: decoded events in, effects out, state in a real
//! Redis, time from a clock the test sets.

use opal_consumers::apps::clock::ManualClock;
use opal_consumers::apps::diagnostics::{self, DiagnosticsHandler, DiagnosticsSettings};
use opal_consumers::apps::feedback::{self, FeedbackHandler, FeedbackSettings};
use opal_consumers::{Effects, Handler, HandlerError, StateReader};
use opal_schemas::samples::default_example;
use opal_schemas::{Event, EventType};

async fn state() -> StateReader {
    let client = redis::Client::open(opal_e2e::redis_url()).expect("url");
    StateReader::new(client.get_connection_manager().await.expect("redis"))
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
            handler.handle(&orphan, &state).await,
            Err(HandlerError::NotYet(_))
        ),
        "may still arrive: wait without spending retries"
    );
    clock.set(1_000_000 + FeedbackSettings::default().join_ttl_ms + 1);
    assert!(
        matches!(
            handler.handle(&orphan, &state).await,
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
        &handler.handle(&decision, &state).await.expect("decision"),
    )
    .await;
    let mut emitted = Vec::new();
    for i in 0..7 {
        let effects = handler
            .handle(
                &feedback_event("dec-5001", "rec-1", false, 2_000_000 + i),
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
        &handler.handle(&started, &state).await.expect("started"),
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
