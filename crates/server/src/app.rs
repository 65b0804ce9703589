//! Wiring: configuration → checks → keys → database → server, and the other subcommands.
//!
//! Exit status: 0 success, 1 runtime failure (or a broken audit chain), 2 configuration
//! refused (one line per problem on stderr, each naming its variable, before any port is
//! bound or any file is written).

use std::process::ExitCode;
use std::sync::Arc;

use rampart_api::AppState;
use rampart_core::audit::{NewAuditEvent, Outcome};
use rampart_core::config::{Config, JwtAlg, Sources};
use rampart_core::crypto::{self, DataKey, DataKeys};
use rampart_core::keys::{self, KeyStore};
use rampart_core::passwords::{HashParams, PasswordHasher, PasswordPolicy};
use rampart_core::rbac::{CATALOGUE, user_defaults};
use rampart_core::users::{DisplayName, Email, UserStatus};
use rampart_core::{Clock, SystemClock};
use rampart_store::mail::Mailer;
use rampart_store::users::NewUser;
use rampart_store::{Db, Redis};
use utoipa_axum::router::OpenApiRouter;

use crate::cli::{AdminCommand, Alg, AuditCommand, Cli, Command, KeyArgs, KeysCommand};
use crate::telemetry;

const CONFIG_REFUSED: u8 = 2;

pub async fn run(cli: Cli) -> ExitCode {
    let sources = match Sources::gather(cli.config.as_deref()) {
        Ok(s) => s,
        Err(problems) => return refuse(&problems),
    };
    let command = cli.command.unwrap_or(Command::Serve);
    let config = match Config::load_with(&sources, |config| {
        command_problems(config, &sources, &command)
    }) {
        Ok(c) => c,
        Err(problems) => return refuse(&problems),
    };
    let result = match command {
        Command::Serve => serve(config, &sources).await,
        Command::Migrate => migrate(&config).await,
        Command::Keys {
            command: KeysCommand::RotateData,
        } => rotate_data(&config).await,
        Command::Keys { command } => keys_command(&config, command),
        Command::Admin {
            command:
                AdminCommand::Create {
                    email,
                    display_name,
                    promote_existing,
                },
        } => admin_create(&config, &email, &display_name, promote_existing).await,
        Command::Purge => purge(&config).await,
        Command::Audit {
            command: AuditCommand::Verify { checkpoints },
        } => return crate::audit::verify(&config, &checkpoints).await,
        Command::Audit {
            command: AuditCommand::Checkpoint,
        } => return crate::audit::checkpoint(&config).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rampart: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What `command` refuses beyond a parse error (contract §9): in production, `serve` every
/// production rule and the commands that open the database the database rules; in every
/// environment, `keys rotate-data` an unset `RAMPART_DATA_KEY` (it never generates one).
fn command_problems(config: &Config, sources: &Sources, command: &Command) -> Vec<String> {
    let mut problems = Vec::new();
    if config.is_production() {
        match command {
            Command::Serve => problems.extend(
                config.production_problems(sources, keys::active_key_problem(&config.jwt_keys_dir)),
            ),
            Command::Migrate
            | Command::Admin { .. }
            | Command::Purge
            | Command::Audit { .. }
            | Command::Keys {
                command: KeysCommand::RotateData,
            } => problems.extend(config.database_problems(sources)),
            Command::Keys { .. } => {}
        }
    }
    if matches!(
        command,
        Command::Keys {
            command: KeysCommand::RotateData
        }
    ) && config.data_key.is_none()
    {
        problems.push(
            "RAMPART_DATA_KEY: must be set to the new data key for `keys rotate-data` (it never generates one; the previous keys go in RAMPART_DATA_KEYS_OLD)"
                .to_owned(),
        );
    }
    problems
}

fn refuse(problems: &[String]) -> ExitCode {
    eprintln!("rampart: refusing to start; fix the configuration:");
    for p in problems {
        eprintln!("{p}");
    }
    ExitCode::from(CONFIG_REFUSED)
}

async fn serve(config: Config, sources: &Sources) -> anyhow::Result<()> {
    let _telemetry = telemetry::init(&config)?;
    let metrics = match config.metrics_bind {
        Some(_) => Some(telemetry::install_metrics()?),
        None => None,
    };
    for name in Config::unknown_variables(sources) {
        tracing::warn!(variable = %name, "unknown configuration variable ignored (a typo?)");
    }
    let keys = if config.is_production() {
        KeyStore::load(&config.jwt_keys_dir)?
    } else {
        KeyStore::load_or_generate(&config.jwt_keys_dir, config.jwt_alg)?
    };
    let db = Db::connect(&config.database_url, config.db_pool_size).await?;
    let redis = match &config.redis_url {
        Some(url) => Some(Redis::connect_lazy(url.expose(), &config.redis_prefix)?),
        None => None,
    };
    if config.is_production() {
        let pending = db.pending_migrations().await?;
        if pending > 0 {
            anyhow::bail!(
                "the database has {pending} pending migration(s); run `rampart migrate` before starting production instances"
            );
        }
    } else {
        db.migrate().await?;
    }
    sync_permissions(&db).await?;
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.bind))?;
    let local = listener.local_addr()?;
    let deadline = config.shutdown_timeout;
    let data_keys = data_keys(&config)?;
    let mailer = Mailer::from_config(
        config.smtp_url.as_ref().map(|u| u.expose().as_str()),
        &config.mail_outbox,
        &config.mail_from,
    )?;
    let state = AppState::new(
        config,
        db.clone(),
        redis,
        keys,
        Arc::new(SystemClock),
        data_keys,
        mailer,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let router = rampart_api::build_router(state.clone(), OpenApiRouter::new())
        .map_err(|e| anyhow::anyhow!(e))?;
    let metrics_server = match (state.config.metrics_bind, metrics) {
        (Some(addr), Some(handle)) => {
            let (bound, task) = telemetry::serve_metrics(addr, handle, state.clone()).await?;
            tracing::info!(address = %bound, "metrics listening (GET /metrics)");
            Some(task)
        }
        _ => None,
    };
    tracing::info!(
        address = %local,
        production = state.config.is_production(),
        backend = ?db.backend(),
        active_kid = state.keys.active().kid(),
        "rampart listening"
    );
    let served = rampart_api::serve(listener, router, state, shutdown_signal(), deadline).await;
    if let Some(task) = metrics_server {
        task.abort();
    }
    db.close().await;
    tracing::info!("shutdown complete");
    served.map_err(Into::into)
}

/// The data keys: `RAMPART_DATA_KEY` (required in production), or in development a key
/// generated into the key directory on first start; plus `RAMPART_DATA_KEYS_OLD`.
fn data_keys(config: &Config) -> anyhow::Result<DataKeys> {
    let active = match &config.data_key {
        Some(key) => *key.expose(),
        None if config.is_production() => anyhow::bail!("RAMPART_DATA_KEY is not set"),
        None => crypto::load_or_generate_dev_key(&config.jwt_keys_dir)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    };
    let old = config
        .data_keys_old
        .iter()
        .map(|k| DataKey::from_bytes(*k.expose()))
        .collect();
    Ok(DataKeys::new(DataKey::from_bytes(active), old))
}

/// How many times `rotate-data` reads again and retries rows whose compare-and-swap failed
/// because they changed meanwhile (an MFA change racing the rotation).
const ROTATE_DATA_PASSES: usize = 3;

/// `rampart keys rotate-data`: re-seals every stored secret under `RAMPART_DATA_KEY`,
/// which must be given (never generated: a throwaway key would leave every secret sealed
/// under a key nobody has). Rows that change under it are retried; any still failing after
/// [`ROTATE_DATA_PASSES`] are reported and the command fails. The count re-sealed is
/// audited as `keys.data_rotated`.
async fn rotate_data(config: &Config) -> anyhow::Result<()> {
    if config.data_key.is_none() {
        anyhow::bail!("RAMPART_DATA_KEY is not set");
    }
    let keys = data_keys(config)?;
    let db = Db::connect(&config.database_url, 2).await?;
    let rotated = async {
        let mut resealed = 0usize;
        let mut raced = 0usize;
        for _ in 0..ROTATE_DATA_PASSES {
            let (done, failed) = reseal_pass(&db, &keys).await?;
            resealed += done;
            raced = failed;
            if failed == 0 {
                break;
            }
        }
        let outcome = if raced == 0 {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        let event = NewAuditEvent::new("keys.data_rotated", outcome)
            .with_details(serde_json::json!({ "count": resealed }));
        rampart_store::audit::record(&db, &event, SystemClock.now_ms())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::Ok((resealed, raced))
    }
    .await;
    db.close().await;
    let (resealed, raced) = rotated?;
    println!(
        "re-sealed {resealed} secret(s) under data key {}",
        keys.active_kid()
    );
    if raced > 0 {
        anyhow::bail!(
            "{raced} secret(s) changed during each of {ROTATE_DATA_PASSES} attempts and were not re-sealed; run `rampart keys rotate-data` again"
        );
    }
    Ok(())
}

/// One pass over the sealed secrets: re-seals each one not under the active key with a
/// compare-and-swap. Returns (re-sealed, changed meanwhile).
async fn reseal_pass(db: &Db, keys: &DataKeys) -> anyhow::Result<(usize, usize)> {
    let rows = rampart_store::mfa::sealed_secrets(db)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (mut resealed, mut raced) = (0usize, 0usize);
    for (user_id, secret, pending) in rows {
        let id = user_id.to_string();
        let place = crypto::Place {
            table: "users",
            column: "totp_secret",
            row_id: &id,
        };
        let reseal = |sealed: &Option<String>| -> anyhow::Result<Option<String>> {
            match sealed {
                Some(s) if !keys.is_current(s) => {
                    let plain = keys
                        .decrypt(s, &place)
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    Ok(Some(
                        keys.encrypt(&plain, &place)
                            .map_err(|e| anyhow::anyhow!("{e}"))?,
                    ))
                }
                other => Ok(other.clone()),
            }
        };
        let new_secret = reseal(&secret)?;
        let new_pending = reseal(&pending)?;
        if new_secret != secret || new_pending != pending {
            let done = rampart_store::mfa::reseal(
                db,
                user_id,
                secret.as_deref(),
                new_secret.as_deref(),
                pending.as_deref(),
                new_pending.as_deref(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            if done {
                resealed += 1;
            } else {
                raced += 1;
            }
        }
    }
    Ok((resealed, raced))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    let db = Db::connect(&config.database_url, 2).await?;
    let pending = db.pending_migrations().await?;
    db.migrate().await?;
    let report = sync_permissions(&db).await?;
    db.close().await;
    println!("migrations applied: {pending} (database up to date)");
    println!(
        "permissions: {} added, {} retired",
        report.added.len(),
        report.retired.len()
    );
    Ok(())
}

/// Syncs the permission catalogue the code declares into the database (idempotent).
async fn sync_permissions(db: &Db) -> anyhow::Result<rampart_store::rbac::SyncReport> {
    let now_ms = SystemClock.now_ms();
    rampart_store::rbac::sync_catalogue(db, CATALOGUE, &user_defaults(), now_ms)
        .await
        .map_err(|e| anyhow::anyhow!("syncing the permission catalogue: {e}"))
}

/// `rampart admin create --email E [--promote-existing]` (contract §9): the password comes
/// from stdin. A new account must pass the registration policy and is created by one
/// `INSERT` (of concurrent runs for one email exactly one creates). An existing account is
/// never changed unless `promote_existing`, and then only when the password verifies
/// against its stored hash, the way login checks it, and that hash is still in place when
/// `admin` is granted; a deleted or disabled account is refused.
async fn admin_create(
    config: &Config,
    email: &str,
    display_name: &str,
    promote_existing: bool,
) -> anyhow::Result<()> {
    use rampart_store::users::{self, Promotion};
    use std::io::BufRead;
    let email = Email::parse(email, "email").map_err(|e| anyhow::anyhow!("--email {}", e.issue))?;
    let display_name = DisplayName::parse(display_name, "displayName")
        .map_err(|e| anyhow::anyhow!("--display-name {}", e.issue))?;
    let db = Db::connect(&config.database_url, 2).await?;
    if db.pending_migrations().await? > 0 {
        anyhow::bail!("the database has pending migrations; run `rampart migrate` first");
    }
    sync_permissions(&db).await?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    let hasher = PasswordHasher::new(HashParams {
        m_kib: config.argon2_memory_kib,
        t: config.argon2_iterations,
        p: config.argon2_parallelism,
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let existing = users::find_credentials(&db, email.normalized())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let taken = || {
        anyhow::anyhow!(
            "{} already belongs to an account; nothing changed (to make that account an admin, \
             pass --promote-existing with its password on stdin)",
            email.as_str()
        )
    };
    let Some(account) = existing else {
        let policy = PasswordPolicy::new(config.password_min_length);
        if let Err(problems) = policy.check(&password, Some(&email), "password") {
            let issues: Vec<String> = problems.into_iter().map(|p| p.issue).collect();
            anyhow::bail!("password refused: {}", issues.join("; "));
        }
        let hash = hasher.hash(&password).map_err(|e| anyhow::anyhow!("{e}"))?;
        let event = NewAuditEvent::new("user.roles_changed", Outcome::Success).with_details(
            serde_json::json!({"via": "cli", "created": true, "to": ["admin", "user"]}),
        );
        let new_user = NewUser {
            id: uuid::Uuid::now_v7(),
            email: &email,
            display_name: &display_name,
            password_hash: &hash,
            now_ms: SystemClock.now_ms(),
        };
        let user = match users::create_admin(&db, &new_user, &event).await {
            Ok(user) => user,
            // Another run (or a registration) took the address after the lookup above.
            Err(rampart_core::Error::Conflict(_)) => return Err(taken()),
            Err(e) => anyhow::bail!("{e}"),
        };
        db.close().await;
        println!("created admin {} ({})", user.email, user.id);
        return Ok(());
    };
    if !promote_existing {
        return Err(taken());
    }
    if account.deleted {
        anyhow::bail!(
            "{} belongs to a deleted account; nothing changed",
            email.as_str()
        );
    }
    if account.status != UserStatus::Active {
        anyhow::bail!(
            "{} belongs to a disabled account; nothing changed (enable it first)",
            email.as_str()
        );
    }
    let stored = account.password_hash.expose();
    if !hasher.verify(&password, stored).is_valid() {
        anyhow::bail!(
            "the password on stdin is not the password of {}; nothing changed",
            email.as_str()
        );
    }
    let event = NewAuditEvent::new("user.roles_changed", Outcome::Success).with_details(
        serde_json::json!({"via": "cli", "created": false, "added": ["admin"], "passwordVerified": true}),
    );
    let outcome =
        users::promote_to_admin(&db, account.user_id, stored, SystemClock.now_ms(), &event)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    db.close().await;
    match outcome {
        Promotion::Promoted(user) => {
            println!(
                "promoted {} ({}) to admin; password unchanged",
                user.email, user.id
            );
            Ok(())
        }
        Promotion::AlreadyAdmin(user) => {
            println!(
                "{} ({}) is already an admin; nothing changed",
                user.email, user.id
            );
            Ok(())
        }
        Promotion::Refused => anyhow::bail!(
            "the account of {} changed while this ran (password, status or deletion); nothing changed",
            email.as_str()
        ),
    }
}

fn keys_command(config: &Config, command: KeysCommand) -> anyhow::Result<()> {
    let (args, rotate) = match command {
        KeysCommand::Generate(args) => (args, false),
        KeysCommand::Rotate(args) => (args, true),
        KeysCommand::RotateData => anyhow::bail!("handled by rotate_data"),
    };
    let KeyArgs { dir, alg } = args;
    let dir = dir.unwrap_or_else(|| config.jwt_keys_dir.clone());
    let alg = match alg {
        Some(Alg::Rs256) => JwtAlg::Rs256,
        Some(Alg::EdDsa) => JwtAlg::EdDsa,
        None => config.jwt_alg,
    };
    let kid = if rotate {
        keys::rotate(&dir, alg)?
    } else {
        keys::generate(&dir, alg)?
    };
    println!("{kid}");
    Ok(())
}

/// `rampart purge`: one purge now, under the same rules and lock as the servers' periodic
/// one (`rampart_api::jobs`).
async fn purge(config: &Config) -> anyhow::Result<()> {
    let db = Db::connect(&config.database_url, 2).await?;
    let purged = async {
        if db.pending_migrations().await? > 0 {
            anyhow::bail!("the database has pending migrations; run `rampart migrate` first");
        }
        let policy = rampart_api::jobs::purge_policy(config);
        rampart_store::purge::purge_expired(&db, SystemClock.now_ms(), &policy)
            .await
            .map_err(|e| anyhow::anyhow!("purging expired rows: {e}"))
    }
    .await;
    db.close().await;
    match purged? {
        Some(c) => println!(
            "purged: {} session(s), {} refresh token(s), {} MFA challenge(s), \
             {} password-reset token(s), {} lockout counter(s), {} WebAuthn challenge(s)",
            c.sessions,
            c.refresh_tokens,
            c.mfa_challenges,
            c.password_resets,
            c.lockouts,
            c.webauthn_challenges
        ),
        None => println!("another instance is purging; nothing done"),
    }
    Ok(())
}
