//! The `rampart` binary: a thin `main` over [`cli`], [`app`], [`audit`] and [`telemetry`].

mod app;
mod audit;
mod cli;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: a profile of `/users/me` under load put glibc's
/// allocator (`_int_malloc`, `_int_free`, `malloc_consolidate`, `unlink_chunk`) at ~14 % of
/// the server's CPU, from the many small per-request allocations of the HTTP stack
/// (docs/benchmarks.md has the profile and the before/after figures). Built with `no_thp`:
/// otherwise mimalloc asks for transparent huge pages on its arenas, and on a kernel with THP
/// enabled an idle instance holds whole 2 MiB pages it barely touches (idle RSS 33 → 22 MiB).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // aws-lc-rs everywhere (sqlx, reqwest): one process-wide rustls provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // jsonwebtoken's provider, with RS256 keys parsed once (before any token or JWK work).
    rampart_core::tokens::signing::install();
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rampart: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(app::run(cli))
}
