//! Access-token signing keys: the key directory, RFC 7638 key ids and the JWKS (RFC 7517)
//! that publishes them (contract §3, §4).
//!
//! Layout of a key directory `D` (`RAMPART_JWT_KEYS_DIR`):
//!
//! - `D/<kid>.pem`: one unencrypted PKCS#8 private key (`-----BEGIN PRIVATE KEY-----`,
//!   base64 in 64-character lines), RSA (RS256, 3072 bits when generated, at least 2048
//!   when loaded) or Ed25519 (EdDSA, RFC 8037). `kid` is the RFC 7638 JWK thumbprint of
//!   the public key: SHA-256 over the canonical JSON of the required members, base64url
//!   without padding. The file name is checked against it on every load, so a renamed or
//!   swapped file is refused rather than published under the wrong `kid`.
//! - `D/active`: the `kid` of the key that signs new tokens (surrounding whitespace is
//!   ignored when read). Every other `*.pem` of the configured algorithm
//!   (`RAMPART_JWT_ALG`) still verifies and stays in the JWKS until the operator deletes
//!   it; a key of the other algorithm verifies nothing and is not published.
//! - Anything else (names not ending in `.pem`, including our `.….tmp` temp files) is
//!   ignored.
//!
//! Invariants kept by the writers here: the directory is created `0700` and key files
//! `0600`; a file is published only once it is complete (written to a temp file in the
//! same directory, then linked or renamed into place), and a key file is always in place
//! before `active` names it, so a reader never sees a half-written key or a dangling
//! `active`. Private key bytes never reach `Debug` output, error messages or the JWKS.
//!
//! Production only [`KeyStore::load`]s; development may [`KeyStore::load_or_generate`];
//! operators use [`generate`] and [`rotate`] through `rampart keys`.

use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::{self, KeySize};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::config::JwtAlg;
use crate::error::Redacted;

/// Name of the file holding the active `kid`.
const ACTIVE_FILE: &str = "active";
const KEY_EXTENSION: &str = "pem";
const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";
const PEM_LINE_LEN: usize = 64;
/// Loaded RSA keys below this size are refused (NIST SP 800-57: 112-bit security).
const RSA_MIN_BITS: usize = 2048;
/// A base64url SHA-256 digest without padding is 43 characters.
const KID_LEN: usize = 43;

/// Distinguishes temp files of concurrent writers within one process (the pid separates
/// processes).
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "signing key directory {} does not exist or is not a directory; create a key with `rampart keys generate --dir {}`",
        .dir.display(),
        .dir.display()
    )]
    NoDirectory { dir: PathBuf },
    #[error(
        "signing key directory {} has no active key (no `active` file); create one with `rampart keys generate --dir {}`",
        .dir.display(),
        .dir.display()
    )]
    NoActiveKey { dir: PathBuf },
    #[error("{} does not hold a key id (expected 43 base64url characters)", .path.display())]
    InvalidActive { path: PathBuf },
    #[error(
        "the active key {kid} has no file {}; restore that file from a backup, or make an existing key active (write its kid into {}) or a new one (`rampart keys rotate --dir {}`); `keys generate` leaves `active` as it is",
        .path.display(),
        .path.with_file_name(ACTIVE_FILE).display(),
        .path.parent().unwrap_or(Path::new(".")).display()
    )]
    ActiveKeyMissing { kid: String, path: PathBuf },
    #[error("{}: {reason}", .path.display())]
    InvalidKeyFile { path: PathBuf, reason: &'static str },
    #[error("{}: RSA key is smaller than {RSA_MIN_BITS} bits", .path.display())]
    RsaKeyTooSmall { path: PathBuf },
    #[error("{}: file name does not match the key's RFC 7638 thumbprint {kid}", .path.display())]
    KidMismatch { path: PathBuf, kid: String },
    #[error("cannot generate an {alg} signing key")]
    Generate { alg: &'static str },
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl KeyError {
    fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> KeyError {
        let path = path.to_path_buf();
        move |source| KeyError::Io {
            action,
            path,
            source,
        }
    }
}

/// Public members of a key, as base64url (no padding) strings ready for a JWK.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PublicJwk {
    Rsa { n: String, e: String },
    Ed25519 { x: String },
}

impl PublicJwk {
    /// `n` and `e` are big-endian unsigned integers without leading zero bytes (RFC 7518 §6.3.1).
    fn rsa(n: &[u8], e: &[u8]) -> Self {
        Self::Rsa {
            n: URL_SAFE_NO_PAD.encode(n),
            e: URL_SAFE_NO_PAD.encode(e),
        }
    }

    fn ed25519(x: &[u8]) -> Self {
        Self::Ed25519 {
            x: URL_SAFE_NO_PAD.encode(x),
        }
    }

    /// RFC 7638 §3: SHA-256 over the required members in lexicographic order, without
    /// whitespace. Written by hand because member order matters; the values are base64url,
    /// so they need no JSON escaping.
    fn thumbprint(&self) -> String {
        let canonical = match self {
            Self::Rsa { n, e } => format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#),
            Self::Ed25519 { x } => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#),
        };
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }
}

/// Why a PKCS#8 document was refused; the caller adds the file name.
enum Pkcs8Problem {
    NotAKey,
    RsaTooSmall,
}

/// One signing key: its RFC 7638 `kid`, its algorithm, the PKCS#8 private key and the
/// public JWK members. `Debug` shows the private key as `[REDACTED]`.
#[derive(Debug, Clone)]
pub struct SigningKey {
    kid: String,
    alg: JwtAlg,
    pkcs8: Redacted<Vec<u8>>,
    public: PublicJwk,
}

impl SigningKey {
    /// Parses an unencrypted PKCS#8 document (RSA, else Ed25519 in v1 or v2 form) and
    /// derives the public members and `kid` from it.
    fn from_pkcs8(der: Vec<u8>) -> Result<Self, Pkcs8Problem> {
        let (alg, public) = match rsa::KeyPair::from_pkcs8(&der) {
            Ok(pair) => {
                let public = pair.public_key();
                let n = public.modulus().big_endian_without_leading_zero();
                let e = public.exponent().big_endian_without_leading_zero();
                // aws-lc-rs already refuses < 2048 bits; this keeps our floor explicit.
                if modulus_bits(n) < RSA_MIN_BITS {
                    return Err(Pkcs8Problem::RsaTooSmall);
                }
                (JwtAlg::Rs256, PublicJwk::rsa(n, e))
            }
            Err(rsa_rejection) => match Ed25519KeyPair::from_pkcs8(&der) {
                Ok(pair) => (
                    JwtAlg::EdDsa,
                    PublicJwk::ed25519(pair.public_key().as_ref()),
                ),
                Err(_) if rsa_rejection.description_() == "TooSmall" => {
                    return Err(Pkcs8Problem::RsaTooSmall);
                }
                Err(_) => return Err(Pkcs8Problem::NotAKey),
            },
        };
        Ok(Self {
            kid: public.thumbprint(),
            alg,
            pkcs8: Redacted(der),
            public,
        })
    }

    fn generate(alg: JwtAlg) -> Result<Self, KeyError> {
        let failed = || KeyError::Generate { alg: alg.as_str() };
        let der = match alg {
            JwtAlg::Rs256 => {
                let pair = rsa::KeyPair::generate(KeySize::Rsa3072).map_err(|_| failed())?;
                let der: Pkcs8V1Der<'static> = pair.as_der().map_err(|_| failed())?;
                der.as_ref().to_vec()
            }
            // PKCS#8 v1, as `openssl genpkey` writes it: the most widely readable form.
            JwtAlg::EdDsa => Ed25519KeyPair::generate()
                .and_then(|pair| pair.to_pkcs8v1())
                .map_err(|_| failed())?
                .as_ref()
                .to_vec(),
        };
        Self::from_pkcs8(der).map_err(|_| failed())
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> JwtAlg {
        self.alg
    }

    /// The unencrypted PKCS#8 DER private key, for the token signer.
    pub fn pkcs8_der(&self) -> &[u8] {
        self.pkcs8.expose()
    }

    /// The private key as the PEM text of its file (for APIs that want PEM, e.g.
    /// `jsonwebtoken::EncodingKey::from_rsa_pem`, whose DER constructor expects PKCS#1).
    pub fn pkcs8_pem(&self) -> Redacted<String> {
        Redacted(pem_encode(self.pkcs8.expose()))
    }

    /// The public JWK (RFC 7517) with `kid`, `alg` and `use: "sig"`. Built from the public
    /// members only: no private member (`d`, `p`, `q`, `dp`, `dq`, `qi`) can appear.
    pub fn public_jwk(&self) -> serde_json::Value {
        match &self.public {
            PublicJwk::Rsa { n, e } => json!({
                "kty": "RSA",
                "kid": self.kid,
                "alg": self.alg.as_str(),
                "use": "sig",
                "n": n,
                "e": e,
            }),
            PublicJwk::Ed25519 { x } => json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "kid": self.kid,
                "alg": self.alg.as_str(),
                "use": "sig",
                "x": x,
            }),
        }
    }
}

/// Every key of a key directory, the active one first.
#[derive(Debug, Clone)]
pub struct KeyStore {
    /// Never empty: `keys[0]` is the active key, the rest are sorted by `kid`.
    keys: Vec<SigningKey>,
}

impl KeyStore {
    /// Production: load only. Error if the directory is missing, has no `active` file, the
    /// active kid has no file, or any `*.pem` fails to parse / its thumbprint ≠ its file name.
    pub fn load(dir: &Path) -> Result<KeyStore, KeyError> {
        let active_kid = read_active_kid(dir)?;
        let mut keys = Vec::new();
        for entry in fs::read_dir(dir).map_err(KeyError::io("list", dir))? {
            let path = entry.map_err(KeyError::io("list", dir))?.path();
            if path.extension() == Some(OsStr::new(KEY_EXTENSION)) {
                // `None`: deleted since the listing (an operator retiring it, or a losing
                // `load_or_generate` withdrawing its key), so no longer part of the directory.
                keys.extend(read_key_file(&path)?);
            }
        }
        let Some(position) = keys.iter().position(|key| key.kid == active_kid) else {
            return Err(KeyError::ActiveKeyMissing {
                path: key_path(dir, &active_kid),
                kid: active_kid,
            });
        };
        let active = keys.swap_remove(position);
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        keys.insert(0, active);
        Ok(KeyStore { keys })
    }

    /// Development: if the directory has no active key, generate one of `alg` (creating the
    /// directory with mode 0700), then load. An existing active key is kept whatever its
    /// algorithm; each key reports its own [`SigningKey::alg`].
    pub fn load_or_generate(dir: &Path, alg: JwtAlg) -> Result<KeyStore, KeyError> {
        let active_path = dir.join(ACTIVE_FILE);
        match fs::symlink_metadata(&active_path) {
            // Present, even if broken: `load` reports what is wrong rather than papering
            // over a deleted key with a new one.
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let (kid, activated) = add_key(dir, alg, Activation::IfNone)?;
                if !activated {
                    // Another process published `active` between our check and our link; its
                    // key wins and ours, never active, goes (`load` skips a key file deleted
                    // under it). Residual race, harmless: that process may have read our key
                    // before we removed it, and then publishes one extra, never-used
                    // verification key until it restarts.
                    let _ = fs::remove_file(key_path(dir, &kid));
                }
            }
            Err(e) => return Err(KeyError::io("read", &active_path)(e)),
        }
        Self::load(dir)
    }

    pub fn active(&self) -> &SigningKey {
        // Construction guarantees at least the active key.
        &self.keys[0]
    }

    pub fn get(&self, kid: &str) -> Option<&SigningKey> {
        self.keys.iter().find(|key| key.kid == kid)
    }

    /// Every key, the active one first.
    pub fn keys(&self) -> &[SigningKey] {
        &self.keys
    }

    /// RFC 7517 JWK Set of the store's keys of `alg` (`RAMPART_JWT_ALG`), active first:
    /// {"keys":[public_jwk, …]}. A key of another algorithm verifies none of our tokens,
    /// so it is not offered to other verifiers either (contract §9).
    pub fn jwks(&self, alg: JwtAlg) -> serde_json::Value {
        let keys: Vec<_> = self
            .keys
            .iter()
            .filter(|key| key.alg == alg)
            .map(SigningKey::public_jwk)
            .collect();
        json!({ "keys": keys })
    }
}

/// True when `dir/active` names a key file that exists (cheap; does not parse keys).
pub fn has_active_key(dir: &Path) -> bool {
    active_key_problem(dir).is_none()
}

/// Why `dir` has no usable active key, with what to do about it, or `None` when `active`
/// names a key file that exists (the production config check; does not parse keys).
pub fn active_key_problem(dir: &Path) -> Option<String> {
    match read_active_kid(dir) {
        Err(e) => Some(e.to_string()),
        Ok(kid) if key_path(dir, &kid).is_file() => None,
        Ok(kid) => Some(
            KeyError::ActiveKeyMissing {
                path: key_path(dir, &kid),
                kid,
            }
            .to_string(),
        ),
    }
}

/// `rampart keys generate --dir D [--alg]`: adds a key, returns its kid; it becomes active
/// only when the directory had no `active` file (an existing one, even one naming a missing
/// key, is left for `rotate` to replace).
pub fn generate(dir: &Path, alg: JwtAlg) -> Result<String, KeyError> {
    add_key(dir, alg, Activation::IfNone).map(|(kid, _)| kid)
}

/// `rampart keys rotate --dir D [--alg]`: adds a key and makes it active; returns its kid.
/// Old keys stay (they keep verifying until the operator deletes them).
pub fn rotate(dir: &Path, alg: JwtAlg) -> Result<String, KeyError> {
    add_key(dir, alg, Activation::Always).map(|(kid, _)| kid)
}

#[derive(Clone, Copy)]
enum Activation {
    /// Publish `active` only if there is none (atomically: link, which never replaces).
    IfNone,
    /// Replace `active` atomically (rename).
    Always,
}

/// Generates a key into `dir` (created 0700 if missing) and publishes it as `active`
/// according to `activation`. Returns its kid and whether it became active.
fn add_key(dir: &Path, alg: JwtAlg, activation: Activation) -> Result<(String, bool), KeyError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(KeyError::io("create directory", dir))?;
    let key = SigningKey::generate(alg)?;
    let file_name = format!("{}.{KEY_EXTENSION}", key.kid);
    let pem = pem_encode(key.pkcs8_der());
    if !publish(dir, &file_name, pem.as_bytes(), Activation::IfNone)? {
        // Same thumbprint means the same public key: only a broken RNG gets here.
        return Err(KeyError::Io {
            action: "create",
            path: dir.join(&file_name),
            source: io::ErrorKind::AlreadyExists.into(),
        });
    }
    // The key file is complete before `active` can name it.
    let activated = publish(dir, ACTIVE_FILE, key.kid.as_bytes(), activation)?;
    Ok((key.kid, activated))
}

/// Writes `contents` to `dir/name` so that readers see either the old state or the whole
/// new file: a 0600 temp file in the same directory, synced, then renamed over `name`
/// (`Always`) or hard-linked to it (`IfNone`, which fails rather than replace). Returns
/// false when `IfNone` found `name` already present.
fn publish(
    dir: &Path,
    name: &str,
    contents: &[u8],
    activation: Activation,
) -> Result<bool, KeyError> {
    let target = dir.join(name);
    let temp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(KeyError::io("write", &temp)(e));
    }
    let published = match activation {
        Activation::Always => fs::rename(&temp, &target).map(|()| true),
        Activation::IfNone => {
            let linked = match fs::hard_link(&temp, &target) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            };
            let _ = fs::remove_file(&temp);
            linked
        }
    };
    let published = match published {
        Ok(published) => published,
        Err(e) => {
            let _ = fs::remove_file(&temp);
            return Err(KeyError::io("write", &target)(e));
        }
    };
    // Best effort: make the new directory entry durable too.
    let _ = File::open(dir).and_then(|d| d.sync_all());
    Ok(published)
}

fn key_path(dir: &Path, kid: &str) -> PathBuf {
    dir.join(format!("{kid}.{KEY_EXTENSION}"))
}

/// Reads and validates `dir/active`. The kid is checked before it is joined to a path, so
/// `active` cannot point outside the directory.
fn read_active_kid(dir: &Path) -> Result<String, KeyError> {
    if !dir.is_dir() {
        return Err(KeyError::NoDirectory {
            dir: dir.to_path_buf(),
        });
    }
    let path = dir.join(ACTIVE_FILE);
    let content = match fs::read_to_string(&path) {
        Ok(content) => content,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(KeyError::NoActiveKey {
                dir: dir.to_path_buf(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return Err(KeyError::InvalidActive { path });
        }
        Err(e) => return Err(KeyError::io("read", &path)(e)),
    };
    let kid = content.trim();
    if !is_kid(kid) {
        return Err(KeyError::InvalidActive { path });
    }
    Ok(kid.to_owned())
}

fn is_kid(s: &str) -> bool {
    s.len() == KID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn read_key_file(path: &Path) -> Result<Option<SigningKey>, KeyError> {
    let invalid = |reason| KeyError::InvalidKeyFile {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(KeyError::io("read", path)(e)),
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| invalid("not a PEM text file"))?;
    let der = pem_decode(text).map_err(invalid)?;
    let key = SigningKey::from_pkcs8(der).map_err(|problem| match problem {
        Pkcs8Problem::NotAKey => invalid("not an unencrypted PKCS#8 RSA or Ed25519 private key"),
        Pkcs8Problem::RsaTooSmall => KeyError::RsaKeyTooSmall {
            path: path.to_path_buf(),
        },
    })?;
    if path.file_stem() != Some(OsStr::new(&key.kid)) {
        return Err(KeyError::KidMismatch {
            path: path.to_path_buf(),
            kid: key.kid,
        });
    }
    Ok(Some(key))
}

fn modulus_bits(n: &[u8]) -> usize {
    match n.first() {
        Some(&first) => n.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

/// PEM (RFC 7468) encoding of a PKCS#8 private key: strict base64, 64-character lines.
fn pem_encode(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut pem = String::with_capacity(body.len() + body.len() / PEM_LINE_LEN + 64);
    pem.push_str(PEM_BEGIN);
    pem.push('\n');
    for (i, c) in body.chars().enumerate() {
        if i > 0 && i % PEM_LINE_LEN == 0 {
            pem.push('\n');
        }
        pem.push(c);
    }
    pem.push('\n');
    pem.push_str(PEM_END);
    pem.push('\n');
    pem
}

/// Decodes the single `PRIVATE KEY` block of `text`. Explanatory text before the block is
/// allowed (RFC 7468 §2), line breaks may be LF or CRLF; anything after the block is not.
fn pem_decode(text: &str) -> Result<Vec<u8>, &'static str> {
    let mut lines = text.lines().map(str::trim);
    match lines.by_ref().find(|line| line.starts_with("-----BEGIN ")) {
        Some(PEM_BEGIN) => {}
        Some(_) => return Err("not a PKCS#8 PEM block (expected -----BEGIN PRIVATE KEY-----)"),
        None => return Err("no PEM block"),
    }
    let mut body = String::new();
    loop {
        match lines.next() {
            Some(PEM_END) => break,
            Some(line) => body.push_str(line),
            None => return Err("PEM block has no END line"),
        }
    }
    if lines.any(|line| !line.is_empty()) {
        return Err("unexpected text after the PEM block");
    }
    STANDARD
        .decode(body)
        .map_err(|_| "invalid base64 in the PEM block")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::{Arc, Barrier};

    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        ED25519, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaPublicKeyComponents,
        UnparsedPublicKey,
    };

    use super::*;

    const PRIVATE_MEMBERS: [&str; 6] = ["d", "p", "q", "dp", "dq", "qi"];

    /// RFC 7638 §3.1.
    const RFC7638_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
    const RFC7638_THUMBPRINT: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

    /// RFC 8037 Appendix A.1 (key) and A.3 (thumbprint).
    const RFC8037_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
    const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    const RFC8037_THUMBPRINT: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";

    /// A throwaway 1024-bit RSA PKCS#8 key (`openssl genpkey`), base64 DER, for the size floor.
    const RSA_1024_PKCS8: &str = "MIICdgIBADANBgkqhkiG9w0BAQEFAASCAmAwggJcAgEAAoGBALV/v3s/0DCEyoRQywrv8wV01/CaWrOWdyotHdISNTHXA4VYRBHpYIOVajaLCt+9BzwXUb+fDrqaIEG9xckorZsTbDC0baDwkbnPBLlYMRto70HhJEryJ9l+KvvYAKUBuBu0Vqz5k6WtlBTx/RXok9hBE/zq7hbAuAN4B3E7hewRAgMBAAECgYA2tPzYf5GXLk+Etn2dHFpaKK/2G/B+9TmSAutcKJTUIwUyqjpKU9f9kYnkSuDKM8X8fOLtKVpdMJvMdREq4xIAjFOa+buF9s25/vbrV1vzVPGUMlmsO6hONwvNvEY0NKrmhyf6WYs5jjB9aGDebg/zX4/VGlSU/kvJAp3/r35DiQJBANov3VoXzS+Mbak9vpve9D8hb9UPqO2XDOQizvK3dFsUC4Q7qsy4m01gM3P+L40fln/Jg4jjWpBSOgWJYW6ePHsCQQDU9C08IiYlR1QElt7EAIaVsTD9GemqhEg3g6sX4VPCdpyxaGiPiLVKvcYpmbpwUFc43VjuNwNgakEBZUeITHHjAkBU3Xc4ereJfhKNWIHSOOdBwuyvr7aiKzWNauiZybeNUX+lQFwP4uItN3Tr8ftm5dlw/N2Xme744bLFwojOMOgPAkEA086Jr2XHywxG5MmqiAh91CWJNDSx1If9zDmJ0xaq2KBg+ZN/bEPtDYnzryzX4x4FoumFqmnNUfhc76Zsn4RpQQJANgm3eivvOMkzHxP39dwExyCQVZGjZvI1XI37tRr9O3VUOdq0DdzIyppluxvlCXvAfVOKTnyhNK+DQusKlCCz1Q==";

    fn b64url(s: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(s).unwrap()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn pem_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".pem"))
            .collect();
        names.sort();
        names
    }

    /// Thumbprint computed independently of `PublicJwk::thumbprint`: from the published
    /// JWK, with the members sorted by a `BTreeMap`.
    fn thumbprint_of_jwk(jwk: &serde_json::Value) -> String {
        let required: &[&str] = match jwk["kty"].as_str().unwrap() {
            "RSA" => &["e", "kty", "n"],
            "OKP" => &["crv", "kty", "x"],
            other => panic!("unexpected kty {other}"),
        };
        let members: std::collections::BTreeMap<&str, &str> = required
            .iter()
            .map(|m| (*m, jwk[*m].as_str().unwrap()))
            .collect();
        let canonical = serde_json::to_string(&members).unwrap();
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }

    fn assert_public_only(jwks: &serde_json::Value) {
        let keys = jwks["keys"].as_array().unwrap();
        assert!(!keys.is_empty());
        for jwk in keys {
            let object = jwk.as_object().unwrap();
            for member in PRIVATE_MEMBERS {
                assert!(
                    !object.contains_key(member),
                    "private member {member} in {jwk}"
                );
            }
            for member in ["kty", "kid", "alg"] {
                assert!(object[member].is_string(), "{member} missing in {jwk}");
            }
            assert_eq!(jwk["use"], "sig");
            assert_eq!(thumbprint_of_jwk(jwk), jwk["kid"]);
        }
    }

    /// Signs with `pkcs8_der` and verifies with the published JWK: they are one key pair.
    fn assert_jwk_verifies(key: &SigningKey) {
        let msg = b"header.payload";
        let jwk = key.public_jwk();
        match key.alg() {
            JwtAlg::Rs256 => {
                let pair = rsa::KeyPair::from_pkcs8(key.pkcs8_der()).unwrap();
                let mut sig = vec![0; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), msg, &mut sig)
                    .unwrap();
                let (n, e) = (
                    b64url(jwk["n"].as_str().unwrap()),
                    b64url(jwk["e"].as_str().unwrap()),
                );
                RsaPublicKeyComponents { n: &n, e: &e }
                    .verify(&RSA_PKCS1_2048_8192_SHA256, msg, &sig)
                    .unwrap();
            }
            JwtAlg::EdDsa => {
                let pair = Ed25519KeyPair::from_pkcs8(key.pkcs8_der()).unwrap();
                let sig = pair.sign(msg);
                let x = b64url(jwk["x"].as_str().unwrap());
                UnparsedPublicKey::new(&ED25519, &x)
                    .verify(msg, sig.as_ref())
                    .unwrap();
            }
        }
    }

    #[test]
    fn pem_round_trip() {
        let der: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let pem = pem_encode(&der);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], PEM_BEGIN);
        assert_eq!(*lines.last().unwrap(), PEM_END);
        let body = &lines[1..lines.len() - 1];
        assert!(body[..body.len() - 1].iter().all(|l| l.len() == 64));
        assert!(!body.last().unwrap().is_empty() && body.last().unwrap().len() <= 64);
        assert_eq!(pem_decode(&pem).unwrap(), der);

        let crlf_with_preamble = format!("comment\r\n{}", pem.replace('\n', "\r\n"));
        assert_eq!(pem_decode(&crlf_with_preamble).unwrap(), der);
        assert_eq!(pem_decode(&pem_encode(&[])).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn pem_decode_refuses_other_blocks_and_damage() {
        let pem = pem_encode(b"key bytes");
        assert!(pem_decode("").is_err());
        assert!(pem_decode(&pem.replace("PRIVATE KEY", "RSA PRIVATE KEY")).is_err());
        assert!(pem_decode(&pem.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY")).is_err());
        assert!(pem_decode(pem.trim_end().trim_end_matches(PEM_END)).is_err());
        assert!(pem_decode(&pem.replace("a2V5", "a2V*")).is_err());
        assert!(pem_decode(&format!("{pem}{pem}")).is_err());
    }

    #[test]
    fn rsa_thumbprint_matches_rfc7638_example() {
        let jwk = PublicJwk::rsa(&b64url(RFC7638_N), &[0x01, 0x00, 0x01]);
        assert_eq!(jwk.thumbprint(), RFC7638_THUMBPRINT);
    }

    #[test]
    fn ed25519_thumbprint_matches_rfc8037_example() {
        assert_eq!(
            PublicJwk::ed25519(&b64url(RFC8037_X)).thumbprint(),
            RFC8037_THUMBPRINT
        );
    }

    #[test]
    fn rfc8037_key_file_loads_under_its_thumbprint() {
        let dir = tempfile::tempdir().unwrap();
        let pair = Ed25519KeyPair::from_seed_and_public_key(&b64url(RFC8037_D), &b64url(RFC8037_X))
            .unwrap();
        for (i, der) in [pair.to_pkcs8v1().unwrap(), pair.to_pkcs8().unwrap()]
            .iter()
            .enumerate()
        {
            let path = dir.path().join(format!("{RFC8037_THUMBPRINT}.pem"));
            fs::write(&path, pem_encode(der.as_ref())).unwrap();
            fs::write(dir.path().join("active"), format!("{RFC8037_THUMBPRINT}\n")).unwrap();
            let store = KeyStore::load(dir.path()).unwrap_or_else(|e| panic!("pkcs8 #{i}: {e}"));
            let key = store.active();
            assert_eq!(key.kid(), RFC8037_THUMBPRINT);
            assert_eq!(key.alg(), JwtAlg::EdDsa);
            assert_eq!(key.public_jwk()["x"], RFC8037_X);
            assert_eq!(key.public_jwk()["crv"], "Ed25519");
            assert_eq!(key.public_jwk()["alg"], "EdDSA");
            assert_jwk_verifies(key);
        }
    }

    /// The only RSA generation in these tests.
    #[test]
    fn generated_rsa_key_is_3072_bit_private_and_named_by_thumbprint() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("keys");
        let kid = generate(&dir, JwtAlg::Rs256).unwrap();

        assert_eq!(mode(&dir), 0o700);
        let path = dir.join(format!("{kid}.pem"));
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.join("active")), 0o600);
        assert_eq!(fs::read_to_string(dir.join("active")).unwrap(), kid);
        assert_eq!(pem_files(&dir), [format!("{kid}.pem")]);
        assert!(fs::read_to_string(&path).unwrap().starts_with(PEM_BEGIN));

        let store = KeyStore::load(&dir).unwrap();
        let key = store.active();
        assert_eq!(key.kid(), kid);
        assert_eq!(key.alg(), JwtAlg::Rs256);
        let jwk = key.public_jwk();
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["alg"], "RS256");
        assert_eq!(jwk["e"], "AQAB");
        assert_eq!(modulus_bits(&b64url(jwk["n"].as_str().unwrap())), 3072);
        assert_eq!(thumbprint_of_jwk(&jwk), kid);
        assert_public_only(&store.jwks(JwtAlg::Rs256));
        assert_jwk_verifies(key);

        let debug = format!("{store:?}");
        assert!(debug.contains("[REDACTED]"));
        assert!(!debug.contains(&STANDARD.encode(&key.pkcs8_der()[..48])));
        assert!(!format!("{:?}", key.pkcs8_pem()).contains("PRIVATE"));
        assert_eq!(
            key.pkcs8_pem().expose(),
            &fs::read_to_string(&path).unwrap()
        );
    }

    #[test]
    fn load_or_generate_creates_once_then_reuses() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data").join("keys");
        let first = KeyStore::load_or_generate(&dir, JwtAlg::EdDsa).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(first.active().alg(), JwtAlg::EdDsa);
        assert_jwk_verifies(first.active());

        let second = KeyStore::load_or_generate(&dir, JwtAlg::EdDsa).unwrap();
        assert_eq!(second.active().kid(), first.active().kid());
        assert_eq!(second.keys().len(), 1);
        // A different requested algorithm does not replace the existing active key.
        let third = KeyStore::load_or_generate(&dir, JwtAlg::Rs256).unwrap();
        assert_eq!(third.active().kid(), first.active().kid());
        assert_eq!(third.active().alg(), JwtAlg::EdDsa);
        assert_eq!(pem_files(&dir).len(), 1);
    }

    #[test]
    fn load_or_generate_reports_a_dangling_active_instead_of_replacing_it() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("active"), RFC8037_THUMBPRINT).unwrap();
        let err = KeyStore::load_or_generate(dir.path(), JwtAlg::EdDsa).unwrap_err();
        assert!(matches!(err, KeyError::ActiveKeyMissing { .. }), "{err}");
        assert!(err.to_string().contains(RFC8037_THUMBPRINT));
        assert!(pem_files(dir.path()).is_empty());
    }

    #[test]
    fn concurrent_load_or_generate_agrees_on_one_key() {
        let root = tempfile::tempdir().unwrap();
        let dir = Arc::new(root.path().join("keys"));
        let barrier = Arc::new(Barrier::new(4));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (dir, barrier) = (Arc::clone(&dir), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    KeyStore::load_or_generate(&dir, JwtAlg::EdDsa)
                        .unwrap()
                        .active()
                        .kid()
                        .to_owned()
                })
            })
            .collect();
        let kids: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(kids.iter().all(|kid| *kid == kids[0]), "{kids:?}");
        assert_eq!(pem_files(&dir), [format!("{}.pem", kids[0])]);
        assert_eq!(KeyStore::load(&dir).unwrap().active().kid(), kids[0]);
    }

    #[test]
    fn rotate_switches_active_and_keeps_old_key() {
        let dir = tempfile::tempdir().unwrap();
        let old = generate(dir.path(), JwtAlg::EdDsa).unwrap();
        let new = rotate(dir.path(), JwtAlg::EdDsa).unwrap();
        assert_ne!(old, new);
        assert_eq!(fs::read_to_string(dir.path().join("active")).unwrap(), new);

        let store = KeyStore::load(dir.path()).unwrap();
        assert_eq!(store.active().kid(), new);
        assert_eq!(store.keys().len(), 2);
        assert!(store.get(&old).is_some());
        assert!(store.get("unknown").is_none());
        let jwks = store.jwks(JwtAlg::EdDsa);
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(kids, [new.as_str(), old.as_str()]);
        assert_public_only(&jwks);
    }

    #[test]
    fn jwks_lists_only_keys_of_the_configured_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        let ed = generate(dir.path(), JwtAlg::EdDsa).unwrap();
        let rsa = generate(dir.path(), JwtAlg::Rs256).unwrap();
        let store = KeyStore::load(dir.path()).unwrap();
        assert_eq!(store.keys().len(), 2);
        let kids = |alg| -> Vec<String> {
            store.jwks(alg)["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kid"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(kids(JwtAlg::EdDsa), [ed]);
        assert_eq!(kids(JwtAlg::Rs256), [rsa]);
    }

    #[test]
    fn a_missing_active_key_file_says_how_to_recover() {
        let dir = tempfile::tempdir().unwrap();
        let kid = generate(dir.path(), JwtAlg::EdDsa).unwrap();
        assert_eq!(active_key_problem(dir.path()), None);
        fs::remove_file(dir.path().join(format!("{kid}.pem"))).unwrap();
        let loaded = KeyStore::load(dir.path()).unwrap_err().to_string();
        let checked = active_key_problem(dir.path()).unwrap();
        assert_eq!(loaded, checked);
        let d = dir.path().display();
        assert_eq!(
            checked,
            format!(
                "the active key {kid} has no file {d}/{kid}.pem; restore that file from a backup, or make an existing key active (write its kid into {d}/active) or a new one (`rampart keys rotate --dir {d}`); `keys generate` leaves `active` as it is"
            )
        );
        assert!(!has_active_key(dir.path()));
        // No `active` at all: there `keys generate` is the fix.
        fs::remove_file(dir.path().join("active")).unwrap();
        assert!(
            active_key_problem(dir.path())
                .unwrap()
                .contains("rampart keys generate")
        );
    }

    #[test]
    fn generate_with_an_active_key_adds_an_inactive_one() {
        let dir = tempfile::tempdir().unwrap();
        let first = generate(dir.path(), JwtAlg::EdDsa).unwrap();
        let second = generate(dir.path(), JwtAlg::EdDsa).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("active")).unwrap(),
            first
        );
        let store = KeyStore::load(dir.path()).unwrap();
        assert_eq!(store.active().kid(), first);
        assert_eq!(store.keys()[1].kid(), second);
        assert_eq!(mode(&dir.path().join(format!("{second}.pem"))), 0o600);
    }

    #[test]
    fn load_refuses_missing_or_empty_directory() {
        let root = tempfile::tempdir().unwrap();
        let missing = root.path().join("missing");
        let err = KeyStore::load(&missing).unwrap_err();
        assert!(matches!(err, KeyError::NoDirectory { .. }), "{err}");
        assert!(err.to_string().contains("missing"));
        assert!(!missing.exists());

        let err = KeyStore::load(root.path()).unwrap_err();
        assert!(matches!(err, KeyError::NoActiveKey { .. }), "{err}");

        fs::write(root.path().join("active"), "../../etc/passwd").unwrap();
        let err = KeyStore::load(root.path()).unwrap_err();
        assert!(matches!(err, KeyError::InvalidActive { .. }), "{err}");
    }

    #[test]
    fn load_names_a_corrupt_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let kid = generate(dir.path(), JwtAlg::EdDsa).unwrap();
        let bad = dir.path().join("corrupt.pem");
        fs::write(&bad, pem_encode(b"not a key")).unwrap();
        let err = KeyStore::load(dir.path()).unwrap_err();
        assert!(matches!(err, KeyError::InvalidKeyFile { .. }), "{err}");
        assert!(err.to_string().contains("corrupt.pem"), "{err}");

        fs::write(&bad, "garbage").unwrap();
        let err = KeyStore::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("corrupt.pem"), "{err}");
        assert!(!err.to_string().contains(&kid));
    }

    #[test]
    fn load_refuses_a_file_not_named_by_its_thumbprint() {
        let dir = tempfile::tempdir().unwrap();
        let kid = generate(dir.path(), JwtAlg::EdDsa).unwrap();
        let other = rotate(dir.path(), JwtAlg::EdDsa).unwrap();
        // Swap the two files' contents: both names are valid kids, neither matches.
        let (a, b) = (
            dir.path().join(format!("{kid}.pem")),
            dir.path().join(format!("{other}.pem")),
        );
        let (ca, cb) = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
        fs::write(&a, cb).unwrap();
        fs::write(&b, ca).unwrap();
        let err = KeyStore::load(dir.path()).unwrap_err();
        assert!(matches!(err, KeyError::KidMismatch { .. }), "{err}");
        assert!(err.to_string().contains(".pem"), "{err}");
    }

    #[test]
    fn load_refuses_small_rsa_keys() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), JwtAlg::EdDsa).unwrap();
        let small = dir.path().join("small.pem");
        fs::write(
            &small,
            pem_encode(&STANDARD.decode(RSA_1024_PKCS8).unwrap()),
        )
        .unwrap();
        let err = KeyStore::load(dir.path()).unwrap_err();
        assert!(matches!(err, KeyError::RsaKeyTooSmall { .. }), "{err}");
        assert!(err.to_string().contains("small.pem"), "{err}");
    }

    #[test]
    fn load_ignores_files_that_are_not_keys() {
        let dir = tempfile::tempdir().unwrap();
        let kid = generate(dir.path(), JwtAlg::EdDsa).unwrap();
        fs::write(dir.path().join("README"), "notes").unwrap();
        fs::write(dir.path().join(".active.1.0.tmp"), "half").unwrap();
        fs::write(dir.path().join("old.pem.bak"), "x").unwrap();
        let store = KeyStore::load(dir.path()).unwrap();
        assert_eq!(store.keys().len(), 1);
        assert_eq!(store.active().kid(), kid);
    }

    #[test]
    fn has_active_key_checks_the_active_file_and_its_key_file() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("keys");
        assert!(!has_active_key(&dir));
        fs::create_dir(&dir).unwrap();
        assert!(!has_active_key(&dir));
        fs::write(dir.join("active"), RFC8037_THUMBPRINT).unwrap();
        assert!(!has_active_key(&dir));
        fs::remove_file(dir.join("active")).unwrap();

        let kid = generate(&dir, JwtAlg::EdDsa).unwrap();
        assert!(has_active_key(&dir));
        fs::remove_file(dir.join(format!("{kid}.pem"))).unwrap();
        assert!(!has_active_key(&dir));
    }
}
