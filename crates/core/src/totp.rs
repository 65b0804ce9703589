//! Second factor: TOTP (RFC 6238 over RFC 4226 HOTP) and single-use recovery codes
//! (contract §4, MFA).
//!
//! TOTP: HMAC-SHA-1, 6 digits, 30-second steps counted from the Unix epoch (RFC 6238 §4;
//! the RFC's defaults, which every authenticator app supports). Secrets are 160 random
//! bits from the OS generator (RFC 4226 §4 R6), shown to the user as RFC 4648 base32 in an
//! `otpauth://` URI. Invariants of [`verify`]:
//!
//! - Only steps `now-1`, `now` and `now+1` are tried (RFC 6238 §5.2 allows one step of
//!   network delay; the step ahead absorbs a slightly fast phone clock).
//! - A step at or before the caller's last accepted step is never tried, so no code is
//!   accepted twice, not even within its own window (RFC 6238 §5.2). The caller stores the
//!   returned step and passes it back next time.
//! - Input that is not exactly 6 ASCII digits is refused before any HMAC, and codes are
//!   compared in constant time without stopping at the first match.
//!
//! Throttling attempts (RFC 4226 §7.3) is the caller's job.
//!
//! Recovery codes: 10 distinct codes of 50 random bits each, written `xxxxx-xxxxx` in the
//! lowercase RFC 4648 base32 alphabet; matched ignoring case, whitespace and hyphens
//! ([`normalize_recovery_code`]); only a keyed digest of each is stored
//! (`crypto::DataKeys::digests`, bound to the user).

use anyhow::anyhow;
use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use zeroize::Zeroizing;

use crate::error::Error;

pub const DIGITS: usize = 6;
pub const STEP_SECS: i64 = 30;

/// 160 bits: RFC 4226 §4 R6 recommends it, and it is SHA-1's output length.
const SECRET_LEN: usize = 20;
/// Steps either side of the current one that are accepted.
const WINDOW: i64 = 1;
const BASE32_UPPER: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const BASE32_LOWER: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
const RECOVERY_CODE_COUNT: usize = 10;
const RECOVERY_CODE_LEN: usize = 10;
const RECOVERY_GROUP_LEN: usize = 5;
/// Gives up rather than loop forever should the OS generator repeat itself.
const RECOVERY_MAX_DRAWS: usize = 100;

fn random_error(e: getrandom::Error) -> Error {
    Error::internal(anyhow!("the OS random generator failed: {e}"))
}

/// 20 random bytes (160 bits, RFC 4226 §4).
pub fn generate_secret() -> Result<Vec<u8>, Error> {
    let mut secret = vec![0u8; SECRET_LEN];
    getrandom::fill(&mut secret).map_err(random_error)?;
    Ok(secret)
}

/// RFC 4648 §6 base32, uppercase, without padding (what authenticator apps expect).
pub fn encode_secret(secret: &[u8]) -> String {
    let mut out = String::with_capacity(secret.len().div_ceil(5) * 8);
    let mut buffer: u16 = 0;
    let mut bits: u32 = 0;
    for &byte in secret {
        buffer = (buffer << 8) | u16::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(
                BASE32_UPPER[usize::from((buffer >> bits) & 0x1f)],
            ));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(
            BASE32_UPPER[usize::from((buffer << (5 - bits)) & 0x1f)],
        ));
    }
    out
}

/// `otpauth://totp/Issuer:account?secret=…&issuer=…&algorithm=SHA1&digits=6&period=30`
/// (Google Authenticator Key URI Format). Issuer and account are percent-encoded (RFC 3986,
/// everything but unreserved characters, so a `:` inside either cannot split the label).
pub fn otpauth_uri(secret: &[u8], issuer: &str, account: &str) -> String {
    let issuer = percent_encode(issuer);
    format!(
        "otpauth://totp/{issuer}:{}?secret={}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        percent_encode(account),
        encode_secret(secret),
    )
}

fn percent_encode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
    out
}

/// RFC 4226 §5.3: HMAC-SHA-1 of the big-endian counter, dynamic truncation, modulo
/// 10^digits. `digits` is at most 9.
fn hotp(secret: &[u8], counter: u64, digits: u32) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, &counter.to_be_bytes());
    let mac = tag.as_ref();
    // SHA-1 output is 20 bytes, so offset + 3 <= 18 stays in range.
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let binary = u32::from_be_bytes([
        mac[offset] & 0x7f,
        mac[offset + 1],
        mac[offset + 2],
        mac[offset + 3],
    ]);
    binary % 10u32.pow(digits)
}

/// The code of one step as ASCII digits, without allocating.
fn code_digits(secret: &[u8], step: i64) -> Zeroizing<[u8; DIGITS]> {
    // Steps before 1970 never occur in practice; two's complement keeps this total.
    let mut value = hotp(secret, step.cast_unsigned(), DIGITS as u32);
    let mut digits = Zeroizing::new([b'0'; DIGITS]);
    for digit in digits.iter_mut().rev() {
        // `value % 10` is below 10, so the cast is exact.
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
    digits
}

/// HOTP(SHA-1) of `step` truncated to 6 digits, zero-padded.
pub fn code_at_step(secret: &[u8], step: i64) -> String {
    code_digits(secret, step)
        .iter()
        .copied()
        .map(char::from)
        .collect()
}

/// The RFC 6238 time step of a Unix time (T0 = 0, X = 30 s), rounding down.
pub fn step_of(unix_secs: i64) -> i64 {
    unix_secs.div_euclid(STEP_SECS)
}

/// Accepts `code` for steps now-1, now, now+1 that are strictly after `last_accepted_step`
/// (RFC 6238 §5.2: never accept a code twice); returns the matched step. Constant-time
/// comparison; anything not exactly 6 ASCII digits → None.
///
/// If the code matches more than one eligible step (a one-in-a-million coincidence), the
/// latest is returned, so storing it burns every step the code could still be replayed for.
pub fn verify(
    secret: &[u8],
    code: &str,
    unix_secs: i64,
    last_accepted_step: Option<i64>,
) -> Option<i64> {
    let code = code.as_bytes();
    if code.len() != DIGITS || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let now = step_of(unix_secs);
    let mut matched = None;
    for step in now.saturating_sub(WINDOW)..=now.saturating_add(WINDOW) {
        if step < 0 || last_accepted_step.is_some_and(|last| step <= last) {
            continue;
        }
        let expected = code_digits(secret, step);
        if verify_slices_are_equal(expected.as_slice(), code).is_ok() {
            matched = Some(step);
        }
    }
    matched
}

/// 10 codes "xxxxx-xxxxx" from the lowercase base32 alphabet a-z2-7 (50 bits each),
/// distinct.
pub fn generate_recovery_codes() -> Result<Vec<String>, Error> {
    let mut codes: Vec<String> = Vec::with_capacity(RECOVERY_CODE_COUNT);
    for _ in 0..RECOVERY_MAX_DRAWS {
        if codes.len() == RECOVERY_CODE_COUNT {
            break;
        }
        let code = random_recovery_code()?;
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    if codes.len() < RECOVERY_CODE_COUNT {
        return Err(Error::internal(anyhow!(
            "the OS random generator keeps repeating itself"
        )));
    }
    Ok(codes)
}

fn random_recovery_code() -> Result<String, Error> {
    let mut bytes = Zeroizing::new([0u8; RECOVERY_CODE_LEN]);
    getrandom::fill(bytes.as_mut_slice()).map_err(random_error)?;
    let mut code = String::with_capacity(RECOVERY_CODE_LEN + 1);
    for (i, byte) in bytes.iter().enumerate() {
        if i == RECOVERY_GROUP_LEN {
            code.push('-');
        }
        // 256 is a multiple of 32: the low 5 bits of a uniform byte are uniform.
        code.push(char::from(BASE32_LOWER[usize::from(byte & 0x1f)]));
    }
    Ok(code)
}

/// Lowercase, strip whitespace and hyphens; the rest must be exactly 10 characters of
/// a-z2-7.
pub fn normalize_recovery_code(input: &str) -> Option<String> {
    let code: String = input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let valid = code.len() == RECOVERY_CODE_LEN
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b));
    valid.then_some(code)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// RFC 6238 Appendix B / RFC 4226 Appendix D secret for SHA-1.
    const RFC_SECRET: &[u8] = b"12345678901234567890";

    /// RFC 6238 Appendix B, SHA-1 rows: (Unix time, 8-digit TOTP).
    const RFC6238_SHA1: [(i64, &str); 6] = [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ];

    #[test]
    fn rfc6238_appendix_b_sha1_eight_digits() {
        for (time, expected) in RFC6238_SHA1 {
            let step = step_of(time);
            let code = format!("{:08}", hotp(RFC_SECRET, step.cast_unsigned(), 8));
            assert_eq!(code, expected, "T = {time}");
        }
    }

    #[test]
    fn rfc6238_appendix_b_sha1_six_digits() {
        for (time, eight) in RFC6238_SHA1 {
            let six = &eight[2..];
            assert_eq!(code_at_step(RFC_SECRET, step_of(time)), six, "T = {time}");
            assert_eq!(verify(RFC_SECRET, six, time, None), Some(step_of(time)));
        }
    }

    #[test]
    fn rfc4226_appendix_d_hotp() {
        let expected = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
            "399871", "520489",
        ];
        for (counter, code) in expected.iter().enumerate() {
            assert_eq!(code_at_step(RFC_SECRET, counter as i64), *code);
        }
    }

    #[test]
    fn steps_are_30_seconds_from_the_epoch() {
        assert_eq!(step_of(0), 0);
        assert_eq!(step_of(29), 0);
        assert_eq!(step_of(30), 1);
        assert_eq!(step_of(59), 1);
        assert_eq!(step_of(1_111_111_109), 0x023523EC);
        assert_eq!(step_of(20_000_000_000), 0x27BC86AA);
        assert_eq!(step_of(-1), -1);
    }

    #[test]
    fn window_is_one_step_either_side() {
        let now = 1_700_000_000;
        let step = step_of(now);
        for offset in -1..=1 {
            let code = code_at_step(RFC_SECRET, step + offset);
            assert_eq!(
                verify(RFC_SECRET, &code, now, None),
                Some(step + offset),
                "offset {offset}"
            );
        }
        for offset in [-3, -2, 2, 3] {
            let code = code_at_step(RFC_SECRET, step + offset);
            assert_eq!(
                verify(RFC_SECRET, &code, now, None),
                None,
                "offset {offset}"
            );
        }
        // Any second within the step behaves the same.
        let start = step * STEP_SECS;
        let code = code_at_step(RFC_SECRET, step);
        assert_eq!(verify(RFC_SECRET, &code, start, None), Some(step));
        assert_eq!(verify(RFC_SECRET, &code, start + 29, None), Some(step));
        assert_eq!(verify(RFC_SECRET, &code, start + 60, None), None);
    }

    #[test]
    fn a_code_is_never_accepted_twice() {
        let now = 1_700_000_000;
        let step = step_of(now);
        let code = code_at_step(RFC_SECRET, step);
        let accepted = verify(RFC_SECRET, &code, now, None).expect("first use");
        assert_eq!(accepted, step);
        // Replayed, within the same step and the next one.
        assert_eq!(verify(RFC_SECRET, &code, now, Some(accepted)), None);
        assert_eq!(
            verify(RFC_SECRET, &code, now + STEP_SECS, Some(accepted)),
            None
        );
        // An older code still inside the window is refused too.
        let previous = code_at_step(RFC_SECRET, step - 1);
        assert_eq!(verify(RFC_SECRET, &previous, now, Some(accepted)), None);
        // The next step's code is still fine.
        let next = code_at_step(RFC_SECRET, step + 1);
        assert_eq!(
            verify(RFC_SECRET, &next, now, Some(accepted)),
            Some(step + 1)
        );
        // Accepting a future step burns the current one.
        assert_eq!(verify(RFC_SECRET, &code, now, Some(step + 1)), None);
        // A last step far in the past changes nothing.
        assert_eq!(verify(RFC_SECRET, &code, now, Some(step - 5)), Some(step));
    }

    #[test]
    fn malformed_codes_are_refused() {
        let now = 1_700_000_000;
        let code = code_at_step(RFC_SECRET, step_of(now));
        assert_eq!(verify(RFC_SECRET, &code, now, None), Some(step_of(now)));
        let fullwidth: String = code
            .chars()
            .map(|c| char::from_u32(u32::from(c) - u32::from('0') + 0xFF10).unwrap_or(c))
            .collect();
        for bad in [
            String::new(),
            code[..5].to_owned(),
            format!("{code}0"),
            format!("0{code}"),
            format!(" {code}"),
            format!("{code}\n"),
            format!("{}-{}", &code[..3], &code[3..]),
            format!("+{}", &code[1..]),
            format!("{}a", &code[..5]),
            "abcdef".to_owned(),
            fullwidth,
            "١٢٣٤٥٦".to_owned(),
        ] {
            assert_eq!(verify(RFC_SECRET, &bad, now, None), None, "{bad:?}");
        }
    }

    #[test]
    fn codes_depend_on_the_secret() {
        let other = b"abcdefghijabcdefghij";
        let now = 1_700_000_000;
        let code = code_at_step(other, step_of(now));
        assert_ne!(code, code_at_step(RFC_SECRET, step_of(now)));
        assert_eq!(verify(RFC_SECRET, &code, now, None), None);
    }

    #[test]
    fn epoch_edge_has_no_negative_steps() {
        let code = code_at_step(RFC_SECRET, -1);
        assert_eq!(verify(RFC_SECRET, &code, 0, None), None);
        let code = code_at_step(RFC_SECRET, 0);
        assert_eq!(verify(RFC_SECRET, &code, 0, None), Some(0));
        // No overflow at the far end.
        assert_eq!(verify(RFC_SECRET, "000000", i64::MAX, None), None);
        let _ = verify(RFC_SECRET, "000000", i64::MIN, None);
    }

    #[test]
    fn secrets_are_160_random_bits() {
        let a = generate_secret().expect("secret");
        let b = generate_secret().expect("secret");
        assert_eq!(a.len(), 20);
        assert_ne!(a, b);
    }

    #[test]
    fn base32_matches_rfc4648() {
        assert_eq!(
            encode_secret(RFC_SECRET),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
        // RFC 4648 §10 vectors, padding removed.
        for (input, expected) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(encode_secret(input.as_bytes()), expected, "{input:?}");
        }
        assert_eq!(encode_secret(&[0xff; 5]), "77777777");
        assert_eq!(encode_secret(&[0x00; 5]), "AAAAAAAA");
        let secret = generate_secret().expect("secret");
        let encoded = encode_secret(&secret);
        assert_eq!(encoded.len(), 32);
        assert!(
            encoded
                .bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        );
        assert_eq!(decode_base32(&encoded), secret);
    }

    /// Test-only decoder, to check the encoder round-trips.
    fn decode_base32(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut buffer, mut bits) = (0u32, 0u32);
        for c in text.bytes() {
            let value = BASE32_UPPER
                .iter()
                .position(|&a| a == c)
                .expect("base32 char") as u32;
            buffer = (buffer << 5) | value;
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                out.push((buffer >> bits) as u8);
                buffer &= (1 << bits) - 1;
            }
        }
        out
    }

    #[test]
    fn otpauth_uri_shape_and_escaping() {
        assert_eq!(
            otpauth_uri(RFC_SECRET, "Rampart", "alice@example.com"),
            "otpauth://totp/Rampart:alice%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Rampart&algorithm=SHA1&digits=6&period=30"
        );
        let uri = otpauth_uri(RFC_SECRET, "Acme Co: Prod", "a b&c=d?e/f#g:h+é");
        assert_eq!(
            uri,
            "otpauth://totp/Acme%20Co%3A%20Prod:a%20b%26c%3Dd%3Fe%2Ff%23g%3Ah%2B%C3%A9?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Acme%20Co%3A%20Prod&algorithm=SHA1&digits=6&period=30"
        );
        // Parses as a URL with exactly the intended query parameters.
        let parsed = url::Url::parse(&uri).expect("url");
        assert_eq!(parsed.scheme(), "otpauth");
        assert_eq!(parsed.host_str(), Some("totp"));
        let query: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let keys: Vec<&str> = query.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["secret", "issuer", "algorithm", "digits", "period"]);
        assert_eq!(query[1].1, "Acme Co: Prod");
        assert_eq!(parsed.path().matches(':').count(), 1);
    }

    #[test]
    fn recovery_codes_format_and_distinctness() {
        let mut seen = HashSet::new();
        for _ in 0..20 {
            let codes = generate_recovery_codes().expect("codes");
            assert_eq!(codes.len(), 10);
            let distinct: HashSet<_> = codes.iter().collect();
            assert_eq!(distinct.len(), 10);
            for code in &codes {
                assert_eq!(code.len(), 11, "{code}");
                let (left, right) = code.split_at(5);
                assert!(right.starts_with('-'), "{code}");
                for part in [left, &right[1..]] {
                    assert!(
                        part.bytes()
                            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)),
                        "{code}"
                    );
                }
                assert_eq!(
                    normalize_recovery_code(code).as_deref(),
                    Some(code.replace('-', "").as_str())
                );
                assert!(seen.insert(code.clone()), "repeated across batches: {code}");
            }
        }
        // Every symbol of the alphabet shows up across 2000 symbols (a missing one would
        // mean a biased mapping).
        let symbols: HashSet<char> = seen.iter().flat_map(|c| c.chars()).collect();
        assert_eq!(symbols.len(), 33);
    }

    #[test]
    fn recovery_code_normalisation() {
        for (input, expected) in [
            ("ABCDE-FGHIJ", "abcdefghij"),
            ("abcde-fghij", "abcdefghij"),
            (" abcde fghij ", "abcdefghij"),
            ("abcdefghij", "abcdefghij"),
            ("AbCdE - fGhIj", "abcdefghij"),
            ("a-b-c-d-e-2-3-4-5-7", "abcde23457"),
            ("\tzz2z7-77zza\n", "zz2z777zza"),
        ] {
            assert_eq!(
                normalize_recovery_code(input).as_deref(),
                Some(expected),
                "{input:?}"
            );
        }
        for bad in [
            "",
            "abcde",
            "abcde-fghi",
            "abcde-fghijk",
            "abcde-fghi1",
            "abcde-fghi8",
            "abcde-fghi0",
            "abcde_fghij",
            "abcde.fghij",
            "abcde-fghié",
            "ａbcde-fghij",
            "abcde-fghij-abcde-fghij",
        ] {
            assert_eq!(normalize_recovery_code(bad), None, "{bad:?}");
        }
    }
}
