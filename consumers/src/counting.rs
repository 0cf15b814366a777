//! A consumer that counts every event it sees, once: the runtime's own test
//! subject and a smoke test for a deployment (`opal-counting-consumer`).
//!
//! Effects: `INCR <prefix>:count:<event_id>` and `INCR <prefix>:total`, and
//! for `opal.knowledge.upserted` `RPUSH <prefix>:order:<knowledge_id>
//! <content_hash>`, the order in which each key's events were applied. An
//! exactly-once run leaves every per-event counter at 1.
//!
//! For failure drills it reacts to `opal.knowledge.upserted` events by `kind`:
//! `fail-transient-N` fails the first N attempts, `fail-always` always fails
//! transiently, `wait-N` is not ready (waits for another input) N times,
//! `reject` is invalid, `emit-degraded` also emits an `opal.decision.degraded`
//! (scoped by the event's `knowledge_id`).

use std::collections::HashMap;
use std::sync::Mutex;

use opal_schemas::samples::default_example;
use opal_schemas::{Event, EventType};

use crate::handler::{Effects, Handler, HandlerError, Source, StateOp, StateReader};

/// The `kind`s (or their prefixes) of the drills above.
const DRILLS: [&str; 5] = [
    "fail-transient-",
    "wait-",
    "fail-always",
    "reject",
    "emit-degraded",
];

pub struct CountingHandler {
    prefix: String,
    inputs: Vec<EventType>,
    attempts: Mutex<HashMap<String, u32>>,
}

impl CountingHandler {
    pub fn new(prefix: impl Into<String>, inputs: Vec<EventType>) -> Self {
        CountingHandler {
            prefix: prefix.into(),
            inputs,
            attempts: Mutex::new(HashMap::new()),
        }
    }

    pub fn count_key(&self, event_id: &str) -> String {
        format!("{}:count:{event_id}", self.prefix)
    }

    pub fn total_key(&self) -> String {
        format!("{}:total", self.prefix)
    }

    /// The list of one knowledge key's applied `content_hash`es, in apply order.
    pub fn order_key(&self, knowledge_id: &str) -> String {
        format!("{}:order:{knowledge_id}", self.prefix)
    }

    fn attempt(&self, event_id: &str) -> u32 {
        let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        let n = attempts.entry(event_id.to_owned()).or_insert(0);
        *n += 1;
        *n
    }
}

impl Handler for CountingHandler {
    fn name(&self) -> &str {
        "counting"
    }

    fn inputs(&self) -> Vec<EventType> {
        self.inputs.clone()
    }

    /// Every event but a drill: those count their attempts, fail or emit,
    /// which only happens under a lease.
    fn handles_before_lease(&self, event: &Event) -> bool {
        match event {
            Event::KnowledgeUpserted(k) => !DRILLS.iter().any(|d| k.kind.starts_with(d)),
            _ => true,
        }
    }

    async fn handle(
        &self,
        event: &Event,
        _source: &Source,
        _state: &StateReader,
    ) -> Result<Effects, HandlerError> {
        let id = &event.envelope().event_id;
        if let Event::KnowledgeUpserted(k) = event {
            if let Some(n) = k
                .kind
                .strip_prefix("fail-transient-")
                .and_then(|n| n.parse::<u32>().ok())
            {
                let attempt = self.attempt(id);
                if attempt <= n {
                    return Err(HandlerError::Transient(format!(
                        "drill: attempt {attempt} of {n} failing"
                    )));
                }
            }
            if let Some(n) = k
                .kind
                .strip_prefix("wait-")
                .and_then(|n| n.parse::<u32>().ok())
            {
                let attempt = self.attempt(id);
                if attempt <= n {
                    return Err(HandlerError::NotYet(format!(
                        "drill: attempt {attempt} of {n} waiting"
                    )));
                }
            }
            match k.kind.as_str() {
                "fail-always" => {
                    return Err(HandlerError::Transient("drill: always failing".into()));
                }
                "reject" => {
                    return Err(HandlerError::Invalid(
                        "drill: rejected by the handler".into(),
                    ));
                }
                _ => {}
            }
        }
        let mut effects = Effects::none()
            .op(StateOp::cmd("INCR").arg(self.count_key(id)))
            .op(StateOp::cmd("INCR").arg(self.total_key()));
        if let Event::KnowledgeUpserted(k) = event {
            effects.push(
                StateOp::cmd("RPUSH")
                    .arg(self.order_key(&k.knowledge_id))
                    .arg(&k.content_hash),
            );
        }
        if let Event::KnowledgeUpserted(k) = event
            && k.kind == "emit-degraded"
        {
            let mut degraded = default_example(EventType::DecisionDegraded);
            if let Event::DecisionDegraded(d) = &mut degraded {
                d.scope = k.knowledge_id.clone();
                d.reason = "drill: emitted by the counting consumer".to_owned();
            }
            effects.emit(degraded);
        }
        Ok(effects)
    }
}
