//! Exactly-once effects through Redis: lease → effect → done (or, for events
//! handled before their lease, effect → lease and done in one step, below).
//!
//! A lease (`SET key <token> NX PX <lease>`) gives one instance the right to
//! process an event. The effects and the done-mark are applied by a Lua script
//! that first checks the lease is still ours, so of two instances racing on an
//! event (a rebalance), only the lease holder applies it, and a crash between
//! "apply" and "mark" cannot happen: they are one step. Each step is one script
//! call for the whole poll batch: two Redis round trips and two commands per
//! batch, instead of one command (or three) per event. Leases of events an
//! instance took but will not process (shutdown came while they waited) are
//! given back (`release`), so that their next owner need not wait for them
//! to expire.
//!
//! Events a handler may process before holding their lease (its work has no
//! effect but the returned [`Effects`], see
//! [`crate::Handler::handles_before_lease`]) skip the lease round trip:
//! `apply_unleased` takes the lease and turns it into the done-mark in one
//! step, where nobody holds one. Exactly once holds as before, since whether
//! an event is done and its effects are decided in one script; an instance
//! that finds another's lease leaves that event, and the ones after it, to
//! the leased path.
//!
//! Leases are not durable: the lease script writes nothing to the append-only
//! file or to replicas (`redis.set_repl(redis.REPL_NONE)`), so with
//! `appendfsync always` only the apply's round trip waits for an fsync.
//! Losing leases in a Redis crash is losing them to expiry early: the apply
//! finds its lease gone and applies nothing, and the event is leased and
//! handled again. Done-marks and effects are written as usual. Measured with a
//! 2 000-event batch: Redis's CPU per event falls by about a third, and its
//! append-only file by half.
//!
//! Each event's effects apply as a unit. Redis does not roll back a script's
//! earlier writes when a later command fails, so the apply script snapshots
//! (`DUMP`) the keys an event's commands touch before running them and, if
//! Redis refuses one (`WRONGTYPE`, a value that is not a number, `OOM`),
//! restores them and reports that event as refused; the other events of the
//! batch apply as usual. State commands name their key first (`HINCRBY key`,
//! `ZADD key`, ...), as every single-key Redis command does.
//! The scripts touch keys they are not given in KEYS (the handlers' state), so
//! they need a single Redis, not Redis Cluster.

use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Cmd, ErrorKind, FromRedisValue, RedisError, RedisWrite, Script, ServerErrorKind};

use crate::handler::Effects;

/// KEYS = idempotency keys; ARGV = token, lease ms.
/// One character per key: 1 = the lease is ours, 2 = already done, 0 = held
/// elsewhere. (One string, not an array: parsing an array reply costs the
/// client more per element than the script does.)
const LEASE: &str = r#"
-- Leases stay in memory: not written to the append-only file or replicas,
-- so this script's round trip waits for no fsync (see the module docs).
redis.replicate_commands()
redis.set_repl(redis.REPL_NONE)
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
return table.concat(out)
"#;

/// KEYS = idempotency keys; ARGV = token, done ttl (s), lease (ms), unleased
/// ("0": only our lease counts as ours; otherwise a key holding no lease
/// does too, see [`Idempotency::apply_unleased`], and the argument is this
/// call's place in its instance's [`Chain`]: "<seq>", or "<seq>:<after>" to
/// apply nothing unless the call `after` applied all of its events), the
/// chain's key (unleased), then for
/// each key with state changes, in KEYS order: its position in KEYS (from 1),
/// op count, then per op: argc, args... Keys without any (most events; all in
/// the benchmark) take no argument: an op count of "0" per key had cost Redis
/// ~0.16 us per event (~6% of this script) in parsing and Lua strings.
/// Returns a string of one character per key,
/// then the error of each "E" in it, in order: "1" = applied and marked
/// done, "2" = already done (nothing applied), "0" = the lease is not ours
/// (nothing applied), "3" = a guard (`OPAL.EXPECT key [value]`) failed (nothing
/// applied, the lease kept), "E" = Redis refused one of the event's
/// commands (nothing applied: its earlier commands were undone, the lease
/// kept), "4" = deferred: an earlier event of this call was refused (or,
/// unleased, held elsewhere or its guard failed), so to keep each
/// partition's order nothing after it is applied (a lease kept, if any).
const APPLY: &str = r#"
-- Replicate what this script does, not the script: it reads leases, which
-- are not in the append-only file (Redis 6.2 replicates scripts verbatim).
redis.replicate_commands()
local out = {}
local errors = {}
local unleased = ARGV[4] ~= '0'
local i = 6
local stopped = false
local seq, after
-- Chained behind a call that stopped (or never ran, or has not run yet):
-- nothing is applied, so no partition's events pass that call's.
local fenced = false
if unleased then
  seq, after = string.match(ARGV[4], '^(%d+):?(%d*)$')
  if after ~= '' and redis.call('GET', ARGV[5]) ~= after then
    stopped = true
    fenced = true
  end
end
-- The position of the next key with state changes (nil: none left).
local listed = tonumber(ARGV[i])
for k, key in ipairs(KEYS) do
  local ops = 0
  local here = k == listed
  if here then
    ops = tonumber(ARGV[i + 1])
    i = i + 2
  end
  if ops == 0 and not stopped and unleased then
    -- Nothing to apply, no lease taken: one call marks it done unless a
    -- lease or the mark is there already. (Not `NX GET`: Redis 6.2 refuses it.)
    if redis.call('SET', key, 'done', 'NX', 'EX', ARGV[2]) then
      out[k] = '1'
    else
      local was = redis.call('GET', key)
      if was == 'done' then
        out[k] = '2'
      elseif was == ARGV[1] then
        redis.call('SET', key, 'done', 'EX', ARGV[2])
        out[k] = '1'
      else
        -- Another instance's lease: it goes first, and so the rest wait.
        out[k] = '0'
        stopped = true
      end
    end
  elseif ops == 0 and not stopped then
    -- Nothing to apply (most events): one call turns our lease into the
    -- done-mark instead of GET then SET (about a quarter of this script's time).
    -- Unconditional (no XX), so that replaying it from the append-only file,
    -- where the lease never was, still leaves the mark.
    local was = redis.call('SET', key, 'done', 'GET', 'EX', ARGV[2])
    if was == ARGV[1] then
      out[k] = '1'
    elseif was == 'done' then
      out[k] = '2'
    else
      if was then
        -- Another instance's lease: put it back (for a full lease, as its
        -- time left is gone with it; it only delays a crashed holder's expiry).
        redis.call('SET', key, was, 'PX', ARGV[3])
      else
        -- Nobody's lease (it expired): take the mark back.
        redis.call('DEL', key)
      end
      out[k] = '0'
    end
  else
  local current = redis.call('GET', key)
  local mine = current == ARGV[1] or (unleased and not current)
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
    out[k] = '2'
  elseif not mine then
    out[k] = '0'
    -- Unleased, the events after it are not held back by leases of ours.
    if unleased then stopped = true end
  elseif fenced then
    -- Deferred, not a conflict: its guard was not what stopped it.
    out[k] = '4'
  elseif not fresh then
    out[k] = '3'
    if unleased then stopped = true end
  elseif stopped then
    out[k] = '4'
  else
    -- What every command but the last touches, to undo them if a later one is refused.
    local saved = {}
    for c = 1, #commands - 1 do
      local name = commands[c][2]
      if name ~= nil and saved[name] == nil then
        saved[name] = { dump = redis.call('DUMP', name), ttl = redis.call('PTTL', name) }
      end
    end
    local refused = nil
    for _, args in ipairs(commands) do
      local reply = redis.pcall(unpack(args))
      if type(reply) == 'table' and reply.err then
        refused = reply.err
        break
      end
    end
    if refused then
      for name, s in pairs(saved) do
        if s.dump then
          local ttl = 0
          if s.ttl > 0 then ttl = s.ttl end
          redis.call('RESTORE', name, ttl, s.dump, 'REPLACE')
        else
          redis.call('DEL', name)
        end
      end
      out[k] = 'E'
      errors[#errors + 1] = refused
      stopped = true
    else
      redis.call('SET', key, 'done', 'EX', ARGV[2])
      out[k] = '1'
    end
  end
  end
  if here then listed = tonumber(ARGV[i]) end
end
if unleased and not stopped then
  -- Every event settled: calls chained behind this one may apply. Kept in
  -- memory only, like a lease: lost, the next call defers and goes the
  -- leased way.
  redis.set_repl(redis.REPL_NONE)
  redis.call('SET', ARGV[5], seq, 'PX', ARGV[3])
  redis.set_repl(redis.REPL_ALL)
end
table.insert(errors, 1, table.concat(out))
return errors
"#;

/// KEYS = idempotency keys; ARGV = token. Deletes each key that holds our
/// lease, and nothing else (done-marks, other instances' leases). Returns
/// how many it deleted. Like the lease, written nowhere (see the module docs).
const RELEASE: &str = r#"
redis.replicate_commands()
redis.set_repl(redis.REPL_NONE)
local released = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
    released = released + 1
  end
end
return released
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
    /// Our lease expired and was not renewed, or (unleased) another instance
    /// holds it: nothing applied; process again.
    LeaseLost,
    /// State a guard watched changed since the handler read it: nothing
    /// applied; handle again on fresh state.
    Conflict,
    /// An earlier event of the same apply was refused (or, unleased, held
    /// elsewhere or refused by a guard): nothing applied, so that each
    /// partition's events apply in order; handle again (no retry spent).
    Deferred,
}

/// One `apply_unleased` call in its instance's sequence, so that a call sent
/// before an earlier one answered can be made to apply nothing unless that
/// one applied all of its events (see [`Idempotency::apply_unleased_after`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain(u64);

/// Redis refused one of an event's state commands (its reply, e.g.
/// `WRONGTYPE Operation against a key holding the wrong kind of value`):
/// nothing of the event was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

#[derive(Clone)]
pub struct Idempotency {
    connection: ConnectionManager,
    prefix: String,
    token: String,
    /// Where the apply script notes the last unleased call of this instance
    /// that settled all its events ([`Chain`]).
    chain_key: String,
    /// The last [`Chain`] handed out, shared by the clones (one instance).
    chain: Arc<AtomicU64>,
    done_ttl: Duration,
    lease: Duration,
    lease_script: Script,
    apply_script: Script,
    release_script: Script,
}

impl Idempotency {
    /// Keys under `topic_prefix` (as the handlers' state is), so
    /// environments that share a Redis under different prefixes never take
    /// each other's events for duplicates.
    pub fn new(
        connection: ConnectionManager,
        topic_prefix: &str,
        group: &str,
        done_ttl: Duration,
        lease: Duration,
    ) -> Self {
        let prefix = format!("{topic_prefix}opal:idempotency:{group}:");
        let token = format!("lease:{}", uuid::Uuid::new_v4().simple());
        Idempotency {
            connection,
            // Event ids are UUIDs: no event's key ends in a token.
            chain_key: format!("{prefix}chain:{token}"),
            chain: Arc::new(AtomicU64::new(0)),
            prefix,
            token,
            done_ttl,
            lease,
            lease_script: Script::new(LEASE),
            apply_script: Script::new(APPLY),
            release_script: Script::new(RELEASE),
        }
    }

    /// Appends `event_id`'s key, `<topic prefix>opal:idempotency:<group>:<event_id>`,
    /// to `cmd` as one argument, without building a `String`.
    fn write_key(&self, cmd: &mut Cmd, event_id: &str) {
        let mut arg = cmd.writer_for_next_arg();
        // Writing into the command's own buffer cannot fail.
        let _ = arg.write_all(self.prefix.as_bytes());
        let _ = arg.write_all(event_id.as_bytes());
    }

    /// `EVALSHA <script> <keys>` with `keys` event ids' keys, ready for the
    /// caller's arguments. Built on `Cmd` rather than redis'
    /// `ScriptInvocation`, which copies every key and argument into an
    /// allocation of its own and then again into the command. Sized up front
    /// for the keys: grown as it is written, a 2 000-key command's buffer is
    /// copied a dozen times.
    fn script_cmd<'a>(
        &self,
        script: &Script,
        event_ids: impl ExactSizeIterator<Item = &'a str>,
    ) -> Cmd {
        let keys = event_ids.len();
        // Event ids are UUIDs (36 bytes).
        let mut cmd = Cmd::with_capacity(keys + 8, keys * (self.prefix.len() + 36) + 128);
        cmd.arg("EVALSHA").arg(script.get_hash()).arg(keys);
        for id in event_ids {
            self.write_key(&mut cmd, id);
        }
        cmd
    }

    /// Runs a script command; if Redis has lost the script (a restart, SCRIPT
    /// FLUSH) it is loaded and the command sent again, as redis'
    /// `ScriptInvocation` does.
    async fn run_script<T: FromRedisValue>(
        &self,
        source: &str,
        cmd: &Cmd,
    ) -> Result<T, RedisError> {
        let mut connection = self.connection.clone();
        match cmd.query_async(&mut connection).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(source)
                    .query_async::<()>(&mut connection)
                    .await?;
                cmd.query_async(&mut connection).await
            }
            reply => reply,
        }
    }

    /// Takes the lease of every event in one round trip.
    pub async fn lease(&self, event_ids: &[&str]) -> Result<Vec<Lease>, RedisError> {
        if event_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = self.script_cmd(&self.lease_script, event_ids.iter().copied());
        cmd.arg(&self.token).arg(self.lease.as_millis() as u64);
        let replies: Vec<u8> = self.run_script(LEASE, &cmd).await?;
        Ok(replies
            .into_iter()
            .map(|r| match r {
                b'1' => Lease::Acquired,
                b'2' => Lease::Done,
                _ => Lease::HeldElsewhere,
            })
            .collect())
    }

    /// Gives back the leases this instance holds on `event_ids`, events it
    /// will not process (shutdown came first), so that their next owner takes
    /// them at once instead of waiting for them to expire. Returns how many
    /// it held.
    pub async fn release(&self, event_ids: &[&str]) -> Result<u64, RedisError> {
        if event_ids.is_empty() {
            return Ok(0);
        }
        let mut cmd = self.script_cmd(&self.release_script, event_ids.iter().copied());
        cmd.arg(&self.token);
        self.run_script(RELEASE, &cmd).await
    }

    /// Applies each event's state changes and marks it done, atomically, in one
    /// round trip for all, where this instance holds the event's lease. An
    /// event whose commands Redis refuses is left unapplied (`Err(Refused)`);
    /// the others apply.
    pub async fn apply(
        &self,
        items: &[(&str, &Effects)],
    ) -> Result<Vec<Result<Applied, Refused>>, RedisError> {
        self.apply_script(items, None).await
    }

    /// As [`Idempotency::apply`], for events nobody holds a lease on: the
    /// lease is taken and turned into the done-mark in the same step, so an event handled
    /// before it was leased settles in one round trip instead of two. An
    /// event already done answers `AlreadyDone`; one another instance holds
    /// answers `LeaseLost`, and then, to keep each partition's order, every
    /// event after it is left unapplied (`Deferred`, or `LeaseLost` if held
    /// too), as after a guard that failed (`Conflict`) or a refusal.
    pub async fn apply_unleased(
        &self,
        items: &[(&str, &Effects)],
    ) -> Result<Vec<Result<Applied, Refused>>, RedisError> {
        self.apply_unleased_after(items, self.next_chain(), None)
            .await
    }

    /// The place of a next `apply_unleased_after` call in this instance's sequence.
    pub fn next_chain(&self) -> Chain {
        Chain(self.chain.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// As [`Idempotency::apply_unleased`], as call `this` of the instance's
    /// sequence; with `after`, it applies nothing (every event `Deferred`,
    /// or answered as done or held elsewhere) unless call `after` ran before
    /// it and applied or found done every one of its events. The command is
    /// built at once and the returned future owns it, so a batch's call can
    /// be sent and left in flight while the batch before it is still in
    /// Redis, without passing any event that batch leaves unsettled.
    pub fn apply_unleased_after(
        &self,
        items: &[(&str, &Effects)],
        this: Chain,
        after: Option<Chain>,
    ) -> impl Future<Output = Result<Vec<Result<Applied, Refused>>, RedisError>> + Send + 'static
    {
        let place = match after {
            Some(after) => format!("{}:{}", this.0, after.0),
            None => this.0.to_string(),
        };
        let cmd = self.apply_cmd(items, Some(&place));
        let idempotency = self.clone();
        async move { idempotency.run_apply(cmd).await }
    }

    /// The apply script, leased (`place` None) or unleased as call `place` of the chain.
    async fn apply_script(
        &self,
        items: &[(&str, &Effects)],
        place: Option<&str>,
    ) -> Result<Vec<Result<Applied, Refused>>, RedisError> {
        self.run_apply(self.apply_cmd(items, place)).await
    }

    /// The apply script's command (None: nothing to apply).
    fn apply_cmd(&self, items: &[(&str, &Effects)], place: Option<&str>) -> Option<Cmd> {
        if items.is_empty() {
            return None;
        }
        let mut cmd = self.script_cmd(&self.apply_script, items.iter().map(|(id, _)| *id));
        cmd.arg(&self.token)
            .arg(self.done_ttl.as_secs().max(1))
            .arg(self.lease.as_millis() as u64)
            .arg(place.unwrap_or("0"))
            .arg(place.map_or("", |_| self.chain_key.as_str()));
        for (position, (_, effects)) in (1..).zip(items) {
            if effects.ops.is_empty() {
                continue;
            }
            cmd.arg(position).arg(effects.ops.len());
            for op in &effects.ops {
                cmd.arg(op.0.len());
                for part in &op.0 {
                    cmd.arg(part.as_slice());
                }
            }
        }
        Some(cmd)
    }

    /// Sends an apply command and reads its answer, one per event.
    async fn run_apply(
        &self,
        cmd: Option<Cmd>,
    ) -> Result<Vec<Result<Applied, Refused>>, RedisError> {
        let Some(cmd) = cmd else {
            return Ok(Vec::new());
        };
        let mut replies: std::vec::IntoIter<String> = self
            .run_script::<Vec<String>>(APPLY, &cmd)
            .await?
            .into_iter();
        let codes = replies.next().unwrap_or_default();
        Ok(codes
            .bytes()
            .map(|code| match code {
                b'1' => Ok(Applied::Applied),
                b'2' => Ok(Applied::AlreadyDone),
                b'3' => Ok(Applied::Conflict),
                b'0' => Ok(Applied::LeaseLost),
                b'4' => Ok(Applied::Deferred),
                b'E' => Err(Refused(replies.next().unwrap_or_default())),
                other => Err(Refused(format!(
                    "unexpected reply '{}' from the apply script",
                    char::from(other)
                ))),
            })
            .collect())
    }
}
