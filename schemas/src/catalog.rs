//! Which event lives on which topic, under which key, with which schema.

use std::fmt;
use std::str::FromStr;

use apache_avro::types::Value;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::events::*;

/// Subject of a topic's values (Confluent's TopicNameStrategy).
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// Implemented by every typed event.
pub trait OpalEvent: Serialize + DeserializeOwned + Clone + Into<Event> {
    const TYPE: EventType;
    fn envelope(&self) -> &Envelope;
    fn envelope_mut(&mut self) -> &mut Envelope;
    /// The message key, per the spec's catalog.
    fn key(&self) -> &str;
}

macro_rules! catalog {
    ($( $ty:ident => $name:literal, $topic:literal, $file:literal, $key:ident; )*) => {
        /// The nine event types.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventType { $( $ty, )* }

        /// Any event, typed.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Event { $( $ty($ty), )* }

        impl EventType {
            pub const ALL: [EventType; 9] = [ $( EventType::$ty, )* ];

            /// Short name used on the command line, e.g. `workflow.started`.
            pub fn name(self) -> &'static str {
                match self { $( EventType::$ty => $name, )* }
            }

            /// The topic in the catalog (without any environment prefix).
            pub fn topic(self) -> &'static str {
                match self { $( EventType::$ty => $topic, )* }
            }

            /// File name of the current schema in `schemas/avro/`.
            pub fn schema_file(self) -> &'static str {
                match self { $( EventType::$ty => $file, )* }
            }

            /// The current schema's JSON text.
            pub fn schema_json(self) -> &'static str {
                match self { $( EventType::$ty => include_str!(concat!("../avro/", $file)), )* }
            }

            /// The field whose value is the message key.
            pub fn key_field(self) -> &'static str {
                match self { $( EventType::$ty => stringify!($key), )* }
            }

            /// The Avro record's full name, e.g. `opal.events.WorkflowStarted`.
            pub fn full_name(self) -> &'static str {
                match self { $( EventType::$ty => concat!("opal.events.", stringify!($ty)), )* }
            }

            pub fn from_full_name(full_name: &str) -> Option<EventType> {
                EventType::ALL.into_iter().find(|t| t.full_name() == full_name)
            }
        }

        impl Event {
            pub fn event_type(&self) -> EventType {
                match self { $( Event::$ty(_) => EventType::$ty, )* }
            }

            pub fn envelope(&self) -> &Envelope {
                match self { $( Event::$ty(e) => &e.envelope, )* }
            }

            pub fn envelope_mut(&mut self) -> &mut Envelope {
                match self { $( Event::$ty(e) => &mut e.envelope, )* }
            }

            pub fn key(&self) -> &str {
                match self { $( Event::$ty(e) => &e.$key, )* }
            }

            pub fn key_mut(&mut self) -> &mut String {
                match self { $( Event::$ty(e) => &mut e.$key, )* }
            }

            /// The event as a generic Avro value (not yet resolved against a schema).
            pub fn to_avro(&self) -> Result<Value, apache_avro::Error> {
                match self { $( Event::$ty(e) => apache_avro::to_value(e), )* }
            }

            /// Writes the event's Avro body with `writer` (serde straight to bytes
            /// under the writer's schema, without an intermediate `Value`).
            pub fn write_avro(
                &self,
                writer: &apache_avro::writer::datum::GenericDatumWriter<'_>,
                out: &mut Vec<u8>,
            ) -> Result<usize, apache_avro::Error> {
                match self { $( Event::$ty(e) => writer.write_ser(out, e), )* }
            }

            /// Builds the typed event from a value already resolved to the reader schema.
            pub fn from_avro(event_type: EventType, value: &Value) -> Result<Event, apache_avro::Error> {
                Ok(match event_type { $( EventType::$ty => Event::$ty(apache_avro::from_value(value)?), )* })
            }

            /// Parses the JSON form of an event of `event_type`; a failure names
            /// the field it is about (`agent_data.confidence_score`).
            pub fn from_json(event_type: EventType, json: serde_json::Value) -> Result<Event, JsonFieldError> {
                fn typed<T: DeserializeOwned>(json: serde_json::Value) -> Result<T, JsonFieldError> {
                    serde_path_to_error::deserialize(json).map_err(|e| JsonFieldError {
                        field: e.path().to_string(),
                        message: e.inner().to_string(),
                    })
                }
                Ok(match event_type { $( EventType::$ty => Event::$ty(typed(json)?), )* })
            }

            /// The JSON form of the event.
            pub fn to_json(&self) -> serde_json::Value {
                match self { $( Event::$ty(e) => serde_json::to_value(e).unwrap_or(serde_json::Value::Null), )* }
            }
        }

        $(
            impl OpalEvent for $ty {
                const TYPE: EventType = EventType::$ty;
                fn envelope(&self) -> &Envelope { &self.envelope }
                fn envelope_mut(&mut self) -> &mut Envelope { &mut self.envelope }
                fn key(&self) -> &str { &self.$key }
            }

            impl From<$ty> for Event {
                fn from(e: $ty) -> Event { Event::$ty(e) }
            }
        )*
    };
}

catalog! {
    WorkflowStarted => "workflow.started", "opal.workflow.started", "workflow_started.avsc", workflow_id;
    AgentCompleted => "agent.completed", "opal.agent.completed", "agent_completed.avsc", workflow_id;
    WorkflowCompleted => "workflow.completed", "opal.workflow.completed", "workflow_completed.avsc", workflow_id;
    DecisionGenerated => "decision.generated", "opal.decision.generated", "decision_generated.avsc", client_name;
    KnowledgeUpserted => "knowledge.upserted", "opal.knowledge.upserted", "knowledge_upserted.avsc", knowledge_id;
    DecisionDegraded => "decision.degraded", "opal.decision.degraded", "decision_degraded.avsc", scope;
    UserPreferencesUpdated => "user.preferences.updated", "opal.user.preferences.updated", "user_preferences_updated.avsc", client_name;
    FeedbackSubmitted => "feedback.submitted", "opal.feedback.submitted", "feedback_submitted.avsc", client_name;
    ForecastGenerated => "forecast.generated", "opal.forecast.generated", "forecast_generated.avsc", series;
}

/// A JSON input that does not fit the event's type, naming the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("field '{field}': {message}")]
pub struct JsonFieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EventType {
    type Err = String;

    /// Accepts the short name (`workflow.started`), the topic (`opal.workflow.started`)
    /// or the snake-case file stem (`workflow_started`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|t| {
                s == t.name() || s == t.topic() || s == t.schema_file().trim_end_matches(".avsc")
            })
            .ok_or_else(|| {
                let names: Vec<_> = EventType::ALL.iter().map(|t| t.name()).collect();
                format!(
                    "unknown event type '{s}': expected one of {}",
                    names.join(", ")
                )
            })
    }
}
