//! One realistic example of every event type, every field filled. Used by the
//! producer test suite, the CLI's `example` output and the schema tests.

use std::collections::BTreeMap;

use crate::catalog::{Event, EventType};
use crate::events::*;

/// An envelope for examples: fixed ids and time, so fixtures stay stable.
pub fn example_envelope(schema_version: i32) -> Envelope {
    Envelope {
        event_id: "7d8f4a4e-3c1b-4c55-9a57-1c3f5e0b2a01".to_owned(),
        correlation_id: "c0ffee00-0000-4000-8000-000000000001".to_owned(),
        schema_version,
        timestamp: 1_767_225_600_000, // 2026-01-01T00:00:00Z
        source_system: "opal-examples".to_owned(),
        environment: Environment::Development,
    }
}

/// The schema version our current `.avsc` of `event_type` declares.
pub fn current_version(event_type: EventType) -> i32 {
    match event_type {
        EventType::AgentCompleted => 2,
        _ => 1,
    }
}

/// A fully populated example of `event_type` with `envelope`.
pub fn example(event_type: EventType, envelope: Envelope) -> Event {
    let s = |x: &str| x.to_owned();
    match event_type {
        EventType::WorkflowStarted => Event::WorkflowStarted(WorkflowStarted {
            envelope,
            workflow_id: s("wf-1001"),
            session_id: s("session-42"),
            client_name: s("acme"),
            workflow_name: s("quarterly-review"),
            preferences: BTreeMap::from([(s("tone"), s("concise")), (s("region"), s("emea"))]),
            estimated_duration_ms: Some(120_000),
        }),
        EventType::AgentCompleted => Event::AgentCompleted(AgentCompleted {
            envelope,
            workflow_id: s("wf-1001"),
            agent_id: s("pricing-agent"),
            offset: 2,
            execution_status: ExecutionStatus::Success,
            processing_time_ms: 840,
            agent_data: AgentData {
                recommendations: vec![s("raise tier-2 price by 3%"), s("bundle support")],
                confidence_score: 0.87,
            },
            error: None,
            model_version: Some(s("pricing-2026.1")),
        }),
        EventType::WorkflowCompleted => Event::WorkflowCompleted(WorkflowCompleted {
            envelope,
            workflow_id: s("wf-1001"),
            client_name: s("acme"),
            status: WorkflowStatus::Success,
            total_duration_ms: 95_000,
            agents_total: 4,
            agents_failed: 0,
        }),
        EventType::DecisionGenerated => Event::DecisionGenerated(DecisionGenerated {
            envelope,
            decision_id: s("dec-5001"),
            workflow_id: s("wf-1001"),
            client_name: s("acme"),
            model_version: s("ranker-7"),
            recommendations: vec![
                Recommendation {
                    recommendation_id: s("rec-1"),
                    category: s("pricing"),
                    text: s("Raise tier-2 price by 3%"),
                    confidence: 0.87,
                    impact_score: 0.6,
                },
                Recommendation {
                    recommendation_id: s("rec-2"),
                    category: s("support"),
                    text: s("Bundle premium support"),
                    confidence: 0.72,
                    impact_score: 0.4,
                },
            ],
        }),
        EventType::KnowledgeUpserted => Event::KnowledgeUpserted(KnowledgeUpserted {
            envelope,
            knowledge_id: s("kb-77"),
            client_name: s("acme"),
            kind: s("policy"),
            content_hash: s("sha256:9f86d081884c7d65"),
            tags: vec![s("pricing"), s("2026")],
        }),
        EventType::DecisionDegraded => Event::DecisionDegraded(DecisionDegraded {
            envelope,
            scope: s("pricing"),
            client_name: Some(s("acme")),
            metric: s("acceptance_rate"),
            observed: 0.2,
            threshold: 0.3,
            window_start: 1_767_222_000_000,
            window_end: 1_767_225_600_000,
            sample_size: 25,
            reason: s("acceptance 0.20 below 0.30 over 25 samples"),
        }),
        EventType::UserPreferencesUpdated => {
            Event::UserPreferencesUpdated(UserPreferencesUpdated {
                envelope,
                client_name: s("acme"),
                preferred_categories: vec![s("support")],
                excluded_categories: vec![s("pricing")],
                min_confidence: 0.5,
            })
        }
        EventType::FeedbackSubmitted => Event::FeedbackSubmitted(FeedbackSubmitted {
            envelope,
            feedback_id: s("fb-9001"),
            decision_id: s("dec-5001"),
            recommendation_id: s("rec-1"),
            client_name: s("acme"),
            rating: 2,
            accepted: false,
            comment: Some(s("too aggressive")),
        }),
        EventType::ForecastGenerated => Event::ForecastGenerated(ForecastGenerated {
            envelope,
            forecast_id: s("fc-3001"),
            series: s("demand:acme"),
            model: s("holt-linear"),
            bucket_ms: 300_000,
            generated_at: 1_767_225_600_000,
            points: vec![
                ForecastPoint {
                    timestamp: 1_767_225_600_000,
                    value: 12.5,
                    lower: 10.0,
                    upper: 15.0,
                },
                ForecastPoint {
                    timestamp: 1_767_225_900_000,
                    value: 13.1,
                    lower: 10.2,
                    upper: 16.0,
                },
            ],
            mae: Some(1.25),
        }),
    }
}

/// The example of `event_type` with the example envelope.
pub fn default_example(event_type: EventType) -> Event {
    example(event_type, example_envelope(current_version(event_type)))
}
