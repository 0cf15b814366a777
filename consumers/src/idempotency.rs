//! Exactly-once effects through Redis: lease → effect → done.
//!
//! A lease (`SET key <token> NX PX <lease>`) gives one instance the right to
//! process an event. The effects and the done-mark are applied by a Lua script
//! that first checks the lease is still ours, so of two instances racing on an
//! event (a rebalance), only the lease holder applies it, and a crash between
//! "apply" and "mark" cannot happen: they are one step. Each step is one script
//! call for the whole poll batch: two Redis round trips and two commands per
//! batch, instead of one command (or three) per event.
//!
//! Redis does not roll back a script's earlier writes if a later command in it
//! fails; handlers must only emit commands that cannot fail on well-formed keys.
//! The scripts touch keys they are not given in KEYS (the handlers' state), so
//! they need a single Redis, not Redis Cluster.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{RedisError, Script};

use crate::handler::Effects;

/// KEYS = idempotency keys; ARGV = token, lease ms.
/// Per key: 1 = the lease is ours, 2 = already done, 0 = held elsewhere.
const LEASE: &str = r#"
local out = {}
for k, key in ipairs(KEYS) do
  if redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) then
    out[k] = 1
  else
    local current = redis.call('GET', key)
    if current == 'done' then out[k] = 2
    elseif current == ARGV[1] then out[k] = 1
    else out[k] = 0 end
  end
end
return out
"#;

/// KEYS = idempotency keys; ARGV = token, done ttl (s), then per key: op count,
/// then per op: argc, args... Per key: 1 = applied and marked done, 2 = already
/// done (nothing applied), 0 = the lease is not ours (nothing applied), 3 = a
/// guard (`OPAL.EXPECT key [value]`) failed: nothing applied, the lease kept.
const APPLY: &str = r#"
local out = {}
local i = 3
for k, key in ipairs(KEYS) do
  local current = redis.call('GET', key)
  local mine = current == ARGV[1]
  local ops = tonumber(ARGV[i])
  i = i + 1
  local commands = {}
  local fresh = true
  for _ = 1, ops do
    local argc = tonumber(ARGV[i])
    if mine then
      local args = {}
      for a = 1, argc do args[a] = ARGV[i + a] end
      if args[1] == 'OPAL.EXPECT' then
        local now = redis.call('GET', args[2])
        if now == false then now = nil end
        if now ~= args[3] then fresh = false end
      else
        commands[#commands + 1] = args
      end
    end
    i = i + argc + 1
  end
  if current == 'done' then
    out[k] = 2
  elseif not mine then
    out[k] = 0
  elseif not fresh then
    out[k] = 3
  else
    for _, args in ipairs(commands) do redis.call(unpack(args)) end
    redis.call('SET', key, 'done', 'EX', ARGV[2])
    out[k] = 1
  end
end
return out
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
    /// State a guard watched changed since the handler read it: nothing
    /// applied; handle again on fresh state.
    Conflict,
}

#[derive(Clone)]
pub struct Idempotency {
    connection: ConnectionManager,
    prefix: String,
    token: String,
    done_ttl: Duration,
    lease: Duration,
    lease_script: Script,
    apply_script: Script,
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
            lease_script: Script::new(LEASE),
            apply_script: Script::new(APPLY),
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
        let mut invocation = self.lease_script.prepare_invoke();
        for id in event_ids {
            invocation.key(self.key(id));
        }
        invocation
            .arg(&self.token)
            .arg(self.lease.as_millis() as u64);
        // invoke_async sends EVALSHA and loads the script on NOSCRIPT (after a Redis restart).
        let replies: Vec<i64> = invocation
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(replies
            .into_iter()
            .map(|r| match r {
                1 => Lease::Acquired,
                2 => Lease::Done,
                _ => Lease::HeldElsewhere,
            })
            .collect())
    }

    /// Applies each event's state changes and marks it done, atomically, in one
    /// round trip for all.
    pub async fn apply(&self, items: &[(&str, &Effects)]) -> Result<Vec<Applied>, RedisError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.apply_script.prepare_invoke();
        invocation
            .arg(&self.token)
            .arg(self.done_ttl.as_secs().max(1));
        for (event_id, effects) in items {
            invocation.key(self.key(event_id)).arg(effects.ops.len());
            for op in &effects.ops {
                invocation.arg(op.0.len());
                for part in &op.0 {
                    invocation.arg(part.as_slice());
                }
            }
        }
        let replies: Vec<i64> = invocation
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(replies
            .into_iter()
            .map(|r| match r {
                1 => Applied::Applied,
                2 => Applied::AlreadyDone,
                3 => Applied::Conflict,
                _ => Applied::LeaseLost,
            })
            .collect())
    }
}
