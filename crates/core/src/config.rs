//! Typed configuration (contract §9).
//!
//! Values come from an optional TOML file and from the environment, the environment
//! winning. Every variable is `RAMPART_*` except `DATABASE_URL` and `REDIS_URL`; in the TOML
//! file the same names are written in lower case without the prefix (`bind`,
//! `allowed_origins`, `database_url`). Development defaults need no setup at all.
//!
//! Parsing never stops at the first problem: [`Config::load`] returns every problem, one
//! line each, naming the variable, so an operator fixes a deployment in one pass.
//! [`Config::production_problems`] holds the rules `RAMPART_ENV=production` enforces (and
//! [`Config::database_problems`] the part the database commands enforce);
//! [`Config::load_with`] reports them together with the parse problems, so a malformed
//! value never hides a rule. Ceilings that keep hashes verifiable hold in every
//! environment; floors that keep protections on hold in production.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use ipnet::IpNet;

use crate::error::Redacted;
use crate::passwords;

/// The prefix of every variable except `DATABASE_URL` and `REDIS_URL`.
pub const PREFIX: &str = "RAMPART_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Algorithm of the signing keys (contract §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlg {
    Rs256,
    EdDsa,
}

impl JwtAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::EdDsa => "EdDSA",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "RS256" => Some(Self::Rs256),
            "EdDSA" => Some(Self::EdDsa),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockoutScope {
    Email,
    EmailIp,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub env: Environment,
    pub bind: SocketAddr,
    pub database_url: String,
    pub redis_url: Option<Redacted<String>>,
    /// Prefix of every Redis key and channel, so several deployments (or test runs) can
    /// share one Redis.
    pub redis_prefix: String,
    /// How often expired sessions, refresh tokens, challenges, reset tokens and lockout
    /// rows are purged (one instance at a time).
    pub purge_interval: Duration,
    /// How often a serving instance logs a signed audit checkpoint, when the chain grew.
    pub audit_checkpoint_interval: Duration,
    pub db_pool_size: u32,
    pub log_format: LogFormat,
    pub log_level: String,
    pub trusted_proxies: Vec<IpNet>,
    /// Per-IP limits key an IPv6 client by its network of this many bits (32–128).
    pub ipv6_prefix: u8,
    pub allowed_origins: Vec<String>,
    pub rate_limit_per_minute: u32,
    pub login_rate_per_minute: u32,
    pub register_rate_per_hour: u32,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub docs: bool,
    /// Serve the web console at `/console/` (`RAMPART_CONSOLE`, contract §13).
    pub console: bool,
    pub jwt_keys_dir: PathBuf,
    pub jwt_alg: JwtAlg,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub jwt_leeway: Duration,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub session_max_age: Duration,
    pub cookie_secure: bool,
    pub password_min_length: usize,
    pub login_max_failures: u32,
    pub lockout_seconds: Duration,
    /// The longest a growing lock may last (`RAMPART_LOCKOUT_MAX_SECONDS`, contract §4).
    pub lockout_max_seconds: Duration,
    pub lockout_scope: LockoutScope,
    pub data_key: Option<Redacted<[u8; 32]>>,
    /// Previous data keys, still accepted for decryption during a rotation.
    pub data_keys_old: Vec<Redacted<[u8; 32]>>,
    /// `From:` of outgoing mail.
    pub mail_from: String,
    pub smtp_url: Option<Redacted<String>>,
    pub mail_outbox: PathBuf,
    pub public_url: String,
    /// WebAuthn relying party ID (`RAMPART_WEBAUTHN_RP_ID`, default: the public URL's host).
    pub webauthn_rp_id: String,
    /// WebAuthn relying party name shown by authenticators (`RAMPART_WEBAUTHN_RP_NAME`).
    pub webauthn_rp_name: String,
    pub reset_rate_per_hour: u32,
    pub password_reset_ttl: Duration,
    /// How long an email verification or email change link works
    /// (`RAMPART_EMAIL_TOKEN_TTL`, default 24 hours; contract §11).
    pub email_token_ttl: Duration,
    /// `RAMPART_REQUIRE_VERIFIED_EMAIL`: a right password of an unverified account gets 403
    /// `email_unverified` and no tokens (contract §11).
    pub require_verified_email: bool,
    /// argon2id memory cost in KiB (OWASP: 19456).
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    /// Threads that hash passwords; `None` = one per core.
    pub hash_workers: Option<usize>,
    /// Hash jobs that may wait; beyond it a request gets 503 at once.
    pub hash_queue: usize,
    /// The longest a hash job may wait for a thread (`RAMPART_HASH_QUEUE_WAIT_MS`): a job
    /// expected to wait longer gets 503 at once, one that did is refused unrun.
    pub hash_queue_wait: Duration,
    /// Where `GET /metrics` (Prometheus text format) is served (`RAMPART_METRICS_BIND`,
    /// contract §12): its own listener, never the API's. `None`: no metrics.
    pub metrics_bind: Option<SocketAddr>,
}

/// Every variable Rampart reads, with its TOML key. Anything else with the prefix is a typo.
const KNOWN: &[&str] = &[
    "RAMPART_ENV",
    "RAMPART_BIND",
    "DATABASE_URL",
    "REDIS_URL",
    "RAMPART_REDIS_PREFIX",
    "RAMPART_PURGE_INTERVAL",
    "RAMPART_AUDIT_CHECKPOINT_INTERVAL",
    "RAMPART_DB_POOL_SIZE",
    "RAMPART_LOG_FORMAT",
    "RAMPART_LOG_LEVEL",
    "RAMPART_TRUSTED_PROXIES",
    "RAMPART_IPV6_PREFIX",
    "RAMPART_ALLOWED_ORIGINS",
    "RAMPART_RATE_LIMIT_PER_MINUTE",
    "RAMPART_LOGIN_RATE_PER_MINUTE",
    "RAMPART_REGISTER_RATE_PER_HOUR",
    "RAMPART_MAX_BODY_BYTES",
    "RAMPART_REQUEST_TIMEOUT",
    "RAMPART_SHUTDOWN_TIMEOUT",
    "RAMPART_DOCS",
    "RAMPART_CONSOLE",
    "RAMPART_JWT_KEYS_DIR",
    "RAMPART_JWT_ALG",
    "RAMPART_JWT_ISSUER",
    "RAMPART_JWT_AUDIENCE",
    "RAMPART_JWT_LEEWAY",
    "RAMPART_ACCESS_TOKEN_TTL",
    "RAMPART_REFRESH_TOKEN_TTL",
    "RAMPART_SESSION_MAX_AGE",
    "RAMPART_COOKIE_SECURE",
    "RAMPART_PASSWORD_MIN_LENGTH",
    "RAMPART_LOGIN_MAX_FAILURES",
    "RAMPART_LOCKOUT_SECONDS",
    "RAMPART_LOCKOUT_MAX_SECONDS",
    "RAMPART_LOCKOUT_SCOPE",
    "RAMPART_DATA_KEY",
    "RAMPART_DATA_KEYS_OLD",
    "RAMPART_SMTP_URL",
    "RAMPART_MAIL_FROM",
    "RAMPART_MAIL_OUTBOX",
    "RAMPART_PUBLIC_URL",
    "RAMPART_WEBAUTHN_RP_ID",
    "RAMPART_WEBAUTHN_RP_NAME",
    "RAMPART_RESET_RATE_PER_HOUR",
    "RAMPART_PASSWORD_RESET_TTL",
    "RAMPART_EMAIL_TOKEN_TTL",
    "RAMPART_REQUIRE_VERIFIED_EMAIL",
    "RAMPART_ARGON2_MEMORY_KIB",
    "RAMPART_ARGON2_ITERATIONS",
    "RAMPART_ARGON2_PARALLELISM",
    "RAMPART_HASH_WORKERS",
    "RAMPART_HASH_QUEUE",
    "RAMPART_HASH_QUEUE_WAIT_MS",
    "RAMPART_METRICS_BIND",
];

/// Variables whose values are secrets: they are never echoed in a problem line.
const SECRET: &[&str] = &[
    "DATABASE_URL",
    "REDIS_URL",
    "RAMPART_DATA_KEY",
    "RAMPART_DATA_KEYS_OLD",
    "RAMPART_SMTP_URL",
];

/// Every variable Rampart reads (what `docs/configuration.md` must document).
pub fn known_variables() -> &'static [&'static str] {
    KNOWN
}

/// The variables whose values are secrets.
pub fn secret_variables() -> &'static [&'static str] {
    SECRET
}

pub const DEFAULT_DATABASE_URL: &str = "sqlite://./data/rampart.db";

/// Raw `NAME -> value` pairs, environment over file.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    values: BTreeMap<String, String>,
    unknown: Vec<String>,
}

impl Sources {
    /// Reads the process environment and, if given, a TOML file.
    pub fn gather(file: Option<&Path>) -> Result<Self, Vec<String>> {
        let mut sources = Self::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| vec![format!("--config {}: cannot read: {e}", path.display())])?;
            sources
                .merge_toml(&text)
                .map_err(|e| vec![format!("--config {}: {e}", path.display())])?;
        }
        sources.merge_env(std::env::vars());
        Ok(sources)
    }

    /// Adds variables from an iterator of `(name, value)`; names without the prefix (other
    /// than `DATABASE_URL` and `REDIS_URL`) are ignored.
    pub fn merge_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) {
        for (name, value) in vars {
            if name == "DATABASE_URL" || name == "REDIS_URL" || name.starts_with(PREFIX) {
                self.insert(name, value);
            }
        }
    }

    /// Adds a TOML document of `key = value` lines (keys as the variable names in lower case
    /// without the prefix).
    pub fn merge_toml(&mut self, text: &str) -> Result<(), String> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| format!("not valid TOML: {}", e.message()))?;
        for (key, value) in table {
            let upper = key.to_ascii_uppercase();
            let name = if upper == "DATABASE_URL" || upper == "REDIS_URL" {
                upper
            } else {
                format!("{PREFIX}{upper}")
            };
            let value = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Array(items) => {
                    let mut parts = Vec::with_capacity(items.len());
                    for item in items {
                        match item {
                            toml::Value::String(s) => parts.push(s),
                            _ => return Err(format!("{key}: list items must be strings")),
                        }
                    }
                    parts.join(",")
                }
                _ => return Err(format!("{key}: must be a string, integer, boolean or list")),
            };
            self.insert(name, value);
        }
        Ok(())
    }

    fn insert(&mut self, name: String, value: String) {
        if !KNOWN.contains(&name.as_str()) && !self.unknown.contains(&name) {
            self.unknown.push(name.clone());
        }
        self.values.insert(name, value);
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut s = Self::default();
        s.merge_env(pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())));
        s
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }
}

/// Collects problems while fields are parsed.
struct Parser<'a> {
    src: &'a Sources,
    problems: Vec<String>,
}

impl Parser<'_> {
    fn problem(&mut self, name: &str, issue: impl std::fmt::Display) {
        if SECRET.contains(&name) {
            self.problems.push(format!("{name}: {issue}"));
        } else {
            let shown = self.src.get(name).unwrap_or_default();
            self.problems
                .push(format!("{name}: {issue} (got {shown:?})"));
        }
    }

    fn string(&mut self, name: &str, default: &str) -> String {
        self.src.get(name).unwrap_or(default).trim().to_owned()
    }

    fn parsed<T>(
        &mut self,
        name: &str,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> T {
        match self.src.get(name) {
            None => default,
            Some(raw) => match parse(raw.trim()) {
                Ok(v) => v,
                Err(issue) => {
                    self.problem(name, issue);
                    default
                }
            },
        }
    }

    fn number<T: std::str::FromStr + Copy + PartialOrd + std::fmt::Display>(
        &mut self,
        name: &str,
        default: T,
        min: T,
        max: T,
    ) -> T {
        self.parsed(name, default, |raw| match raw.parse::<T>() {
            Ok(v) if v >= min && v <= max => Ok(v),
            _ => Err(format!("must be a whole number from {min} to {max}")),
        })
    }

    fn bool(&mut self, name: &str, default: bool) -> bool {
        self.parsed(name, default, |raw| {
            match raw.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err("must be true or false".to_owned()),
            }
        })
    }

    fn duration(&mut self, name: &str, default: Duration, max: Duration) -> Duration {
        self.parsed(name, default, |raw| match parse_duration(raw) {
            Some(d) if d > Duration::ZERO && d <= max => Ok(d),
            Some(_) => Err(format!(
                "must be positive and at most {} seconds",
                max.as_secs()
            )),
            None => Err(
                "must be whole seconds or a number with one of s, m, h, d (e.g. 15m)".to_owned(),
            ),
        })
    }
}

/// `900`, `900s`, `15m`, `12h`, `7d`: whole seconds or a number with one unit suffix.
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    let (digits, unit) = match raw.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&raw[..i], c),
        _ => (raw, 's'),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let secs = match unit {
        's' => Some(n),
        'm' => n.checked_mul(60),
        'h' => n.checked_mul(3600),
        'd' => n.checked_mul(86_400),
        _ => None,
    }?;
    Some(Duration::from_secs(secs))
}

const DAY: Duration = Duration::from_secs(86_400);

impl Config {
    /// Parses the configuration, or returns every problem found (one line each).
    pub fn load(src: &Sources) -> Result<Self, Vec<String>> {
        Self::load_with(src, |_| Vec::new())
    }

    /// Parses the configuration and adds the problems `rules` finds in it (say
    /// [`Config::production_problems`]), or returns every problem of both kinds. `rules`
    /// runs even when parsing found problems, on a configuration whose unparsable values
    /// are replaced by their defaults, so a malformed value never hides another rule; a
    /// rule's line about a variable that parsing already reported is dropped (one line per
    /// problem). The configuration `rules` sees is never returned unless it is clean.
    pub fn load_with(
        src: &Sources,
        rules: impl FnOnce(&Config) -> Vec<String>,
    ) -> Result<Self, Vec<String>> {
        let (config, mut problems) = Self::parse(src);
        let named: Vec<String> = problems.iter().map(|p| variable_of(p).to_owned()).collect();
        problems.extend(
            rules(&config)
                .into_iter()
                .filter(|p| !named.iter().any(|n| n == variable_of(p))),
        );
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }

    /// Every value parsed, unparsable ones replaced by their defaults, and the problems.
    fn parse(src: &Sources) -> (Self, Vec<String>) {
        let mut p = Parser {
            src,
            problems: Vec::new(),
        };
        let env = p.parsed("RAMPART_ENV", Environment::Development, |raw| {
            match raw.to_ascii_lowercase().as_str() {
                "development" | "dev" => Ok(Environment::Development),
                "production" | "prod" => Ok(Environment::Production),
                _ => Err("must be development or production".to_owned()),
            }
        });
        let bind = p.parsed(
            "RAMPART_BIND",
            SocketAddr::from(([127, 0, 0, 1], 8080)),
            |raw| {
                raw.parse::<SocketAddr>()
                    .map_err(|_| "must be an address and port such as 127.0.0.1:8080".to_owned())
            },
        );
        let database_url = p.string("DATABASE_URL", DEFAULT_DATABASE_URL);
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            p.problem(
                "DATABASE_URL",
                "must start with sqlite:, postgres:// or postgresql://",
            );
        }
        let redis_url = src.get("REDIS_URL").map(|s| Redacted(s.trim().to_owned()));
        if let Some(url) = &redis_url
            && !(url.0.starts_with("redis://") || url.0.starts_with("rediss://"))
        {
            p.problem("REDIS_URL", "must start with redis:// or rediss://");
        }
        let redis_prefix = p.parsed("RAMPART_REDIS_PREFIX", "rampart".to_owned(), |raw| {
            let ok = !raw.is_empty()
                && raw.len() <= 64
                && raw
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if ok {
                Ok(raw.to_owned())
            } else {
                Err("must be 1 to 64 letters, digits, '_', '-' or '.'".to_owned())
            }
        });
        let purge_interval = p.duration("RAMPART_PURGE_INTERVAL", Duration::from_secs(600), DAY);
        let audit_checkpoint_interval = p.duration(
            "RAMPART_AUDIT_CHECKPOINT_INTERVAL",
            Duration::from_secs(3600),
            DAY,
        );
        let db_pool_size = p.number("RAMPART_DB_POOL_SIZE", 10u32, 1, 1000);
        let log_format = p.parsed("RAMPART_LOG_FORMAT", LogFormat::Json, |raw| {
            match raw.to_ascii_lowercase().as_str() {
                "json" => Ok(LogFormat::Json),
                "pretty" => Ok(LogFormat::Pretty),
                _ => Err("must be json or pretty".to_owned()),
            }
        });
        let log_level = p.string("RAMPART_LOG_LEVEL", "info");
        let trusted_proxies = p.parsed("RAMPART_TRUSTED_PROXIES", Vec::new(), parse_cidrs);
        let ipv6_prefix = p.number(
            "RAMPART_IPV6_PREFIX",
            crate::net::DEFAULT_IPV6_PREFIX,
            *crate::net::IPV6_PREFIX_RANGE.start(),
            *crate::net::IPV6_PREFIX_RANGE.end(),
        );
        let allowed_origins = p.parsed("RAMPART_ALLOWED_ORIGINS", Vec::new(), parse_origins);
        let rate_limit_per_minute =
            p.number("RAMPART_RATE_LIMIT_PER_MINUTE", 300u32, 1, 10_000_000);
        let login_rate_per_minute = p.number("RAMPART_LOGIN_RATE_PER_MINUTE", 10u32, 1, 10_000_000);
        let register_rate_per_hour =
            p.number("RAMPART_REGISTER_RATE_PER_HOUR", 20u32, 1, 10_000_000);
        let max_body_bytes = p.number("RAMPART_MAX_BODY_BYTES", 64 * 1024usize, 1024, 64 << 20);
        let request_timeout = p.duration(
            "RAMPART_REQUEST_TIMEOUT",
            Duration::from_secs(30),
            Duration::from_secs(600),
        );
        let shutdown_timeout = p.duration(
            "RAMPART_SHUTDOWN_TIMEOUT",
            Duration::from_secs(30),
            Duration::from_secs(600),
        );
        let docs = p.bool("RAMPART_DOCS", env == Environment::Development);
        let console = p.bool("RAMPART_CONSOLE", true);
        let jwt_keys_dir = PathBuf::from(p.string("RAMPART_JWT_KEYS_DIR", "./data/keys"));
        let jwt_alg = p.parsed("RAMPART_JWT_ALG", JwtAlg::Rs256, |raw| {
            JwtAlg::parse(raw).ok_or_else(|| "must be RS256 or EdDSA".to_owned())
        });
        let jwt_issuer = p.string("RAMPART_JWT_ISSUER", "rampart");
        let jwt_audience = p.string("RAMPART_JWT_AUDIENCE", "rampart-api");
        let jwt_leeway =
            p.parsed(
                "RAMPART_JWT_LEEWAY",
                Duration::from_secs(30),
                |raw| match parse_duration(raw) {
                    Some(d) if d <= Duration::from_secs(60) => Ok(d),
                    _ => Err("must be a duration of at most 60 seconds".to_owned()),
                },
            );
        let access_token_ttl =
            p.duration("RAMPART_ACCESS_TOKEN_TTL", Duration::from_secs(900), DAY);
        let refresh_token_ttl = p.duration("RAMPART_REFRESH_TOKEN_TTL", 7 * DAY, 365 * DAY);
        let session_max_age = p.duration("RAMPART_SESSION_MAX_AGE", 30 * DAY, 365 * DAY);
        let cookie_secure = p.bool("RAMPART_COOKIE_SECURE", true);
        let password_min_length = p.number("RAMPART_PASSWORD_MIN_LENGTH", 12usize, 8, 128);
        let login_max_failures = p.number("RAMPART_LOGIN_MAX_FAILURES", 5u32, 1, 1000);
        let lockout_seconds = p.duration("RAMPART_LOCKOUT_SECONDS", Duration::from_secs(900), DAY);
        let lockout_max_seconds = p.duration("RAMPART_LOCKOUT_MAX_SECONDS", DAY, 30 * DAY);
        if lockout_max_seconds < lockout_seconds {
            p.problem(
                "RAMPART_LOCKOUT_MAX_SECONDS",
                "must be at least RAMPART_LOCKOUT_SECONDS",
            );
        }
        let lockout_scope = p.parsed(
            "RAMPART_LOCKOUT_SCOPE",
            LockoutScope::Email,
            |raw| match raw {
                "email" => Ok(LockoutScope::Email),
                "email_ip" => Ok(LockoutScope::EmailIp),
                _ => Err("must be email or email_ip".to_owned()),
            },
        );
        let data_key = match src.get("RAMPART_DATA_KEY") {
            None => None,
            Some(raw) => match decode_data_key(raw) {
                Some(key) => Some(Redacted(key)),
                None => {
                    p.problem(
                        "RAMPART_DATA_KEY",
                        "must be 32 random bytes, base64-encoded",
                    );
                    None
                }
            },
        };
        let mut data_keys_old = Vec::new();
        if let Some(raw) = src.get("RAMPART_DATA_KEYS_OLD") {
            for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match decode_data_key(part) {
                    Some(key) => data_keys_old.push(Redacted(key)),
                    None => {
                        p.problem(
                            "RAMPART_DATA_KEYS_OLD",
                            "must be comma-separated keys of 32 bytes, base64-encoded",
                        );
                        break;
                    }
                }
            }
        }
        let smtp_url = src
            .get("RAMPART_SMTP_URL")
            .map(|s| Redacted(s.trim().to_owned()));
        let mail_outbox = PathBuf::from(p.string("RAMPART_MAIL_OUTBOX", "./data/outbox"));
        let mail_from = p.string("RAMPART_MAIL_FROM", "Rampart <no-reply@localhost>");
        if mail_from.contains(['\r', '\n']) {
            p.problem("RAMPART_MAIL_FROM", "must be a single line");
        }
        let public_url = p.string("RAMPART_PUBLIC_URL", &format!("http://{bind}"));
        if url::Url::parse(&public_url).is_err() {
            p.problem("RAMPART_PUBLIC_URL", "must be an absolute URL");
        }
        let default_rp_id = url::Url::parse(&public_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
            .unwrap_or_else(|| "localhost".to_owned());
        let webauthn_rp_id = p
            .string("RAMPART_WEBAUTHN_RP_ID", &default_rp_id)
            .trim()
            .to_ascii_lowercase();
        if webauthn_rp_id.is_empty() || webauthn_rp_id.contains(['/', ':', ' ']) {
            p.problem("RAMPART_WEBAUTHN_RP_ID", "must be a domain name");
        }
        let webauthn_rp_name = p.string("RAMPART_WEBAUTHN_RP_NAME", "Rampart");
        if webauthn_rp_name.trim().is_empty() || webauthn_rp_name.chars().any(char::is_control) {
            p.problem(
                "RAMPART_WEBAUTHN_RP_NAME",
                "must be a non-empty single line",
            );
        }
        let reset_rate_per_hour = p.number("RAMPART_RESET_RATE_PER_HOUR", 5u32, 1, 10_000);
        let password_reset_ttl =
            p.duration("RAMPART_PASSWORD_RESET_TTL", Duration::from_secs(1800), DAY);
        let email_token_ttl = p.duration("RAMPART_EMAIL_TOKEN_TTL", DAY, 30 * DAY);
        let require_verified_email = p.bool("RAMPART_REQUIRE_VERIFIED_EMAIL", false);
        // Ceilings are the verifier's own (`passwords::MAX_*`): a hash made under a setting
        // the verifier refuses would lock every user out at their next login.
        let argon2_memory_kib = p.number(
            "RAMPART_ARGON2_MEMORY_KIB",
            19_456u32,
            8,
            passwords::MAX_M_KIB,
        );
        let argon2_iterations = p.number("RAMPART_ARGON2_ITERATIONS", 2u32, 1, passwords::MAX_T);
        let argon2_parallelism = p.number("RAMPART_ARGON2_PARALLELISM", 1u32, 1, passwords::MAX_P);
        if argon2_memory_kib < 8 * argon2_parallelism {
            // Argon2 needs 8 KiB per lane.
            p.problem(
                "RAMPART_ARGON2_MEMORY_KIB",
                format!(
                    "must be at least 8 × RAMPART_ARGON2_PARALLELISM ({argon2_parallelism}) KiB"
                ),
            );
        }
        let hash_workers = src
            .get("RAMPART_HASH_WORKERS")
            .is_some()
            .then(|| p.number("RAMPART_HASH_WORKERS", 1usize, 1, 256));
        let hash_queue = p.number("RAMPART_HASH_QUEUE", 64usize, 1, 100_000);
        let hash_queue_wait =
            Duration::from_millis(p.number("RAMPART_HASH_QUEUE_WAIT_MS", 1000u64, 1, 60_000));
        let metrics_bind = src.get("RAMPART_METRICS_BIND").is_some().then(|| {
            p.parsed("RAMPART_METRICS_BIND", bind, |raw| {
                raw.parse::<SocketAddr>()
                    .map_err(|_| "must be an address and port such as 127.0.0.1:9090".to_owned())
            })
        });
        if metrics_bind == Some(bind) && bind.port() != 0 {
            p.problem(
                "RAMPART_METRICS_BIND",
                "must differ from RAMPART_BIND: metrics are never served on the API port",
            );
        }

        (
            Self {
                env,
                bind,
                database_url,
                redis_url,
                redis_prefix,
                purge_interval,
                audit_checkpoint_interval,
                db_pool_size,
                log_format,
                log_level,
                trusted_proxies,
                ipv6_prefix,
                allowed_origins,
                rate_limit_per_minute,
                login_rate_per_minute,
                register_rate_per_hour,
                max_body_bytes,
                request_timeout,
                shutdown_timeout,
                docs,
                console,
                jwt_keys_dir,
                jwt_alg,
                jwt_issuer,
                jwt_audience,
                jwt_leeway,
                access_token_ttl,
                refresh_token_ttl,
                session_max_age,
                cookie_secure,
                password_min_length,
                login_max_failures,
                lockout_seconds,
                lockout_max_seconds,
                lockout_scope,
                data_key,
                data_keys_old,
                mail_from,
                smtp_url,
                mail_outbox,
                public_url,
                webauthn_rp_id,
                webauthn_rp_name,
                reset_rate_per_hour,
                password_reset_ttl,
                email_token_ttl,
                require_verified_email,
                argon2_memory_kib,
                argon2_iterations,
                argon2_parallelism,
                hash_workers,
                hash_queue,
                hash_queue_wait,
                metrics_bind,
            },
            p.problems,
        )
    }

    /// Variables with the prefix that Rampart does not know (likely typos).
    pub fn unknown_variables(src: &Sources) -> &[String] {
        &src.unknown
    }

    pub fn is_production(&self) -> bool {
        self.env == Environment::Production
    }

    /// The rules of contract §9 that production enforces, one line per broken rule, each
    /// naming its variable. `active_key_problem` says why `jwt_keys_dir` holds no usable
    /// active key, if it does not (checked by the caller, which owns the key store). Use it
    /// through [`Config::load_with`], so that a malformed value hides none of these.
    pub fn production_problems(
        &self,
        src: &Sources,
        active_key_problem: Option<String>,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(problem) = active_key_problem {
            problems.push(format!(
                "RAMPART_JWT_KEYS_DIR: {problem} (production never generates keys)"
            ));
        }
        if self.allowed_origins.is_empty() {
            problems.push(
                "RAMPART_ALLOWED_ORIGINS: must be set to the exact origins of your web clients"
                    .to_owned(),
            );
        } else if self.allowed_origins.iter().any(|o| o.contains('*')) {
            problems.push("RAMPART_ALLOWED_ORIGINS: must not contain `*`".to_owned());
        }
        if self.data_key.is_none() {
            problems.push("RAMPART_DATA_KEY: must be set to 32 random bytes, base64-encoded (e.g. `openssl rand -base64 32`)".to_owned());
        }
        match &self.smtp_url {
            None => problems.push(
                "RAMPART_SMTP_URL: must be set (smtps://… or smtp://…?tls=required)".to_owned(),
            ),
            Some(url) if !smtp_url_requires_tls(&url.0) => problems.push(
                "RAMPART_SMTP_URL: must use TLS (smtps://… or smtp://…?tls=required)".to_owned(),
            ),
            Some(_) => {}
        }
        if !self.cookie_secure {
            problems.push("RAMPART_COOKIE_SECURE: must not be false in production".to_owned());
        }
        if src.get("RAMPART_PUBLIC_URL").is_none() || !self.public_url.starts_with("https://") {
            problems.push("RAMPART_PUBLIC_URL: must be an https:// URL".to_owned());
        }
        if let Some(problem) =
            crate::passkeys::rp_id_problem(&self.public_url, &self.webauthn_rp_id)
        {
            problems.push(format!("RAMPART_WEBAUTHN_RP_ID: {problem}"));
        }
        problems.extend(self.database_problems(src));
        problems.extend(self.protection_floors());
        if let Some(url) = &self.redis_url
            && let Some(problem) = redis_tls_problem(&url.0)
        {
            problems.push(format!("REDIS_URL: {problem}"));
        }
        for name in &src.unknown {
            problems.push(format!(
                "{name}: unknown variable (a typo?); remove it or fix its name"
            ));
        }
        problems
    }
}

/// Smallest Argon2id memory × iterations production accepts (OWASP Password Storage
/// Cheat Sheet: m=19456 KiB, t=2 and its equivalents down to m=7168 KiB, t=5).
const ARGON2_MIN_WORK: u64 = 38_912;
const ARGON2_MIN_MEMORY_KIB: u32 = 7_168;
const LOCKOUT_MIN: Duration = Duration::from_secs(60);
const LOGIN_MAX_FAILURES_MAX: u32 = 100;
const ACCESS_TOKEN_TTL_MAX: Duration = Duration::from_secs(3600);
/// A trusted-proxy entry wider than this trusts a share of the Internet, not a proxy.
const TRUSTED_PROXY_MIN_PREFIX_V4: u8 = 8;
const TRUSTED_PROXY_MIN_PREFIX_V6: u8 = 16;

impl Config {
    /// Production, and every CLI command that opens the database in production: the
    /// database is named explicitly (an unset `DATABASE_URL` must not turn a PostgreSQL
    /// deployment into a fresh local SQLite file), and a PostgreSQL server that is not on
    /// this host is reached with certificate verification.
    pub fn database_problems(&self, src: &Sources) -> Vec<String> {
        let mut problems = Vec::new();
        if src.get("DATABASE_URL").is_none() {
            problems.push(
                "DATABASE_URL: must be set in production (postgres://… or, for a single instance, an explicit sqlite://PATH)"
                    .to_owned(),
            );
        } else if let Some(problem) = postgres_tls_problem(&self.database_url) {
            problems.push(format!("DATABASE_URL: {problem}"));
        }
        problems
    }

    /// Settings that quietly switch a protection off (contract §9), one line each.
    fn protection_floors(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let (m, t) = (self.argon2_memory_kib, self.argon2_iterations);
        if m < ARGON2_MIN_MEMORY_KIB {
            problems.push(format!(
                "RAMPART_ARGON2_MEMORY_KIB: must be at least {ARGON2_MIN_MEMORY_KIB} in production (OWASP minimum for Argon2id; got {m})"
            ));
        } else if u64::from(m) * u64::from(t) < ARGON2_MIN_WORK {
            problems.push(format!(
                "RAMPART_ARGON2_ITERATIONS: RAMPART_ARGON2_MEMORY_KIB × RAMPART_ARGON2_ITERATIONS must be at least {ARGON2_MIN_WORK} in production (OWASP minimum for Argon2id, e.g. 19456 × 2; got {m} × {t})"
            ));
        }
        if self.lockout_seconds < LOCKOUT_MIN {
            problems.push(format!(
                "RAMPART_LOCKOUT_SECONDS: must be at least {} in production (got {})",
                LOCKOUT_MIN.as_secs(),
                self.lockout_seconds.as_secs()
            ));
        }
        if self.login_max_failures > LOGIN_MAX_FAILURES_MAX {
            problems.push(format!(
                "RAMPART_LOGIN_MAX_FAILURES: must be at most {LOGIN_MAX_FAILURES_MAX} in production (got {})",
                self.login_max_failures
            ));
        }
        let wide: Vec<String> = self
            .trusted_proxies
            .iter()
            .filter(|net| too_wide_to_trust(net))
            .map(ToString::to_string)
            .collect();
        if !wide.is_empty() {
            problems.push(format!(
                "RAMPART_TRUSTED_PROXIES: {} would let clients choose their own address; in production an entry must be /{TRUSTED_PROXY_MIN_PREFIX_V4} or narrower (IPv4), /{TRUSTED_PROXY_MIN_PREFIX_V6} or narrower (IPv6)",
                wide.join(", ")
            ));
        }
        if self.access_token_ttl > ACCESS_TOKEN_TTL_MAX {
            problems.push(format!(
                "RAMPART_ACCESS_TOKEN_TTL: must be at most {} seconds in production (got {})",
                ACCESS_TOKEN_TTL_MAX.as_secs(),
                self.access_token_ttl.as_secs()
            ));
        }
        problems
    }
}

/// A trusted-proxy CIDR shorter than /8 (IPv4) or /16 (IPv6). An IPv6 entry covering
/// IPv4-mapped addresses (`::ffff:0:0/96`) is judged by the IPv4 prefix it amounts to, so
/// `::ffff:0:0/96` is as wide as `0.0.0.0/0`.
fn too_wide_to_trust(net: &IpNet) -> bool {
    match net {
        IpNet::V4(v4) => v4.prefix_len() < TRUSTED_PROXY_MIN_PREFIX_V4,
        IpNet::V6(v6) => {
            let as_v4 = if v6.prefix_len() <= 96 {
                let mapped_base = std::net::Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0);
                v6.contains(&mapped_base).then_some(0)
            } else {
                v6.network().to_ipv4_mapped().map(|_| v6.prefix_len() - 96)
            };
            v6.prefix_len() < TRUSTED_PROXY_MIN_PREFIX_V6
                || as_v4.is_some_and(|p| p < TRUSTED_PROXY_MIN_PREFIX_V4)
        }
    }
}

/// The variable a problem line names (`NAME: issue`).
fn variable_of(line: &str) -> &str {
    line.split_once(':').map_or(line, |(name, _)| name)
}

fn parse_cidrs(raw: &str) -> Result<Vec<IpNet>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{s:?} is not a CIDR such as 10.0.0.0/8"))
        })
        .collect()
}

fn parse_origins(raw: &str) -> Result<Vec<String>, String> {
    let mut origins = Vec::new();
    for origin in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if origin == "*" || origin.contains('*') {
            // Kept so that the production check names it; development warns about nothing
            // but never echoes `*` either (CORS only ever echoes exact matches).
            origins.push(origin.to_owned());
            continue;
        }
        let url = url::Url::parse(origin).map_err(|_| format!("{origin:?} is not an origin"))?;
        let canonical = url.origin().ascii_serialization();
        if canonical == "null" || canonical != origin.trim_end_matches('/') {
            return Err(format!(
                "{origin:?} is not an exact origin (scheme://host[:port], no path)"
            ));
        }
        origins.push(canonical);
    }
    Ok(origins)
}

fn decode_data_key(raw: &str) -> Option<[u8; 32]> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw.trim()))
        .ok()?;
    bytes.try_into().ok()
}

fn smtp_url_requires_tls(raw: &str) -> bool {
    let Ok(url) = url::Url::parse(raw) else {
        return false;
    };
    match url.scheme() {
        "smtps" => true,
        "smtp" => url
            .query_pairs()
            .any(|(k, v)| k == "tls" && v == "required"),
        _ => false,
    }
}

/// A PostgreSQL URL must verify the server's certificate unless it stays on this host.
///
/// Judged by what sqlx's `PgConnectOptions` will do with the URL, not by the first
/// parameter that looks right: query parameters apply in order and the last one wins
/// (`?sslmode=verify-full&sslmode=disable` connects without TLS), `host=` and `hostaddr=`
/// replace the URL's host, and a `host=/…` socket, once given, is what sqlx connects to.
/// The store's tests check this against sqlx itself.
pub fn postgres_tls_problem(raw: &str) -> Option<&'static str> {
    if !(raw.starts_with("postgres://") || raw.starts_with("postgresql://")) {
        return None;
    }
    let Ok(url) = url::Url::parse(raw) else {
        return Some("is not a valid URL");
    };
    let url_host = url.host_str().unwrap_or_default();
    let mut socket = url_host.starts_with('/') || url_host.starts_with("%2F");
    let mut host = url_host.to_owned();
    // libpq spells it `sslmode`, sqlx also accepts `ssl-mode`.
    let mut sslmode = None;
    for (key, value) in url.query_pairs() {
        match &*key {
            "sslmode" | "ssl-mode" => sslmode = Some(value.into_owned()),
            "host" if value.starts_with('/') => socket = true,
            "host" | "hostaddr" => host = value.into_owned(),
            _ => {}
        }
    }
    let loopback = host.is_empty()
        || host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if socket || loopback {
        return None;
    }
    match sslmode.as_deref() {
        Some("verify-full" | "verify-ca") => None,
        _ => Some(
            "a PostgreSQL server that is not on this host must use sslmode=verify-full (or verify-ca); `require` checks no certificate",
        ),
    }
}

/// Production rule (a Rampart addition, like the PostgreSQL one): a Redis that is not on
/// this host is reached over TLS with certificate checks (`rediss://`, without redis-rs's
/// `#insecure`), since its traffic carries client addresses and session ids.
fn redis_tls_problem(raw: &str) -> Option<&'static str> {
    let Ok(url) = url::Url::parse(raw) else {
        return Some("is not a valid URL");
    };
    if url.scheme() == "rediss" {
        return (url.fragment() == Some("insecure"))
            .then_some("rediss://…#insecure checks no certificate; remove #insecure");
    }
    let host = url.host_str().unwrap_or_default();
    let local = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (!local).then_some("a Redis server that is not on this host must use rediss:// (TLS)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, Vec<String>> {
        Config::load(&Sources::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn defaults_need_no_setup() {
        let c = load(&[]).unwrap();
        assert_eq!(c.env, Environment::Development);
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(c.rate_limit_per_minute, 300);
        assert_eq!(c.max_body_bytes, 65536);
        assert_eq!(c.access_token_ttl, Duration::from_secs(900));
        assert_eq!(c.refresh_token_ttl, 7 * DAY);
        assert_eq!(c.jwt_alg, JwtAlg::Rs256);
        assert!(c.docs);
    }

    #[test]
    fn hash_pool_settings() {
        let c = load(&[]).unwrap();
        assert_eq!(c.hash_workers, None);
        assert_eq!(c.hash_queue, 64);
        assert_eq!(c.hash_queue_wait, passwords::DEFAULT_QUEUE_WAIT);
        let c = load(&[
            ("RAMPART_HASH_WORKERS", "3"),
            ("RAMPART_HASH_QUEUE", "8"),
            ("RAMPART_HASH_QUEUE_WAIT_MS", "250"),
        ])
        .unwrap();
        assert_eq!(c.hash_workers, Some(3));
        assert_eq!(c.hash_queue, 8);
        assert_eq!(c.hash_queue_wait, Duration::from_millis(250));
        for ok in ["1", "60000"] {
            let c = load(&[("RAMPART_HASH_QUEUE_WAIT_MS", ok)]).unwrap();
            assert_eq!(c.hash_queue_wait.as_millis().to_string(), ok);
        }
        for bad in ["0", "60001", "-1", "1.5", "1s", "soon"] {
            let problems = load(&[("RAMPART_HASH_QUEUE_WAIT_MS", bad)]).unwrap_err();
            assert_eq!(problems.len(), 1, "{bad:?}: {problems:?}");
            assert!(
                problems[0].starts_with("RAMPART_HASH_QUEUE_WAIT_MS: ")
                    && problems[0].contains("1 to 60000"),
                "{bad:?}: {problems:?}"
            );
        }
        let mut src = Sources::default();
        src.merge_toml("hash_queue_wait_ms = 500").unwrap();
        assert!(Config::unknown_variables(&src).is_empty());
        assert_eq!(
            Config::load(&src).unwrap().hash_queue_wait,
            Duration::from_millis(500)
        );
    }

    #[test]
    fn ipv6_prefix_is_32_to_128_bits() {
        assert_eq!(load(&[]).unwrap().ipv6_prefix, 64);
        for ok in ["32", "48", "56", "128"] {
            let c = load(&[("RAMPART_IPV6_PREFIX", ok)]).unwrap();
            assert_eq!(c.ipv6_prefix.to_string(), ok);
        }
        for bad in ["31", "129", "0", "-64", "64.0", "/64", "sixty-four"] {
            let problems = load(&[("RAMPART_IPV6_PREFIX", bad)]).unwrap_err();
            assert_eq!(problems.len(), 1, "{bad:?}: {problems:?}");
            assert!(
                problems[0].starts_with("RAMPART_IPV6_PREFIX") && problems[0].contains("32 to 128"),
                "{bad:?}: {problems:?}"
            );
        }
    }

    #[test]
    fn audit_checkpoint_interval_defaults_to_an_hour_and_is_bounded() {
        assert_eq!(
            load(&[]).unwrap().audit_checkpoint_interval,
            Duration::from_secs(3600)
        );
        let c = load(&[("RAMPART_AUDIT_CHECKPOINT_INTERVAL", "15m")]).unwrap();
        assert_eq!(c.audit_checkpoint_interval, Duration::from_secs(900));
        for bad in ["0", "2d", "1h30m", "soon"] {
            let problems = load(&[("RAMPART_AUDIT_CHECKPOINT_INTERVAL", bad)]).unwrap_err();
            assert!(
                problems
                    .iter()
                    .any(|p| p.starts_with("RAMPART_AUDIT_CHECKPOINT_INTERVAL")),
                "{bad}: {problems:?}"
            );
        }
        let mut src = Sources::default();
        src.merge_toml("audit_checkpoint_interval = \"10m\"")
            .unwrap();
        assert!(Config::unknown_variables(&src).is_empty());
    }

    #[test]
    fn durations_accept_units() {
        assert_eq!(parse_duration("900"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("7d"), Some(7 * DAY));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        for bad in ["", "m", "1.5m", "-3", "3w", "1 m", "99999999999999999999d"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_bad_value_is_reported_with_its_name() {
        let problems = load(&[
            ("RAMPART_BIND", "nope"),
            ("RAMPART_RATE_LIMIT_PER_MINUTE", "0"),
            ("RAMPART_JWT_ALG", "HS256"),
            ("RAMPART_JWT_LEEWAY", "90"),
            ("RAMPART_DATA_KEY", "c2hvcnQ="),
            ("RAMPART_TRUSTED_PROXIES", "10.0.0.0/33"),
            ("DATABASE_URL", "mysql://secret@x"),
        ])
        .unwrap_err();
        for name in [
            "RAMPART_BIND",
            "RAMPART_RATE_LIMIT_PER_MINUTE",
            "RAMPART_JWT_ALG",
            "RAMPART_JWT_LEEWAY",
            "RAMPART_DATA_KEY",
            "RAMPART_TRUSTED_PROXIES",
            "DATABASE_URL",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(name)),
                "{name}: {problems:?}"
            );
        }
        assert!(
            !problems.iter().any(|p| p.contains("secret")),
            "secret echoed: {problems:?}"
        );
    }

    #[test]
    fn toml_file_is_overridden_by_env() {
        let mut src = Sources::default();
        src.merge_toml("bind = \"127.0.0.1:9000\"\nrate_limit_per_minute = 42\nallowed_origins = [\"https://a.example\", \"https://b.example\"]\n")
            .unwrap();
        src.merge_env([("RAMPART_BIND".to_owned(), "127.0.0.1:9001".to_owned())]);
        let c = Config::load(&src).unwrap();
        assert_eq!(c.bind.port(), 9001);
        assert_eq!(c.rate_limit_per_minute, 42);
        assert_eq!(
            c.allowed_origins,
            ["https://a.example", "https://b.example"]
        );
    }

    fn prod_ok() -> Vec<(&'static str, &'static str)> {
        vec![
            ("RAMPART_ENV", "production"),
            ("RAMPART_ALLOWED_ORIGINS", "https://app.example"),
            (
                "RAMPART_DATA_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            ),
            ("RAMPART_SMTP_URL", "smtps://user:pw@mail.example"),
            ("RAMPART_PUBLIC_URL", "https://api.example"),
            (
                "DATABASE_URL",
                "postgres://app@db.example/rampart?sslmode=verify-full",
            ),
        ]
    }

    fn prod_problems(pairs: &[(&str, &str)]) -> Vec<String> {
        let src = Sources::from_pairs(pairs.iter().copied());
        let c = Config::load(&src).unwrap();
        c.production_problems(&src, None)
    }

    #[test]
    fn production_wants_tls_for_a_remote_redis() {
        let with = |url: &'static str| {
            let mut pairs = prod_ok();
            pairs.push(("REDIS_URL", url));
            prod_problems(&pairs)
        };
        for ok in [
            "redis://127.0.0.1:6379",
            "redis://localhost/0",
            "redis://[::1]:6379",
            "rediss://:pw@redis.example:6380/0",
        ] {
            assert_eq!(with(ok), Vec::<String>::new(), "{ok}");
        }
        for bad in [
            "redis://:pw@redis.example:6379",
            "rediss://redis.example/#insecure",
        ] {
            let problems = with(bad);
            assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
            assert!(problems[0].starts_with("REDIS_URL: "), "{problems:?}");
            assert!(!problems[0].contains("pw@"), "never echoes the URL");
        }
    }

    #[test]
    fn production_accepts_a_complete_configuration() {
        assert_eq!(prod_problems(&prod_ok()), Vec::<String>::new());
    }

    #[test]
    fn production_refuses_each_rule() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("RAMPART_ALLOWED_ORIGINS", None, "RAMPART_ALLOWED_ORIGINS"),
            (
                "RAMPART_ALLOWED_ORIGINS",
                Some("*"),
                "RAMPART_ALLOWED_ORIGINS",
            ),
            ("RAMPART_DATA_KEY", None, "RAMPART_DATA_KEY"),
            ("RAMPART_SMTP_URL", None, "RAMPART_SMTP_URL"),
            (
                "RAMPART_SMTP_URL",
                Some("smtp://mail.example"),
                "RAMPART_SMTP_URL",
            ),
            ("RAMPART_PUBLIC_URL", None, "RAMPART_PUBLIC_URL"),
            (
                "RAMPART_PUBLIC_URL",
                Some("http://api.example"),
                "RAMPART_PUBLIC_URL",
            ),
            (
                "DATABASE_URL",
                Some("postgres://app@db.example/r?sslmode=require"),
                "DATABASE_URL",
            ),
            (
                "DATABASE_URL",
                Some("postgres://app@db.example/r"),
                "DATABASE_URL",
            ),
            (
                "RAMPART_WEBAUTHN_RP_ID",
                Some("evil.example"),
                "RAMPART_WEBAUTHN_RP_ID",
            ),
            (
                "RAMPART_WEBAUTHN_RP_ID",
                Some("example"),
                "RAMPART_WEBAUTHN_RP_ID",
            ),
        ];
        for (var, value, expect) in cases {
            let mut pairs: Vec<_> = prod_ok().into_iter().filter(|(k, _)| k != var).collect();
            if let Some(v) = value {
                pairs.push((var, v));
            }
            let problems = prod_problems(&pairs);
            assert_eq!(problems.len(), 1, "{var}={value:?}: {problems:?}");
            assert!(problems[0].starts_with(expect), "{problems:?}");
        }
        let mut pairs = prod_ok();
        pairs.push(("RAMPART_COOKIE_SECURE", "false"));
        assert!(prod_problems(&pairs)[0].starts_with("RAMPART_COOKIE_SECURE"));
        let mut pairs = prod_ok();
        pairs.push(("RAMPART_RATE_LIMIT_PER_MINUT", "5"));
        assert!(prod_problems(&pairs)[0].starts_with("RAMPART_RATE_LIMIT_PER_MINUT:"));
        let src = Sources::from_pairs(prod_ok());
        let c = Config::load(&src).unwrap();
        assert!(
            c.production_problems(&src, Some("no key".to_owned()))[0]
                .starts_with("RAMPART_JWT_KEYS_DIR")
        );
    }

    #[test]
    fn loopback_and_socket_postgres_need_no_tls() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/app",
            "postgres://postgres@localhost/app",
            "postgres://postgres@[::1]/app",
            "postgres:///app?host=/var/run/postgresql",
            "sqlite://./data/rampart.db",
            "postgres://app@db.example/r?sslmode=verify-ca",
            "postgres://app@db.example/r?ssl-mode=verify-full",
        ] {
            assert_eq!(postgres_tls_problem(url), None, "{url}");
        }
    }

    /// Contract §9: every problem in one run. A malformed data key and six broken
    /// production rules are seven lines, one per problem, each naming its variable; the
    /// malformed key is not reported a second time as "unset".
    #[test]
    fn production_reports_parse_errors_and_rules_together() {
        let pairs: Vec<(&str, &str)> = prod_ok()
            .into_iter()
            .filter(|(k, _)| !matches!(*k, "RAMPART_DATA_KEY" | "DATABASE_URL"))
            .chain([
                ("RAMPART_DATA_KEY", "not-a-key"),
                ("RAMPART_ARGON2_MEMORY_KIB", "8"),
                ("RAMPART_LOCKOUT_SECONDS", "1"),
                ("RAMPART_LOGIN_MAX_FAILURES", "1000"),
                ("RAMPART_TRUSTED_PROXIES", "0.0.0.0/0"),
                ("RAMPART_ACCESS_TOKEN_TTL", "24h"),
            ])
            .collect();
        let src = Sources::from_pairs(pairs);
        let problems = Config::load_with(&src, |c| c.production_problems(&src, None)).unwrap_err();
        let named: Vec<&str> = problems.iter().map(|p| variable_of(p)).collect();
        assert_eq!(
            named,
            [
                "RAMPART_DATA_KEY",
                "DATABASE_URL",
                "RAMPART_ARGON2_MEMORY_KIB",
                "RAMPART_LOCKOUT_SECONDS",
                "RAMPART_LOGIN_MAX_FAILURES",
                "RAMPART_TRUSTED_PROXIES",
                "RAMPART_ACCESS_TOKEN_TTL",
            ],
            "{problems:#?}"
        );
        assert_eq!(
            problems[0],
            "RAMPART_DATA_KEY: must be 32 random bytes, base64-encoded"
        );
        // Without rules, or with every rule met, `load_with` is `load`.
        assert!(Config::load_with(&Sources::from_pairs(prod_ok()), |_| Vec::new()).is_ok());
    }

    #[test]
    fn production_wants_database_url_named() {
        let without: Vec<_> = prod_ok()
            .into_iter()
            .filter(|(k, _)| *k != "DATABASE_URL")
            .collect();
        let problems = prod_problems(&without);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("DATABASE_URL: must be set"),
            "{problems:?}"
        );
        // The database commands apply the same rule.
        let src = Sources::from_pairs(without.iter().copied());
        let c = Config::load(&src).unwrap();
        assert_eq!(c.database_problems(&src), problems);
        // An explicit SQLite file is allowed (one instance).
        let mut sqlite = without.clone();
        sqlite.push(("DATABASE_URL", "sqlite:///var/lib/rampart/rampart.db"));
        assert_eq!(prod_problems(&sqlite), Vec::<String>::new());
        // Development keeps its default.
        assert_eq!(load(&[]).unwrap().database_url, DEFAULT_DATABASE_URL);
    }

    #[test]
    fn production_floors() {
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = prod_ok();
            pairs.extend_from_slice(extra);
            prod_problems(&pairs)
        };
        // At the floors: accepted.
        for ok in [
            &[
                ("RAMPART_ARGON2_MEMORY_KIB", "19456"),
                ("RAMPART_ARGON2_ITERATIONS", "2"),
            ][..],
            &[
                ("RAMPART_ARGON2_MEMORY_KIB", "7168"),
                ("RAMPART_ARGON2_ITERATIONS", "6"),
            ],
            &[
                ("RAMPART_ARGON2_MEMORY_KIB", "38912"),
                ("RAMPART_ARGON2_ITERATIONS", "1"),
            ],
            &[("RAMPART_LOCKOUT_SECONDS", "60")],
            &[("RAMPART_LOGIN_MAX_FAILURES", "100")],
            &[(
                "RAMPART_TRUSTED_PROXIES",
                "10.0.0.0/8, 2001:db8::/16, ::ffff:10.0.0.0/104",
            )],
            &[("RAMPART_ACCESS_TOKEN_TTL", "1h")],
        ] {
            assert_eq!(with(ok), Vec::<String>::new(), "{ok:?}");
        }
        // Below them: one line each, naming the variable.
        for (bad, var) in [
            (
                &[
                    ("RAMPART_ARGON2_MEMORY_KIB", "7167"),
                    ("RAMPART_ARGON2_ITERATIONS", "10"),
                ][..],
                "RAMPART_ARGON2_MEMORY_KIB",
            ),
            (
                &[
                    ("RAMPART_ARGON2_MEMORY_KIB", "8"),
                    ("RAMPART_ARGON2_ITERATIONS", "1"),
                ],
                "RAMPART_ARGON2_MEMORY_KIB",
            ),
            (
                &[
                    ("RAMPART_ARGON2_MEMORY_KIB", "19455"),
                    ("RAMPART_ARGON2_ITERATIONS", "2"),
                ],
                "RAMPART_ARGON2_ITERATIONS",
            ),
            (
                &[
                    ("RAMPART_ARGON2_MEMORY_KIB", "7168"),
                    ("RAMPART_ARGON2_ITERATIONS", "5"),
                ],
                "RAMPART_ARGON2_ITERATIONS",
            ),
            (
                &[("RAMPART_LOCKOUT_SECONDS", "59")],
                "RAMPART_LOCKOUT_SECONDS",
            ),
            (
                &[("RAMPART_LOGIN_MAX_FAILURES", "101")],
                "RAMPART_LOGIN_MAX_FAILURES",
            ),
            (
                &[("RAMPART_TRUSTED_PROXIES", "10.0.0.1, 0.0.0.0/0")],
                "RAMPART_TRUSTED_PROXIES",
            ),
            (
                &[("RAMPART_TRUSTED_PROXIES", "10.0.0.0/7")],
                "RAMPART_TRUSTED_PROXIES",
            ),
            (
                &[("RAMPART_TRUSTED_PROXIES", "::/0")],
                "RAMPART_TRUSTED_PROXIES",
            ),
            (
                &[("RAMPART_TRUSTED_PROXIES", "2000::/15")],
                "RAMPART_TRUSTED_PROXIES",
            ),
            // IPv4-mapped IPv6 entries are as wide as the IPv4 range they cover.
            (
                &[("RAMPART_TRUSTED_PROXIES", "::ffff:0:0/96")],
                "RAMPART_TRUSTED_PROXIES",
            ),
            (
                &[("RAMPART_TRUSTED_PROXIES", "::ffff:0.0.0.0/103")],
                "RAMPART_TRUSTED_PROXIES",
            ),
            (
                &[("RAMPART_TRUSTED_PROXIES", "::/80")],
                "RAMPART_TRUSTED_PROXIES",
            ),
            (
                &[("RAMPART_ACCESS_TOKEN_TTL", "3601")],
                "RAMPART_ACCESS_TOKEN_TTL",
            ),
        ] {
            let problems = with(bad);
            assert_eq!(problems.len(), 1, "{bad:?}: {problems:?}");
            assert!(
                problems[0].starts_with(&format!("{var}: ")),
                "{bad:?}: {problems:?}"
            );
        }
        // Development keeps accepting them (tests use cheap hashing, for one).
        assert!(
            load(&[
                ("RAMPART_ARGON2_MEMORY_KIB", "256"),
                ("RAMPART_ARGON2_ITERATIONS", "1"),
                ("RAMPART_LOCKOUT_SECONDS", "1"),
                ("RAMPART_TRUSTED_PROXIES", "0.0.0.0/0"),
            ])
            .is_ok()
        );
    }

    /// A setting the verifier would refuse locks every user out at the next login: refused
    /// in every environment.
    #[test]
    fn argon2_settings_stay_within_what_the_verifier_accepts() {
        let at = |m: &str, t: &str, p: &str| {
            load(&[
                ("RAMPART_ARGON2_MEMORY_KIB", m),
                ("RAMPART_ARGON2_ITERATIONS", t),
                ("RAMPART_ARGON2_PARALLELISM", p),
            ])
        };
        let max_m = passwords::MAX_M_KIB.to_string();
        let max_t = passwords::MAX_T.to_string();
        let max_p = passwords::MAX_P.to_string();
        assert!(at(&max_m, &max_t, &max_p).is_ok());
        assert!(at("512", "1", "64").is_ok());
        for (m, t, p, var) in [
            ("1048577", "1", "1", "RAMPART_ARGON2_MEMORY_KIB"),
            ("19456", "65", "1", "RAMPART_ARGON2_ITERATIONS"),
            ("19456", "2", "65", "RAMPART_ARGON2_PARALLELISM"),
            ("511", "1", "64", "RAMPART_ARGON2_MEMORY_KIB"),
        ] {
            let problems = at(m, t, p).unwrap_err();
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(problems[0].starts_with(var), "{problems:?}");
        }
        // And the verifier really does accept a hash made at the ceiling of iterations.
        let c = at("8", &max_t, "1").unwrap();
        let hasher = passwords::PasswordHasher::new(passwords::HashParams {
            m_kib: c.argon2_memory_kib,
            t: c.argon2_iterations,
            p: c.argon2_parallelism,
        })
        .unwrap();
        let phc = hasher.hash("violet-harbor-lamp").unwrap();
        assert!(hasher.verify("violet-harbor-lamp", &phc).is_valid());
    }

    /// `sslmode` given twice or a host replaced by `host=`/`hostaddr=`: judged as sqlx
    /// will connect (the last parameter wins); the store's tests compare with sqlx itself.
    #[test]
    fn postgres_tls_rule_follows_what_sqlx_connects_to() {
        for (url, refused) in [
            (
                "postgres://app@db.example/r?sslmode=verify-full&sslmode=disable",
                true,
            ),
            (
                "postgres://app@db.example/r?sslmode=verify-full&ssl-mode=require",
                true,
            ),
            (
                "postgres://app@db.example/r?sslmode=disable&sslmode=verify-full",
                false,
            ),
            ("postgres://app@127.0.0.1/r?hostaddr=203.0.113.7", true),
            ("postgres://app@localhost/r?host=db.example", true),
            (
                "postgres://app@127.0.0.1/r?hostaddr=203.0.113.7&hostaddr=127.0.0.1",
                false,
            ),
            ("postgres://app@db.example/r?hostaddr=127.0.0.1", false),
            (
                "postgres://app@127.0.0.1/r?hostaddr=203.0.113.7&sslmode=verify-full",
                false,
            ),
            ("postgres://app@db.example/r?host=/run/postgresql", false),
            (
                "postgres://app@db.example/r?host=/run/postgresql&host=db.example",
                false,
            ),
        ] {
            assert_eq!(postgres_tls_problem(url).is_some(), refused, "{url}");
        }
    }

    #[test]
    fn smtp_tls_rules() {
        assert!(smtp_url_requires_tls("smtps://u:p@h"));
        assert!(smtp_url_requires_tls("smtp://h:587?tls=required"));
        assert!(!smtp_url_requires_tls("smtp://h:587?tls=opportunistic"));
        assert!(!smtp_url_requires_tls("smtp://h"));
    }

    #[test]
    fn origins_must_be_exact() {
        assert!(load(&[("RAMPART_ALLOWED_ORIGINS", "https://a.example/path")]).is_err());
        assert_eq!(
            load(&[(
                "RAMPART_ALLOWED_ORIGINS",
                "https://a.example, http://localhost:3000"
            )])
            .unwrap()
            .allowed_origins,
            ["https://a.example", "http://localhost:3000"]
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Variables whose values the property below draws at random: one of each kind of
        /// parser (address, duration, list of networks, origins, number, boolean, enum, key,
        /// URL).
        const VARIABLES: &[&str] = &[
            "RAMPART_ENV",
            "RAMPART_BIND",
            "RAMPART_ACCESS_TOKEN_TTL",
            "RAMPART_REFRESH_TOKEN_TTL",
            "RAMPART_SESSION_MAX_AGE",
            "RAMPART_TRUSTED_PROXIES",
            "RAMPART_ALLOWED_ORIGINS",
            "RAMPART_DB_POOL_SIZE",
            "RAMPART_COOKIE_SECURE",
            "RAMPART_JWT_ALG",
            "RAMPART_LOG_FORMAT",
            "RAMPART_LOCKOUT_SCOPE",
            "RAMPART_DATA_KEY",
            "RAMPART_PUBLIC_URL",
            "DATABASE_URL",
            "REDIS_URL",
        ];

        /// Anything, or something close enough to a real value to reach the deeper checks.
        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                "[0-9]{0,25}[smhdx]?",
                "[0-9a-fA-F:./\\[\\], ]{0,40}",
                "(https?|postgres|sqlite|redis)://[a-z0-9.:@/?=-]{0,30}",
                "[A-Za-z0-9+/=_-]{0,60}",
                "(true|false|yes|no|on|off|0|1|production|development|json|pretty|RS256|EdDSA|ip|email|email_ip)",
            ]
        }

        fn unit_secs(unit: &str) -> u64 {
            match unit {
                "" | "s" => 1,
                "m" => 60,
                "h" => 3600,
                _ => 86_400,
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn parse_duration_never_panics(raw in any::<String>()) {
                let _ = parse_duration(&raw);
            }

            #[test]
            fn parse_duration_never_panics_on_near_misses(raw in "[ 0-9smhdSMHD+-]{0,30}") {
                let _ = parse_duration(&raw);
            }

            #[test]
            fn parse_duration_round_trips_every_unit(
                n in any::<u64>(),
                unit in prop::sample::select(vec!["", "s", "m", "h", "d"]),
            ) {
                let expected = n.checked_mul(unit_secs(unit)).map(Duration::from_secs);
                prop_assert_eq!(parse_duration(&format!("{n}{unit}")), expected);
                prop_assert_eq!(parse_duration(&format!(" {n}{unit}\t")), expected);
            }

            #[test]
            fn parse_duration_round_trips_in_range(
                n in 0u64..=u64::MAX / 86_400,
                unit in prop::sample::select(vec!["", "s", "m", "h", "d"]),
            ) {
                prop_assert_eq!(
                    parse_duration(&format!("{n}{unit}")),
                    Some(Duration::from_secs(n * unit_secs(unit)))
                );
            }

            #[test]
            fn load_never_panics_and_names_the_variable_of_every_problem(
                values in prop::collection::vec(prop::option::of(value()), VARIABLES.len()),
            ) {
                let pairs: Vec<(&str, &str)> = VARIABLES
                    .iter()
                    .zip(&values)
                    .filter_map(|(name, v)| v.as_deref().map(|v| (*name, v)))
                    .collect();
                if let Err(problems) = load(&pairs) {
                    prop_assert!(!problems.is_empty());
                    for line in &problems {
                        prop_assert!(
                            KNOWN.iter().any(|name| line.starts_with(&format!("{name}: "))),
                            "{line:?} does not start with a variable's name"
                        );
                    }
                }
            }
        }
    }
}
