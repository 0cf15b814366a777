//! What the pipeline costs Redis, which bounds its events/s: Redis's CPU per
//! event in the throughput rounds, and the least the spec's design can cost
//! it (one durable key written per event) measured on the same Redis, so the
//! two sit side by side in one run.

use anyhow::Context;
use redis::aio::MultiplexedConnection;

/// Keys per pipelined request in [`floor`]: the pipeline's batch size under load.
const FLOOR_BATCH: usize = 2_000;

/// A connection for reading Redis's CPU and writing the floor's keys.
pub async fn connect(url: &str) -> anyhow::Result<MultiplexedConnection> {
    redis::Client::open(url)
        .context("REDIS_URL is not a Redis URL")?
        .get_multiplexed_async_connection()
        .await
        .context("connecting to Redis")
}

/// Redis's CPU seconds so far, user and system, all its threads (`INFO cpu`:
/// the main thread does the commands and, with `appendfsync always`, the
/// append-only file's writes and fsyncs).
pub async fn cpu_seconds(conn: &mut MultiplexedConnection) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(conn)
        .await
        .context("Redis INFO cpu")?;
    parse_cpu_seconds(&info)
}

/// `used_cpu_user` + `used_cpu_sys` from `INFO cpu`'s text, not the
/// `_children` (forked rewrites, already over) or `_main_thread` lines.
fn parse_cpu_seconds(info: &str) -> anyhow::Result<f64> {
    let field = |name: &str| -> anyhow::Result<f64> {
        info.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .with_context(|| format!("INFO cpu has no {name}"))?
            .trim()
            .parse()
            .with_context(|| format!("INFO cpu's {name} is not a number"))
    };
    Ok(field("used_cpu_user")? + field("used_cpu_sys")?)
}

/// Empties Redis, its append-only file included, as a fresh stack's is: a
/// key costs Redis more in a bigger keyspace, and a rewrite of a big
/// append-only file (a fork, then copy-on-write) costs its main thread while
/// it runs. The pipeline's throughput rounds start from here, so each meets
/// the Redis that a build run first on a fresh stack meets.
pub async fn empty(conn: &mut MultiplexedConnection) -> anyhow::Result<()> {
    // Redis refuses a rewrite while one (an automatic one) runs.
    until_rewritten(conn).await?;
    redis::cmd("FLUSHALL")
        .arg("SYNC")
        .query_async::<()>(conn)
        .await
        .context("Redis FLUSHALL")?;
    let _: redis::Value = redis::cmd("BGREWRITEAOF")
        .query_async(conn)
        .await
        .context("Redis BGREWRITEAOF")?;
    until_rewritten(conn).await
}

/// Waits until no append-only file rewrite runs or is scheduled.
async fn until_rewritten(conn: &mut MultiplexedConnection) -> anyhow::Result<()> {
    loop {
        let info: String = redis::cmd("INFO")
            .arg("persistence")
            .query_async(conn)
            .await
            .context("Redis INFO persistence")?;
        if !rewriting(&info) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Whether `INFO persistence` says an append-only file rewrite is running or
/// scheduled.
fn rewriting(info: &str) -> bool {
    info.lines().any(|line| {
        matches!(
            line.trim(),
            "aof_rewrite_in_progress:1" | "aof_rewrite_scheduled:1"
        )
    })
}

/// Redis's CPU per key, in µs, for `keys` fresh keys written as the pipeline
/// writes its done-marks, `SET <opal:idempotency:group:uuid> done EX 86400`, but
/// as bare commands pipelined 2 000 at a time: no script, no lease, no check.
/// No design that writes a durable key per event costs Redis less.
///
/// Written to database 1, empty, and flushed after: a key costs more in a
/// bigger keyspace (the run's own keys are in database 0), so the floor is
/// taken from an empty one to `keys`, as the pipeline's first round is.
pub async fn floor(url: &str, group: &str, keys: u64) -> anyhow::Result<f64> {
    let mut conn = connect(url).await?;
    redis::cmd("SELECT")
        .arg(1)
        .query_async::<()>(&mut conn)
        .await
        .context("Redis SELECT 1")?;
    let size: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await?;
    anyhow::ensure!(size == 0, "Redis's database 1 is not empty ({size} keys)");
    // Keys as long as real ones (a UUID's 36 characters).
    let mut written = 0;
    let before = cpu_seconds(&mut conn).await?;
    while written < keys {
        let mut pipe = redis::pipe();
        let end = (written + FLOOR_BATCH as u64).min(keys);
        for i in written..end {
            pipe.cmd("SET")
                .arg(format!(
                    "opal:idempotency:{group}:00000000-0000-4000-8000-{i:012x}"
                ))
                .arg("done")
                .arg("EX")
                .arg(86_400)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn)
            .await
            .context("the floor's SETs")?;
        written = end;
    }
    let after = cpu_seconds(&mut conn).await?;
    redis::cmd("FLUSHDB")
        .query_async::<()>(&mut conn)
        .await
        .context("Redis FLUSHDB of database 1")?;
    Ok((after - before) * 1e6 / keys.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_seconds_are_the_servers_own_user_and_system_time() {
        let info = "# CPU\r\nused_cpu_sys_children:7.5\r\nused_cpu_user_children:9.25\r\n\
                    used_cpu_sys:0.5\r\nused_cpu_user:4.25\r\nused_cpu_sys_main_thread:0.25\r\n\
                    used_cpu_user_main_thread:4\r\n";
        assert_eq!(parse_cpu_seconds(info).expect("parsed"), 4.75);
    }

    #[test]
    fn a_rewrite_running_or_scheduled_is_seen_and_none_is_not() {
        let idle = "# Persistence\r\naof_enabled:1\r\naof_rewrite_in_progress:0\r\n\
                    aof_rewrite_scheduled:0\r\n";
        assert!(!rewriting(idle));
        assert!(rewriting(&idle.replace("in_progress:0", "in_progress:1")));
        assert!(rewriting(&idle.replace("scheduled:0", "scheduled:1")));
    }

    #[test]
    fn a_missing_or_garbled_field_is_an_error_naming_it() {
        let missing = parse_cpu_seconds("# CPU\r\nused_cpu_user:1.0\r\n").expect_err("no sys");
        assert!(missing.to_string().contains("used_cpu_sys"), "{missing}");
        let garbled =
            parse_cpu_seconds("used_cpu_sys:x\r\nused_cpu_user:1.0\r\n").expect_err("garbled");
        assert!(
            format!("{garbled:#}").contains("not a number"),
            "{garbled:#}"
        );
    }
}
