//! WebAuthn relying party (contract §10): the ceremonies of passkey registration and
//! discoverable sign-in, on the checks of `webauthn-rs-core` (the library Kanidm's
//! `webauthn-rs` wraps), driven directly because its safe wrapper offers neither EdDSA nor
//! a required resident key for passkeys.
//!
//! Invariants:
//! - Every ceremony asks for user verification (`userVerification: "required"`, checked on
//!   the response's UV flag), discoverable credentials (`residentKey: "required"`) and no
//!   attestation; the algorithms offered and accepted are ES256, EdDSA and RS256.
//! - The client sees only the WebAuthn JSON forms (`PublicKeyCredentialCreationOptionsJSON`,
//!   `PublicKeyCredentialRequestOptionsJSON`: binary fields base64url without padding, no
//!   `null` members), so `PublicKeyCredential.parseCreationOptionsFromJSON` takes them.
//! - An origin is accepted only if it is the public URL's origin or an allowed origin on the
//!   RP ID or one of its subdomains; the library checks each response's origin, RP ID hash,
//!   challenge, type, flags and signature.
//! - State of a ceremony in progress is serialised for the database, so any instance can
//!   finish what another started. It holds the challenge and policy, never a secret.
//! - Every refusal of a response is one opaque outcome (plus counter regression, which the
//!   caller audits): nothing of the library's reasons reaches a client.

use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;
use url::Url;
use uuid::Uuid;
use webauthn_rs_core::WebauthnCore;
use webauthn_rs_core::error::WebauthnError;
use webauthn_rs_core::internals::AuthenticatorData;
use webauthn_rs_core::proto::{
    AttestationConveyancePreference, AuthenticationState, COSEAlgorithm, Credential,
    PublicKeyCredential, RegisterPublicKeyCredential, Registration, RegistrationState,
    UserVerificationPolicy,
};

use crate::config::Config;
use crate::{Error, FieldError, Result};

/// How long a ceremony may take, in the options (`timeout`) and for its stored challenge.
pub const CEREMONY_TTL: Duration = Duration::from_secs(300);
/// At most this many passkeys per user (contract §10).
pub const MAX_PER_USER: i64 = 20;
/// Bytes of a random user handle (WebAuthn allows up to 64).
pub const USER_HANDLE_BYTES: usize = 32;

/// The relying party: RP ID, name and accepted origins.
pub struct RelyingParty {
    core: WebauthnCore,
    rp_id: String,
    origins: Vec<Url>,
}

/// A verified registration, ready to store. `credential` is the library's serialised
/// credential: public key, counter, flags (no secret: a public key is not one).
#[derive(Debug)]
pub struct NewPasskey {
    pub credential_id: Vec<u8>,
    pub credential: String,
    pub sign_count: u32,
    pub backup_eligible: bool,
    pub backed_up: bool,
    pub transports: Vec<String>,
    pub aaguid: Uuid,
}

/// What a sign-in response names before it is verified.
pub struct Presented {
    pub credential_id: Vec<u8>,
    pub user_handle: Option<Vec<u8>>,
    credential: PublicKeyCredential,
}

/// A verified sign-in: the credential to store back (new counter, backup state).
#[derive(Debug)]
pub struct Asserted {
    pub credential: String,
    pub sign_count: u32,
    pub backed_up: bool,
    pub backup_eligible: bool,
}

/// Why a sign-in response was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Signature, origin, RP ID hash, challenge, type, flags: anything but the counter.
    Invalid,
    /// The signature counter did not grow: a cloned authenticator, maybe.
    CounterRegressed,
}

/// The accepted origins of contract §10: the origin of `RAMPART_PUBLIC_URL`, and each
/// allowed origin whose host is the RP ID or a subdomain of it.
pub fn accepted_origins(public_url: &str, allowed: &[String], rp_id: &str) -> Vec<Url> {
    let mut origins = Vec::new();
    if let Ok(url) = Url::parse(public_url)
        && let Ok(origin) = Url::parse(&url.origin().ascii_serialization())
    {
        origins.push(origin);
    }
    for candidate in allowed {
        if let Ok(url) = Url::parse(candidate)
            && url
                .host_str()
                .is_some_and(|host| host_on_rp_id(host, rp_id))
            && !origins.contains(&url)
        {
            origins.push(url);
        }
    }
    origins
}

/// `host` is the RP ID or a subdomain of it (ASCII case-insensitive).
pub fn host_on_rp_id(host: &str, rp_id: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let rp_id = rp_id.to_ascii_lowercase();
    !rp_id.is_empty() && (host == rp_id || host.ends_with(&format!(".{rp_id}")))
}

/// Whether `rp_id` may serve the public URL's host: the host itself, or a parent domain of
/// it that is not a bare top-level label (a registrable suffix; without the public suffix
/// list, multi-label public suffixes such as `co.uk` are not recognised). An IP address
/// host admits only itself.
pub fn rp_id_problem(public_url: &str, rp_id: &str) -> Option<String> {
    let host = Url::parse(public_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))?;
    let rp = rp_id.to_ascii_lowercase();
    if rp == host {
        return None;
    }
    let is_ip = host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[');
    if is_ip || !host_on_rp_id(&host, &rp) || !rp.contains('.') || rp.starts_with('.') {
        return Some(format!(
            "must be the host of RAMPART_PUBLIC_URL ({host}) or a registrable domain it belongs to"
        ));
    }
    None
}

fn refused(field: &str) -> Error {
    Error::Validation(vec![FieldError::new(
        field,
        "is not a valid passkey response for this challenge",
    )])
}

/// Rewrites the library's options into the WebAuthn JSON form: no `null` members (a
/// browser's `parseCreationOptionsFromJSON` rejects them where a list or dictionary is due).
fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

fn internal(what: &'static str) -> impl FnOnce(WebauthnError) -> Error {
    move |e| Error::internal(anyhow::anyhow!("{what}: {e:?}"))
}

/// What `finish_registration` needs from the attestation object besides the library's
/// checks: the authenticator data, for the AAGUID.
#[derive(Deserialize)]
struct AttestationObject<'a> {
    #[serde(rename = "authData", borrow)]
    auth_data: &'a [u8],
}

impl RelyingParty {
    /// `origins` must be non-empty (the public URL's origin always is one).
    pub fn new(rp_id: &str, rp_name: &str, origins: Vec<Url>) -> Self {
        Self {
            core: WebauthnCore::new_unsafe_experts_only(
                rp_name,
                rp_id,
                origins.clone(),
                CEREMONY_TTL,
                Some(false),
                Some(false),
            ),
            rp_id: rp_id.to_owned(),
            origins,
        }
    }

    pub fn from_config(config: &Config) -> Self {
        let origins = accepted_origins(
            &config.public_url,
            &config.allowed_origins,
            &config.webauthn_rp_id,
        );
        Self::new(&config.webauthn_rp_id, &config.webauthn_rp_name, origins)
    }

    pub fn rp_id(&self) -> &str {
        &self.rp_id
    }

    pub fn origins(&self) -> &[Url] {
        &self.origins
    }

    /// Creation options for `user_handle` (random, never the email or id) and the serialised
    /// state to keep until the response comes back.
    pub fn start_registration(
        &self,
        user_handle: &[u8],
        user_name: &str,
        display_name: &str,
        exclude: Vec<Vec<u8>>,
    ) -> Result<(Value, String)> {
        let builder = self
            .core
            .new_challenge_register_builder(user_handle, user_name, display_name)
            .map_err(internal("building creation options"))?
            .attestation(AttestationConveyancePreference::None)
            .user_verification_policy(UserVerificationPolicy::Required)
            .exclude_credentials(Some(exclude.into_iter().map(Into::into).collect()))
            .credential_algorithms(vec![
                COSEAlgorithm::ES256,
                COSEAlgorithm::EDDSA,
                COSEAlgorithm::RS256,
            ])
            .require_resident_key(true);
        let (options, state) = self
            .core
            .generate_challenge_register(builder)
            .map_err(internal("generating creation options"))?;
        let mut json = serde_json::to_value(options.public_key).map_err(Error::internal)?;
        strip_nulls(&mut json);
        let state = serde_json::to_string(&state).map_err(Error::internal)?;
        Ok((json, state))
    }

    /// Verifies a `RegistrationResponseJSON` against the stored state. Any refusal is 400
    /// `validation_failed` for `credential`.
    pub fn finish_registration(&self, credential: &Value, state: &str) -> Result<NewPasskey> {
        let state: RegistrationState = serde_json::from_str(state).map_err(Error::internal)?;
        let response: RegisterPublicKeyCredential =
            serde_json::from_value(credential.clone()).map_err(|_| refused("credential"))?;
        if response.type_ != "public-key" {
            return Err(refused("credential"));
        }
        let verified = self
            .core
            .register_credential(&response, &state, None)
            .map_err(|_| refused("credential"))?;
        // The library checked this object; read the AAGUID from its authenticator data.
        let aaguid =
            serde_cbor_2::from_slice::<AttestationObject>(&response.response.attestation_object)
                .ok()
                .and_then(|o| AuthenticatorData::<Registration>::try_from(o.auth_data).ok())
                .and_then(|d| d.acd.map(|acd| Uuid::from_bytes(acd.aaguid)))
                .ok_or_else(|| refused("credential"))?;
        if !verified.user_verified {
            return Err(refused("credential"));
        }
        let transports = response
            .response
            .transports
            .iter()
            .flatten()
            .filter_map(|t| serde_json::to_value(t).ok())
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        Ok(NewPasskey {
            credential_id: verified.cred_id.to_vec(),
            credential: serde_json::to_string(&verified).map_err(Error::internal)?,
            sign_count: verified.counter,
            backup_eligible: verified.backup_eligible,
            backed_up: verified.backup_state,
            transports,
            aaguid,
        })
    }

    /// Request options for a discoverable sign-in (empty `allowCredentials`) and the state.
    pub fn start_login(&self) -> Result<(Value, String)> {
        let builder = self
            .core
            .new_challenge_authenticate_builder(Vec::new(), Some(UserVerificationPolicy::Required))
            .map_err(internal("building request options"))?;
        let (options, state) = self
            .core
            .generate_challenge_authenticate(builder)
            .map_err(internal("generating request options"))?;
        let mut json = serde_json::to_value(options.public_key).map_err(Error::internal)?;
        strip_nulls(&mut json);
        let state = serde_json::to_string(&state).map_err(Error::internal)?;
        Ok((json, state))
    }

    /// Reads the credential id and user handle of an `AuthenticationResponseJSON`; `None`
    /// when it is not one.
    pub fn presented(credential: &Value) -> Option<Presented> {
        let parsed: PublicKeyCredential = serde_json::from_value(credential.clone()).ok()?;
        if parsed.type_ != "public-key" {
            return None;
        }
        Some(Presented {
            credential_id: parsed.raw_id.to_vec(),
            user_handle: parsed.response.user_handle.as_ref().map(|h| h.to_vec()),
            credential: parsed,
        })
    }

    /// Verifies a sign-in response against the stored state and the stored credential.
    pub fn finish_login(
        &self,
        presented: &Presented,
        state: &str,
        stored: &str,
    ) -> Result<std::result::Result<Asserted, Refusal>> {
        let mut state: AuthenticationState =
            serde_json::from_str(state).map_err(Error::internal)?;
        let mut credential: Credential = serde_json::from_str(stored).map_err(Error::internal)?;
        // A discoverable sign-in names no credential up front: the one the caller looked up by
        // the response's id is the only one this ceremony may verify against.
        state.set_allowed_credentials(vec![credential.clone()]);
        let result = match self
            .core
            .authenticate_credential(&presented.credential, &state)
        {
            Ok(result) => result,
            Err(WebauthnError::CredentialPossibleCompromise) => {
                return Ok(Err(Refusal::CounterRegressed));
            }
            Err(_) => return Ok(Err(Refusal::Invalid)),
        };
        if !result.user_verified() {
            return Ok(Err(Refusal::Invalid));
        }
        if result.counter() > credential.counter {
            credential.counter = result.counter();
        }
        credential.backup_state = result.backup_state();
        credential.backup_eligible = result.backup_eligible();
        Ok(Ok(Asserted {
            credential: serde_json::to_string(&credential).map_err(Error::internal)?,
            sign_count: credential.counter,
            backed_up: credential.backup_state,
            backup_eligible: credential.backup_eligible,
        }))
    }
}

/// A passkey's name: 1–100 characters after trimming, no control characters.
pub fn parse_name(name: &str, field: &str) -> std::result::Result<String, FieldError> {
    let trimmed = name.trim();
    let count = trimmed.chars().count();
    if count == 0 || count > 100 {
        return Err(FieldError::new(field, "must be 1 to 100 characters"));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod hostile;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rp_id_must_be_a_registrable_suffix_of_the_host() {
        let url = "https://login.example.com";
        assert_eq!(rp_id_problem(url, "login.example.com"), None);
        assert_eq!(rp_id_problem(url, "example.com"), None);
        assert_eq!(rp_id_problem(url, "EXAMPLE.com"), None);
        assert!(rp_id_problem(url, "com").is_some());
        assert!(rp_id_problem(url, "evil.com").is_some());
        assert!(rp_id_problem(url, "ample.com").is_some());
        assert!(rp_id_problem(url, "other.login.example.com").is_some());
        assert!(rp_id_problem("https://10.0.0.1", "0.0.1").is_some());
        assert_eq!(rp_id_problem("https://10.0.0.1", "10.0.0.1"), None);
    }

    #[test]
    fn only_allowed_origins_on_the_rp_id_are_accepted() {
        let allowed = vec![
            "https://app.example.com".to_owned(),
            "https://example.com".to_owned(),
            "https://evil.test".to_owned(),
            "https://notexample.com".to_owned(),
        ];
        let origins = accepted_origins("https://login.example.com/base", &allowed, "example.com");
        let origins: Vec<String> = origins
            .iter()
            .map(|o| o.origin().ascii_serialization())
            .collect();
        assert_eq!(
            origins,
            [
                "https://login.example.com",
                "https://app.example.com",
                "https://example.com"
            ]
        );
    }

    #[test]
    fn creation_options_are_the_json_form() {
        let rp = RelyingParty::new(
            "example.com",
            "Rampart",
            vec![Url::parse("https://example.com").unwrap()],
        );
        let (options, _state) = rp
            .start_registration(&[7u8; 32], "a@example.com", "A", vec![vec![1, 2, 3]])
            .unwrap();
        let text = options.to_string();
        assert!(!text.contains("null"), "{text}");
        assert_eq!(options["authenticatorSelection"]["residentKey"], "required");
        assert_eq!(
            options["authenticatorSelection"]["userVerification"],
            "required"
        );
        assert_eq!(options["attestation"], "none");
        assert_eq!(options["excludeCredentials"][0]["id"], "AQID");
        let algs: Vec<i64> = options["pubKeyCredParams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["alg"].as_i64().unwrap())
            .collect();
        // ES256, EdDSA (verified since the move to webauthn-rs-core 0.5 on OpenSSL), RS256.
        assert_eq!(algs, [-7, -8, -257]);
        assert!(
            options["pubKeyCredParams"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["type"] == "public-key")
        );
        let challenge = options["challenge"].as_str().unwrap();
        assert!(challenge.len() >= 22 && !challenge.contains(['=', '+', '/']));
        let (request, _) = rp.start_login().unwrap();
        assert_eq!(request["allowCredentials"], serde_json::json!([]));
        assert_eq!(request["userVerification"], "required");
        assert_eq!(request["rpId"], "example.com");
    }

    #[test]
    fn names_are_bounded() {
        assert!(parse_name("", "name").is_err());
        assert!(parse_name("   ", "name").is_err());
        assert!(parse_name(&"x".repeat(101), "name").is_err());
        assert!(parse_name("a\u{7}b", "name").is_err());
        assert_eq!(parse_name(" laptop ", "name").unwrap(), "laptop");
        assert!(parse_name(&"é".repeat(100), "name").is_ok());
    }
}
