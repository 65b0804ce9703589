//! The composition root: the one place that builds every component and wires them
//! together. Each component is a standalone module holding only what it needs
//! ([`Authentication`]: token service, database, clock, liveness cache;
//! [`PermissionCache`]: database and its cache; [`RateLimits`]; [`TokenService`];
//! [`HashPool`]; [`Db`]) and knows nothing of this module. Extractors and middleware reach
//! a component through [`FromRef`], which clones one `Arc`; handlers take the whole
//! `State<AppState>`, itself one `Arc` (a profile of `/users/me` showed the field-by-field
//! clone and drop of the former struct of handles at 3.6 % of the server's CPU,
//! docs/benchmarks.md). Fields are reached through `Deref` (`state.db`, `state.config`…).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rampart_core::config::Config;
use rampart_core::crypto::DataKeys;
use rampart_core::keys::KeyStore;
use rampart_core::passwords::{HashParams, HashPool, PasswordHasher, PasswordPolicy};
use rampart_core::tokens::TokenService;
use rampart_core::{Clock, Error};
use rampart_store::mail::Mailer;
use rampart_store::{Db, Redis};

use axum::extract::FromRef;

use crate::auth::Authentication;
use crate::authz::PermissionCache;
use crate::middleware::rate_limit::RateLimits;

#[derive(Clone)]
pub struct AppState(Arc<Components>);

impl std::ops::Deref for AppState {
    type Target = Components;

    fn deref(&self) -> &Components {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Components {
    pub config: Arc<Config>,
    pub db: Db,
    /// Present when `REDIS_URL` is set.
    pub redis: Option<Redis>,
    pub keys: Arc<KeyStore>,
    pub tokens: Arc<TokenService>,
    pub hashes: Arc<HashPool>,
    pub password_policy: Arc<PasswordPolicy>,
    /// Token verification and session liveness.
    pub auth: Arc<Authentication>,
    pub permissions: Arc<PermissionCache>,
    pub clock: Arc<dyn Clock>,
    /// Seals secrets at rest (TOTP seeds).
    pub data_keys: Arc<DataKeys>,
    pub mailer: Arc<Mailer>,
    /// Per-IP rate limits: in Redis when configured, else (or while it fails) in memory.
    pub rate_limits: Arc<RateLimits>,
    /// The WebAuthn relying party (passkeys, contract §10).
    pub relying_party: Arc<rampart_core::passkeys::RelyingParty>,
    draining: Arc<AtomicBool>,
    /// Whether this instance listens to other instances' invalidations (with Redis).
    pub(crate) invalidations_subscribed: Arc<AtomicBool>,
}

impl AppState {
    /// Wires the state; fails when the signing keys do not match `RAMPART_JWT_ALG`.
    pub fn new(
        config: Config,
        db: Db,
        redis: Option<Redis>,
        keys: KeyStore,
        clock: Arc<dyn Clock>,
        data_keys: DataKeys,
        mailer: Mailer,
    ) -> Result<Self, Error> {
        let keys = Arc::new(keys);
        let tokens = TokenService::new(
            keys.clone(),
            config.jwt_alg,
            config.jwt_issuer.clone(),
            config.jwt_audience.clone(),
            config.access_token_ttl,
            config.jwt_leeway,
        )?;
        let hasher = PasswordHasher::new(HashParams {
            m_kib: config.argon2_memory_kib,
            t: config.argon2_iterations,
            p: config.argon2_parallelism,
        })?;
        let workers = config
            .hash_workers
            .unwrap_or_else(HashPool::default_workers);
        let hashes =
            HashPool::with_max_wait(hasher, workers, config.hash_queue, config.hash_queue_wait)?;
        let tokens = Arc::new(tokens);
        Ok(Self(Arc::new(Components {
            auth: Arc::new(Authentication::new(
                Arc::clone(&tokens),
                db.clone(),
                Arc::clone(&clock),
            )),
            permissions: Arc::new(PermissionCache::new(db.clone())),
            rate_limits: Arc::new(RateLimits::new(&config, redis.clone())),
            data_keys: Arc::new(data_keys),
            relying_party: Arc::new(rampart_core::passkeys::RelyingParty::from_config(&config)),
            mailer: Arc::new(mailer),
            password_policy: Arc::new(PasswordPolicy {
                min_chars: config.password_min_length,
            }),
            config: Arc::new(config),
            db,
            redis,
            keys,
            tokens,
            hashes: Arc::new(hashes),
            clock,
            draining: Arc::new(AtomicBool::new(false)),
            invalidations_subscribed: Arc::new(AtomicBool::new(false)),
        })))
    }

    /// Marks the instance as shutting down: `/health/ready` answers 503 from now on so that
    /// load balancers stop sending new work while in-flight requests finish.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Whether other instances' invalidations reach this one (always false without Redis).
    pub fn invalidations_subscribed(&self) -> bool {
        self.invalidations_subscribed.load(Ordering::SeqCst)
    }
}

/// How extractors and middleware reach one component without knowing [`AppState`].
macro_rules! components {
    ($($field:ident: $ty:ty),* $(,)?) => {$(
        impl FromRef<AppState> for $ty {
            fn from_ref(state: &AppState) -> Self {
                state.$field.clone()
            }
        }
    )*};
}

components! {
    auth: Arc<Authentication>,
    permissions: Arc<PermissionCache>,
    rate_limits: Arc<RateLimits>,
    tokens: Arc<TokenService>,
    hashes: Arc<HashPool>,
    db: Db,
    clock: Arc<dyn Clock>,
    config: Arc<Config>,
}
