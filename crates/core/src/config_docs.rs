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
                "`development` (or `dev`) or `production` (or `prod`). Production applies the [production rules](production.md) (refusing unsafe settings such as insecure cookies, a plain-http public URL or weak hashing), sends HSTS, turns the docs off by default, and neither generates keys nor migrates by itself.",
            ),
            v(
                "RAMPART_BIND",
                "`127.0.0.1:8080`",
                "Address and port the HTTP server listens on: `IP:port`, no host names. Port `0` picks a free port, which is logged.",
            ),
            v(
                "RAMPART_PUBLIC_URL",
                "`http://` + `RAMPART_BIND`",
                "The absolute URL clients reach Rampart at. Links in mail start with it (`RAMPART_PUBLIC_URL` + `/reset-password?token=…`; a trailing `/` is dropped), its host is the default WebAuthn RP ID, and its origin may always use the refresh cookie (the console). Production requires an explicit `https://` URL.",
            ),
            v(
                "RAMPART_REQUEST_TIMEOUT",
                "`30s`",
                "Time from the parsed request head to the response; a request still running after this is answered 503 `unavailable` (at most 600 s).",
            ),
            v(
                "RAMPART_SHUTDOWN_TIMEOUT",
                "`30s`",
                "How long in-flight requests may finish after SIGTERM or SIGINT (at most 600 s).",
            ),
            v(
                "RAMPART_MAX_BODY_BYTES",
                "`65536`",
                "Largest request body accepted, in bytes (1024–67 108 864, i.e. 1 KiB–64 MiB); larger is 413.",
            ),
            v(
                "RAMPART_DOCS",
                "`true` in development, else `false`",
                "Serve Swagger UI at `/docs` and the document at `/openapi.json` (404 when off). The contract names the variable; the development default is Rampart's.",
            ),
            v(
                "RAMPART_CONSOLE",
                "`true`",
                "Serve the web console at `/console/` and the mailed links' redirects (`/reset-password`, `/verify-email`, `/confirm-email`).",
            ),
            v(
                "RAMPART_ALLOWED_ORIGINS",
                "(none)",
                "Comma-separated exact origins `scheme://host[:port]` in canonical form (a trailing `/` is tolerated) that get CORS headers with credentials; the match is exact and case-sensitive. They may also use the refresh cookie (`/auth/refresh`, `/auth/logout` by cookie): a same-origin web app other than the console must list its own origin. Production requires it set, without `*`.",
            ),
            v(
                "RAMPART_TRUSTED_PROXIES",
                "(none)",
                "Comma-separated CIDRs or IPs of reverse proxies whose `X-Forwarded-For` is believed: the client is the rightmost hop that is not in this list. Production refuses an entry shorter than /8 (IPv4) or /16 (IPv6).",
            ),
            v(
                "RAMPART_IPV6_PREFIX",
                "`64`",
                "Every per-IP limit (and the `email_ip` lockout key) keys an IPv6 client by its network of this many bits (32–128); IPv4-mapped addresses count as IPv4. Audit records keep the full address.",
            ),
        ],
    ),
    (
        "Storage",
        &[
            v(
                "DATABASE_URL",
                "`sqlite://./data/rampart.db`",
                "Selects the store: `sqlite:PATH`, `sqlite://PATH`, `postgres://…` or `postgresql://…`. For SQLite, the file and its directory are created. Read by every command except `keys`. Production requires it set, and a PostgreSQL URL with `sslmode=verify-full` or `verify-ca` unless the host is local ([production rules](production.md)). Secret: never echoed in error lines.",
            ),
            v(
                "RAMPART_DB_POOL_SIZE",
                "`10`",
                "Maximum database connections of `serve` per instance (1–1000). `migrate`, `admin create`, `audit verify` and `purge` use 2.",
            ),
            v(
                "REDIS_URL",
                "(none)",
                "`redis://…` or `rediss://…` (TLS, the certificate checked against the system trust store). Shares the rate limits and announces revocations and RBAC changes between instances ([deployment.md](deployment.md)); `/health/ready` checks it. In production, a Redis not on this host needs `rediss://`. Secret: never echoed.",
            ),
            v(
                "RAMPART_REDIS_PREFIX",
                "`rampart`",
                "Prefix of every Redis key and of the invalidation channel, so several deployments can share one Redis: 1–64 of `A–Z a–z 0–9 _ - .`.",
            ),
            v(
                "RAMPART_PURGE_INTERVAL",
                "`10m`",
                "How often each server runs the [background purge](operations.md#background-purge) of expired sessions, refresh tokens, MFA challenges, reset tokens and lockout counters (±10 %, the first run within a minute of start; one instance at a time; at most 1 day). `rampart purge` runs one now.",
            ),
            v(
                "RAMPART_AUDIT_CHECKPOINT_INTERVAL",
                "`1h`",
                "How often each server logs a signed audit checkpoint when the chain grew, and once at start (at most 1 day).",
            ),
        ],
    ),
    (
        "Logging",
        &[
            v(
                "RAMPART_LOG_FORMAT",
                "`json`",
                "Log lines on stdout: `json`, or `pretty` (human-readable text).",
            ),
            v(
                "RAMPART_LOG_LEVEL",
                "`info`",
                "A `tracing` filter directive such as `info` or `warn,rampart_api=debug`. An invalid directive silently falls back to `info`. `RUST_LOG` is not read.",
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
                "Directory of `<kid>.pem` signing keys and the `active` file ([format](security-model.md#signing-keys)); also the default `--dir` of `rampart keys`. In development it also holds the generated `data.key`. Production requires `active` to name a key file that exists.",
            ),
            v(
                "RAMPART_JWT_ALG",
                "`RS256`",
                "`RS256` (3072-bit RSA) or `EdDSA` (Ed25519), exact case: the algorithm of keys generated by development start-up and by `rampart keys`, and the only one access tokens are signed and verified with. `serve` exits 1 when the active key is of the other algorithm.",
            ),
            v("RAMPART_JWT_ISSUER", "`rampart`", "The `iss` claim."),
            v("RAMPART_JWT_AUDIENCE", "`rampart-api`", "The `aud` claim."),
            v(
                "RAMPART_JWT_LEEWAY",
                "`30s`",
                "Clock leeway when verifying `exp`, `nbf` and `iat` (0–60 s).",
            ),
            v(
                "RAMPART_ACCESS_TOKEN_TTL",
                "`15m`",
                "Lifetime of an access token (at most a day; production: at most an hour). It also sets when a retired key may be deleted.",
            ),
            v(
                "RAMPART_REFRESH_TOKEN_TTL",
                "`7d`",
                "Lifetime of a refresh token from its issue: the idle timeout (at most 365 days).",
            ),
            v(
                "RAMPART_SESSION_MAX_AGE",
                "`30d`",
                "No session outlives this from its login, however often it refreshes (at most 365 days).",
            ),
            v(
                "RAMPART_COOKIE_SECURE",
                "`true`",
                "`false` drops `Secure` and the `__Secure-` prefix of the refresh cookie (it is then `rampart_refresh`), for plain-http development only (refused in production).",
            ),
        ],
    ),
    (
        "Passwords and lockout",
        &[
            v(
                "RAMPART_PASSWORD_MIN_LENGTH",
                "`12`",
                "Shortest password accepted, in characters after NFKC (8–128; the longest is 128).",
            ),
            v(
                "RAMPART_LOGIN_MAX_FAILURES",
                "`5`",
                "Failed logins for one email within the window that lock it (1–1000; production: at most 100).",
            ),
            v(
                "RAMPART_LOCKOUT_SECONDS",
                "`900`",
                "The lockout window, and the length of the first lock of a streak (at most 1 day; suffixes are accepted despite the name; production: at least 60 s). Attempts are counted before the password or code is checked.",
            ),
            v(
                "RAMPART_LOCKOUT_MAX_SECONDS",
                "`86400`",
                "Consecutive locks of one email double up to this (at least `RAMPART_LOCKOUT_SECONDS`, at most 30 days); the streak ends with a successful login or 24 h after a lock without a new one.",
            ),
            v(
                "RAMPART_LOCKOUT_SCOPE",
                "`email`",
                "`email` or `email_ip` (exact case): the lockout counter's key is the email, or the email and client IP plus a ceiling of 100 failures per email per hour. [Trade-off](security-model.md#lockout).",
            ),
            v(
                "RAMPART_ARGON2_MEMORY_KIB",
                "`19456`",
                "Argon2id memory cost in KiB (the OWASP minimum; 8–4 194 304, and at least 8 × parallelism). Production: memory × iterations ≥ 38 912 and memory ≥ 7 168.",
            ),
            v(
                "RAMPART_ARGON2_ITERATIONS",
                "`2`",
                "Argon2id time cost (1–100).",
            ),
            v(
                "RAMPART_ARGON2_PARALLELISM",
                "`1`",
                "Argon2id lanes (1–64).",
            ),
            v(
                "RAMPART_HASH_WORKERS",
                "the number of CPU cores, at least 1",
                "Threads that hash and verify passwords (1–256). On Linux they run 10 nice levels below the rest of the process, so request handling preempts them.",
            ),
            v(
                "RAMPART_HASH_QUEUE",
                "`64`",
                "Hash jobs that may wait (1–100 000); beyond that, login, registration and password change get 503 `unavailable` at once.",
            ),
            v(
                "RAMPART_HASH_QUEUE_WAIT_MS",
                "`1000`",
                "The longest a hash job may wait for a thread, in milliseconds (1–60 000). A job whose expected wait (jobs ahead ÷ threads × the average job time) is longer gets 503 `unavailable` at once; one that still waited longer is answered 503 without hashing.",
            ),
        ],
    ),
    (
        "Rate limits",
        &[
            v(
                "RAMPART_RATE_LIMIT_PER_MINUTE",
                "`300`",
                "Requests per client IP per minute (1–10 000 000; health checks exempt), as GCRA: a burst of N, then an even refill. Shared by all instances through Redis when `REDIS_URL` is set, else (and while Redis is down) per instance.",
            ),
            v(
                "RAMPART_LOGIN_RATE_PER_MINUTE",
                "`10`",
                "Attempts per client IP per minute on `/auth/login` and `/auth/mfa/verify` (1–10 000 000); shared through Redis like the global limit.",
            ),
            v(
                "RAMPART_REGISTER_RATE_PER_HOUR",
                "`20`",
                "Registrations per client IP per hour on `/auth/register` (1–10 000 000); shared through Redis like the global limit.",
            ),
            v(
                "RAMPART_RESET_RATE_PER_HOUR",
                "`5`",
                "Password-reset mails per email (1–10 000): an atomic counter in the database (shared by instances) over a one-hour window that starts at the email's first request. Per client IP, `POST /auth/password-reset/request` and `/confirm` together are limited to 4 × this per hour, in memory per instance.",
            ),
        ],
    ),
    (
        "Mail and recovery",
        &[
            v(
                "RAMPART_SMTP_URL",
                "(none: mail goes to the outbox)",
                "Mail transport: `smtps://[user:pass@]host[:port]` (implicit TLS, port 465) or `smtp://[user:pass@]host[:port]?tls=required` (STARTTLS, 587); `?tls=opportunistic` or no `tls` (plain) only to a loopback host. TLS uses the webpki (Mozilla) roots. Without it mail is written to the outbox. Production requires one of the two TLS forms (exit 2); any other form to a non-loopback host makes `serve` exit 1. Secret.",
            ),
            v(
                "RAMPART_MAIL_FROM",
                "`Rampart <no-reply@localhost>`",
                "`From:` of outgoing mail: one line, `addr@domain` or `Name <addr@domain>`. A line break is refused (exit 2); an invalid mailbox makes `serve` exit 1.",
            ),
            v(
                "RAMPART_MAIL_OUTBOX",
                "`./data/outbox`",
                "Without `RAMPART_SMTP_URL`, each message is written here as `<epoch_ms>-<uuid>.eml` (file `0600`; the directory `0700` when Rampart creates it).",
            ),
            v(
                "RAMPART_PASSWORD_RESET_TTL",
                "`30m`",
                "Lifetime of a password-reset link (at most 1 day; also stated in the mail, in minutes).",
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
                "(none; generated in development, required in production)",
                "32 random bytes, base64 (standard with padding, or URL-safe without; `openssl rand -base64 32`): the active data key. It seals TOTP secrets (XChaCha20-Poly1305) and keys the digests of recovery codes ([details](security-model.md#field-encryption)). Development generates `data.key` (base64, mode `0600`) in `RAMPART_JWT_KEYS_DIR` at its first start (or first `keys rotate-data`) and reuses it; production requires the variable; a malformed value is refused everywhere. Secret.",
            ),
            v(
                "RAMPART_DATA_KEYS_OLD",
                "(none)",
                "Comma-separated previous data keys (each in the format of `RAMPART_DATA_KEY`), used only to open secrets and to match recovery codes made under them during a [rotation](operations.md#data-key-rotation); never used to seal. Secret.",
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
         Settings come from the environment and, optionally, a TOML file passed with \
         `--config FILE`; the environment wins over the file. The TOML keys are the variable \
         names in lower case without `RAMPART_` (`DATABASE_URL` and `REDIS_URL` become \
         `database_url` and `redis_url`). A value may be a string, an integer, a boolean or \
         an array of strings; arrays are joined with commas.\n\n\
         ```toml\n\
         bind = \"0.0.0.0:8080\"\n\
         allowed_origins = [\"https://app.example\", \"https://admin.example\"]\n\
         rate_limit_per_minute = 600\n\
         request_timeout = \"15s\"\n\
         ```\n\n\
         Value formats:\n\n\
         - **Durations** are whole seconds (`900`) or a number with one suffix `s`, `m`, `h` \
         or `d` (`15m`, `7d`). They must be positive, except `RAMPART_JWT_LEEWAY`, which may \
         be 0.\n\
         - **Lists** are comma-separated.\n\
         - **Booleans** accept `true/1/yes/on` and `false/0/no/off`, case-insensitive.\n\
         - **Sizes** are bytes.\n\
         - An empty or whitespace-only value counts as unset.\n\n\
         Every bad value is reported, not only the first one, and the command exits 2. A \
         problem line for a secret variable (marked 🔒 below) never contains its value; lines \
         for the other variables show it as `(got \"…\")`.\n\n\
         **Unknown variables.** Any environment variable starting with `RAMPART_`, and any \
         TOML key, that is not in the tables below is treated as a probable typo. In \
         development, `serve` logs a warning for each one and goes on. In production, \
         `serve` refuses to start and names it. The production rules are listed in \
         [production.md](production.md).\n\n\
         The contract (`../shared/spec/api.md`) names most of these variables. Rampart's own \
         additions are `RAMPART_REQUEST_TIMEOUT`, `RAMPART_SHUTDOWN_TIMEOUT`, \
         `RAMPART_DB_POOL_SIZE`, `RAMPART_REDIS_PREFIX`, `RAMPART_PURGE_INTERVAL`, \
         `RAMPART_LOG_FORMAT`, `RAMPART_LOG_LEVEL`, `RAMPART_LOCKOUT_SCOPE`, \
         `RAMPART_ARGON2_PARALLELISM`, `RAMPART_HASH_WORKERS`, `RAMPART_HASH_QUEUE`, \
         `RAMPART_HASH_QUEUE_WAIT_MS`, `RAMPART_MAIL_FROM` and `RAMPART_DATA_KEYS_OLD`, and \
         the development default of `RAMPART_DOCS`.\n",
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
