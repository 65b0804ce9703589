//! Rebuilds the crate when a migration is added, removed or edited: `sqlx::migrate!` embeds
//! the files at compile time but only tracks the ones that existed at the last build.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
