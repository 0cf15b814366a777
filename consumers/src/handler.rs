//! What business logic implements: a handler over decoded events. It knows
//! nothing of Kafka; it reads state from Redis if it needs to and returns the
//! effects to apply exactly once.

use std::future::Future;

use opal_schemas::{Event, EventType};
use redis::ToRedisArgs;
use redis::aio::ConnectionManager;

use crate::dependency::Dependency;

/// Why a handler could not produce effects. The runtime decides what follows
/// (see [`crate::classify`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum HandlerError {
    /// The event breaks a business rule: dead-letter it at once.
    #[error("invalid event: {0}")]
    Invalid(String),
    /// Might succeed if tried again: back off and retry, then dead-letter.
    #[error("transient failure: {0}")]
    Transient(String),
    /// A dependency is down: pause and retry until it returns; never dead-letter.
    #[error("{0} is down: {1}")]
    DependencyDown(Dependency, String),
    /// The event needs another input that has not arrived yet (a join): park its
    /// partition and try again later, without spending retries. The handler
    /// decides when waiting is over (answering `Invalid` then).
    #[error("not yet: {0}")]
    NotYet(String),
    /// Reading the handler's state from Redis failed; [`crate::classify`]
    /// tells an outage (pause) from a command Redis refused (retry, then
    /// dead-letter).
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The name of [`StateOp::expect`]'s guard in the apply script.
pub(crate) const EXPECT: &str = "OPAL.EXPECT";

/// One Redis command, applied atomically with the event's done-mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateOp(pub(crate) Vec<Vec<u8>>);

impl StateOp {
    pub fn cmd(name: &str) -> Self {
        StateOp(vec![name.as_bytes().to_vec()])
    }

    pub fn arg<T: ToRedisArgs>(mut self, arg: T) -> Self {
        self.0.extend(arg.to_redis_args());
        self
    }

    /// A guard, not a command: the event's effects apply only if `key` still
    /// holds `value` (`None`: does not exist); otherwise nothing is applied and
    /// the runtime handles the event again on fresh state. For state that
    /// events of several partitions read and rewrite (optimistic concurrency,
    /// like `WATCH`); meaningful only with [`Handler::reads_own_state`].
    pub fn expect(key: &str, value: Option<&str>) -> Self {
        let op = StateOp::cmd(EXPECT).arg(key);
        match value {
            Some(v) => op.arg(v),
            None => op,
        }
    }

    /// The command and its arguments, as sent to Redis.
    pub fn parts(&self) -> &[Vec<u8>] {
        &self.0
    }
}

/// What processing one event changes: Redis state (applied atomically with the
/// idempotency mark) and events to emit (their ids derived from the input's).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effects {
    pub(crate) ops: Vec<StateOp>,
    pub(crate) emits: Vec<Event>,
}

impl Effects {
    pub fn none() -> Self {
        Effects::default()
    }

    pub fn op(mut self, op: StateOp) -> Self {
        self.ops.push(op);
        self
    }

    pub fn push(&mut self, op: StateOp) {
        self.ops.push(op);
    }

    /// Emits `event`; the runtime sets its event id (deterministic) and correlation id.
    pub fn emit(&mut self, event: Event) {
        self.emits.push(event);
    }

    pub fn ops(&self) -> &[StateOp] {
        &self.ops
    }

    pub fn emits(&self) -> &[Event] {
        &self.emits
    }
}

/// Read access to Redis for handlers that decide on state.
#[derive(Clone)]
pub struct StateReader {
    pub(crate) connection: ConnectionManager,
}

impl StateReader {
    pub fn new(connection: ConnectionManager) -> Self {
        StateReader { connection }
    }

    /// A connection for reads (writes belong in [`Effects`]).
    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }
}

/// Where an event was read from. Handlers that aggregate across partitions
/// (event-time watermarks) need it; most ignore it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// How many partitions the topic has (0 if unknown).
    pub partitions: i32,
}

impl Source {
    /// A source for handler tests.
    pub fn test(topic: &str, partition: i32, partitions: i32) -> Self {
        Source {
            topic: topic.to_owned(),
            partition,
            offset: 0,
            partitions,
        }
    }
}

/// Business logic over decoded events.
pub trait Handler: Send + Sync + 'static {
    /// Name used in metric labels and logs (`diagnostics`, `recommendations`, ...).
    fn name(&self) -> &str;

    /// The event types this handler consumes.
    fn inputs(&self) -> Vec<EventType>;

    /// Whether the handler reads state it changes: then each event's effects are
    /// applied before the next event of the batch is handled (one Redis round trip
    /// per event) instead of once per batch.
    fn reads_own_state(&self) -> bool {
        false
    }

    /// Whether `event` may be handled before its lease is taken. When every
    /// event of a batch may, the runtime handles them first and then leases,
    /// applies and marks them in one Redis round trip instead of two. Only
    /// for events whose handling does nothing but return [`Effects`] without
    /// emits (no I/O, no state of its own): it may be handled when it is
    /// already done (a duplicate) or another instance holds it, its result
    /// dropped, and handled again under a lease. Ignored for handlers that
    /// [`Handler::reads_own_state`].
    fn handles_before_lease(&self, event: &Event) -> bool {
        let _ = event;
        false
    }

    /// Processes one event read from `source`.
    fn handle(
        &self,
        event: &Event,
        source: &Source,
        state: &StateReader,
    ) -> impl Future<Output = Result<Effects, HandlerError>> + Send;
}
