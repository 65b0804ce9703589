//! Redis: the state that several instances share, and nothing that must survive Redis.
//!
//! - **Rate limits** ([`Redis::gcra`]): GCRA in one Lua script, so a check-and-consume of
//!   several limits is one atomic round trip, and the time is Redis's own (`TIME`), so
//!   instances with skewed clocks still agree.
//! - **Invalidation** ([`Redis::publish_invalidation`], [`Redis::subscribe_invalidations`]):
//!   a pub/sub channel telling every instance to forget cached session liveness or
//!   permissions. A message can only make an instance *forget* (and re-read the database);
//!   it never grants anything, so whoever can publish to Redis can cost database reads, not
//!   bypass a check.
//!
//! Every key and the channel start with `RAMPART_REDIS_PREFIX`, and the only commands are
//! `PING`, `EVALSHA` and `SCRIPT LOAD` (the script calls `TIME`, `GET`, `SET`), `PUBLISH`,
//! `SUBSCRIBE`/`UNSUBSCRIBE`, and `AUTH`/`SELECT` from the URL (no `CLIENT SETINFO`): the
//! least-privilege ACL rule in `docs/redis/rampart.acl` allows exactly these, so a new
//! command must be added there too. The commands go over one auto-reconnecting multiplexed
//! connection per process, connected lazily, so an instance starts (and reports "not
//! ready") while Redis is down and recovers without a restart when it comes back. Callers
//! decide what a failure means (see `docs/deployment.md`).

use std::time::Duration;

use anyhow::Context;
use futures_util::{Stream, StreamExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How long a command may take before the caller falls back.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// KEYS: one key per limit; ARGV: per key, its emission interval and its tolerance (the
/// whole period), in microseconds. Checks the limits in order and consumes each one that
/// admits the request; stops at the first that refuses and returns its wait in
/// microseconds (0 when every limit admitted the request). A limit of N per period P is
/// the interval P/N with tolerance P: a burst of N, then one every P/N (contract §9).
/// Keys expire when their budget is full again, so idle clients cost no memory.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - tolerance
  if allow_at > now then
    return allow_at - now
  end
  redis.call('SET', key, string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
end
return 0
";

/// `what` failed, with the Redis error's kind and every cause below it, so that a log line
/// names the real problem (e.g. `invalid peer certificate: UnknownIssuer` for a `rediss://`
/// server whose CA is not trusted) instead of only `Io`. A layer that repeats the one above
/// it (redis-rs displays an I/O error as its inner error) is printed once. None of these
/// texts holds the URL or its password: redis-rs's errors name commands and causes only.
fn failure(what: &str, error: &redis::RedisError) -> anyhow::Error {
    let mut text = format!("{what} ({:?})", error.kind());
    let mut previous = String::new();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        let shown = e.to_string();
        if !shown.is_empty() && !previous.contains(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        previous = shown;
        cause = e.source();
    }
    anyhow::anyhow!(text)
}

/// One limit to check: the key's name under the prefix, and its quota.
#[derive(Debug, Clone, Copy)]
pub struct Limit<'a> {
    /// e.g. `login` (the limiter) and the client's address.
    pub name: &'a str,
    pub subject: &'a str,
    pub burst: u32,
    pub period: Duration,
}

#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    manager: ConnectionManager,
    prefix: String,
    gcra: std::sync::Arc<redis::Script>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never print it.
        f.write_str("Redis")
    }
}

/// Runs `call` in a `redis` client span naming the command only (never a key or a value:
/// keys hold client addresses and user ids); only when traces are exported.
async fn in_redis_span<F: std::future::Future>(command: &'static str, call: F) -> F::Output {
    use opentelemetry::KeyValue;
    rampart_core::otel::in_span(
        "redis",
        opentelemetry::trace::SpanKind::Client,
        || {
            vec![
                KeyValue::new("db.system.name", "redis"),
                KeyValue::new("db.operation.name", command),
            ]
        },
        call,
    )
    .await
}

/// Gauge: 1 when Redis answered the last check (at each scrape), 0 when not (contract §12).
pub const REDIS_UP: &str = "rampart_redis_up";

impl Redis {
    /// Parses `url` and prepares the connection without opening it.
    pub fn connect_lazy(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let info = redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(|e| anyhow::anyhow!("REDIS_URL is not a valid Redis URL ({:?})", e.kind()))?;
        // No `CLIENT SETINFO` after connecting: the least-privilege ACL user of
        // docs/redis/rampart.acl may run only the commands Rampart needs.
        let settings = info.redis_settings().clone().set_skip_set_lib_name();
        let client = redis::Client::open(info.set_redis_settings(settings))
            .map_err(|e| anyhow::anyhow!("REDIS_URL is not a valid Redis URL ({:?})", e.kind()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1);
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .context("cannot prepare the Redis connection")?;
        Ok(Self {
            client,
            manager,
            prefix: prefix.to_owned(),
            gcra: std::sync::Arc::new(redis::Script::new(GCRA)),
        })
    }

    /// Pings Redis and sets [`REDIS_UP`] to 1 when it answered within `within`, else 0.
    pub async fn record_up(&self, within: std::time::Duration) {
        let up = matches!(tokio::time::timeout(within, self.ping()).await, Ok(Ok(())));
        metrics::gauge!(REDIS_UP).set(if up { 1.0 } else { 0.0 });
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        let mut conn = self.manager.clone();
        let pong: String = in_redis_span("PING", redis::cmd("PING").query_async(&mut conn))
            .await
            .map_err(|e| failure("Redis did not answer PING", &e))?;
        anyhow::ensure!(pong == "PONG", "Redis answered PING unexpectedly");
        Ok(())
    }

    /// Checks and consumes `limits` in order, atomically (see `GCRA`). `Ok(None)`: every
    /// limit admitted the request; `Ok(Some(wait))`: one refused it, retry after `wait`.
    pub async fn gcra(&self, limits: &[Limit<'_>]) -> anyhow::Result<Option<Duration>> {
        let mut invocation = self.gcra.prepare_invoke();
        for limit in limits {
            let period_us = u64::try_from(limit.period.as_micros()).unwrap_or(u64::MAX);
            let interval_us = (period_us / u64::from(limit.burst.max(1))).max(1);
            invocation
                .key(format!(
                    "{}:rl:{}:{}",
                    self.prefix, limit.name, limit.subject
                ))
                .arg(interval_us)
                .arg(period_us);
        }
        let mut conn = self.manager.clone();
        let wait_us: i64 = in_redis_span("EVALSHA", invocation.invoke_async(&mut conn))
            .await
            .map_err(|e| failure("Redis rate-limit script failed", &e))?;
        Ok((wait_us > 0).then(|| Duration::from_micros(wait_us.unsigned_abs())))
    }

    fn channel(&self) -> String {
        format!("{}:invalidate", self.prefix)
    }

    /// Tells every instance (this one included) to forget what `message` names.
    pub async fn publish_invalidation(&self, message: &str) -> anyhow::Result<()> {
        let mut conn = self.manager.clone();
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(self.channel()).arg(message);
        let _receivers: i64 = in_redis_span("PUBLISH", publish.query_async(&mut conn))
            .await
            .map_err(|e| failure("Redis PUBLISH failed", &e))?;
        Ok(())
    }

    /// A dedicated connection subscribed to the invalidation channel; the stream ends when
    /// that connection is lost (the caller then resubscribes).
    pub async fn subscribe_invalidations(
        &self,
    ) -> anyhow::Result<impl Stream<Item = String> + Send + use<>> {
        let mut pubsub = tokio::time::timeout(CONNECT_TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(|_| anyhow::anyhow!("Redis did not answer in time"))?
            .map_err(|e| failure("cannot open the Redis subscription", &e))?;
        tokio::time::timeout(CONNECT_TIMEOUT, pubsub.subscribe(self.channel()))
            .await
            .map_err(|_| anyhow::anyhow!("Redis did not answer in time"))?
            .map_err(|e| failure("Redis SUBSCRIBE failed", &e))?;
        Ok(pubsub
            .into_on_message()
            .filter_map(|msg| std::future::ready(msg.get_payload::<String>().ok())))
    }
}
