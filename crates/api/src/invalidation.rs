//! Telling every instance that cached session liveness or permissions went stale.
//!
//! Each instance caches "session S is live" ([`crate::auth::Authentication`]) and "user U
//! holds these permissions" ([`crate::authz::PermissionCache`]) for at most one second.
//! A change made on one instance evicts its own cache in the same request, and — with
//! `REDIS_URL` — publishes a message on `<prefix>:invalidate` that every instance's
//! subscriber applies as soon as it arrives (milliseconds). Without Redis, or while it is
//! unreachable, the one-second expiry is the bound: a revocation is never lost, it only
//! takes up to a second longer to reach other instances. Nothing here ever *admits* a
//! request: a message can only make an instance forget and re-read the database.
//!
//! Messages: `s:<uuid>,<uuid>,…` (these sessions ended) and `p` (roles, grants or
//! assignments changed: forget every cached permission set). Unknown messages are
//! ignored. Each subscriber also publishes a heartbeat (`h:…`) to itself every 5 s and
//! resubscribes when its own heartbeat has not come back for 12 s, so a connection that
//! died silently is noticed. When the subscription (re)connects, both caches are cleared, since messages
//! may have been missed while it was down. Until it is subscribed, `/health/ready` reports
//! the `redis` check as failing.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use uuid::Uuid;

use crate::state::AppState;

const PERMISSIONS: &str = "p";
const SESSIONS: &str = "s:";
/// Sessions per message, so one `logout-all` of a huge account stays a few small messages.
const SESSIONS_PER_MESSAGE: usize = 500;
/// Heartbeats: `h:<instance>:<n>`, published by each subscriber to itself (every other
/// instance ignores them).
const HEARTBEAT: &str = "h:";
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// A subscription whose own heartbeat has not come back for this long is treated as lost
/// (a connection that died without a reset would otherwise look alive forever).
const HEARTBEAT_LOST_AFTER: Duration = Duration::from_secs(12);
const RESUBSCRIBE_MIN: Duration = Duration::from_millis(200);
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(5);

impl AppState {
    /// After sessions ended (logout, revocation, password change, user disabled or
    /// deleted): forget them here at once and tell the other instances.
    pub fn sessions_ended<'a>(&self, session_ids: impl IntoIterator<Item = &'a Uuid>) {
        let ids: Vec<Uuid> = session_ids.into_iter().copied().collect();
        if ids.is_empty() {
            return;
        }
        self.auth.sessions_ended(&ids);
        for chunk in ids.chunks(SESSIONS_PER_MESSAGE) {
            let list: Vec<String> = chunk.iter().map(Uuid::to_string).collect();
            self.publish(format!("{SESSIONS}{}", list.join(",")));
        }
    }

    /// After any change to roles, grants or role assignments.
    pub fn permissions_changed(&self) {
        self.permissions.clear();
        self.publish(PERMISSIONS.to_owned());
    }

    /// Sends without making the request wait: the change is committed and this instance is
    /// already up to date; others are bounded by the cache expiry if the message is lost.
    fn publish(&self, message: String) {
        let Some(redis) = self.redis.clone() else {
            return;
        };
        tokio::spawn(async move {
            if let Err(e) = redis.publish_invalidation(&message).await {
                tracing::warn!(
                    error = %e,
                    "could not announce an invalidation; other instances catch up within 1 s"
                );
            }
        });
    }

    fn apply_invalidation(&self, message: &str) {
        if message == PERMISSIONS {
            self.permissions.clear();
        } else if let Some(list) = message.strip_prefix(SESSIONS) {
            let ids: Vec<Uuid> = list
                .split(',')
                .filter_map(|id| Uuid::parse_str(id).ok())
                .collect();
            self.auth.sessions_ended(&ids);
        } else if !message.starts_with(HEARTBEAT) {
            tracing::debug!("ignored an unknown invalidation message");
        }
    }
}

/// Applies messages until the subscription ends, or until its own heartbeat has not come
/// back for [`HEARTBEAT_LOST_AFTER`].
async fn listen(
    state: &AppState,
    redis: &rampart_store::Redis,
    messages: &mut (impl futures_util::Stream<Item = String> + Unpin),
) {
    let me = format!("{HEARTBEAT}{}:", Uuid::new_v4().simple());
    let mut sent: u64 = 0;
    let mut last_seen = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        tokio::select! {
            message = messages.next() => match message {
                Some(message) if message.starts_with(&me) => {
                    last_seen = tokio::time::Instant::now();
                }
                Some(message) => state.apply_invalidation(&message),
                None => return,
            },
            _ = tick.tick() => {
                if last_seen.elapsed() > HEARTBEAT_LOST_AFTER {
                    tracing::warn!("invalidation heartbeat not received; resubscribing");
                    return;
                }
                sent += 1;
                let redis = redis.clone();
                let beat = format!("{me}{sent}");
                // Not awaited here: a hung Redis must not stop the messages being read.
                tokio::spawn(async move {
                    let _ = redis.publish_invalidation(&beat).await;
                });
            }
        }
    }
}

/// Subscribes to the invalidation channel and keeps resubscribing after failures, until
/// the task is aborted. Does nothing without Redis.
pub fn spawn_subscriber(state: AppState) -> Option<tokio::task::JoinHandle<()>> {
    let redis = state.redis.clone()?;
    Some(tokio::spawn(async move {
        let mut backoff = RESUBSCRIBE_MIN;
        let mut failing = false;
        loop {
            match redis.subscribe_invalidations().await {
                Ok(mut messages) => {
                    // Anything published while we were not listening is lost: start over.
                    state.auth.forget_sessions();
                    state.permissions.clear();
                    backoff = RESUBSCRIBE_MIN;
                    state.invalidations_subscribed.store(true, Ordering::SeqCst);
                    if failing {
                        tracing::info!("invalidation channel subscribed again");
                    }
                    listen(&state, &redis, &mut messages).await;
                    state
                        .invalidations_subscribed
                        .store(false, Ordering::SeqCst);
                    tracing::warn!(
                        "invalidation channel lost; caches expire within 1 s until it is back"
                    );
                    failing = true;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(
                            error = %e,
                            "cannot subscribe to invalidations; caches expire within 1 s until Redis answers"
                        );
                        failing = true;
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RESUBSCRIBE_MAX);
        }
    }))
}
