//! What a publish sends: the route of its event type, the event prepared
//! (encoded, with what its record and delivery report need), its headers;
//! and the same record as plain data for a raw baseline.

use opal_schemas::codec::encode_into;
use opal_schemas::{Event, EventType};
use prometheus::{Histogram, IntCounter};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;

use crate::buffers;

/// Header names set on every record.
pub mod headers {
    pub const EVENT_ID: &str = "opal-event-id";
    pub const CORRELATION_ID: &str = "opal-correlation-id";
    pub const EVENT_TYPE: &str = "opal-event-type";
    pub const SCHEMA_ID: &str = "opal-schema-id";
}

/// An event ready to send: envelope filled, validated, encoded. Of the
/// event only what the record and its delivery report need is kept (the
/// rest is dropped once encoded): a publish in flight holds this until its
/// report comes, and a smaller publish future is copied less (an `Event` is
/// 232 bytes, moved several times per publish).
pub(crate) struct Prepared<'r> {
    pub(crate) route: &'r Route,
    event_type: EventType,
    pub(crate) event_id: String,
    pub(crate) correlation_id: String,
    key: String,
    /// Handed back to `buffers` once librdkafka has copied it.
    pub(crate) bytes: Vec<u8>,
}

impl<'r> Prepared<'r> {
    /// Encodes a checked event (`Publisher::check_filled`) for `route`.
    pub(crate) fn encoded(route: &'r Route, mut event: Event) -> Self {
        let mut bytes = buffers::take();
        encode_into(&event, route.schema_id, &mut bytes);
        let key = std::mem::take(event.key_mut());
        let event_type = event.event_type();
        let envelope = event.envelope_mut();
        Prepared {
            route,
            event_type,
            event_id: std::mem::take(&mut envelope.event_id),
            correlation_id: std::mem::take(&mut envelope.correlation_id),
            key,
            bytes,
        }
    }

    /// The headers of the record: names and values.
    pub(crate) fn headers(&self) -> [(&'static str, &str); 4] {
        [
            (headers::EVENT_ID, &self.event_id),
            (headers::CORRELATION_ID, &self.correlation_id),
            (headers::EVENT_TYPE, self.event_type.name()),
            (headers::SCHEMA_ID, &self.route.schema_id_header),
        ]
    }

    /// The record librdkafka copies, headers built anew (rdkafka takes them by value).
    pub(crate) fn record(&self) -> FutureRecord<'_, str, [u8]> {
        FutureRecord::to(&self.route.topic)
            .key(self.key.as_str())
            .payload(self.bytes.as_slice())
            .headers(kafka_headers(self.headers().into_iter()))
    }
}

/// What every event of one type shares, resolved on its first publish
/// instead of per event: the topic, our schema's id there (and its header
/// value), and the metric handles under the topic label.
pub(crate) struct Route {
    pub(crate) topic: String,
    pub(crate) schema_id: u32,
    pub(crate) schema_id_header: String,
    pub(crate) published: IntCounter,
    pub(crate) latency: Histogram,
}

/// A record as the publisher sends it, payload and headers, for a raw
/// rdkafka baseline to send the same (see [`crate::Publisher::sample_record`]).
#[derive(Debug, Clone)]
pub struct WireRecord {
    /// The Confluent wire format: magic byte, schema id, Avro body.
    pub payload: Vec<u8>,
    /// Header names and values; empty for a bare record.
    pub headers: Vec<(&'static str, String)>,
}

impl WireRecord {
    /// The headers as rdkafka takes them, built anew for each record as the
    /// publisher builds its own; `None` for a bare record.
    pub fn kafka_headers(&self) -> Option<OwnedHeaders> {
        if self.headers.is_empty() {
            return None;
        }
        Some(kafka_headers(
            self.headers
                .iter()
                .map(|(key, value)| (*key, value.as_str())),
        ))
    }

    /// The same record without headers.
    pub fn bare(mut self) -> Self {
        self.headers.clear();
        self
    }
}

/// Headers as rdkafka takes them (by value, so built anew for each record).
fn kafka_headers<'a>(pairs: impl ExactSizeIterator<Item = (&'a str, &'a str)>) -> OwnedHeaders {
    let capacity = pairs.len();
    pairs.fold(
        OwnedHeaders::new_with_capacity(capacity),
        |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value),
            })
        },
    )
}
