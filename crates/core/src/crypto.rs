//! Field encryption at rest: XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha over the RFC 8439
//! AEAD) under a 256-bit data key, for the few columns that must be readable again (TOTP
//! secrets); everything that only needs comparing is hashed instead.
//!
//! A sealed value is the text `v1.<kid>.<base64url(nonce ‖ ciphertext ‖ tag)>` (base64url
//! without padding, 24-byte nonce, 16-byte tag). Invariants:
//!
//! - The nonce is 192 random bits from the OS generator for every encryption, so nonces
//!   never need coordinating: random 24-byte nonces are safe for any realistic number of
//!   messages under one key, which 12-byte nonces are not.
//! - The associated data binds a value to its place, `"rampart-field-v1\0" ‖ table ‖ "\0" ‖
//!   column ‖ "\0" ‖ row_id`: a ciphertext copied to another row, column or table fails to
//!   open. Table and column may not contain NUL (refused), and `row_id` comes last, so the
//!   encoding is unambiguous.
//! - `kid` is the first 8 bytes of SHA-256(`"rampart-data-key-id"` ‖ key) in lowercase hex:
//!   public, stable, and it reveals nothing usable about the key. It only selects the key;
//!   authenticity comes from the tag.
//! - Rotation: [`DataKeys`] encrypts under the active key and decrypts under the active or
//!   any old key; [`DataKeys::is_current`] tells a re-encryption job what is left to do.
//! - Every decryption failure is the same [`Error::Internal`] kind with a message that names
//!   the place and, at most, the public kid; key bytes and plaintexts never reach `Debug`
//!   output or errors, and plaintexts come back in [`Zeroizing`] buffers.

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::anyhow;
use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chacha20poly1305::aead::{AeadInOut as _, KeyInit as _};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::error::Error;

const FORMAT_VERSION: &str = "v1";
const KID_DOMAIN: &[u8] = b"rampart-data-key-id";
const AD_DOMAIN: &[u8] = b"rampart-field-v1\0";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// 8 bytes of SHA-256 in hex.
const KID_LEN: usize = 16;
const DEV_KEY_FILE: &str = "data.key";

/// Keys arrive from environment variables and files written by hand: accept either
/// alphabet, with or without padding.
const STANDARD_ANY_PAD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const URL_SAFE_ANY_PAD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Distinguishes temp files of concurrent writers within one process (the pid separates
/// processes).
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// One 256-bit data key and its public id.
#[derive(Clone)]
pub struct DataKey {
    kid: String,
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl DataKey {
    pub fn from_bytes(key: [u8; KEY_LEN]) -> Self {
        let key = Zeroizing::new(key);
        let digest = Sha256::new()
            .chain_update(KID_DOMAIN)
            .chain_update(key.as_slice())
            .finalize();
        let kid = digest
            .iter()
            .take(KID_LEN / 2)
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Self { kid, key }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The cipher zeroizes its copy of the key when dropped (feature `zeroize`).
    fn cipher(&self) -> Result<XChaCha20Poly1305, Error> {
        XChaCha20Poly1305::new_from_slice(self.key.as_slice())
            .map_err(|_| Error::internal(anyhow!("data key has the wrong length")))
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The active data key, which seals, and the old ones, which still open during a rotation.
#[derive(Clone)]
pub struct DataKeys {
    active: DataKey,
    old: Vec<DataKey>,
}

/// Where a sealed value lives; bound into the associated data.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    pub table: &'a str,
    pub column: &'a str,
    pub row_id: &'a str,
}

impl Place<'_> {
    fn associated_data(&self) -> Result<Vec<u8>, Error> {
        if self.table.contains('\0') || self.column.contains('\0') {
            return Err(Error::internal(anyhow!(
                "field encryption: table and column names may not contain NUL"
            )));
        }
        let mut ad = Vec::with_capacity(
            AD_DOMAIN.len() + self.table.len() + self.column.len() + self.row_id.len() + 2,
        );
        ad.extend_from_slice(AD_DOMAIN);
        ad.extend_from_slice(self.table.as_bytes());
        ad.push(0);
        ad.extend_from_slice(self.column.as_bytes());
        ad.push(0);
        ad.extend_from_slice(self.row_id.as_bytes());
        Ok(ad)
    }
}

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{} of row {}", self.table, self.column, self.row_id)
    }
}

/// The parts of a sealed value's text, checked for shape only.
struct Sealed<'a> {
    kid: &'a str,
    payload: &'a str,
}

impl<'a> Sealed<'a> {
    fn parse(text: &'a str) -> Option<Self> {
        let mut parts = text.splitn(3, '.');
        let (version, kid, payload) = (parts.next()?, parts.next()?, parts.next()?);
        let kid_ok = kid.len() == KID_LEN
            && kid
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        (version == FORMAT_VERSION && kid_ok).then_some(Self { kid, payload })
    }
}

impl DataKeys {
    pub fn new(active: DataKey, old: Vec<DataKey>) -> Self {
        Self { active, old }
    }

    pub fn active_kid(&self) -> &str {
        self.active.kid()
    }

    fn find(&self, kid: &str) -> Option<&DataKey> {
        std::iter::once(&self.active)
            .chain(&self.old)
            .find(|key| key.kid == kid)
    }

    /// `"v1.<kid>.<base64url(nonce ‖ ciphertext+tag)>"` — the associated data binds the value
    /// to its place. Fails only if the OS generator does, or if `place` has a NUL in its
    /// table or column.
    pub fn encrypt(&self, plaintext: &[u8], place: &Place<'_>) -> Result<String, Error> {
        let ad = place.associated_data()?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce)
            .map_err(|e| Error::internal(anyhow!("the OS random generator failed: {e}")))?;
        // Holds the plaintext until it is encrypted in place; exact capacity, so no
        // reallocation leaves a copy behind.
        let mut sealed = Zeroizing::new(Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN));
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(plaintext);
        let tag = self
            .active
            .cipher()?
            .encrypt_inout_detached(
                &XNonce::from(nonce),
                &ad,
                sealed[NONCE_LEN..].as_mut().into(),
            )
            .map_err(|_| Error::internal(anyhow!("cannot encrypt {place}: value too long")))?;
        sealed.extend_from_slice(&tag);
        Ok(format!(
            "{FORMAT_VERSION}.{}.{}",
            self.active.kid,
            URL_SAFE_NO_PAD.encode(sealed.as_slice())
        ))
    }

    /// Opens a value sealed by [`DataKeys::encrypt`] for the same `place`, under the active
    /// or an old key. Any failure (unknown kid, bad format, wrong place, tampering) is an
    /// [`Error::Internal`] naming only the place and the public kid.
    pub fn decrypt(&self, sealed: &str, place: &Place<'_>) -> Result<Zeroizing<Vec<u8>>, Error> {
        let fail = |why: String| Error::internal(anyhow!("cannot decrypt {place}: {why}"));
        let parsed =
            Sealed::parse(sealed).ok_or_else(|| fail("not a v1 sealed value".to_owned()))?;
        let key = self.find(parsed.kid).ok_or_else(|| {
            fail(format!(
                "sealed under unknown data key {} (is it missing from RAMPART_DATA_KEYS_OLD?)",
                parsed.kid
            ))
        })?;
        let ad = place.associated_data()?;
        let mut bytes = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(parsed.payload)
                .map_err(|_| fail("payload is not base64url".to_owned()))?,
        );
        let Some(plain_len) = bytes.len().checked_sub(NONCE_LEN + TAG_LEN) else {
            return Err(fail("payload too short".to_owned()));
        };
        let (nonce, rest) = bytes.split_at_mut(NONCE_LEN);
        let (body, tag) = rest.split_at_mut(plain_len);
        let shape = |_| fail("payload has the wrong shape".to_owned());
        let nonce = <&XNonce>::try_from(&*nonce).map_err(shape)?;
        let tag = <&Tag>::try_from(&*tag).map_err(shape)?;
        key.cipher()?
            .decrypt_inout_detached(nonce, &ad, body.into(), tag)
            .map_err(|_| {
                fail(format!(
                    "authentication failed under data key {} (wrong place or tampered)",
                    key.kid
                ))
            })?;
        bytes.copy_within(NONCE_LEN..NONCE_LEN + plain_len, 0);
        // The tail is wiped with the rest of the buffer when it drops (Zeroizing clears a
        // Vec's whole capacity).
        bytes.truncate(plain_len);
        Ok(bytes)
    }

    /// Sealed under the active key? Reads the kid only and authenticates nothing: for
    /// finding values a rotation still has to re-encrypt.
    pub fn is_current(&self, sealed: &str) -> bool {
        Sealed::parse(sealed).is_some_and(|parsed| parsed.kid == self.active.kid)
    }

    /// Keyed digests of `message` for `purpose`, one per key, the active key's first:
    /// HMAC-SHA-256 under a subkey derived from each data key, lowercase hex. For secrets
    /// too short to store under a plain hash (recovery codes, 50 bits): without the data
    /// key, a stolen database does not let anyone test guesses offline (ASVS 6.5.2). A
    /// digest made under an old key still matches while that key is in
    /// `RAMPART_DATA_KEYS_OLD`.
    pub fn digests(&self, purpose: &str, message: &[u8]) -> Vec<String> {
        std::iter::once(&self.active)
            .chain(self.old.iter())
            .map(|key| {
                let derive =
                    aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.key.as_ref());
                let subkey = aws_lc_rs::hmac::sign(
                    &derive,
                    format!("rampart-digest-v1\0{purpose}").as_bytes(),
                );
                let mac_key =
                    aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, subkey.as_ref());
                let tag = aws_lc_rs::hmac::sign(&mac_key, message);
                tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
            })
            .collect()
    }
}

impl fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKeys")
            .field("active", &self.active.kid)
            .field(
                "old",
                &self.old.iter().map(DataKey::kid).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Standard or url-safe base64 (padding optional, surrounding whitespace ignored) of
/// exactly 32 bytes.
pub fn parse_key(base64: &str) -> Option<[u8; KEY_LEN]> {
    let text = base64.trim();
    let decoded = Zeroizing::new(
        STANDARD_ANY_PAD
            .decode(text)
            .or_else(|_| URL_SAFE_ANY_PAD.decode(text))
            .ok()?,
    );
    <[u8; KEY_LEN]>::try_from(decoded.as_slice()).ok()
}

/// Development only: the key in `dir/data.key` (base64, file mode 0600, created with
/// create_new, dir 0700 if created) — generated on first use, reused afterwards.
///
/// The file is written to a 0600 temp file first and then hard-linked into place, which
/// never replaces an existing file: concurrent first starts agree on one key and no reader
/// sees a half-written file.
pub fn load_or_generate_dev_key(dir: &Path) -> Result<[u8; KEY_LEN], Error> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error("create directory", dir))?;
    let path = dir.join(DEV_KEY_FILE);
    if let Some(key) = read_dev_key(&path)? {
        return Ok(key);
    }

    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    getrandom::fill(key.as_mut_slice())
        .map_err(|e| Error::internal(anyhow!("the OS random generator failed: {e}")))?;
    let mut text = Zeroizing::new(String::with_capacity(48));
    STANDARD.encode_string(key.as_slice(), &mut text);
    text.push('\n');

    let temp = dir.join(format!(
        ".{DEV_KEY_FILE}.{}.{}.tmp",
        std::process::id(),
        TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_all()
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(io_error("write", &temp)(e));
    }
    let linked = fs::hard_link(&temp, &path);
    let _ = fs::remove_file(&temp);
    match linked {
        Ok(()) => {
            // Best effort: make the new directory entry durable too.
            let _ = File::open(dir).and_then(|d| d.sync_all());
            Ok(*key)
        }
        // Another process got there first: use its key.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_dev_key(&path)?
            .ok_or_else(|| Error::internal(anyhow!("{} vanished", path.display()))),
        Err(e) => Err(io_error("create", &path)(e)),
    }
}

fn read_dev_key(path: &Path) -> Result<Option<[u8; KEY_LEN]>, Error> {
    let bytes = match fs::read(path) {
        Ok(bytes) => Zeroizing::new(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("read", path)(e)),
    };
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(parse_key)
        .map(Some)
        .ok_or_else(|| {
            Error::internal(anyhow!(
                "{} does not hold 32 bytes of base64; delete it to generate a new development key",
                path.display()
            ))
        })
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_path_buf();
    move |e| Error::internal(anyhow!("cannot {action} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    const PLACE: Place<'static> = Place {
        table: "users",
        column: "totp_secret",
        row_id: "0190c3f2-0000-7000-8000-000000000001",
    };

    fn keys(seed: u8) -> DataKeys {
        DataKeys::new(DataKey::from_bytes([seed; 32]), Vec::new())
    }

    fn payload(sealed: &str) -> Vec<u8> {
        let parsed = Sealed::parse(sealed).expect("sealed shape");
        URL_SAFE_NO_PAD.decode(parsed.payload).expect("base64url")
    }

    fn with_payload(sealed: &str, bytes: &[u8]) -> String {
        let parsed = Sealed::parse(sealed).expect("sealed shape");
        format!("v1.{}.{}", parsed.kid, URL_SAFE_NO_PAD.encode(bytes))
    }

    #[test]
    fn round_trip() {
        let keys = keys(7);
        for plaintext in [
            &b""[..],
            b"x",
            b"JBSWY3DPEHPK3PXP secret bytes",
            &[0u8; 1000],
        ] {
            let sealed = keys.encrypt(plaintext, &PLACE).expect("encrypt");
            let opened = keys.decrypt(&sealed, &PLACE).expect("decrypt");
            assert_eq!(opened.as_slice(), plaintext);
            assert_eq!(
                payload(&sealed).len(),
                NONCE_LEN + plaintext.len() + TAG_LEN
            );
        }
    }

    #[test]
    fn format_is_versioned_with_kid() {
        let keys = keys(7);
        let sealed = keys.encrypt(b"secret", &PLACE).expect("encrypt");
        let mut parts = sealed.split('.');
        assert_eq!(parts.next(), Some("v1"));
        assert_eq!(parts.next(), Some(keys.active_kid()));
        let rest = parts.next().expect("payload");
        assert!(parts.next().is_none());
        assert!(
            rest.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert!(!sealed.contains("secret"));
    }

    #[test]
    fn a_value_moved_to_another_place_fails() {
        let keys = keys(7);
        let sealed = keys.encrypt(b"secret", &PLACE).expect("encrypt");
        let elsewhere = [
            Place {
                row_id: "0190c3f2-0000-7000-8000-000000000002",
                ..PLACE
            },
            Place {
                column: "email",
                ..PLACE
            },
            Place {
                table: "sessions",
                ..PLACE
            },
            // The separators make these distinct even though the concatenation is equal.
            Place {
                table: "userst",
                column: "otp_secret",
                ..PLACE
            },
        ];
        for place in elsewhere {
            let err = keys
                .decrypt(&sealed, &place)
                .expect_err("moved value opened");
            assert!(matches!(err, Error::Internal(_)));
        }
    }

    #[test]
    fn nul_in_table_or_column_is_refused() {
        let keys = keys(7);
        let bad = Place {
            table: "users\0x",
            ..PLACE
        };
        assert!(keys.encrypt(b"secret", &bad).is_err());
        let bad = Place {
            column: "a\0b",
            ..PLACE
        };
        assert!(keys.encrypt(b"secret", &bad).is_err());
        // The row id may hold anything: it comes last.
        let odd_row = Place {
            row_id: "a\0b",
            ..PLACE
        };
        let sealed = keys.encrypt(b"secret", &odd_row).expect("encrypt");
        assert_eq!(
            keys.decrypt(&sealed, &odd_row).expect("decrypt").as_slice(),
            b"secret"
        );
    }

    #[test]
    fn any_flipped_byte_fails() {
        let keys = keys(7);
        let sealed = keys.encrypt(b"secret", &PLACE).expect("encrypt");
        let original = payload(&sealed);
        for i in 0..original.len() {
            let mut bytes = original.clone();
            bytes[i] ^= 0x01;
            let tampered = with_payload(&sealed, &bytes);
            assert!(keys.decrypt(&tampered, &PLACE).is_err(), "byte {i}");
        }
        // Truncated and extended payloads too.
        let short = with_payload(&sealed, &original[..original.len() - 1]);
        assert!(keys.decrypt(&short, &PLACE).is_err());
        let mut long = original.clone();
        long.push(0);
        assert!(keys.decrypt(&with_payload(&sealed, &long), &PLACE).is_err());
        let tiny = with_payload(&sealed, &original[..NONCE_LEN + TAG_LEN - 1]);
        assert!(keys.decrypt(&tiny, &PLACE).is_err());
    }

    #[test]
    fn malformed_texts_fail() {
        let keys = keys(7);
        let sealed = keys.encrypt(b"secret", &PLACE).expect("encrypt");
        let kid = keys.active_kid();
        let body = sealed.rsplit('.').next().expect("payload");
        for bad in [
            String::new(),
            "v1".to_owned(),
            format!("v1.{kid}"),
            format!("v1.{kid}."),
            format!("v2.{kid}.{body}"),
            format!("V1.{kid}.{body}"),
            format!("v1.{}.{body}", kid.to_uppercase()),
            format!("v1.{kid}.{body}="),
            format!("v1.{kid}.{body}.x"),
            format!("v1.{kid}.{}", body.replace('-', "+")),
            sealed.replacen('.', ":", 1),
        ] {
            if bad == sealed {
                continue;
            }
            assert!(keys.decrypt(&bad, &PLACE).is_err(), "{bad:?} opened");
        }
    }

    #[test]
    fn rotation_old_key_decrypts_new_key_encrypts() {
        let old_key = DataKey::from_bytes([1; 32]);
        let new_key = DataKey::from_bytes([2; 32]);
        let before = DataKeys::new(old_key.clone(), Vec::new());
        let sealed_old = before.encrypt(b"secret", &PLACE).expect("encrypt");
        assert!(before.is_current(&sealed_old));

        let after = DataKeys::new(new_key.clone(), vec![old_key.clone()]);
        assert_eq!(after.active_kid(), new_key.kid());
        assert!(!after.is_current(&sealed_old));
        assert_eq!(
            after.decrypt(&sealed_old, &PLACE).expect("old").as_slice(),
            b"secret"
        );
        let sealed_new = after.encrypt(b"secret", &PLACE).expect("encrypt");
        assert!(after.is_current(&sealed_new));
        assert!(sealed_new.starts_with(&format!("v1.{}.", new_key.kid())));

        // Once the old key is dropped from the set, its values no longer open.
        let done = DataKeys::new(new_key, Vec::new());
        assert!(done.decrypt(&sealed_old, &PLACE).is_err());
        assert!(done.decrypt(&sealed_new, &PLACE).is_ok());
        assert!(!done.is_current("garbage"));
    }

    #[test]
    fn unknown_kid_fails_and_names_no_secret() {
        let sealed = keys(1).encrypt(b"top secret", &PLACE).expect("encrypt");
        let err = keys(2).decrypt(&sealed, &PLACE).expect_err("opened");
        let message = format!("{err:#} {err:?}");
        assert!(message.contains("unknown data key"));
        assert!(!message.contains("top secret"));
        assert!(!message.contains(&STANDARD.encode([1u8; 32])));
        assert!(!message.contains(&STANDARD.encode([2u8; 32])));
    }

    #[test]
    fn same_kid_but_other_key_bytes_fail() {
        // A forged kid selects a key; the tag still decides.
        let sealed = keys(1).encrypt(b"secret", &PLACE).expect("encrypt");
        let other = keys(2);
        let forged = with_payload(
            &sealed.replacen(keys(1).active_kid(), other.active_kid(), 1),
            &payload(&sealed),
        );
        assert!(other.decrypt(&forged, &PLACE).is_err());
    }

    #[test]
    fn encryptions_of_one_value_differ() {
        let keys = keys(7);
        let a = keys.encrypt(b"secret", &PLACE).expect("encrypt");
        let b = keys.encrypt(b"secret", &PLACE).expect("encrypt");
        assert_ne!(a, b);
        assert_ne!(payload(&a)[..NONCE_LEN], payload(&b)[..NONCE_LEN]);
    }

    #[test]
    fn digests_are_keyed_per_purpose_and_follow_rotation() {
        let k1 = DataKeys::new(DataKey::from_bytes([1; 32]), Vec::new());
        let k2 = DataKeys::new(
            DataKey::from_bytes([2; 32]),
            vec![DataKey::from_bytes([1; 32])],
        );
        let a = k1.digests("recovery", b"user\0abcde12345");
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].len(), 64);
        assert_ne!(a, k1.digests("other", b"user\0abcde12345"));
        assert_ne!(a, k1.digests("recovery", b"user\0abcde12346"));
        let b = k2.digests("recovery", b"user\0abcde12345");
        assert_eq!(b.len(), 2);
        assert_ne!(b[0], a[0], "the active key differs");
        assert_eq!(b[1], a[0], "the old key still matches");
    }

    #[test]
    fn kid_is_16_hex_stable_and_per_key() {
        let a = DataKey::from_bytes([0; 32]);
        assert_eq!(a.kid().len(), 16);
        assert!(
            a.kid()
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(a.kid(), DataKey::from_bytes([0; 32]).kid());
        assert_ne!(a.kid(), DataKey::from_bytes([1; 32]).kid());
        let digest = Sha256::new()
            .chain_update(b"rampart-data-key-id")
            .chain_update([0u8; 32])
            .finalize();
        assert_eq!(a.kid(), &format!("{digest:x}")[..16]);
    }

    #[test]
    fn debug_prints_only_kids() {
        let key = DataKey::from_bytes([0xab; 32]);
        let keys = DataKeys::new(key.clone(), vec![DataKey::from_bytes([0xcd; 32])]);
        for shown in [
            format!("{key:?}"),
            format!("{keys:?}"),
            format!("{keys:#?}"),
        ] {
            assert!(shown.contains(key.kid()), "{shown}");
            // Neither key as a byte array, in hex or in base64.
            assert!(!shown.contains("171, 171"), "{shown}");
            assert!(!shown.contains("205, 205"), "{shown}");
            assert!(!shown.to_lowercase().contains("abab"), "{shown}");
            assert!(!shown.to_lowercase().contains("cdcd"), "{shown}");
            assert!(!shown.contains(&STANDARD.encode([0xab; 32])), "{shown}");
        }
    }

    #[test]
    fn parse_key_edge_cases() {
        let key: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(250));
        let standard = STANDARD.encode(key);
        let url = base64::engine::general_purpose::URL_SAFE.encode(key);
        assert!(standard.contains('+') || standard.contains('/'));
        assert!(url.contains('-') || url.contains('_'));
        for ok in [
            standard.clone(),
            standard.trim_end_matches('=').to_owned(),
            url.clone(),
            url.trim_end_matches('=').to_owned(),
            format!("  {standard}\n"),
        ] {
            assert_eq!(parse_key(&ok), Some(key), "{ok:?}");
        }
        for bad in [
            String::new(),
            "   ".to_owned(),
            STANDARD.encode([0u8; 31]),
            STANDARD.encode([0u8; 33]),
            STANDARD.encode([0u8; 16]),
            STANDARD.encode([0u8; 64]),
            format!("{standard}=="),
            format!("{}!", &standard[..43]),
            // Mixed alphabets.
            format!("+-{}", &standard[2..]),
            "not base64 at all, not base64 at all, not b".to_owned(),
            format!("{} {}", &standard[..20], &standard[20..]),
        ] {
            assert_eq!(parse_key(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn dev_key_is_created_0600_in_a_0700_dir_and_reused() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("data").join("keys");
        let key = load_or_generate_dev_key(&dir).expect("generate");
        let file = dir.join("data.key");
        let mode = |p: &Path| fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&dir), 0o700);
        let text = fs::read_to_string(&file).expect("read");
        assert_eq!(parse_key(&text), Some(key));
        assert_eq!(load_or_generate_dev_key(&dir).expect("reuse"), key);
        // No temp files are left behind.
        let names: Vec<_> = fs::read_dir(&dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("data.key")]);
        // A different directory gets a different key.
        let other = load_or_generate_dev_key(&root.path().join("other")).expect("generate");
        assert_ne!(other, key);
    }

    #[test]
    fn dev_key_concurrent_first_use_agrees() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().to_path_buf();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || load_or_generate_dev_key(&dir).expect("key"))
            })
            .collect();
        let keys: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn dev_key_file_that_is_not_a_key_is_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        fs::write(root.path().join("data.key"), "hunter2\n").expect("write");
        let err = load_or_generate_dev_key(root.path()).expect_err("accepted");
        let message = format!("{err:#}");
        assert!(message.contains("data.key"));
        assert!(!message.contains("hunter2"));
    }
}
