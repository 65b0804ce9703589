//! The audit trail's domain: what an event says ([`NewAuditEvent`]), how a stored event
//! looks ([`AuditRecord`]), and the SHA-256 hash chain that makes tampering visible.
//!
//! Invariants: records are numbered `seq = 1, 2, 3…` without gaps; record `n` carries the
//! hash of record `n - 1` as `prev_hash` (record 1 carries [`GENESIS_HASH`]); a record's
//! `hash` is [`chain_hash`] over its `prev_hash` and every other field, in an unambiguous,
//! versioned encoding. Changing, removing, inserting or reordering any record therefore
//! breaks the chain at that record, which [`ChainVerifier`] reports. Truncating the newest
//! records cannot be seen from the chain alone: [`checkpoint`] signs the head so that a
//! copy kept outside the database shows it. No SQL here: `store::audit` persists records.

pub mod checkpoint;

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// `prev_hash` of the first record: 32 zero bytes in hex.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Domain and version tag at the start of every hashed encoding, so a hash of this format
/// can never equal a hash of any other message, including a future `v2` of this one.
const HASH_DOMAIN: &[u8] = b"rampart-audit-v1";

/// How the audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Success,
    Failure,
    /// Refused by an authorisation rule.
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Denied => "denied",
        }
    }

    /// The inverse of [`Outcome::as_str`]; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "success" => Some(Self::Success),
            "failure" => Some(Self::Failure),
            "denied" => Some(Self::Denied),
            _ => None,
        }
    }
}

/// An event about to be appended. The store assigns `seq`, `id` and the hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEvent {
    /// Dotted action name (`auth.login_failed`, `role.updated`…).
    pub action: String,
    pub actor_id: Option<Uuid>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub outcome: Outcome,
    /// Free-form context. It must never hold passwords, tokens, one-time codes, or hashes of
    /// any of them: audit records cannot be deleted, so a secret written here stays forever.
    pub details: serde_json::Value,
}

impl NewAuditEvent {
    /// An event with no actor, target or request context and empty `details` (`{}`).
    pub fn new(action: impl Into<String>, outcome: Outcome) -> Self {
        Self {
            action: action.into(),
            actor_id: None,
            target_type: None,
            target_id: None,
            ip_address: None,
            user_agent: None,
            request_id: None,
            outcome,
            details: serde_json::Value::Object(serde_json::Map::new()),
        }
    }

    pub fn with_actor(mut self, actor_id: Uuid) -> Self {
        self.actor_id = Some(actor_id);
        self
    }

    pub fn with_target(
        mut self,
        target_type: impl Into<String>,
        target_id: impl Into<String>,
    ) -> Self {
        self.target_type = Some(target_type.into());
        self.target_id = Some(target_id.into());
        self
    }

    pub fn with_ip_address(mut self, ip_address: impl Into<String>) -> Self {
        self.ip_address = Some(ip_address.into());
        self
    }

    pub fn with_user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = Some(user_agent.into());
        self
    }

    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    /// See the field's rule: never secrets.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// A stored audit record, exactly as hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// UUIDv7.
    pub id: Uuid,
    /// Epoch milliseconds.
    pub at_ms: i64,
    pub action: String,
    pub actor_id: Option<Uuid>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub outcome: Outcome,
    /// Canonical JSON text ([`canonical_details`]) exactly as stored and hashed.
    pub details: String,
    /// Lowercase hex SHA-256 of the previous record, or [`GENESIS_HASH`].
    pub prev_hash: String,
    /// Lowercase hex [`chain_hash`] of this record.
    pub hash: String,
}

impl AuditRecord {
    /// The record that follows `prev_hash` at position `seq`, with its hash computed.
    pub fn chained(seq: i64, prev_hash: &str, id: Uuid, at_ms: i64, event: &NewAuditEvent) -> Self {
        let mut record = Self {
            seq,
            id,
            at_ms,
            action: event.action.clone(),
            actor_id: event.actor_id,
            target_type: event.target_type.clone(),
            target_id: event.target_id.clone(),
            ip_address: event.ip_address.clone(),
            user_agent: event.user_agent.clone(),
            request_id: event.request_id.clone(),
            outcome: event.outcome,
            details: canonical_details(&event.details),
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
        };
        record.hash = chain_hash(&record);
        record
    }
}

/// The JSON text stored and hashed for `details`: compact, object keys sorted at every level.
///
/// serde_json's default `Map` is a `BTreeMap`, so `to_string` alone would already sort; the
/// workspace keeps the `preserve_order` feature off. The explicit re-sort below keeps the
/// output canonical even if feature unification ever turns `preserve_order` on.
pub fn canonical_details(details: &serde_json::Value) -> String {
    fn sorted(value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                serde_json::Value::Object(
                    entries
                        .into_iter()
                        .map(|(key, value)| (key.clone(), sorted(value)))
                        .collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(sorted).collect())
            }
            other => other.clone(),
        }
    }
    sorted(details).to_string()
}

/// Lowercase hex SHA-256 of `record.prev_hash` and every other field of `record` except
/// `hash` itself.
///
/// Encoding (`v1`): the tag `rampart-audit-v1`, then each field in a fixed order. An
/// integer is 8 bytes big-endian; the id is its 16 bytes; a text is the byte `1`, its length
/// as u64 big-endian, then its UTF-8 bytes; an absent optional text is the single byte `0`,
/// so `None` and `Some("")` differ and no two field lists encode to the same bytes.
pub fn chain_hash(record: &AuditRecord) -> String {
    fn text(hasher: &mut Sha256, value: Option<&str>) {
        match value {
            None => hasher.update([0u8]),
            Some(value) => {
                hasher.update([1u8]);
                hasher.update((value.len() as u64).to_be_bytes());
                hasher.update(value.as_bytes());
            }
        }
    }

    let mut hasher = Sha256::new();
    hasher.update(HASH_DOMAIN);
    text(&mut hasher, Some(&record.prev_hash));
    hasher.update(record.seq.to_be_bytes());
    hasher.update(record.id.as_bytes());
    hasher.update(record.at_ms.to_be_bytes());
    text(&mut hasher, Some(&record.action));
    let actor_id = record.actor_id.map(|id| id.hyphenated().to_string());
    text(&mut hasher, actor_id.as_deref());
    text(&mut hasher, record.target_type.as_deref());
    text(&mut hasher, record.target_id.as_deref());
    text(&mut hasher, record.ip_address.as_deref());
    text(&mut hasher, record.user_agent.as_deref());
    text(&mut hasher, record.request_id.as_deref());
    text(&mut hasher, Some(record.outcome.as_str()));
    text(&mut hasher, Some(&record.details));
    to_hex(&hasher.finalize())
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// The result of walking the whole chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyOutcome {
    Intact {
        count: u64,
    },
    /// The first record at which the chain does not hold.
    Broken {
        seq: i64,
        id: Uuid,
        reason: String,
    },
}

/// The first record at which the chain does not hold; see [`ChainVerifier::feed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    pub seq: i64,
    pub id: Uuid,
    pub reason: String,
}

impl From<ChainBreak> for VerifyOutcome {
    fn from(b: ChainBreak) -> Self {
        Self::Broken {
            seq: b.seq,
            id: b.id,
            reason: b.reason,
        }
    }
}

/// Checks records fed one at a time in `seq` order, so a caller can stream the table in
/// pages. Stop feeding at the first `Err`.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    last_seq: i64,
    last_hash: String,
    count: u64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainVerifier {
    pub fn new() -> Self {
        Self {
            last_seq: 0,
            last_hash: GENESIS_HASH.to_owned(),
            count: 0,
        }
    }

    /// Checks `record` against the previous one: its `seq` follows without a gap, its
    /// `prev_hash` is the previous record's `hash`, and its `hash` is what its fields give.
    pub fn feed(&mut self, record: &AuditRecord) -> Result<(), ChainBreak> {
        let broken = |reason: String| ChainBreak {
            seq: record.seq,
            id: record.id,
            reason,
        };
        let expected_seq = self.last_seq + 1;
        if record.seq != expected_seq {
            return Err(broken(format!(
                "sequence gap: expected seq {expected_seq}, found {} (a record is missing or out of order)",
                record.seq
            )));
        }
        if record.prev_hash != self.last_hash {
            return Err(broken(
                "prev_hash does not match the previous record's hash".to_owned(),
            ));
        }
        if chain_hash(record) != record.hash {
            return Err(broken(
                "hash does not match the record's contents (the record was altered)".to_owned(),
            ));
        }
        self.last_seq = record.seq;
        self.last_hash.clone_from(&record.hash);
        self.count += 1;
        Ok(())
    }

    /// The outcome when every record fed so far held.
    pub fn finish(self) -> VerifyOutcome {
        VerifyOutcome::Intact { count: self.count }
    }
}

/// Verifies a whole chain held in memory, in `seq` order.
pub fn verify_chain<'a>(records: impl IntoIterator<Item = &'a AuditRecord>) -> VerifyOutcome {
    let mut verifier = ChainVerifier::new();
    for record in records {
        if let Err(b) = verifier.feed(record) {
            return b.into();
        }
    }
    verifier.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(len: i64) -> Vec<AuditRecord> {
        let mut records: Vec<AuditRecord> = Vec::new();
        for seq in 1..=len {
            let prev = records
                .last()
                .map_or(GENESIS_HASH, |r| r.hash.as_str())
                .to_owned();
            let event = NewAuditEvent::new(format!("test.action_{seq}"), Outcome::Success)
                .with_actor(Uuid::now_v7())
                .with_target("note", format!("n{seq}"))
                .with_ip_address("192.0.2.1")
                .with_user_agent("ua")
                .with_request_id(format!("req-{seq}"))
                .with_details(serde_json::json!({"b": 1, "a": [seq, {"z": null, "y": "x"}]}));
            records.push(AuditRecord::chained(
                seq,
                &prev,
                Uuid::now_v7(),
                1_000 + seq,
                &event,
            ));
        }
        records
    }

    fn assert_broken_at(outcome: VerifyOutcome, expected: &AuditRecord) {
        match outcome {
            VerifyOutcome::Broken { seq, id, .. } => {
                assert_eq!((seq, id), (expected.seq, expected.id), "{outcome:?}");
            }
            VerifyOutcome::Intact { .. } => panic!("tampering not detected"),
        }
    }

    #[test]
    fn intact_chain_verifies() {
        let records = chain(5);
        assert_eq!(records[0].prev_hash, GENESIS_HASH);
        assert_eq!(verify_chain(&records), VerifyOutcome::Intact { count: 5 });
        assert_eq!(verify_chain(&[]), VerifyOutcome::Intact { count: 0 });
    }

    #[test]
    fn hash_is_lowercase_hex_sha256() {
        let records = chain(1);
        assert_eq!(records[0].hash.len(), 64);
        assert!(
            records[0]
                .hash
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        );
        assert_eq!(to_hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }

    #[test]
    fn any_changed_field_of_any_record_is_detected() {
        type Tamper = fn(&mut AuditRecord);
        let tampers: Vec<(&str, Tamper)> = vec![
            ("seq", |r| r.seq += 100),
            ("id", |r| r.id = Uuid::now_v7()),
            ("at_ms", |r| r.at_ms += 1),
            ("action", |r| r.action.push('x')),
            ("actor_id", |r| r.actor_id = None),
            ("target_type", |r| r.target_type = Some("user".into())),
            ("target_id", |r| r.target_id = None),
            ("ip_address", |r| r.ip_address = Some("192.0.2.2".into())),
            ("user_agent", |r| r.user_agent = Some(String::new())),
            ("request_id", |r| r.request_id = None),
            ("outcome", |r| r.outcome = Outcome::Denied),
            ("details", |r| r.details = r#"{"a":1}"#.into()),
            ("prev_hash", |r| r.prev_hash = GENESIS_HASH.into()),
            ("hash", |r| r.hash = GENESIS_HASH.into()),
        ];
        let original = chain(4);
        for index in 0..original.len() {
            for (field, tamper) in &tampers {
                let mut records = original.clone();
                tamper(&mut records[index]);
                if records[index] == original[index] {
                    continue; // e.g. prev_hash of record 1 is already the genesis hash
                }
                let outcome = verify_chain(&records);
                assert!(
                    matches!(&outcome, VerifyOutcome::Broken { seq, .. } if *seq == records[index].seq),
                    "{field} of record {index}: {outcome:?}"
                );
            }
        }
    }

    #[test]
    fn deleted_middle_record_is_detected_at_the_next_one() {
        let mut records = chain(5);
        records.remove(2);
        assert_broken_at(verify_chain(&records), &records[2]);

        // Renumbering the rest to close the gap still breaks the hash links.
        let mut renumbered = chain(5);
        renumbered.remove(2);
        for r in &mut renumbered[2..] {
            r.seq -= 1;
        }
        assert_broken_at(verify_chain(&renumbered), &renumbered[2]);
    }

    #[test]
    fn reordered_records_are_detected() {
        let mut records = chain(4);
        records.swap(1, 2);
        assert_broken_at(verify_chain(&records), &records[1]);

        // Swapping the seq numbers too keeps them contiguous; the links still break.
        let mut records = chain(4);
        records.swap(1, 2);
        let (a, b) = (records[1].seq, records[2].seq);
        records[1].seq = b;
        records[2].seq = a;
        assert_broken_at(verify_chain(&records), &records[1]);
    }

    #[test]
    fn none_and_empty_string_hash_differently() {
        let base = NewAuditEvent::new("a", Outcome::Success);
        let id = Uuid::now_v7();
        let none = AuditRecord::chained(1, GENESIS_HASH, id, 0, &base);
        let empty = AuditRecord::chained(1, GENESIS_HASH, id, 0, &base.clone().with_request_id(""));
        assert_ne!(none.hash, empty.hash);

        // Moving a value from one field to its neighbour changes the hash too.
        let mut left = base.clone();
        left.target_type = Some("ab".into());
        left.target_id = Some(String::new());
        let mut right = base;
        right.target_type = Some("a".into());
        right.target_id = Some("b".into());
        assert_ne!(
            AuditRecord::chained(1, GENESIS_HASH, id, 0, &left).hash,
            AuditRecord::chained(1, GENESIS_HASH, id, 0, &right).hash
        );
    }

    #[test]
    fn details_are_canonical() {
        let a = serde_json::json!({"b": {"y": 1, "x": 2}, "a": [3, {"d": 4, "c": 5}]});
        assert_eq!(
            canonical_details(&a),
            r#"{"a":[3,{"c":5,"d":4}],"b":{"x":2,"y":1}}"#
        );
    }

    #[test]
    fn outcome_round_trips() {
        for outcome in [Outcome::Success, Outcome::Failure, Outcome::Denied] {
            assert_eq!(Outcome::parse(outcome.as_str()), Some(outcome));
        }
        assert_eq!(Outcome::parse("Success"), None);
    }

    #[test]
    fn streaming_verifier_stops_at_first_break() {
        let mut records = chain(3);
        records[1].action = "tampered".into();
        let mut verifier = ChainVerifier::new();
        assert!(verifier.feed(&records[0]).is_ok());
        let b = verifier.feed(&records[1]).unwrap_err();
        assert_eq!((b.seq, b.id), (2, records[1].id));
    }
}
