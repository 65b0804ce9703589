//! The Redis connection: one auto-reconnecting multiplexed connection per process.
//!
//! Connected lazily, so an instance starts (and reports "not ready") while Redis is down
//! and recovers without a restart when it comes back. Today it backs the readiness check;
//! shared rate limits and revocation state come with scale-out.

use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

#[derive(Clone)]
pub struct Redis {
    manager: ConnectionManager,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never print it.
        f.write_str("Redis")
    }
}

impl Redis {
    /// Parses `url` and prepares the connection without opening it.
    pub fn connect_lazy(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("REDIS_URL is not a valid Redis URL ({:?})", e.kind()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1);
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .context("cannot prepare the Redis connection")?;
        Ok(Self { manager })
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        let mut conn = self.manager.clone();
        let pong: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| anyhow::anyhow!("Redis did not answer PING ({:?})", e.kind()))?;
        anyhow::ensure!(pong == "PONG", "Redis answered PING unexpectedly");
        Ok(())
    }
}
