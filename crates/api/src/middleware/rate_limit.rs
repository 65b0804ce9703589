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
//!
//! Every limit is kept per client key ([`client_key`]): an IPv4 address, or the
//! `RAMPART_IPV6_PREFIX`-bit network of an IPv6 one (an IPv4-mapped address counts as
//! IPv4), so a host cannot multiply its budget by rotating through its /64.
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use rampart_core::config::Config;
use rampart_core::net::client_key;
use rampart_store::{Limit, Redis};

use crate::routing::RouteLimit;

/// How long an instance keeps to its in-memory limits after Redis failed.
pub const REDIS_RETRY_AFTER: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// Counts a 429 of the limit `name` (`rampart_rate_limited_total{limit}`). With Redis,
/// a refusal on a route with its own limit is counted under that limit's name.
fn refused(name: &'static str) {
    metrics::counter!(crate::telemetry::RATE_LIMITED, "limit" => name).increment(1);
}

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
    ipv6_prefix: u8,
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
            ipv6_prefix: config.ipv6_prefix,
            redis_down_until_ms: AtomicU64::new(0),
            degraded: AtomicBool::new(false),
            epoch: Instant::now(),
        }
    }

    /// `Ok` when `ip` may make a request to a route with `route` limit, else the seconds
    /// to wait (at least 1). The global limit is consumed even when the route's refuses.
    /// `ip` is the full client address; the limits are kept for its [`client_key`].
    pub async fn check(&self, ip: IpAddr, route: Option<RouteLimit>) -> Result<(), u64> {
        let key = client_key(ip, self.ipv6_prefix);
        let route = route.map(|r| match r {
            RouteLimit::Login => &self.login,
            RouteLimit::Register => &self.register,
            RouteLimit::Reset => &self.reset,
        });
        if let Some(redis) = self.redis_if_up() {
            let subject = key.to_string();
            let mut limits = vec![self.global.limit(&subject)];
            limits.extend(route.map(|r| r.limit(&subject)));
            match redis.gcra(&limits).await {
                Ok(verdict) => {
                    if self.degraded.swap(false, Ordering::Relaxed) {
                        tracing::info!("shared rate limits restored");
                    }
                    return verdict.map_or(Ok(()), |wait| {
                        refused(route.map_or(self.global.name, |r| r.name));
                        Err(retry_after_secs(wait))
                    });
                }
                Err(e) => self.redis_failed(&e),
            }
        }
        self.global
            .local
            .check(key)
            .inspect_err(|_| refused(self.global.name))?;
        match route {
            Some(r) => r.local.check(key).inspect_err(|_| refused(r.name)),
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

/// A keyed in-memory GCRA limiter; keys are [`client_key`]s.
pub struct IpRateLimiter {
    limiter: DefaultKeyedRateLimiter<IpNet>,
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
    pub fn check(&self, key: IpNet) -> Result<(), u64> {
        self.limiter.check_key(&key).map_err(|not_until| {
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
        let ip: IpNet = "192.0.2.1/32".parse().unwrap();
        for _ in 0..3 {
            assert!(l.check(ip).is_ok());
        }
        let wait = l.check(ip).unwrap_err();
        assert!((1..=20).contains(&wait), "{wait}");
        assert!(
            l.check("192.0.2.2/32".parse().unwrap()).is_ok(),
            "keyed per IP"
        );
    }

    fn limits_of(pairs: &[(&str, &str)]) -> RateLimits {
        let config = Config::load(&rampart_core::config::Sources::from_pairs(
            pairs.iter().copied(),
        ))
        .unwrap();
        RateLimits::new(&config, None)
    }

    fn v6(segments: [u16; 8]) -> IpAddr {
        IpAddr::V6(std::net::Ipv6Addr::from(segments))
    }

    #[tokio::test]
    async fn a_rotating_ipv6_client_shares_one_budget() {
        let limits = limits_of(&[("RAMPART_RATE_LIMIT_PER_MINUTE", "3")]);
        for i in 1..=3u16 {
            let ip = v6([0x2001, 0xdb8, 0, 7, 0, 0, 0, i]);
            assert_eq!(limits.check(ip, None).await, Ok(()), "{i}");
        }
        let fourth = v6([0x2001, 0xdb8, 0, 7, 9, 9, 9, 9]);
        assert!(limits.check(fourth, None).await.is_err());
        let elsewhere = v6([0x2001, 0xdb8, 0, 8, 0, 0, 0, 1]);
        assert_eq!(limits.check(elsewhere, None).await, Ok(()));
    }

    #[tokio::test]
    async fn the_ipv6_prefix_is_configurable() {
        let limits = limits_of(&[
            ("RAMPART_RATE_LIMIT_PER_MINUTE", "1"),
            ("RAMPART_IPV6_PREFIX", "48"),
        ]);
        assert_eq!(
            limits
                .check(v6([0x2001, 0xdb8, 1, 1, 0, 0, 0, 1]), None)
                .await,
            Ok(())
        );
        // Another /64 of the same /48: one client.
        assert!(
            limits
                .check(v6([0x2001, 0xdb8, 1, 2, 0, 0, 0, 1]), None)
                .await
                .is_err()
        );
        assert_eq!(
            limits
                .check(v6([0x2001, 0xdb8, 2, 1, 0, 0, 0, 1]), None)
                .await,
            Ok(())
        );
        // A /128 prefix keys every address apart.
        let limits = limits_of(&[
            ("RAMPART_RATE_LIMIT_PER_MINUTE", "1"),
            ("RAMPART_IPV6_PREFIX", "128"),
        ]);
        for last in 1..=2u16 {
            let ip = v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, last]);
            assert_eq!(limits.check(ip, None).await, Ok(()), "{last}");
        }
    }

    #[tokio::test]
    async fn mapped_ipv4_shares_the_ipv4_budget() {
        let limits = limits_of(&[("RAMPART_RATE_LIMIT_PER_MINUTE", "1")]);
        assert_eq!(
            limits.check("192.0.2.7".parse().unwrap(), None).await,
            Ok(())
        );
        assert!(
            limits
                .check("::ffff:192.0.2.7".parse().unwrap(), None)
                .await
                .is_err()
        );
    }

    #[test]
    fn rounding_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }
}
