//! The metric names that the Prometheus alert rules and the Grafana dashboard in
//! `deploy/` query, and the names a `/metrics` scrape exports, so a test can
//! check that every queried metric exists.

use std::collections::BTreeSet;
use std::path::Path;

/// PromQL words that are not metric names: binary and grouping keywords, and the
/// aggregation operators (which may be followed by `by (...)` before their `(`).
const KEYWORDS: [&str; 27] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
];

/// Series Prometheus makes itself rather than scraping them.
pub const SYNTHETIC: [&str; 1] = ["up"];

/// Metric names a PromQL expression selects: identifiers outside label matchers,
/// ranges, strings and grouping clauses that are not function calls or keywords.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // After by/without/on/ignoring/group_*, the next (...) lists labels.
    let mut labels_follow = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_past(&chars, i + 1, c),
            '{' => i = skip_past(&chars, i + 1, '}'),
            '[' => i = skip_past(&chars, i + 1, ']'),
            '(' if labels_follow => {
                labels_follow = false;
                i = skip_past(&chars, i + 1, ')');
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace());
                let lower = word.to_ascii_lowercase();
                if matches!(
                    lower.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                ) {
                    labels_follow = true;
                } else if next != Some(&'(') && !KEYWORDS.contains(&lower.as_str()) {
                    names.insert(word);
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                // Numbers and durations (5m, 1e3) are not names.
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    names
}

fn skip_past(chars: &[char], mut i: usize, close: char) -> usize {
    while i < chars.len() && chars[i] != close {
        if chars[i] == '\\' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// Every expression in `deploy/prometheus/alerts.yml` (alert name, expression).
pub fn alert_expressions(root: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml"))
        .expect("read deploy/prometheus/alerts.yml");
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("alerts.yml is YAML");
    let mut out = Vec::new();
    for group in doc["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().or(rule["record"].as_str());
            out.push((
                name.expect("alert or record name").to_owned(),
                rule["expr"].as_str().expect("expr").to_owned(),
            ));
        }
    }
    out
}

/// Every query of every panel and template variable in the Grafana dashboards.
pub fn dashboard_expressions(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dir = root.join("deploy/grafana/dashboards");
    for entry in std::fs::read_dir(&dir).expect("read dashboards dir") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read dashboard");
        let dash: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        for panel in dash["panels"].as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                out.push((
                    panel["title"].as_str().unwrap_or("?").to_owned(),
                    target["expr"]
                        .as_str()
                        .expect("panel target expr")
                        .to_owned(),
                ));
            }
        }
        for var in dash["templating"]["list"].as_array().into_iter().flatten() {
            if let Some(q) = var["definition"].as_str() {
                // label_values(metric, label): the metric is the first argument.
                let inner = q
                    .trim_start_matches("label_values(")
                    .split(',')
                    .next()
                    .unwrap_or_default();
                out.push((format!("variable {}", var["name"]), inner.to_owned()));
            }
        }
    }
    out
}

/// Sample names in a Prometheus text exposition (histograms give `_bucket`,
/// `_sum`, `_count`).
pub fn exported_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_metric_names_and_nothing_else() {
        let names = metric_names(
            r#"histogram_quantile(0.95, sum by (le, consumer) (rate(opal_event_processing_seconds_bucket{consumer=~"$consumer"}[5m])))"#,
        );
        assert_eq!(
            names,
            BTreeSet::from(["opal_event_processing_seconds_bucket".to_owned()])
        );
        let names = metric_names(
            "sum by (consumer, topic) (opal_consumer_lag) > 1000 and sum(deriv(opal_consumer_lag[10m])) > 0 or vector(0)",
        );
        assert_eq!(names, BTreeSet::from(["opal_consumer_lag".to_owned()]));
        let names = metric_names(
            "time() - opal_consumer_last_event_timestamp_seconds > 900 and on (instance) up == 1",
        );
        assert_eq!(
            names,
            BTreeSet::from([
                "opal_consumer_last_event_timestamp_seconds".to_owned(),
                "up".to_owned()
            ])
        );
    }

    #[test]
    fn reads_sample_names_from_an_exposition() {
        let text = "# HELP a_total x\n# TYPE a_total counter\na_total{x=\"1\"} 3\nb 1\nh_bucket{le=\"0.1\"} 0\n";
        assert_eq!(
            exported_names(text),
            BTreeSet::from(["a_total".to_owned(), "b".to_owned(), "h_bucket".to_owned()])
        );
    }
}
