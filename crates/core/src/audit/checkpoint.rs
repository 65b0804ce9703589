//! Audit checkpoints (contract §8): signed statements of the chain head, kept outside the
//! database, so that cutting off the newest records (which the chain alone cannot show)
//! is seen by `rampart audit verify --checkpoint`.
//!
//! A checkpoint is a JWS compact token (RFC 7515) with header `alg` (the configured
//! algorithm), `kid` (the active signing key's RFC 7638 thumbprint) and `typ:
//! "audit-checkpoint+jwt"`, signed by the access-token signer's key ([`crate::tokens`]), so
//! anyone holding the JWKS can check it. Its claims are exactly `seq` and `hash` (the head
//! record's, `hash` as the chain stores it: 64 lowercase hex digits) and `iat` (seconds).
//! An empty chain has the head `seq: 0`, `hash:` [`GENESIS_HASH`] (the `prev_hash` of the
//! first record to come), which every chain holds.
//!
//! Invariants: verification never trusts the token to choose anything. The key is chosen by
//! `kid` among the keys of the key directory only (`jwk`, `jku`, `x5u`, `x5c` are never
//! consulted); the algorithm is pinned per key (RS256 for an RSA key, EdDSA for Ed25519),
//! so `alg: none`, HS256 and algorithm swaps are refused; `typ` must be
//! [`CHECKPOINT_TYPE`], so an access token (`at+jwt`) is never a checkpoint and a
//! checkpoint never an access token (RFC 8725 §3.11); any `crit` is refused; unknown or
//! duplicate claims are refused; tokens over [`MAX_CHECKPOINT_BYTES`] are refused unparsed.
//! No input panics: every failure is a [`Rejection`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use anyhow::anyhow;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{GENESIS_HASH, VerifyOutcome};
use crate::config::JwtAlg;
use crate::error::{Error, Result};
use crate::keys::KeyStore;
use crate::tokens::{decoding_key, encoding_key, jwt_algorithm};

/// The `typ` header of every checkpoint.
pub const CHECKPOINT_TYPE: &str = "audit-checkpoint+jwt";
/// Longer tokens are refused before any parsing: ours are under 1 KiB (RS256, 3072-bit).
pub const MAX_CHECKPOINT_BYTES: usize = 8 * 1024;

/// The head of the chain at one moment, as a checkpoint states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The head record's `seq`; 0 for an empty chain.
    pub seq: i64,
    /// The head record's `hash` (lowercase hex); [`GENESIS_HASH`] for an empty chain.
    pub hash: String,
    /// When the checkpoint was made, in seconds since the Unix epoch.
    pub iat: i64,
}

impl Checkpoint {
    /// The checkpoint of a chain whose head is `head` (`(seq, hash)`, `None` when empty).
    pub fn of_head(head: Option<(i64, String)>, iat: i64) -> Self {
        let (seq, hash) = head.unwrap_or_else(|| (0, GENESIS_HASH.to_owned()));
        Self { seq, hash, iat }
    }

    /// Where this checkpoint stands against a chain walk that ended in `outcome` and kept
    /// `hashes` (`seq` → `hash` of records it verified, at least this checkpoint's `seq`).
    pub fn standing(&self, outcome: &VerifyOutcome, hashes: &BTreeMap<i64, String>) -> Standing {
        let found = if self.seq == 0 {
            Some(GENESIS_HASH)
        } else {
            hashes.get(&self.seq).map(String::as_str)
        };
        match (found, outcome) {
            (Some(hash), _) if hash == self.hash => Standing::Holds,
            (Some(hash), _) => Standing::Rewritten {
                found: hash.to_owned(),
            },
            (None, VerifyOutcome::Intact { count }) => Standing::Truncated {
                head_seq: i64::try_from(*count).unwrap_or(i64::MAX),
            },
            (None, VerifyOutcome::Broken { seq, .. }) => Standing::Unchecked { broken_at: *seq },
        }
    }
}

/// The result of comparing one checkpoint with the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// The chain holds the checkpoint's `seq` with that exact `hash`.
    Holds,
    /// The chain (intact) ends at `head_seq`, before the checkpoint's `seq`.
    Truncated { head_seq: i64 },
    /// The record at the checkpoint's `seq` has the hash `found` instead.
    Rewritten { found: String },
    /// The chain is broken at `broken_at`, at or before the checkpoint's `seq`, so the
    /// record the checkpoint names could not be checked.
    Unchecked { broken_at: i64 },
}

/// Claims as we write them.
#[derive(Serialize)]
struct IssuedClaims<'a> {
    seq: i64,
    hash: &'a str,
    iat: i64,
}

/// Claims as we read them: exactly these three; anything else fails to parse.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceivedClaims {
    seq: i64,
    hash: String,
    iat: i64,
}

/// Signs checkpoints with the active key of a [`KeyStore`].
pub struct CheckpointSigner {
    alg: Algorithm,
    kid: String,
    key: EncodingKey,
}

impl fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl CheckpointSigner {
    /// Refuses an active key of another algorithm than `alg` (`RAMPART_JWT_ALG`), as the
    /// access-token signer does, so a checkpoint is signed exactly as access tokens are.
    pub fn new(keys: &KeyStore, alg: JwtAlg) -> Result<Self> {
        let active = keys.active();
        if active.alg() != alg {
            return Err(Error::internal(anyhow!(
                "the active signing key {} is an {} key but the configured algorithm (RAMPART_JWT_ALG) is {}",
                active.kid(),
                active.alg().as_str(),
                alg.as_str()
            )));
        }
        Ok(Self {
            alg: jwt_algorithm(alg),
            kid: active.kid().to_owned(),
            key: encoding_key(active)?,
        })
    }

    /// The `kid` checkpoints carry.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The compact JWS of `checkpoint`.
    pub fn sign(&self, checkpoint: &Checkpoint) -> Result<String> {
        let mut header = Header::new(self.alg);
        header.typ = Some(CHECKPOINT_TYPE.to_owned());
        header.kid = Some(self.kid.clone());
        let claims = IssuedClaims {
            seq: checkpoint.seq,
            hash: &checkpoint.hash,
            iat: checkpoint.iat,
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| Error::internal(anyhow!("cannot sign an audit checkpoint: {e}")))
    }
}

/// Why a checkpoint was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("longer than {MAX_CHECKPOINT_BYTES} bytes")]
    TooLong,
    #[error("not a compact JWS")]
    Malformed,
    #[error("typ is not {CHECKPOINT_TYPE}")]
    Type,
    #[error("carries a crit header")]
    CriticalHeader,
    #[error("has no kid")]
    MissingKid,
    #[error("its kid names no key in the key directory")]
    UnknownKid,
    #[error("its alg is not its key's algorithm")]
    Algorithm,
    #[error("its signature does not verify")]
    Signature,
    #[error("its claims are not exactly seq, hash and iat of a chain head")]
    Claims,
}

/// Verifies checkpoints against every key of a key directory.
pub struct CheckpointVerifier {
    /// Each key's pinned algorithm and public key, by `kid`.
    keys: HashMap<String, (Algorithm, DecodingKey)>,
}

impl fmt::Debug for CheckpointVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("CheckpointVerifier")
            .field("kids", &kids)
            .finish()
    }
}

impl CheckpointVerifier {
    /// Every key of `keys`, each pinned to its own algorithm (not only the active one's:
    /// checkpoints made before a rotation to the other algorithm still verify).
    pub fn new(keys: &KeyStore) -> Result<Self> {
        let keys = keys
            .keys()
            .iter()
            .map(|key| {
                Ok((
                    key.kid().to_owned(),
                    (jwt_algorithm(key.alg()), decoding_key(key)?),
                ))
            })
            .collect::<Result<HashMap<_, _>>>()?;
        Ok(Self { keys })
    }

    /// The checkpoint `token` states, if one of our keys signed it as a checkpoint.
    pub fn verify(&self, token: &str) -> Result<Checkpoint, Rejection> {
        if token.len() > MAX_CHECKPOINT_BYTES {
            return Err(Rejection::TooLong);
        }
        if token.bytes().filter(|b| *b == b'.').count() != 2 {
            return Err(Rejection::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
        if header.typ.as_deref() != Some(CHECKPOINT_TYPE) {
            return Err(Rejection::Type);
        }
        // RFC 7515 §4.1.11: we understand no extension, so any `crit` must be refused.
        if header.crit.is_some() {
            return Err(Rejection::CriticalHeader);
        }
        let kid = header.kid.as_deref().ok_or(Rejection::MissingKid)?;
        let (alg, key) = self.keys.get(kid).ok_or(Rejection::UnknownKid)?;
        if header.alg != *alg {
            return Err(Rejection::Algorithm);
        }
        let mut validation = Validation::new(*alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<ReceivedClaims>(token, key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => Rejection::Signature,
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => Rejection::Algorithm,
                jsonwebtoken::errors::ErrorKind::Json(_) => Rejection::Claims,
                _ => Rejection::Malformed,
            })?
            .claims;
        let is_hash = claims.hash.len() == 64
            && claims
                .hash
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let head_ok = match claims.seq {
            0 => claims.hash == GENESIS_HASH,
            seq => seq > 0 && is_hash,
        };
        if !head_ok || claims.iat < 0 {
            return Err(Rejection::Claims);
        }
        Ok(Checkpoint {
            seq: claims.seq,
            hash: claims.hash,
            iat: claims.iat,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::LazyLock;

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::{Value, json};

    use super::*;
    use crate::audit::ChainBreak;
    use crate::keys::{self, SigningKey};
    use uuid::Uuid;

    const HASH: &str = "5f1e1c2d3b4a59687766554433221100ffeeddccbbaa99887766554433221100";

    /// The one RSA key of these tests (3072-bit generation is slow).
    static RSA_DIR: LazyLock<tempfile::TempDir> = LazyLock::new(|| {
        let dir = tempfile::tempdir().unwrap();
        keys::generate(dir.path(), JwtAlg::Rs256).unwrap();
        dir
    });

    fn store(dir: &Path) -> KeyStore {
        KeyStore::load(dir).unwrap()
    }

    fn ed_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        keys::generate(dir.path(), JwtAlg::EdDsa).unwrap();
        dir
    }

    fn head(seq: i64) -> Checkpoint {
        Checkpoint {
            seq,
            hash: HASH.to_owned(),
            iat: 1_800_000_000,
        }
    }

    fn b64(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
    }

    /// Signs arbitrary header members and claims with `key`.
    fn sign(key: &SigningKey, header: Value, claims: &Value) -> String {
        let mut full = json!({ "alg": key.alg().as_str() });
        full.as_object_mut()
            .unwrap()
            .extend(header.as_object().unwrap().clone());
        let header: Header = serde_json::from_value(full).unwrap();
        jsonwebtoken::encode(&header, claims, &encoding_key(key).unwrap()).unwrap()
    }

    fn good_header(key: &SigningKey) -> Value {
        json!({"typ": CHECKPOINT_TYPE, "kid": key.kid()})
    }

    fn good_claims() -> Value {
        json!({"seq": 7, "hash": HASH, "iat": 1_800_000_000})
    }

    #[test]
    fn a_signed_checkpoint_round_trips_with_both_algorithms() {
        let ed = ed_dir();
        for dir in [RSA_DIR.path(), ed.path()] {
            let keys = store(dir);
            let alg = keys.active().alg();
            let signer = CheckpointSigner::new(&keys, alg).unwrap();
            let verifier = CheckpointVerifier::new(&keys).unwrap();
            for checkpoint in [head(1), head(i64::MAX), Checkpoint::of_head(None, 5)] {
                let token = signer.sign(&checkpoint).unwrap();
                let header = jsonwebtoken::decode_header(&token).unwrap();
                assert_eq!(header.typ.as_deref(), Some(CHECKPOINT_TYPE));
                assert_eq!(header.kid.as_deref(), Some(keys.active().kid()));
                assert_eq!(header.alg, jwt_algorithm(alg));
                assert_eq!(verifier.verify(&token), Ok(checkpoint));
                assert!(token.len() < 1024, "{}", token.len());
            }
            // The claims are exactly seq, hash and iat.
            let token = signer.sign(&head(3)).unwrap();
            let payload = token.split('.').nth(1).unwrap();
            let claims: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
            assert_eq!(
                claims,
                json!({"seq": 3, "hash": HASH, "iat": 1_800_000_000})
            );
        }
    }

    #[test]
    fn an_empty_chain_is_seq_zero_with_the_genesis_hash() {
        assert_eq!(
            Checkpoint::of_head(None, 9),
            Checkpoint {
                seq: 0,
                hash: GENESIS_HASH.to_owned(),
                iat: 9
            }
        );
        assert_eq!(
            Checkpoint::of_head(Some((4, HASH.to_owned())), 9),
            Checkpoint {
                seq: 4,
                hash: HASH.to_owned(),
                iat: 9
            }
        );
    }

    #[test]
    fn the_signer_refuses_an_active_key_of_the_other_algorithm() {
        let err = CheckpointSigner::new(&store(RSA_DIR.path()), JwtAlg::EdDsa).unwrap_err();
        assert!(err.to_string().contains("RAMPART_JWT_ALG"), "{err}");
    }

    #[test]
    fn any_key_of_the_directory_verifies_each_pinned_to_its_algorithm() {
        // A directory with an Ed25519 key (active) and our RSA key.
        let dir = ed_dir();
        let rsa = store(RSA_DIR.path());
        let rsa_key = rsa.active();
        std::fs::write(
            dir.path().join(format!("{}.pem", rsa_key.kid())),
            rsa_key.pkcs8_pem().expose(),
        )
        .unwrap();
        let both = store(dir.path());
        assert_eq!(both.keys().len(), 2);
        let verifier = CheckpointVerifier::new(&both).unwrap();
        let rsa_token = CheckpointSigner::new(&rsa, JwtAlg::Rs256)
            .unwrap()
            .sign(&head(2))
            .unwrap();
        assert_eq!(verifier.verify(&rsa_token), Ok(head(2)));
        let ed_token = CheckpointSigner::new(&both, JwtAlg::EdDsa)
            .unwrap()
            .sign(&head(2))
            .unwrap();
        assert_eq!(verifier.verify(&ed_token), Ok(head(2)));

        // An EdDSA header naming the RSA kid, and the other way round.
        let ed_key = both.active();
        let swapped = sign(
            ed_key,
            json!({"typ": CHECKPOINT_TYPE, "kid": rsa_key.kid()}),
            &good_claims(),
        );
        assert_eq!(verifier.verify(&swapped), Err(Rejection::Algorithm));
        let swapped = sign(
            rsa_key,
            json!({"typ": CHECKPOINT_TYPE, "kid": ed_key.kid()}),
            &good_claims(),
        );
        assert_eq!(verifier.verify(&swapped), Err(Rejection::Algorithm));
    }

    #[test]
    fn forged_tampered_and_mistyped_checkpoints_are_refused() {
        let dir = ed_dir();
        let keys = store(dir.path());
        let key = keys.active();
        let verifier = CheckpointVerifier::new(&keys).unwrap();
        let good = sign(key, good_header(key), &good_claims());
        assert_eq!(verifier.verify(&good).map(|c| c.seq), Ok(7));

        // Signed by a key outside the directory, under its own kid or ours.
        let attacker_dir = ed_dir();
        let attacker = store(attacker_dir.path());
        let forged = sign(
            attacker.active(),
            good_header(attacker.active()),
            &good_claims(),
        );
        assert_eq!(verifier.verify(&forged), Err(Rejection::UnknownKid));
        let forged = sign(
            attacker.active(),
            json!({"typ": CHECKPOINT_TYPE, "kid": key.kid(), "jwk": attacker.active().public_jwk()}),
            &good_claims(),
        );
        assert_eq!(verifier.verify(&forged), Err(Rejection::Signature));

        // A tampered payload (the seq moved back after a truncation) or signature.
        let parts: Vec<&str> = good.split('.').collect();
        let mut claims = good_claims();
        claims["seq"] = json!(3);
        let tampered = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
        assert_eq!(verifier.verify(&tampered), Err(Rejection::Signature));
        let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        signature[0] ^= 1;
        let flipped = format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            URL_SAFE_NO_PAD.encode(signature)
        );
        assert_eq!(verifier.verify(&flipped), Err(Rejection::Signature));

        // alg none, with or without a signature; HS256 keyed with our public key.
        for alg in ["none", "None", "HS256"] {
            let header = json!({"alg": alg, "typ": CHECKPOINT_TYPE, "kid": key.kid()});
            for signature in ["", parts[2]] {
                let token = format!("{}.{}.{signature}", b64(&header), parts[1]);
                assert!(verifier.verify(&token).is_err(), "{alg}");
            }
        }
        let hs = jsonwebtoken::encode(
            &serde_json::from_value::<Header>(
                json!({"alg": "HS256", "typ": CHECKPOINT_TYPE, "kid": key.kid()}),
            )
            .unwrap(),
            &good_claims(),
            &EncodingKey::from_secret(key.public_jwk().to_string().as_bytes()),
        )
        .unwrap();
        assert_eq!(verifier.verify(&hs), Err(Rejection::Algorithm));

        // typ: an access token's, none, other spellings.
        for typ in [
            json!("at+jwt"),
            json!("JWT"),
            json!("AUDIT-CHECKPOINT+JWT"),
            json!(""),
        ] {
            let token = sign(key, json!({"typ": typ, "kid": key.kid()}), &good_claims());
            assert_eq!(verifier.verify(&token), Err(Rejection::Type), "{typ}");
        }
        let token = sign(key, json!({"kid": key.kid()}), &good_claims());
        assert_eq!(verifier.verify(&token), Err(Rejection::Type));
        let token = sign(key, json!({"typ": CHECKPOINT_TYPE}), &good_claims());
        assert_eq!(verifier.verify(&token), Err(Rejection::MissingKid));
        let token = sign(
            key,
            json!({"typ": CHECKPOINT_TYPE, "kid": key.kid(), "crit": ["seq"]}),
            &good_claims(),
        );
        assert_eq!(verifier.verify(&token), Err(Rejection::CriticalHeader));
    }

    #[test]
    fn claims_must_be_exactly_a_chain_head() {
        let dir = ed_dir();
        let keys = store(dir.path());
        let key = keys.active();
        let verifier = CheckpointVerifier::new(&keys).unwrap();
        let bad_claims = [
            json!({"seq": 7, "hash": HASH}),
            json!({"seq": 7, "iat": 1}),
            json!({"hash": HASH, "iat": 1}),
            json!({"seq": 7, "hash": HASH, "iat": 1, "exp": 2}),
            json!({"seq": 7, "hash": HASH, "iat": 1, "sub": "x"}),
            json!({"seq": -1, "hash": HASH, "iat": 1}),
            json!({"seq": 0, "hash": HASH, "iat": 1}),
            json!({"seq": 7, "hash": "", "iat": 1}),
            json!({"seq": 7, "hash": HASH.to_uppercase(), "iat": 1}),
            json!({"seq": 7, "hash": &HASH[1..], "iat": 1}),
            json!({"seq": 7, "hash": format!("{HASH}0"), "iat": 1}),
            json!({"seq": 7, "hash": HASH.replacen('5', "g", 1), "iat": 1}),
            json!({"seq": 7.5, "hash": HASH, "iat": 1}),
            json!({"seq": "7", "hash": HASH, "iat": 1}),
            json!({"seq": 7, "hash": 7, "iat": 1}),
            json!({"seq": 7, "hash": HASH, "iat": -1}),
            json!({"seq": 18_446_744_073_709_551_615_u64, "hash": HASH, "iat": 1}),
            json!([7, HASH, 1]),
            json!(null),
        ];
        for claims in bad_claims {
            let token = sign(key, good_header(key), &claims);
            assert!(verifier.verify(&token).is_err(), "{claims}");
        }
        // A duplicated claim (hand-built: serde_json cannot produce one).
        let header = b64(&json!({"alg": "EdDSA", "typ": CHECKPOINT_TYPE, "kid": key.kid()}));
        let payload = URL_SAFE_NO_PAD
            .encode(format!(r#"{{"seq":7,"seq":8,"hash":"{HASH}","iat":1}}"#).as_bytes());
        let message = format!("{header}.{payload}");
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &encoding_key(key).unwrap(),
            Algorithm::EdDSA,
        )
        .unwrap();
        let token = format!("{message}.{signature}");
        assert_eq!(verifier.verify(&token), Err(Rejection::Claims));
        // seq 0 with the genesis hash is the empty chain's checkpoint.
        let empty = sign(
            key,
            good_header(key),
            &json!({"seq": 0, "hash": GENESIS_HASH, "iat": 1}),
        );
        assert_eq!(verifier.verify(&empty), Ok(Checkpoint::of_head(None, 1)));
    }

    /// A deterministic stream of hostile inputs (proptest is not in the lock file): none
    /// may panic, none may verify.
    #[test]
    fn hostile_inputs_never_panic_and_never_verify() {
        let dir = ed_dir();
        let keys = store(dir.path());
        let key = keys.active();
        let verifier = CheckpointVerifier::new(&keys).unwrap();
        let good = sign(key, good_header(key), &good_claims());
        let good_parts: Vec<&str> = good.split('.').collect();

        let mut inputs: Vec<String> = vec![
            String::new(),
            ".".into(),
            "..".into(),
            "...".into(),
            "a.b.c".into(),
            "\0.\0.\0".into(),
            "é.é.é".into(),
            format!("{good}."),
            format!(".{good}"),
            format!(" {good}"),
            good.replacen('.', "..", 1),
            "x".repeat(MAX_CHECKPOINT_BYTES + 1),
            format!(
                "{}.{}.{}",
                "A".repeat(3000),
                "B".repeat(3000),
                "C".repeat(2000)
            ),
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": CHECKPOINT_TYPE})),
                good_parts[1]
            ),
            format!(
                "{}.{}.{}",
                b64(&json!("a string")),
                good_parts[1],
                good_parts[2]
            ),
            format!(
                "{}.{}.{}",
                b64(&json!([1, 2])),
                good_parts[1],
                good_parts[2]
            ),
            format!(
                "{}.{}.{}",
                b64(&json!({"alg": 1})),
                good_parts[1],
                good_parts[2]
            ),
            format!(
                "{}.{}.{}",
                b64(&json!({"alg": "EdDSA", "typ": CHECKPOINT_TYPE, "kid": 7})),
                good_parts[1],
                good_parts[2]
            ),
            format!(
                "{}.{}.{}",
                b64(&json!({"alg": "EdDSA", "typ": CHECKPOINT_TYPE, "kid": "x".repeat(5000)})),
                good_parts[1],
                good_parts[2]
            ),
            format!("{}.{}.{}", good_parts[0], "!!!!", good_parts[2]),
            format!("{}.{}.{}", good_parts[0], good_parts[1], "%%%"),
            format!(
                "{}.{}.{}",
                good_parts[0],
                URL_SAFE_NO_PAD.encode([0xff, 0xfe, 0x00]),
                good_parts[2]
            ),
            format!(
                "{}.{}.{}",
                good_parts[0],
                good_parts[1],
                URL_SAFE_NO_PAD.encode([0u8; 4000])
            ),
        ];
        // Every prefix, every single-byte change, every truncated segment of a good token.
        let bytes = good.as_bytes();
        for end in 0..bytes.len() {
            inputs.push(String::from_utf8_lossy(&bytes[..end]).into_owned());
        }
        for (position, replacement) in
            (0..bytes.len()).zip([b'A', b'.', b'-', b'_', b'0', b'z'].iter().cycle())
        {
            let mut changed = bytes.to_vec();
            if changed[position] == *replacement {
                continue;
            }
            changed[position] = *replacement;
            inputs.push(String::from_utf8_lossy(&changed).into_owned());
        }
        // Pseudo-random byte strings shaped like three segments (xorshift, fixed seed).
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        const ALPHABET: &[u8] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/.\0\xc3";
        for _ in 0..2000 {
            let len = usize::try_from(next() % 400).unwrap();
            let text: Vec<u8> = (0..len)
                .map(|_| ALPHABET[usize::try_from(next() % ALPHABET.len() as u64).unwrap()])
                .collect();
            inputs.push(String::from_utf8_lossy(&text).into_owned());
        }
        for input in &inputs {
            assert!(verifier.verify(input).is_err(), "{input:?} verified");
        }
        // The unchanged token still does.
        assert!(verifier.verify(&good).is_ok());
    }

    fn intact(count: u64) -> VerifyOutcome {
        VerifyOutcome::Intact { count }
    }

    #[test]
    fn standing_against_the_chain() {
        let at = |pairs: &[(i64, &str)]| -> BTreeMap<i64, String> {
            pairs.iter().map(|(s, h)| (*s, (*h).to_owned())).collect()
        };
        let other = "0".repeat(63) + "1";
        // Holds: the record at seq has that hash, however long the chain is now.
        assert_eq!(
            head(7).standing(&intact(7), &at(&[(7, HASH)])),
            Standing::Holds
        );
        assert_eq!(
            head(7).standing(&intact(90), &at(&[(7, HASH)])),
            Standing::Holds
        );
        // Truncated: the chain ends before seq.
        assert_eq!(
            head(7).standing(&intact(5), &at(&[])),
            Standing::Truncated { head_seq: 5 }
        );
        assert_eq!(
            head(7).standing(&intact(0), &at(&[])),
            Standing::Truncated { head_seq: 0 }
        );
        // Rewritten: another hash at seq (also after a truncation and regrowth).
        assert_eq!(
            head(7).standing(&intact(9), &at(&[(7, &other)])),
            Standing::Rewritten {
                found: other.clone()
            }
        );
        // Broken before seq: not checked; broken after it: the record still counts.
        let broken = |seq: i64| -> VerifyOutcome {
            ChainBreak {
                seq,
                id: Uuid::nil(),
                reason: String::new(),
            }
            .into()
        };
        assert_eq!(
            head(7).standing(&broken(4), &at(&[])),
            Standing::Unchecked { broken_at: 4 }
        );
        assert_eq!(
            head(7).standing(&broken(8), &at(&[(7, HASH)])),
            Standing::Holds
        );
        // The empty chain's checkpoint holds on every chain; a seq-0 claim of another hash
        // cannot (the verifier refuses it before it gets here).
        let empty = Checkpoint::of_head(None, 1);
        assert_eq!(empty.standing(&intact(0), &at(&[])), Standing::Holds);
        assert_eq!(empty.standing(&intact(12), &at(&[])), Standing::Holds);
        let mut odd = empty.clone();
        odd.hash = HASH.to_owned();
        assert_eq!(
            odd.standing(&intact(3), &at(&[])),
            Standing::Rewritten {
                found: GENESIS_HASH.to_owned()
            }
        );
    }
}
