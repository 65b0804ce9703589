//! The per-client-IP rate limits (contract §9): GCRA, a burst of N then an even refill over
//! the period, answering 429 with `Retry-After` (whole seconds, rounded up).
//!
//! With `REDIS_URL` set, [`RateLimits`] keeps every limit's state in Redis (one atomic Lua
//! script per request checks the global limit and the route's limit together), so N
//! instances enforce one limit. Without Redis, or while Redis does not answer, each
//! instance enforces the same limits in its own memory ([`IpRateLimiter`], governor): a
//! client behind N instances then gets at most N times its budget, never an unlimited one.
//! After a Redis failure the instance stays on memory for [`REDIS_RETRY_AFTER`] before it
//! asks Redis again, so an outage costs one timeout per interval, not one per request.
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rampart_core::config::Config;
use rampart_store::{Limit, Redis};

use crate::routing::RouteLimit;

/// How long an instance keeps to its in-memory limits after Redis failed.
pub const REDIS_RETRY_AFTER: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// One named limit: its quota, and its in-memory fallback.
struct Named {
    name: &'static str,
    burst: u32,
    period: Duration,
    local: IpRateLimiter,
}

impl Named {
    fn new(name: &'static str, burst: u32, period: Duration) -> Self {
        let burst = burst.max(1);
        let per = period / burst;
        let quota = Quota::with_period(per.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        Self {
            name,
            burst,
            period,
            local: IpRateLimiter::new(quota),
        }
    }

    fn limit<'a>(&'a self, subject: &'a str) -> Limit<'a> {
        Limit {
            name: self.name,
            subject,
            burst: self.burst,
            period: self.period,
        }
    }
}

/// Every rate limit of the instance (contract §9): global per IP, and per IP on login,
/// registration and password reset.
pub struct RateLimits {
    global: Named,
    login: Named,
    register: Named,
    reset: Named,
    redis: Option<Redis>,
    /// Until when Redis is not asked after a failure, in milliseconds since `epoch`
    /// (0: ask it).
    redis_down_until_ms: AtomicU64,
    /// Whether the last Redis call failed (for logging the transitions only).
    degraded: AtomicBool,
    epoch: Instant,
}

impl RateLimits {
    pub fn new(config: &Config, redis: Option<Redis>) -> Self {
        Self {
            global: Named::new("global", config.rate_limit_per_minute, MINUTE),
            login: Named::new("login", config.login_rate_per_minute, MINUTE),
            register: Named::new("register", config.register_rate_per_hour, HOUR),
            // Requests and confirmations: 4 × the per-email limit per IP.
            reset: Named::new("reset", config.reset_rate_per_hour.saturating_mul(4), HOUR),
            redis,
            redis_down_until_ms: AtomicU64::new(0),
            degraded: AtomicBool::new(false),
            epoch: Instant::now(),
        }
    }

    /// `Ok` when `ip` may make a request to a route with `route` limit, else the seconds
    /// to wait (at least 1). The global limit is consumed even when the route's refuses.
    pub async fn check(&self, ip: IpAddr, route: Option<RouteLimit>) -> Result<(), u64> {
        let route = route.map(|r| match r {
            RouteLimit::Login => &self.login,
            RouteLimit::Register => &self.register,
            RouteLimit::Reset => &self.reset,
        });
        if let Some(redis) = self.redis_if_up() {
            let subject = ip.to_string();
            let mut limits = vec![self.global.limit(&subject)];
            limits.extend(route.map(|r| r.limit(&subject)));
            match redis.gcra(&limits).await {
                Ok(verdict) => {
                    if self.degraded.swap(false, Ordering::Relaxed) {
                        tracing::info!("shared rate limits restored");
                    }
                    return verdict.map_or(Ok(()), |wait| Err(retry_after_secs(wait)));
                }
                Err(e) => self.redis_failed(&e),
            }
        }
        self.global.local.check(ip)?;
        match route {
            Some(r) => r.local.check(ip),
            None => Ok(()),
        }
    }

    /// Whether the limits are enforced in Redis right now (not on the fallback).
    pub fn shared(&self) -> bool {
        self.redis_if_up().is_some() && !self.degraded.load(Ordering::Relaxed)
    }

    /// Redis answered another call (the readiness PING): stop waiting out the back-off, so
    /// the limits are shared again as soon as readiness says Redis is back.
    pub fn redis_answered(&self) {
        self.redis_down_until_ms.store(0, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn redis_if_up(&self) -> Option<&Redis> {
        let redis = self.redis.as_ref()?;
        let until = self.redis_down_until_ms.load(Ordering::Relaxed);
        (until == 0 || self.now_ms() >= until).then_some(redis)
    }

    fn redis_failed(&self, error: &anyhow::Error) {
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(REDIS_RETRY_AFTER.as_millis()).unwrap_or(u64::MAX));
        self.redis_down_until_ms
            .store(until.max(1), Ordering::Relaxed);
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = %error,
                "shared rate limits unavailable: enforcing them per instance until Redis answers"
            );
        }
    }

    /// Drops in-memory state of clients whose budget is full again, bounding memory.
    pub fn retain_recent(&self) {
        for named in [&self.global, &self.login, &self.register, &self.reset] {
            named.local.retain_recent();
        }
    }
}

pub struct IpRateLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl IpRateLimiter {
    pub fn new(quota: Quota) -> Self {
        Self {
            limiter: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
        }
    }

    pub fn per_minute(n: u32) -> Self {
        Self::new(Quota::per_minute(
            NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN),
        ))
    }

    pub fn per_hour(n: u32) -> Self {
        Self::new(Quota::per_hour(
            NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN),
        ))
    }

    /// `Ok` when the request may go on, else the seconds to wait (at least 1).
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        self.limiter.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            retry_after_secs(wait)
        })
    }

    /// Drops state of clients whose budget is full again, bounding memory.
    pub fn retain_recent(&self) {
        self.limiter.retain_recent();
    }
}

pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse_with_retry_after() {
        let l = IpRateLimiter::per_minute(3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(l.check(ip).is_ok());
        }
        let wait = l.check(ip).unwrap_err();
        assert!((1..=20).contains(&wait), "{wait}");
        assert!(
            l.check("192.0.2.2".parse().unwrap()).is_ok(),
            "keyed per IP"
        );
    }

    #[test]
    fn rounding_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }
}
