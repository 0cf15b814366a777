//! What a client sends on `/ws`: one `subscribe` message, naming a route or
//! giving patterns and a filter of its own, optionally with `from`.

use serde::Deserialize;

/// The client's one message.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    Subscribe(Subscribe),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscribe {
    /// A `websocket` route of the routes file.
    #[serde(default)]
    pub route: Option<String>,
    /// Event type patterns (`decision.*`, `*.completed`, `#`), as in a route.
    #[serde(default)]
    pub patterns: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// A filter written as in the routes file, in JSON.
    #[serde(default)]
    pub filter: Option<serde_json::Value>,
    /// Replay the matching events since then before the live stream.
    #[serde(default)]
    pub from: Option<When>,
}

/// A point in time: milliseconds since the epoch, or RFC 3339 text.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum When {
    Millis(i64),
    Text(String),
}

impl When {
    /// Milliseconds since the epoch, or why the text is not a time.
    pub fn millis(&self) -> Result<i64, String> {
        match self {
            When::Millis(ms) if *ms >= 0 => Ok(*ms),
            When::Millis(ms) => Err(format!("time {ms} is before the epoch")),
            When::Text(text) => {
                let at = humantime::parse_rfc3339_weak(text).map_err(|e| {
                    format!(
                        "'{text}' is not an RFC 3339 time nor milliseconds since the epoch: {e}"
                    )
                })?;
                let since = at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_err(|_| format!("time '{text}' is before the epoch"))?;
                i64::try_from(since.as_millis()).map_err(|_| format!("time '{text}' is too far"))
            }
        }
    }
}

/// Parses the client's message, naming what is wrong with it.
pub fn parse(text: &str) -> Result<Subscribe, String> {
    let message: ClientMessage = serde_json::from_str(text)
        .map_err(|e| format!("expected {{\"type\":\"subscribe\", ...}}: {e}"))?;
    let ClientMessage::Subscribe(subscribe) = message;
    match (&subscribe.route, subscribe.patterns.is_empty()) {
        (Some(_), false) => Err("give either a route or patterns, not both".to_owned()),
        (Some(_), true) if subscribe.filter.is_some() || !subscribe.exclude.is_empty() => {
            Err("a route brings its own exclude and filter; give none with it".to_owned())
        }
        (None, true) => Err("give a route or at least one pattern".to_owned()),
        _ => Ok(subscribe),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_names_a_route_or_patterns() {
        let route = parse(r#"{"type":"subscribe","route":"ui"}"#).expect("route");
        assert_eq!(route.route.as_deref(), Some("ui"));
        let own = parse(r#"{"type":"subscribe","patterns":["decision.*"],"from":1000}"#)
            .expect("patterns");
        assert_eq!(own.patterns, ["decision.*"]);
        assert_eq!(own.from.expect("from").millis(), Ok(1000));
        for (bad, says) in [
            (r#"{"type":"subscribe"}"#, "a route or at least one pattern"),
            (
                r##"{"type":"subscribe","route":"ui","patterns":["#"]}"##,
                "not both",
            ),
            (
                r#"{"type":"subscribe","route":"ui","exclude":["x"]}"#,
                "its own",
            ),
            (r#"{"type":"hello"}"#, "unknown variant `hello`"),
            (
                r##"{"type":"subscribe","pattern":["#"]}"##,
                "unknown field `pattern`",
            ),
            ("not json", "expected"),
        ] {
            let error = parse(bad).expect_err(bad);
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn from_is_milliseconds_or_rfc3339() {
        let text = When::Text("2026-01-02T03:04:05.678Z".to_owned());
        assert_eq!(text.millis(), Ok(1_767_323_045_678));
        assert!(When::Text("yesterday".to_owned()).millis().is_err());
        assert!(When::Millis(-1).millis().is_err());
    }
}
