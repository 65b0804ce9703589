//! The `jsonwebtoken` crypto provider Rampart installs: `jsonwebtoken`'s own aws-lc-rs
//! provider, except that RS256 signs with a key pair parsed once per key.
//!
//! The stock provider parses the RSA private key from its DER on every signature, which
//! also makes aws-lc compute fresh blinding values (a modular inverse) each time: in a
//! profile of a login flood that was ~40 % of an RS256 signature's cost
//! (docs/benchmarks.md). Here the parsed `RsaKeyPair` (which keeps its blinding cache) is
//! kept per key, found by the SHA-256 of the key's DER.
//!
//! Invariants:
//! - The signature is the same PKCS#1 v1.5 SHA-256 signature over the same signing input:
//!   only where the parsed key comes from differs. Verification and every other algorithm
//!   are the stock provider's.
//! - At most [`MAX_KEYS`] parsed keys are kept (keys are few and rotate rarely); when full,
//!   the cache starts over.
//! - [`install`] runs once per process, before the first token is signed or verified
//!   (`TokenService::new` calls it); if `jsonwebtoken` had already chosen its default, that
//!   default stays and signing is only slower.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, PoisonError, RwLock};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::signature::{self, Signer};
use jsonwebtoken::{Algorithm, AlgorithmFamily, EncodingKey};
use sha2::{Digest as _, Sha256};

/// How many parsed signing keys are kept.
pub const MAX_KEYS: usize = 8;

static KEYS: LazyLock<RwLock<HashMap<[u8; 32], Arc<RsaKeyPair>>>> =
    LazyLock::new(|| RwLock::new(HashMap::new()));

static PROVIDER: LazyLock<CryptoProvider> = LazyLock::new(|| {
    let stock = &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER;
    CryptoProvider {
        signer_factory: new_signer,
        verifier_factory: stock.verifier_factory,
        key_utils: stock.key_utils.clone(),
    }
});

/// Installs the provider as `jsonwebtoken`'s process default (once; later calls do nothing).
/// Whether it is the one in use.
pub fn install() -> bool {
    static INSTALLED: LazyLock<bool> =
        LazyLock::new(|| CryptoProvider::install_default(&PROVIDER).is_ok());
    *INSTALLED
}

fn new_signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    if *algorithm != Algorithm::RS256 {
        return (jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.signer_factory)(algorithm, key);
    }
    if key.family() != AlgorithmFamily::Rsa {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(Rs256Signer(parsed(key.as_bytes())?)))
}

/// The parsed key pair of `der` (PKCS#1), from the cache or parsed now.
fn parsed(der: &[u8]) -> Result<Arc<RsaKeyPair>, Error> {
    let id: [u8; 32] = Sha256::digest(der).into();
    if let Some(found) = KEYS.read().unwrap_or_else(PoisonError::into_inner).get(&id) {
        return Ok(found.clone());
    }
    let pair =
        Arc::new(RsaKeyPair::from_der(der).map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))?);
    let mut keys = KEYS.write().unwrap_or_else(PoisonError::into_inner);
    if keys.len() >= MAX_KEYS {
        keys.clear();
    }
    keys.insert(id, pair.clone());
    Ok(pair)
}

/// How many parsed keys the cache holds (tests).
pub fn cached_keys() -> usize {
    KEYS.read().unwrap_or_else(PoisonError::into_inner).len()
}

struct Rs256Signer(Arc<RsaKeyPair>);

impl Signer<Vec<u8>> for Rs256Signer {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let mut out = vec![0; self.0.public_modulus_len()];
        self.0
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), msg, &mut out)
            .map_err(signature::Error::from_source)?;
        Ok(out)
    }
}

impl JwtSigner for Rs256Signer {
    fn algorithm(&self) -> Algorithm {
        Algorithm::RS256
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::JwtAlg;
    use crate::keys::{self, KeyStore};

    /// The cache is process-wide: the test that fills it runs alone.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn encoding_key(alg: JwtAlg) -> EncodingKey {
        let dir = tempfile::tempdir().unwrap();
        keys::generate(dir.path(), alg).unwrap();
        let store = KeyStore::load(dir.path()).unwrap();
        crate::tokens::encoding_key(store.active()).unwrap()
    }

    /// PKCS#1 v1.5 signatures are deterministic: the cached key must sign exactly as the
    /// stock provider does, and a second signer for the same key must reuse the parsed key.
    #[test]
    fn rs256_signs_exactly_as_the_stock_provider_and_parses_each_key_once() {
        let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let encoding = encoding_key(JwtAlg::Rs256);
        let stock = (jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.signer_factory)(
            &Algorithm::RS256,
            &encoding,
        )
        .unwrap();
        let ours = new_signer(&Algorithm::RS256, &encoding).unwrap();
        let again = new_signer(&Algorithm::RS256, &encoding).unwrap();
        // The same parsed key both times (the tests of this binary use fewer than
        // MAX_KEYS keys, so the cache does not start over in between).
        let first = parsed(encoding.as_bytes()).unwrap();
        assert!(Arc::ptr_eq(&first, &parsed(encoding.as_bytes()).unwrap()));
        assert!(cached_keys() >= 1);
        for msg in [&b"header.claims"[..], b"", &[0xff; 5000]] {
            let expected = stock.try_sign(msg).unwrap();
            assert_eq!(ours.try_sign(msg).unwrap(), expected);
            assert_eq!(again.try_sign(msg).unwrap(), expected);
        }
        assert_eq!(ours.algorithm(), Algorithm::RS256);
    }

    #[test]
    fn other_algorithms_and_wrong_keys_are_the_stock_providers() {
        let encoding = encoding_key(JwtAlg::EdDsa);
        assert!(new_signer(&Algorithm::RS256, &encoding).is_err());
        let signer = new_signer(&Algorithm::EdDSA, &encoding).unwrap();
        assert_eq!(signer.algorithm(), Algorithm::EdDSA);
        let secret = EncodingKey::from_secret(b"not an rsa key");
        assert!(new_signer(&Algorithm::RS256, &secret).is_err());
    }

    /// Signers for more keys than the cache holds, created and used from several threads at
    /// once (barrier-started): every signature is still the stock one, and the cache never
    /// holds more than [`MAX_KEYS`].
    #[test]
    fn concurrent_signers_over_more_keys_than_the_cache_holds_stay_exact() {
        let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let keys: Vec<EncodingKey> = (0..MAX_KEYS + 2)
            .map(|_| encoding_key(JwtAlg::Rs256))
            .collect();
        let stock = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.signer_factory;
        let expected: Vec<Vec<u8>> = keys
            .iter()
            .map(|k| {
                stock(&Algorithm::RS256, k)
                    .unwrap()
                    .try_sign(b"h.c")
                    .unwrap()
            })
            .collect();
        let keys = Arc::new(keys);
        let expected = Arc::new(expected);
        let threads = 4;
        let barrier = Arc::new(std::sync::Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (keys, expected, barrier) = (keys.clone(), expected.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    for round in 0..3 {
                        for i in 0..keys.len() {
                            let i = (i + t + round) % keys.len();
                            let signer = new_signer(&Algorithm::RS256, &keys[i]).unwrap();
                            assert_eq!(signer.try_sign(b"h.c").unwrap(), expected[i]);
                            assert!(cached_keys() <= MAX_KEYS);
                        }
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        assert!(cached_keys() <= MAX_KEYS);
    }
}
