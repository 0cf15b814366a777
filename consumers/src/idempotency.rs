//! Exactly-once effects through Redis: lease → effect → done.
//!
//! A lease (`SET key <token> NX PX <lease>`) gives one instance the right to
//! process an event. The effects and the done-mark are applied by one Lua script
//! that first checks the lease is still ours, so of two instances racing on an
//! event (a rebalance), only the lease holder applies it, and a crash between
//! "apply" and "mark" cannot happen: they are one step. Both round trips are
//! pipelined per poll batch, not made per message.
//!
//! Redis does not roll back a script's earlier writes if a later command in it
//! fails; handlers must only emit commands that cannot fail on well-formed keys.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{RedisError, Script};

use crate::handler::Effects;

const DONE: &str = "done";

/// KEYS[1] = idempotency key; ARGV = token, done ttl (s), op count, then per op: argc, args...
const APPLY: &str = r#"
local current = redis.call('GET', KEYS[1])
if current == 'done' then return 2 end
if current ~= ARGV[1] then return 0 end
local i = 4
for _ = 1, tonumber(ARGV[3]) do
  local argc = tonumber(ARGV[i])
  local args = {}
  for a = 1, argc do args[a] = ARGV[i + a] end
  i = i + argc + 1
  redis.call(unpack(args))
end
redis.call('SET', KEYS[1], 'done', 'EX', ARGV[2])
return 1
"#;

/// Who may process an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Ours: process it.
    Acquired,
    /// Already processed (by anyone): acknowledge it as a duplicate.
    Done,
    /// Another instance holds the lease: wait for it to finish or expire.
    HeldElsewhere,
}

/// What applying one event's effects did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Applied,
    /// Someone marked it done first: nothing applied.
    AlreadyDone,
    /// Our lease expired and was not renewed: nothing applied; process again.
    LeaseLost,
}

#[derive(Clone)]
pub struct Idempotency {
    connection: ConnectionManager,
    prefix: String,
    token: String,
    done_ttl: Duration,
    lease: Duration,
    script: Script,
}

impl Idempotency {
    pub fn new(
        connection: ConnectionManager,
        group: &str,
        done_ttl: Duration,
        lease: Duration,
    ) -> Self {
        Idempotency {
            connection,
            prefix: format!("opal:idempotency:{group}:"),
            token: format!("lease:{}", uuid::Uuid::new_v4().simple()),
            done_ttl,
            lease,
            script: Script::new(APPLY),
        }
    }

    /// `opal:idempotency:<group>:<event_id>`
    pub fn key(&self, event_id: &str) -> String {
        format!("{}{event_id}", self.prefix)
    }

    /// Takes the lease of every event in one round trip.
    pub async fn lease(&self, event_ids: &[&str]) -> Result<Vec<Lease>, RedisError> {
        if event_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in event_ids {
            pipe.cmd("SET")
                .arg(self.key(id))
                .arg(&self.token)
                .arg("NX")
                .arg("PX")
                .arg(self.lease.as_millis() as u64);
            pipe.cmd("GET").arg(self.key(id));
        }
        let replies: Vec<Option<String>> = pipe.query_async(&mut self.connection.clone()).await?;
        Ok(replies
            .chunks(2)
            .map(|pair| match (pair[0].as_deref(), pair[1].as_deref()) {
                (Some("OK"), _) => Lease::Acquired,
                (_, Some(DONE)) => Lease::Done,
                (_, Some(holder)) if holder == self.token => Lease::Acquired,
                _ => Lease::HeldElsewhere,
            })
            .collect())
    }

    /// Applies each event's state changes and marks it done, atomically per
    /// event and in one round trip for all.
    pub async fn apply(&self, items: &[(&str, &Effects)]) -> Result<Vec<Applied>, RedisError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let build = || {
            let mut pipe = redis::pipe();
            for (event_id, effects) in items {
                let cmd = pipe
                    .cmd("EVALSHA")
                    .arg(self.script.get_hash())
                    .arg(1)
                    .arg(self.key(event_id));
                cmd.arg(&self.token)
                    .arg(self.done_ttl.as_secs().max(1))
                    .arg(effects.ops.len());
                for op in &effects.ops {
                    cmd.arg(op.0.len());
                    for part in &op.0 {
                        cmd.arg(part.as_slice());
                    }
                }
            }
            pipe
        };
        let mut connection = self.connection.clone();
        let replies: Vec<i64> = match build().query_async(&mut connection).await {
            Ok(replies) => replies,
            // After a Redis restart the script cache is empty: load it and go again.
            Err(e) if e.code() == Some("NOSCRIPT") => {
                self.script
                    .prepare_invoke()
                    .load_async(&mut connection)
                    .await?;
                build().query_async(&mut connection).await?
            }
            Err(e) => return Err(e),
        };
        Ok(replies
            .into_iter()
            .map(|r| match r {
                1 => Applied::Applied,
                2 => Applied::AlreadyDone,
                _ => Applied::LeaseLost,
            })
            .collect())
    }
}
