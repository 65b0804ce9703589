//! The Redis side of scale-out against the real server at `TEST_REDIS_URL`: the GCRA
//! script's arithmetic (burst, refill, atomic multi-limit checks) and the invalidation
//! channel. Each test uses its own key prefix.

use std::time::Duration;

use futures_util::StreamExt;
use rampart_store::{Limit, Redis};

fn redis() -> Option<Redis> {
    match std::env::var("TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => {
            let prefix = format!("t_{}", uuid::Uuid::new_v4().simple());
            Some(Redis::connect_lazy(&url, &prefix).unwrap())
        }
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must set TEST_REDIS_URL"
            );
            eprintln!("notice: TEST_REDIS_URL unset, skipping a Redis test");
            None
        }
    }
}

fn limit<'a>(name: &'a str, subject: &'a str, burst: u32, period: Duration) -> Limit<'a> {
    Limit {
        name,
        subject,
        burst,
        period,
    }
}

#[tokio::test]
async fn gcra_admits_a_burst_then_refills_evenly() {
    let Some(redis) = redis() else { return };
    // 5 per second: a burst of 5, then one every 200 ms.
    let l = [limit("t", "192.0.2.1", 5, Duration::from_secs(1))];
    for i in 0..5 {
        assert_eq!(redis.gcra(&l).await.unwrap(), None, "request {i}");
    }
    let wait = redis.gcra(&l).await.unwrap().expect("the sixth is refused");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_millis(200),
        "{wait:?}"
    );
    // A refusal consumes nothing: after the wait exactly one more is admitted.
    tokio::time::sleep(wait + Duration::from_millis(20)).await;
    assert_eq!(redis.gcra(&l).await.unwrap(), None);
    assert!(redis.gcra(&l).await.unwrap().is_some());
    // Other subjects and other limits have budgets of their own.
    let other = [limit("t", "192.0.2.2", 5, Duration::from_secs(1))];
    assert_eq!(redis.gcra(&other).await.unwrap(), None);
    let route = [limit("u", "192.0.2.1", 5, Duration::from_secs(1))];
    assert_eq!(redis.gcra(&route).await.unwrap(), None);
}

#[tokio::test]
async fn gcra_checks_limits_in_order_and_stops_at_the_first_refusal() {
    let Some(redis) = redis() else { return };
    let minute = Duration::from_secs(60);
    let both = [
        limit("global", "198.51.100.7", 3, minute),
        limit("login", "198.51.100.7", 1, minute),
    ];
    assert_eq!(redis.gcra(&both).await.unwrap(), None);
    // The route limit refuses; the global one was still consumed (as in memory).
    let wait = redis
        .gcra(&both)
        .await
        .unwrap()
        .expect("login limit refuses");
    assert!(wait > Duration::from_secs(50), "{wait:?}");
    let global = [limit("global", "198.51.100.7", 3, minute)];
    assert_eq!(redis.gcra(&global).await.unwrap(), None, "third of three");
    // The global limit is spent now, and a refusal there consumes nothing further.
    assert!(redis.gcra(&global).await.unwrap().is_some());
}

#[tokio::test]
async fn gcra_is_atomic_under_concurrency() {
    let Some(redis) = redis() else { return };
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let redis = redis.clone();
            tokio::spawn(async move {
                let l = [limit("c", "203.0.113.9", 10, Duration::from_secs(3600))];
                redis.gcra(&l).await.unwrap().is_none()
            })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += usize::from(t.await.unwrap());
    }
    assert_eq!(admitted, 10);
}

#[tokio::test]
async fn invalidations_reach_subscribers_of_the_same_prefix_only() {
    let Some(redis) = redis() else { return };
    let mut messages = Box::pin(redis.subscribe_invalidations().await.unwrap());
    let other = self::redis().unwrap();
    other.publish_invalidation("p").await.unwrap();
    redis.publish_invalidation("s:abc").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, "s:abc", "another prefix's message must not arrive");
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_not_a_hang() {
    // Nothing listens on port 1.
    let redis = Redis::connect_lazy("redis://127.0.0.1:1", "t").unwrap();
    let l = [limit("t", "192.0.2.1", 5, Duration::from_secs(1))];
    let started = std::time::Instant::now();
    assert!(redis.gcra(&l).await.is_err());
    assert!(redis.publish_invalidation("p").await.is_err());
    assert!(redis.subscribe_invalidations().await.is_err());
    assert!(started.elapsed() < Duration::from_secs(10));
}
