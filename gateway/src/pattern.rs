//! Patterns over event type names (`decision.degraded`): segments split on
//! `.`, `*` stands for exactly one segment, `#` for any number of segments
//! (none included), as in AMQP topic exchanges. `#` alone matches every type.

use std::fmt;
use std::str::FromStr;

use opal_schemas::EventType;

/// A pattern that is not well formed, or that no event type matches.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("empty pattern")]
    Empty,
    #[error("pattern '{0}': empty segment (two dots, or a dot at an end)")]
    EmptySegment(String),
    #[error(
        "pattern '{0}': a wildcard must be a whole segment ('decision.*', not 'decision.deg*')"
    )]
    PartialWildcard(String),
    #[error("pattern '{pattern}' matches no event type (known: {known})")]
    MatchesNothing { pattern: String, known: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `#`: zero or more segments.
    Any,
}

/// One pattern, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    segments: Vec<Segment>,
}

impl Pattern {
    /// Whether the event type name `name` matches.
    pub fn matches_name(&self, name: &str) -> bool {
        let parts: Vec<&str> = name.split('.').collect();
        matches_from(&self.segments, &parts)
    }

    pub fn matches(&self, event_type: EventType) -> bool {
        self.matches_name(event_type.name())
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn matches_from(segments: &[Segment], parts: &[&str]) -> bool {
    match segments.split_first() {
        None => parts.is_empty(),
        Some((Segment::Any, rest)) => {
            (0..=parts.len()).any(|skip| matches_from(rest, &parts[skip..]))
        }
        Some((segment, rest)) => match parts.split_first() {
            None => false,
            Some((part, more)) => {
                let ok = match segment {
                    Segment::Literal(l) => l == part,
                    _ => true,
                };
                ok && matches_from(rest, more)
            }
        },
    }
}

impl FromStr for Pattern {
    type Err = PatternError;

    /// Parses `text`; refuses a pattern no known event type matches (a typo
    /// would otherwise silently deliver nothing).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        let mut segments = Vec::new();
        for part in text.split('.') {
            segments.push(match part {
                "" => return Err(PatternError::EmptySegment(text.to_owned())),
                "*" => Segment::One,
                "#" => Segment::Any,
                p if p.contains(['*', '#']) => {
                    return Err(PatternError::PartialWildcard(text.to_owned()));
                }
                p => Segment::Literal(p.to_owned()),
            });
        }
        let pattern = Pattern {
            text: text.to_owned(),
            segments,
        };
        if !EventType::ALL.iter().any(|t| pattern.matches(*t)) {
            let known: Vec<&str> = EventType::ALL.iter().map(|t| t.name()).collect();
            return Err(PatternError::MatchesNothing {
                pattern: text.to_owned(),
                known: known.join(", "),
            });
        }
        Ok(pattern)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl serde::Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Pattern {
        text.parse().expect("a valid pattern")
    }

    #[test]
    fn hash_alone_matches_every_type() {
        for t in EventType::ALL {
            assert!(p("#").matches(t), "{t}");
        }
    }

    #[test]
    fn star_is_exactly_one_segment() {
        assert!(p("decision.*").matches(EventType::DecisionDegraded));
        assert!(p("decision.*").matches(EventType::DecisionGenerated));
        assert!(!p("decision.*").matches(EventType::WorkflowStarted));
        assert!(p("*.completed").matches(EventType::AgentCompleted));
        assert!(p("*.completed").matches(EventType::WorkflowCompleted));
        // `*` does not stand for two segments: `user.preferences.updated`
        // is the only `*.updated`-like type, so the pattern matches nothing.
        assert!(!p("*.completed").matches_name("a.workflow.completed"));
        assert!("*.updated".parse::<Pattern>().is_err());
    }

    #[test]
    fn star_in_the_middle() {
        assert!(p("user.*.updated").matches(EventType::UserPreferencesUpdated));
        assert!(!p("user.*.updated").matches_name("user.updated"));
        assert!(!p("user.*.updated").matches_name("user.a.b.updated"));
    }

    #[test]
    fn hash_spans_any_number_of_segments() {
        assert!(p("#.updated").matches(EventType::UserPreferencesUpdated));
        assert!(p("#.updated").matches_name("updated"));
        assert!(p("user.#").matches(EventType::UserPreferencesUpdated));
        assert!(!p("user.#").matches(EventType::WorkflowStarted));
    }

    #[test]
    fn a_literal_matches_only_itself() {
        assert!(p("decision.degraded").matches(EventType::DecisionDegraded));
        assert!(!p("decision.degraded").matches(EventType::DecisionGenerated));
    }

    #[test]
    fn malformed_patterns_are_refused_with_the_reason() {
        assert_eq!("".parse::<Pattern>(), Err(PatternError::Empty));
        assert!(matches!(
            "decision..degraded".parse::<Pattern>(),
            Err(PatternError::EmptySegment(_))
        ));
        assert!(matches!(
            "decision.deg*".parse::<Pattern>(),
            Err(PatternError::PartialWildcard(_))
        ));
        let typo = "decison.*".parse::<Pattern>().expect_err("refused");
        assert!(typo.to_string().contains("matches no event type"), "{typo}");
    }
}
