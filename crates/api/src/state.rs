//! The state every handler and middleware shares. Cheap to clone (everything is behind
//! `Arc` or is itself a handle).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rampart_core::Clock;
use rampart_core::config::Config;
use rampart_core::keys::KeyStore;
use rampart_store::{Db, Redis};

use crate::middleware::rate_limit::IpRateLimiter;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    /// Present when `REDIS_URL` is set.
    pub redis: Option<Redis>,
    pub keys: Arc<KeyStore>,
    pub clock: Arc<dyn Clock>,
    pub(crate) global_limiter: Arc<IpRateLimiter>,
    draining: Arc<AtomicBool>,
}

impl AppState {
    pub fn new(
        config: Config,
        db: Db,
        redis: Option<Redis>,
        keys: KeyStore,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let global_limiter = Arc::new(IpRateLimiter::per_minute(config.rate_limit_per_minute));
        Self {
            config: Arc::new(config),
            db,
            redis,
            keys: Arc::new(keys),
            clock,
            global_limiter,
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Marks the instance as shutting down: `/health/ready` answers 503 from now on so that
    /// load balancers stop sending new work while in-flight requests finish.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
