//! Command-line interface (contract §9). `serve` is the default when no subcommand is given.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "rampart",
    version,
    about = "Rampart: a secure-by-default backend foundation"
)]
pub struct Cli {
    /// Read settings from this TOML file (environment variables override it).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Administer accounts.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Delete expired sessions, refresh tokens, MFA challenges, password-reset tokens and
    /// lockout counters now (what running servers do every RAMPART_PURGE_INTERVAL), print
    /// the counts and exit. Audit records are never deleted.
    Purge,
    /// Inspect the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a signing key (active only if the directory had none) and print its kid.
    Generate(KeyArgs),
    /// Add a signing key, make it the active one, and print its kid.
    Rotate(KeyArgs),
    /// Re-seal every encrypted secret (TOTP seeds) under RAMPART_DATA_KEY; the previous
    /// keys must be in RAMPART_DATA_KEYS_OLD while this runs.
    RotateData,
}

#[derive(Debug, clap::Args)]
pub struct KeyArgs {
    /// Key directory (default: RAMPART_JWT_KEYS_DIR, else ./data/keys).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Key algorithm (default: RAMPART_JWT_ALG, else RS256).
    #[arg(long, value_enum)]
    pub alg: Option<Alg>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Alg {
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "EdDSA")]
    EdDsa,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a user with the `admin` role. The password is read from standard input (one
    /// line); there is no default admin and no password on the command line. If the email
    /// already belongs to an account, nothing changes and the exit status is 1, unless
    /// --promote-existing is given.
    Create {
        #[arg(long, value_name = "EMAIL")]
        email: String,
        /// Display name of a new user.
        #[arg(long, default_value = "Administrator")]
        display_name: String,
        /// If the email already belongs to an active account, grant it `admin`, but only
        /// when the password on standard input is that account's password.
        #[arg(long)]
        promote_existing: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the audit hash chain: exit 0 with the count when intact, 1 naming the first
    /// broken record otherwise (or a checkpoint the chain no longer holds).
    Verify {
        /// Also require the chain to hold each checkpoint in FILE (one token per line,
        /// blank lines ignored), each signed by a key of RAMPART_JWT_KEYS_DIR. Repeatable.
        #[arg(long = "checkpoint", value_name = "FILE")]
        checkpoints: Vec<PathBuf>,
    },
    /// Print a signed checkpoint of the chain head (one line): keep it outside the
    /// database, and `verify --checkpoint` later shows whether records were cut off.
    Checkpoint,
}
