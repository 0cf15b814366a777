//! What the server sends on `/ws`: the JSON messages and the close frames
//! (codes and reasons), written in one place so the README's protocol
//! section has one source.

use std::borrow::Cow;
use std::sync::Arc;

use opal_schemas::Event;
use serde_json::{Value, json};

/// Close codes (RFC 6455 section 7.4.1).
pub mod code {
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// The subscription was refused (bad message, unknown route, bad filter).
    pub const POLICY: u16 = 1008;
    /// The server failed (the history reader could not read Kafka).
    pub const SERVER_ERROR: u16 = 1011;
    /// The client could not keep up (its buffer filled) or stopped answering pings.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// A close frame to send: code and reason (at most 123 bytes on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: Cow<'static, str>,
}

impl Close {
    pub const GOING_AWAY: Close = Close {
        code: code::GOING_AWAY,
        reason: Cow::Borrowed("server shutting down"),
    };

    pub fn slow(buffer: usize) -> Close {
        Close {
            code: code::TRY_AGAIN_LATER,
            reason: Cow::Owned(format!("slow client: {buffer} events waiting unread")),
        }
    }

    pub fn refused(reason: impl Into<String>) -> Close {
        Close {
            code: code::POLICY,
            reason: Cow::Owned(truncate(reason.into())),
        }
    }

    pub fn no_pong(secs: u64) -> Close {
        Close {
            code: code::TRY_AGAIN_LATER,
            reason: Cow::Owned(format!("no pong within {secs} s")),
        }
    }

    pub fn catch_up_overflow(held: usize) -> Close {
        Close {
            code: code::TRY_AGAIN_LATER,
            reason: Cow::Owned(format!(
                "{held} live events arrived during the catch-up; subscribe from a later time"
            )),
        }
    }

    pub fn fell_behind(missed: u64) -> Close {
        Close {
            code: code::TRY_AGAIN_LATER,
            reason: Cow::Owned(format!(
                "the gateway fell {missed} events behind its feed; subscribe again with from"
            )),
        }
    }

    pub fn failed(reason: impl Into<String>) -> Close {
        Close {
            code: code::SERVER_ERROR,
            reason: Cow::Owned(truncate(reason.into())),
        }
    }
}

/// A close reason must fit a control frame (125 bytes with the code).
fn truncate(mut reason: String) -> String {
    if reason.len() > 123 {
        let mut end = 120;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push_str("...");
    }
    reason
}

/// One event on its way to clients, its message serialised once for all of them.
#[derive(Debug)]
pub struct Outgoing {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// Read back from Kafka (a `from` catch-up or `POST /replay`), not live:
    /// clients take it even if they had it.
    pub replayed: bool,
    /// The `event` message, ready to send.
    pub text: String,
}

impl Outgoing {
    /// `json` is `event`'s JSON form ([`crate::event_json`]), computed once by the caller.
    pub fn new(
        event: &Event,
        json: &Value,
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        replayed: bool,
    ) -> Outgoing {
        let text = event_message(event, json, &topic, partition, offset, replayed).to_string();
        Outgoing {
            topic,
            partition,
            offset,
            replayed,
            text,
        }
    }
}

/// `{"type":"event", ...}`: the event as `opal-producer read` prints it, with
/// its id, type, key and time alongside and where it was read from.
pub fn event_message(
    event: &Event,
    json: &Value,
    topic: &str,
    partition: i32,
    offset: i64,
    replayed: bool,
) -> Value {
    let envelope = event.envelope();
    json!({
        "type": "event",
        "event_id": envelope.event_id,
        "event_type": event.event_type().name(),
        "key": event.key(),
        "timestamp": envelope.timestamp,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "replayed": replayed,
        "event": json,
    })
}

/// `{"type":"subscribed", ...}`: the subscription is live.
pub fn subscribed(client: u64, route: Option<&str>, from: Option<i64>, buffer: usize) -> String {
    json!({
        "type": "subscribed",
        "client": client,
        "route": route,
        "from": from,
        "buffer": buffer,
    })
    .to_string()
}

/// `{"type":"caught_up", ...}`: every event since `from` was sent; live events follow.
pub fn caught_up(events: u64) -> String {
    json!({ "type": "caught_up", "events": events }).to_string()
}

/// `{"type":"error", ...}`: sent before a refusal's close frame.
pub fn error(message: &str) -> String {
    json!({ "type": "error", "message": message }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_close_reason_is_cut_to_fit_a_control_frame() {
        let close = Close::refused("é".repeat(200));
        assert!(close.reason.len() <= 123, "{}", close.reason.len());
        assert!(close.reason.ends_with("..."));
    }
}
