//! `rampart audit verify [--checkpoint FILE]…` and `rampart audit checkpoint` (contract §8).
//!
//! Exit status: 0 when the chain is intact and holds every checkpoint given; 1 otherwise —
//! a broken chain, a checkpoint the chain no longer holds (`truncated`, `rewritten`), a
//! checkpoint refused (not signed as one by a key of `RAMPART_JWT_KEYS_DIR`), a file that
//! cannot be read or holds no checkpoint, or a failure to reach the database or keys.
//!
//! Checkpoint files are hostile input: each line is read with a bound
//! ([`MAX_CHECKPOINT_BYTES`]); longer lines, lines that are not UTF-8 and anything that is
//! not a checkpoint we signed are refused, one report each, without parsing further.
//! Every checkpoint is checked before the result is decided: one failure never hides another.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::anyhow;
use rampart_core::audit::VerifyOutcome;
use rampart_core::audit::checkpoint::{
    Checkpoint, CheckpointSigner, CheckpointVerifier, MAX_CHECKPOINT_BYTES, Standing,
};
use rampart_core::config::Config;
use rampart_core::keys::KeyStore;
use rampart_core::{Clock as _, SystemClock};
use rampart_store::Db;

/// `rampart audit checkpoint`: prints one checkpoint of the current head on stdout.
pub async fn checkpoint(config: &Config) -> ExitCode {
    match make_checkpoint(config).await {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rampart: audit checkpoint failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn make_checkpoint(config: &Config) -> anyhow::Result<String> {
    // Keys first: nothing to connect to if we cannot sign.
    let keys = KeyStore::load(&config.jwt_keys_dir)?;
    let signer = CheckpointSigner::new(&keys, config.jwt_alg).map_err(|e| anyhow!("{e}"))?;
    let db = Db::connect(&config.database_url, 2).await?;
    let head = rampart_store::audit::head(&db).await;
    db.close().await;
    let head = head.map_err(|e| anyhow!("{e}"))?;
    let checkpoint = Checkpoint::of_head(head, SystemClock.now_ms().div_euclid(1000));
    signer.sign(&checkpoint).map_err(|e| anyhow!("{e}"))
}

/// `rampart audit verify`, with the checkpoints of `files`.
pub async fn verify(config: &Config, files: &[PathBuf]) -> ExitCode {
    let mut ok = true;
    let mut checkpoints: Vec<(String, Checkpoint)> = Vec::new();
    if !files.is_empty() {
        let dir = &config.jwt_keys_dir;
        let verifier = match KeyStore::load(dir)
            .map_err(anyhow::Error::from)
            .and_then(|keys| CheckpointVerifier::new(&keys).map_err(|e| anyhow!("{e}")))
        {
            Ok(verifier) => verifier,
            Err(e) => {
                eprintln!(
                    "rampart: audit verify failed: cannot load the keys to check checkpoints with: {e:#}"
                );
                return ExitCode::FAILURE;
            }
        };
        for file in files {
            ok &= read_checkpoints(file, dir, &verifier, &mut checkpoints);
        }
    }

    let keep: BTreeSet<i64> = checkpoints.iter().map(|(_, c)| c.seq).collect();
    let walked = async {
        let db = Db::connect(&config.database_url, 2).await?;
        let walked = rampart_store::audit::verify_keeping(&db, &keep).await;
        db.close().await;
        walked.map_err(|e| anyhow!("{e}"))
    }
    .await;
    let (outcome, hashes) = match walked {
        Ok(walked) => walked,
        Err(e) => {
            eprintln!("rampart: audit verify failed: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match &outcome {
        VerifyOutcome::Intact { count } => {
            println!("audit chain intact: {count} record(s) verified");
        }
        VerifyOutcome::Broken { seq, id, reason } => {
            println!("audit chain BROKEN at record seq={seq} id={id}: {reason}");
            ok = false;
        }
    }
    for (place, checkpoint) in &checkpoints {
        let seq = checkpoint.seq;
        match checkpoint.standing(&outcome, &hashes) {
            Standing::Holds => println!("checkpoint {place} holds: seq={seq}"),
            Standing::Truncated { head_seq } => {
                println!(
                    "checkpoint {place} FAILED: truncated: the chain ends at seq={head_seq} but the checkpoint names seq={seq}; its newest records were removed"
                );
                ok = false;
            }
            Standing::Rewritten { found } => {
                println!(
                    "checkpoint {place} FAILED: rewritten: record seq={seq} has hash {found}, the checkpoint says {}",
                    checkpoint.hash
                );
                ok = false;
            }
            Standing::Unchecked { broken_at } => {
                println!(
                    "checkpoint {place} not checked: the chain is broken at seq={broken_at}, at or before its seq={seq}"
                );
                ok = false;
            }
        }
    }
    if ok {
        if !checkpoints.is_empty() {
            println!("{} checkpoint(s) hold", checkpoints.len());
        }
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Reads `file`, verifies each token and appends the good ones to `out` with their place
/// (`FILE:LINE`). Reports every problem on stdout; returns whether there was none.
fn read_checkpoints(
    file: &Path,
    dir: &Path,
    verifier: &CheckpointVerifier,
    out: &mut Vec<(String, Checkpoint)>,
) -> bool {
    let lines = match File::open(file).and_then(|f| bounded_lines(BufReader::new(f))) {
        Ok(lines) => lines,
        Err(e) => {
            println!(
                "checkpoint file {} FAILED: cannot read it: {e}",
                file.display()
            );
            return false;
        }
    };
    if lines.is_empty() {
        println!(
            "checkpoint file {} FAILED: it holds no checkpoint",
            file.display()
        );
        return false;
    }
    let mut ok = true;
    for (number, line) in lines {
        let place = format!("{}:{number}", file.display());
        let verified = match line {
            Line::Text(token) => verifier.verify(&token).map_err(|r| r.to_string()),
            Line::TooLong => Err(format!("longer than {MAX_CHECKPOINT_BYTES} bytes")),
            Line::NotUtf8 => Err("not UTF-8 text".to_owned()),
        };
        match verified {
            Ok(checkpoint) => out.push((place, checkpoint)),
            Err(reason) => {
                println!(
                    "checkpoint {place} refused: {reason}; it is not a checkpoint signed by a key in {}",
                    dir.display()
                );
                ok = false;
            }
        }
    }
    ok
}

/// One non-blank line of a checkpoint file.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// Trimmed of surrounding whitespace.
    Text(String),
    TooLong,
    NotUtf8,
}

/// The non-blank lines of `reader` with their 1-based numbers. A line is never held
/// beyond [`MAX_CHECKPOINT_BYTES`] (plus its line break): the rest of a longer one is
/// skipped unread into memory.
fn bounded_lines(mut reader: impl BufRead) -> io::Result<Vec<(usize, Line)>> {
    let mut lines = Vec::new();
    let mut number = 0usize;
    let limit = u64::try_from(MAX_CHECKPOINT_BYTES).unwrap_or(u64::MAX);
    loop {
        let mut buf = Vec::new();
        // At most the limit, a `\r` and a `\n`.
        let read = reader
            .by_ref()
            .take(limit + 2)
            .read_until(b'\n', &mut buf)?;
        if read == 0 {
            return Ok(lines);
        }
        number += 1;
        let complete = buf.last() == Some(&b'\n');
        if !complete && buf.len() > MAX_CHECKPOINT_BYTES {
            reader.skip_until(b'\n')?;
            lines.push((number, Line::TooLong));
            continue;
        }
        let line = match std::str::from_utf8(&buf) {
            Ok(text) => {
                let text = text.trim();
                if text.is_empty() {
                    continue;
                }
                if text.len() > MAX_CHECKPOINT_BYTES {
                    Line::TooLong
                } else {
                    Line::Text(text.to_owned())
                }
            }
            Err(_) => Line::NotUtf8,
        };
        lines.push((number, line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8]) -> Vec<(usize, Line)> {
        bounded_lines(input).unwrap()
    }

    #[test]
    fn blank_lines_are_skipped_and_lines_trimmed() {
        assert_eq!(lines(b""), vec![]);
        assert_eq!(lines(b"\n\n  \r\n\t\n"), vec![]);
        assert_eq!(
            lines(b"a.b.c\n\n  d.e.f \r\ng"),
            vec![
                (1, Line::Text("a.b.c".into())),
                (3, Line::Text("d.e.f".into())),
                (4, Line::Text("g".into())),
            ]
        );
    }

    #[test]
    fn long_lines_are_refused_and_skipped_and_bad_bytes_reported() {
        let max = MAX_CHECKPOINT_BYTES;
        let mut input = Vec::new();
        input.extend(vec![b'x'; max]);
        input.extend(b"\r\n");
        input.extend(vec![b'y'; max + 1]);
        input.push(b'\n');
        input.extend(vec![b'z'; 10 * max]);
        input.extend(b"\n\xff\xfe\nok\n");
        input.extend(vec![b'w'; 3 * max]);
        let got = lines(&input);
        assert_eq!(
            got.len(),
            6,
            "{:?}",
            got.iter().map(|(n, _)| n).collect::<Vec<_>>()
        );
        assert_eq!(got[0], (1, Line::Text("x".repeat(max))));
        assert_eq!(got[1], (2, Line::TooLong));
        assert_eq!(got[2], (3, Line::TooLong));
        assert_eq!(got[3], (4, Line::NotUtf8));
        assert_eq!(got[4], (5, Line::Text("ok".into())));
        assert_eq!(got[5], (6, Line::TooLong));
    }
}
