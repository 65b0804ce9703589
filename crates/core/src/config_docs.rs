//! The configuration reference: one entry per variable [`crate::config`] reads, rendered
//! into `docs/configuration.md` by [`render_markdown`]. A test fails when a known variable
//! has no entry here (or an entry names an unknown one) and when the committed file
//! differs from what this renders, so the reference cannot drift from the code.
//! Regenerate it with `RAMPART_WRITE_CONFIG_DOCS=1 cargo test -p rampart-core config_docs`.

use crate::config::secret_variables;

/// One variable: its name, its default as text, and what it does.
pub struct VarDoc {
    pub name: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
}

const fn v(name: &'static str, default: &'static str, doc: &'static str) -> VarDoc {
    VarDoc { name, default, doc }
}

/// Groups of variables, in the order the reference shows them.
pub const SECTIONS: &[(&str, &[VarDoc])] = &[
    (
        "Server",
        &[
            v(
                "RAMPART_ENV",
                "`development`",
                "`development` or `production`. Production refuses unsafe settings (insecure cookies, a plain-http public URL, weak hashing, …) and turns on HSTS.",
            ),
            v(
                "RAMPART_BIND",
                "`127.0.0.1:8080`",
                "Address and port the HTTP server listens on.",
            ),
            v(
                "RAMPART_PUBLIC_URL",
                "`http://` + `RAMPART_BIND`",
                "The absolute URL clients reach Rampart at. Links in mail start with it, its host is the default WebAuthn RP ID, and its origin may always use the refresh cookie (the console).",
            ),
            v(
                "RAMPART_REQUEST_TIMEOUT",
                "`30s`",
                "A request still running after this is answered 503 (at most 600 s).",
            ),
            v(
                "RAMPART_SHUTDOWN_TIMEOUT",
                "`30s`",
                "How long in-flight requests may finish after SIGTERM (at most 600 s).",
            ),
            v(
                "RAMPART_MAX_BODY_BYTES",
                "`65536`",
                "Largest request body accepted (1 KiB–64 MiB); larger is 413.",
            ),
            v(
                "RAMPART_DOCS",
                "`true` in development, else `false`",
                "Serve Swagger UI at `/docs` and the document at `/openapi.json`.",
            ),
            v(
                "RAMPART_CONSOLE",
                "`true`",
                "Serve the web console at `/console/` and the mailed links' redirects (`/reset-password`, `/verify-email`, `/confirm-email`).",
            ),
            v(
                "RAMPART_ALLOWED_ORIGINS",
                "(none)",
                "Comma-separated exact origins that get CORS headers with credentials and may use the refresh cookie.",
            ),
            v(
                "RAMPART_TRUSTED_PROXIES",
                "(none)",
                "Comma-separated CIDRs of reverse proxies whose `X-Forwarded-For` names the client.",
            ),
            v(
                "RAMPART_IPV6_PREFIX",
                "`64`",
                "Per-IP limits key an IPv6 client by its network of this many bits (32–128).",
            ),
        ],
    ),
    (
        "Storage",
        &[
            v(
                "DATABASE_URL",
                "`sqlite://./data/rampart.db`",
                "`sqlite:…` or `postgres://…`. Secret: never echoed.",
            ),
            v(
                "RAMPART_DB_POOL_SIZE",
                "`10`",
                "Database connections per instance (1–1000).",
            ),
            v(
                "REDIS_URL",
                "(none)",
                "`redis://` or `rediss://`. Shares rate limits, lockouts and revocations between instances. Secret.",
            ),
            v(
                "RAMPART_REDIS_PREFIX",
                "`rampart`",
                "Prefix of every Redis key and channel, so deployments can share one Redis.",
            ),
            v(
                "RAMPART_PURGE_INTERVAL",
                "`10m`",
                "How often expired sessions, tokens, challenges and lockout rows are deleted (one instance at a time).",
            ),
            v(
                "RAMPART_AUDIT_CHECKPOINT_INTERVAL",
                "`1h`",
                "How often a server logs a signed audit checkpoint when the chain grew.",
            ),
        ],
    ),
    (
        "Logging",
        &[
            v("RAMPART_LOG_FORMAT", "`json`", "`json` or `pretty`."),
            v(
                "RAMPART_LOG_LEVEL",
                "`info`",
                "A `tracing` filter such as `info` or `rampart=debug,info`.",
            ),
            v(
                "RAMPART_METRICS_BIND",
                "(unset: no metrics)",
                "`IP:port` of a separate listener serving `GET /metrics` in the Prometheus text format; must differ from `RAMPART_BIND` (metrics are never on the API port). Traces are configured by the standard `OTEL_*` variables instead (docs/operations.md, Monitoring).",
            ),
        ],
    ),
    (
        "Passkeys (WebAuthn)",
        &[
            v(
                "RAMPART_WEBAUTHN_RP_ID",
                "the host of `RAMPART_PUBLIC_URL`",
                "The WebAuthn relying party ID passkeys are bound to. Production refuses one that is not the public URL's host or a parent domain of it. Accepted origins: the public URL's and each `RAMPART_ALLOWED_ORIGINS` origin whose host is the RP ID or ends with `.` + the RP ID.",
            ),
            v(
                "RAMPART_WEBAUTHN_RP_NAME",
                "`Rampart`",
                "The relying party name authenticators show (one line).",
            ),
        ],
    ),
    (
        "Tokens and sessions",
        &[
            v(
                "RAMPART_JWT_KEYS_DIR",
                "`./data/keys`",
                "Directory of `<kid>.pem` signing keys and the `active` file.",
            ),
            v(
                "RAMPART_JWT_ALG",
                "`RS256`",
                "`RS256` (3072-bit RSA) or `EdDSA` (Ed25519).",
            ),
            v("RAMPART_JWT_ISSUER", "`rampart`", "The `iss` claim."),
            v("RAMPART_JWT_AUDIENCE", "`rampart-api`", "The `aud` claim."),
            v(
                "RAMPART_JWT_LEEWAY",
                "`30s`",
                "Clock leeway for `exp` and `nbf` (at most 60 s).",
            ),
            v(
                "RAMPART_ACCESS_TOKEN_TTL",
                "`15m`",
                "Lifetime of an access token (at most a day).",
            ),
            v(
                "RAMPART_REFRESH_TOKEN_TTL",
                "`7d`",
                "Lifetime of a refresh token from its issue: the idle timeout.",
            ),
            v(
                "RAMPART_SESSION_MAX_AGE",
                "`30d`",
                "No session outlives this from its login, however often it refreshes.",
            ),
            v(
                "RAMPART_COOKIE_SECURE",
                "`true`",
                "`false` drops `Secure` and the `__Secure-` prefix of the refresh cookie, for plain-http development only (refused in production).",
            ),
        ],
    ),
    (
        "Passwords and lockout",
        &[
            v(
                "RAMPART_PASSWORD_MIN_LENGTH",
                "`12`",
                "Shortest password accepted (8–128).",
            ),
            v(
                "RAMPART_LOGIN_MAX_FAILURES",
                "`5`",
                "Failed logins for one email within the window that lock it.",
            ),
            v(
                "RAMPART_LOCKOUT_SECONDS",
                "`900`",
                "The window and the first lock's length.",
            ),
            v(
                "RAMPART_LOCKOUT_MAX_SECONDS",
                "`86400`",
                "Longest a growing lock may last (at least `RAMPART_LOCKOUT_SECONDS`).",
            ),
            v(
                "RAMPART_LOCKOUT_SCOPE",
                "`email`",
                "`email`, or `email_ip` to count failures per email and client address.",
            ),
            v(
                "RAMPART_ARGON2_MEMORY_KIB",
                "`19456`",
                "Argon2id memory cost in KiB.",
            ),
            v("RAMPART_ARGON2_ITERATIONS", "`2`", "Argon2id time cost."),
            v("RAMPART_ARGON2_PARALLELISM", "`1`", "Argon2id lanes."),
            v(
                "RAMPART_HASH_WORKERS",
                "one per core",
                "Threads that hash passwords (1–256).",
            ),
            v(
                "RAMPART_HASH_QUEUE",
                "`64`",
                "Hash jobs that may wait; beyond it a request gets 503 at once.",
            ),
            v(
                "RAMPART_HASH_QUEUE_WAIT_MS",
                "`1000`",
                "Longest a hash job may wait for a thread before it is refused with 503.",
            ),
        ],
    ),
    (
        "Rate limits",
        &[
            v(
                "RAMPART_RATE_LIMIT_PER_MINUTE",
                "`300`",
                "Requests per client IP per minute (health checks exempt).",
            ),
            v(
                "RAMPART_LOGIN_RATE_PER_MINUTE",
                "`10`",
                "Login attempts per client IP per minute.",
            ),
            v(
                "RAMPART_REGISTER_RATE_PER_HOUR",
                "`20`",
                "Registrations per client IP per hour.",
            ),
            v(
                "RAMPART_RESET_RATE_PER_HOUR",
                "`5`",
                "Password-reset mails per email per hour (and 4× that in requests per client IP).",
            ),
        ],
    ),
    (
        "Mail and recovery",
        &[
            v(
                "RAMPART_SMTP_URL",
                "(none)",
                "`smtp://` or `smtps://` server for outgoing mail; without it mail is written to the outbox. Secret.",
            ),
            v(
                "RAMPART_MAIL_FROM",
                "`Rampart <no-reply@localhost>`",
                "`From:` of outgoing mail (one line).",
            ),
            v(
                "RAMPART_MAIL_OUTBOX",
                "`./data/outbox`",
                "Directory that receives each message as an `.eml` file when no SMTP server is set.",
            ),
            v(
                "RAMPART_PASSWORD_RESET_TTL",
                "`30m`",
                "Lifetime of a password-reset link.",
            ),
            v(
                "RAMPART_EMAIL_TOKEN_TTL",
                "`24h`",
                "Lifetime of an email verification or email change link (at most 30 days).",
            ),
            v(
                "RAMPART_REQUIRE_VERIFIED_EMAIL",
                "`false`",
                "When `true`, the right password (and second factor) of an account whose email is not verified gets 403 `email_unverified` and no tokens; a wrong password stays 401.",
            ),
        ],
    ),
    (
        "Encryption at rest",
        &[
            v(
                "RAMPART_DATA_KEY",
                "(none; required in production)",
                "32 random bytes, base64: seals TOTP secrets and recovery-code digests. Secret.",
            ),
            v(
                "RAMPART_DATA_KEYS_OLD",
                "(none)",
                "Comma-separated previous data keys, still accepted for decryption during a rotation. Secret.",
            ),
        ],
    ),
];

fn toml_key(name: &str) -> String {
    name.strip_prefix("RAMPART_")
        .unwrap_or(name)
        .to_ascii_lowercase()
}

/// `docs/configuration.md`, as the code defines it.
pub fn render_markdown() -> String {
    let mut out = String::from(
        "# Configuration\n\n\
         <!-- Generated from crates/core/src/config_docs.rs by its tests; do not edit by hand.\n     \
         Regenerate: RAMPART_WRITE_CONFIG_DOCS=1 cargo test -p rampart-core config_docs -->\n\n\
         Rampart reads environment variables, and optionally a TOML file given with \
         `--config FILE` whose keys are the variable names in lower case without the \
         `RAMPART_` prefix (`bind = \"0.0.0.0:8080\"`); the environment overrides the file. \
         An unknown `RAMPART_` variable or key is refused at start, naming it. Durations \
         take `s`, `m`, `h` or `d` (`90s`, `15m`); a bare number is seconds. Values of \
         secret variables are never echoed in errors or logs.\n",
    );
    let secrets = secret_variables();
    for (title, vars) in SECTIONS {
        out.push_str(&format!(
            "\n## {title}\n\n| variable | TOML key | default | meaning |\n|---|---|---|---|\n"
        ));
        for var in *vars {
            let secret = if secrets.contains(&var.name) {
                " 🔒"
            } else {
                ""
            };
            out.push_str(&format!(
                "| `{}`{secret} | `{}` | {} | {} |\n",
                var.name,
                toml_key(var.name),
                var.default,
                var.doc.replace('|', "\\|")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::known_variables;

    #[test]
    fn config_docs_cover_exactly_the_known_variables() {
        let documented: Vec<&str> = SECTIONS
            .iter()
            .flat_map(|(_, vars)| vars.iter().map(|v| v.name))
            .collect();
        for name in known_variables() {
            assert!(
                documented.contains(name),
                "{name} is read by config.rs but not documented in config_docs.rs"
            );
        }
        for name in &documented {
            assert!(
                known_variables().contains(name),
                "{name} is documented but config.rs does not read it"
            );
        }
        let mut unique = documented.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            documented.len(),
            "a variable is documented twice"
        );
    }

    #[test]
    fn config_docs_committed_file_matches_the_code() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
        let rendered = render_markdown();
        if std::env::var_os("RAMPART_WRITE_CONFIG_DOCS").is_some() {
            std::fs::write(&path, &rendered).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == rendered,
            "docs/configuration.md differs from what crates/core/src/config_docs.rs renders; \
             regenerate it: RAMPART_WRITE_CONFIG_DOCS=1 cargo test -p rampart-core config_docs"
        );
    }
}
