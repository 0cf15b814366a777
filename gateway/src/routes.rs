//! The routes file: named routes, each a selector and one sink. Parsed in
//! full before anything changes, so a bad file is refused as a whole with the
//! line and the reason, and the routes running stay.
//!
//! ```toml
//! [[route]]
//! name = "degraded-alerts"
//! patterns = ["decision.degraded"]
//! filter = { field = "scope", eq = "global" }
//! [route.webhook]
//! url = "https://alerts.example/hooks/opal"
//! secret = "whsec_..."
//! ```

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

use crate::filter::Filter;
use crate::pattern::Pattern;
use crate::selector::Selector;
use crate::webhook::WebhookConfig;

/// One route.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Unique; names the route's consumer group and DLQ (`opal-gateway.<name>`).
    pub name: String,
    pub selector: Selector,
    pub sink: Sink,
}

/// Where a route's events go.
#[derive(Debug, Clone, PartialEq)]
pub enum Sink {
    Webhook(WebhookConfig),
    WebSocket(WebSocketSink),
}

impl Sink {
    /// The `sink` label of the gateway's metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Sink::Webhook(_) => "webhook",
            Sink::WebSocket(_) => "websocket",
        }
    }
}

/// Events go to the WebSocket clients subscribed to the route.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketSink {
    /// Used while no client of the route is connected.
    #[serde(default)]
    pub fallback_webhook: Option<WebhookConfig>,
}

/// A routes file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    #[error("cannot read routes file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("routes file {origin}, line {line}: {reason}")]
    Invalid {
        origin: String,
        line: usize,
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    route: Vec<toml::Spanned<RawRoute>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: String,
    patterns: Vec<Pattern>,
    #[serde(default)]
    exclude: Vec<Pattern>,
    #[serde(default)]
    filter: Option<Filter>,
    #[serde(default)]
    webhook: Option<WebhookConfig>,
    #[serde(default)]
    websocket: Option<WebSocketSink>,
}

/// Reads and parses `path`.
pub fn load(path: &Path) -> Result<Vec<Route>, RoutesError> {
    let text = std::fs::read_to_string(path).map_err(|source| RoutesError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// Parses a routes file; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Vec<Route>, RoutesError> {
    let invalid = |offset: usize, reason: String| RoutesError::Invalid {
        origin: origin.to_owned(),
        line: line_of(text, offset),
        reason,
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        invalid(
            e.span().map_or(0, |s| s.start),
            e.message().trim().to_owned(),
        )
    })?;
    let mut names = BTreeSet::new();
    let mut routes = Vec::with_capacity(raw.route.len());
    for spanned in raw.route {
        let start = spanned.span().start;
        let raw = spanned.into_inner();
        let route = build(raw, &mut names).map_err(|reason| invalid(start, reason))?;
        routes.push(route);
    }
    Ok(routes)
}

fn build(raw: RawRoute, names: &mut BTreeSet<String>) -> Result<Route, String> {
    let name = raw.name;
    let valid_name = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid_name {
        return Err(format!(
            "route name '{name}': use 1-100 of a-z, 0-9, '-' and '_' (it names a consumer group and a topic)"
        ));
    }
    if !names.insert(name.clone()) {
        return Err(format!("route name '{name}' is used twice"));
    }
    let selector = Selector::new(raw.patterns, raw.exclude, raw.filter)
        .map_err(|e| format!("route '{name}': {e}"))?;
    let sink = match (raw.webhook, raw.websocket) {
        (Some(w), None) => Sink::Webhook(w),
        (None, Some(ws)) => Sink::WebSocket(ws),
        _ => {
            return Err(format!(
                "route '{name}': give exactly one sink, [route.webhook] or [route.websocket]"
            ));
        }
    };
    let webhooks = match &sink {
        Sink::Webhook(w) => vec![w],
        Sink::WebSocket(ws) => ws.fallback_webhook.iter().collect(),
    };
    for w in webhooks {
        w.validate().map_err(|e| format!("route '{name}': {e}"))?;
    }
    Ok(Route {
        name,
        selector,
        sink,
    })
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn file(body: &str) -> String {
        body.replace("SECRET", SECRET)
    }

    #[test]
    fn a_valid_file_gives_its_routes() {
        let text = file(
            r##"
[[route]]
name = "assistant"
patterns = ["#"]
exclude = ["forecast.generated"]
[route.websocket]

[[route]]
name = "degraded-alerts"
patterns = ["decision.degraded"]
filter = { field = "observed", gt = 0.5 }
[route.webhook]
url = "http://127.0.0.1:9999/hook"
secret = "SECRET"
batch_size = 10
"##,
        );
        let routes = parse(&text, "t").expect("valid");
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].sink.kind(), "websocket");
        let Sink::Webhook(w) = &routes[1].sink else {
            panic!("webhook")
        };
        assert_eq!(w.batch_size, 10);
        assert_eq!(w.attempts, 5);
    }

    fn refused(text: &str) -> (usize, String) {
        match parse(&file(text), "t") {
            Err(RoutesError::Invalid { line, reason, .. }) => (line, reason),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_bad_pattern_is_refused_with_its_line() {
        let (line, reason) = refused(
            "[[route]]\nname = \"a\"\npatterns = [\"#\"]\n[route.websocket]\n\n[[route]]\nname = \"b\"\npatterns = [\"decison.*\"]\n[route.websocket]\n",
        );
        assert_eq!(line, 8, "{reason}");
        assert!(reason.contains("decison.*"), "{reason}");
    }

    #[test]
    fn semantic_errors_name_the_route_and_its_line() {
        let (line, reason) = refused(
            "[[route]]\nname = \"a\"\npatterns = [\"#\"]\n[route.websocket]\n\n[[route]]\nname = \"a\"\npatterns = [\"#\"]\n[route.websocket]\n",
        );
        assert!(reason.contains("used twice"), "{reason}");
        assert_eq!(line, 6);
        let (_, reason) = refused("[[route]]\nname = \"a\"\npatterns = [\"#\"]\n");
        assert!(reason.contains("exactly one sink"), "{reason}");
        let (_, reason) = refused(
            "[[route]]\nname = \"a\"\npatterns = [\"#\"]\n[route.webhook]\nurl = \"ftp://x\"\nsecret = \"SECRET\"\n",
        );
        assert!(reason.contains("http or https"), "{reason}");
    }

    #[test]
    fn syntax_errors_have_their_line() {
        let (line, _) = refused("[[route]]\nname = \"a\"\npatterns = [\"#\"\n");
        assert_eq!(line, 3);
        let (line, reason) = refused("[[route]]\nname = \"a\"\npatterns = [\"#\"]\nsink = 1\n");
        assert!(reason.contains("sink"), "{reason}");
        assert!(line >= 1);
    }

    #[test]
    fn the_readme_examples_parse() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("The seed's three examples:\n\n```toml\n")
            .expect("the README's examples");
        let block = &readme[start..];
        let block = &block[block.find("```toml\n").expect("block") + 8..];
        let block = &block[..block.find("```").expect("end of block")];
        let routes = parse(block, "README.md").expect("the README's examples are valid");
        let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["assistant", "acme-decisions", "degraded-alerts"]);
    }

    #[test]
    fn the_secret_is_not_in_errors() {
        let text = "[[route]]\nname = \"a\"\npatterns = [\"#\"]\n[route.webhook]\nurl = \"http://x\"\nsecret = \"whsec_bad secret\"\n";
        let e = parse(text, "t").expect_err("refused").to_string();
        assert!(!e.contains("bad secret"), "{e}");
    }
}
