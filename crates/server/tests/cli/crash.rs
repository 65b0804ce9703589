//! Crash consistency (issue 11): `kill -9` the server in the middle of a concurrent write
//! load (registrations, role grants and removals, note creates, updates and deletes,
//! logins), restart it on the same database, and show, on SQLite and PostgreSQL:
//!
//! - `rampart audit verify` passes;
//! - every write a client saw acknowledged is there (durability);
//! - every committed change has its audit event and no audit event lacks its change:
//!   users ↔ `auth.register` (and the CLI's creating `user.roles_changed`), grants ↔ the
//!   `user.roles_changed` sequence (each `from` is the previous `to`, the last `to` is what
//!   `user_roles` holds), notes ↔ `note.created`/`note.updated`/`note.deleted`, sessions ↔
//!   `auth.login_succeeded`. Rows and events are also tied by time: the row's
//!   `created_at_ms`/`updated_at_ms` is the `at_ms` of its first/last event (store and
//!   event take the same `now_ms`), so a committed update without its event shows too;
//! - the restarted server serves.
//!
//! The kill comes at a somewhat random moment after every kind of write has been
//! acknowledged a few times, three times per store on the same database. A write whose
//! answer never arrived (or was refused) may or may not have happened: the ledger allows
//! both outcomes for it, and after each check settles on what the database holds.
//!
//! What a process crash cannot show: commits lost to a power failure or an OS crash (SQLite
//! in WAL mode with `synchronous = NORMAL` may lose its newest commits then, by design;
//! the WAL survives a killed process in the OS page cache).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use rampart_core::audit::AuditRecord;
use rampart_store::Db;
use rampart_store::audit::AuditFilter;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::support::{
    PgDb, Server, borrow, login, path_str, register, run, run_with_stdin, tempdir,
};

const PASSWORD: &str = "quiet orbit lantern 47";
const ADMIN_EMAIL: &str = "crash.admin@example.org";
const EDITOR: &str = "editor";
const ROUNDS: usize = 3;
const REGISTRARS: usize = 2;
const LOGIN_TASKS: usize = 2;
const NOTE_WRITERS: usize = 2;
const ROLE_TARGETS: usize = 3;
/// Acknowledged writes of each kind a round waits for before it may kill.
const MIN_ACKED: usize = 3;
/// The kill comes up to this long after `MIN_ACKED` is reached.
const MAX_EXTRA_DELAY_MS: u128 = 250;

/// A value the database must hold: the acknowledged one, or the one whose request was
/// sent but never acknowledged.
#[derive(Debug, Clone)]
struct Expected<T> {
    acked: T,
    pending: Option<T>,
}

impl<T: PartialEq> Expected<T> {
    fn settled(value: T) -> Self {
        Self {
            acked: value,
            pending: None,
        }
    }

    fn admits(&self, value: &T) -> bool {
        *value == self.acked || self.pending.as_ref() == Some(value)
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    registrations: usize,
    logins: usize,
    note_writes: usize,
    role_changes: usize,
}

impl Counts {
    fn all_at_least(&self, since: &Counts, n: usize) -> bool {
        self.registrations >= since.registrations + n
            && self.logins >= since.logins + n
            && self.note_writes >= since.note_writes + n
            && self.role_changes >= since.role_changes + n
    }
}

/// The clients' view: what was acknowledged, and what was sent without an answer.
#[derive(Debug, Default)]
struct Ledger {
    /// Ids of acknowledged registrations.
    users: BTreeSet<String>,
    /// Session ids (`sid`) of acknowledged logins.
    sessions: BTreeSet<String>,
    /// Note id → its title, `None` once deleted.
    notes: BTreeMap<String, Expected<Option<String>>>,
    /// User id → the role names it holds.
    roles: BTreeMap<String, Expected<BTreeSet<String>>>,
    counts: Counts,
    /// Answers no write of this load should get (anything but success or a 503 shed).
    anomalies: Vec<String>,
}

/// How a request ended for the client.
enum Answer {
    Status(u16, Value),
    /// No complete answer: the server is gone. `in_flight`: the request reached it (the
    /// connection broke), rather than finding nothing listening.
    Gone {
        in_flight: bool,
    },
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.bytes().await {
                Ok(bytes) => {
                    Answer::Status(status, serde_json::from_slice(&bytes).unwrap_or_default())
                }
                Err(_) => Answer::Gone { in_flight: true },
            }
        }
        Err(e) => Answer::Gone {
            in_flight: !e.is_connect(),
        },
    }
}

/// What the load tasks share.
#[derive(Clone)]
struct Load {
    client: reqwest::Client,
    base: String,
    ledger: Arc<Mutex<Ledger>>,
}

impl Load {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap()
    }

    /// A refusal: the write is not acknowledged. A 503 (hashing queue full) is legitimate
    /// shedding under this load; anything else is recorded as an anomaly.
    fn refused(&self, what: &str, status: u16, body: &Value) {
        if status != 503 {
            self.ledger()
                .anomalies
                .push(format!("{what}: {status} {body}"));
        }
    }
}

fn session_id_of(access_token: &str) -> String {
    let payload = access_token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["sid"].as_str().unwrap().to_owned()
}

/// New accounts, one after another, until the server is gone.
async fn registrar(load: Load, tag: String) -> bool {
    for i in 0.. {
        let email = format!("{tag}-{i}@example.org");
        let request = load
            .client
            .post(load.url("/api/v1/auth/register"))
            .json(&json!({"email": email, "password": PASSWORD, "displayName": "Crash"}));
        match send(request).await {
            Answer::Status(201, body) => {
                let mut ledger = load.ledger();
                ledger.users.insert(body["id"].as_str().unwrap().to_owned());
                ledger.counts.registrations += 1;
            }
            Answer::Status(status, body) => load.refused("register", status, &body),
            Answer::Gone { in_flight } => return in_flight,
        }
    }
    unreachable!()
}

/// Logins of `email`, one after another, until the server is gone.
async fn login_loop(load: Load, email: String) -> bool {
    loop {
        let request = load
            .client
            .post(load.url("/api/v1/auth/login"))
            .json(&json!({"email": email, "password": PASSWORD}));
        match send(request).await {
            Answer::Status(200, body) => {
                let sid = session_id_of(body["accessToken"].as_str().unwrap());
                let mut ledger = load.ledger();
                ledger.sessions.insert(sid);
                ledger.counts.logins += 1;
            }
            Answer::Status(status, body) => load.refused("login", status, &body),
            Answer::Gone { in_flight } => return in_flight,
        }
    }
}

/// One note write on `id`, to `value` (a title, `None` for a delete). The value is
/// pending until acknowledged. `Err(Some(in_flight))` when the server is gone, `Err(None)`
/// when refused (the caller then leaves the note alone: its outcome is unknown).
async fn note_write(
    load: &Load,
    id: &str,
    value: Option<String>,
    request: reqwest::RequestBuilder,
    success: u16,
) -> Result<(), Option<bool>> {
    load.ledger().notes.get_mut(id).unwrap().pending = Some(value.clone());
    match send(request).await {
        Answer::Status(status, _) if status == success => {
            let mut ledger = load.ledger();
            *ledger.notes.get_mut(id).unwrap() = Expected::settled(value);
            ledger.counts.note_writes += 1;
            Ok(())
        }
        Answer::Status(status, body) => {
            load.refused("note write", status, &body);
            Err(None)
        }
        Answer::Gone { in_flight } => Err(Some(in_flight)),
    }
}

/// Creates a note, renames it, and deletes every other one, until the server is gone.
async fn note_writer(load: Load, token: String, tag: String) -> bool {
    for i in 0.. {
        let title = format!("{tag}-{i}");
        let request = load
            .client
            .post(load.url("/api/v1/notes"))
            .bearer_auth(&token)
            .json(&json!({"title": title, "body": "<p>crash</p>"}));
        let id = match send(request).await {
            Answer::Status(201, body) => {
                let id = body["id"].as_str().unwrap().to_owned();
                let mut ledger = load.ledger();
                ledger
                    .notes
                    .insert(id.clone(), Expected::settled(Some(title.clone())));
                ledger.counts.note_writes += 1;
                id
            }
            Answer::Status(status, body) => {
                load.refused("note create", status, &body);
                continue;
            }
            Answer::Gone { in_flight } => return in_flight,
        };
        let renamed = format!("{title}-renamed");
        let request = load
            .client
            .patch(load.url(&format!("/api/v1/notes/{id}")))
            .bearer_auth(&token)
            .json(&json!({"title": renamed}));
        match note_write(&load, &id, Some(renamed), request, 200).await {
            Ok(()) => {}
            Err(Some(in_flight)) => return in_flight,
            Err(None) => continue,
        }
        if i % 2 == 0 {
            let request = load
                .client
                .delete(load.url(&format!("/api/v1/notes/{id}")))
                .bearer_auth(&token);
            match note_write(&load, &id, None, request, 204).await {
                Ok(()) | Err(None) => {}
                Err(Some(in_flight)) => return in_flight,
            }
        }
    }
    unreachable!()
}

fn role_set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// The admin grants and removes `editor` on `targets` in turn, until the server is gone.
/// A target whose change was refused is left alone (its outcome is unknown).
async fn role_changer(load: Load, token: String, mut targets: Vec<String>) -> bool {
    let mut turn = 0;
    while !targets.is_empty() {
        let target = targets[turn % targets.len()].clone();
        let next = {
            let mut ledger = load.ledger();
            let expected = ledger.roles.get_mut(&target).unwrap();
            let next = if expected.acked.contains(EDITOR) {
                role_set(&["user"])
            } else {
                role_set(&["user", EDITOR])
            };
            expected.pending = Some(next.clone());
            next
        };
        let request = load
            .client
            .put(load.url(&format!("/api/v1/users/{target}/roles")))
            .bearer_auth(&token)
            .json(&json!({"roles": next}));
        match send(request).await {
            Answer::Status(200, _) => {
                let mut ledger = load.ledger();
                *ledger.roles.get_mut(&target).unwrap() = Expected::settled(next);
                ledger.counts.role_changes += 1;
                turn += 1;
            }
            Answer::Status(status, body) => {
                load.refused("role change", status, &body);
                targets.retain(|t| *t != target);
            }
            Answer::Gone { in_flight } => return in_flight,
        }
    }
    false
}

/// A value in `0..bound` from a fresh random UUID (no extra crate for this).
fn random_below(bound: u128) -> u128 {
    uuid::Uuid::new_v4().as_u128() % bound
}

/// What the database holds after a restart.
struct Snapshot {
    /// id → (created_at_ms, updated_at_ms)
    users: BTreeMap<String, (i64, i64)>,
    /// user id → role names (users without a grant are absent)
    roles: BTreeMap<String, BTreeSet<String>>,
    /// id → created_at_ms
    sessions: BTreeMap<String, i64>,
    /// id → (title, created_at_ms, updated_at_ms)
    notes: BTreeMap<String, (String, i64, i64)>,
    /// Every audit record, in chain order.
    events: Vec<AuditRecord>,
}

async fn fetch<T>(db: &Db, sql: &'static str) -> Vec<T>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
        + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
        + Send
        + Unpin,
{
    match db {
        Db::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
        Db::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
    }
}

impl Snapshot {
    async fn read(url: &str) -> Snapshot {
        let db = Db::connect(url, 2).await.unwrap();
        let users: Vec<(String, i64, i64)> = fetch(
            &db,
            "SELECT CAST(id AS TEXT), created_at_ms, updated_at_ms FROM users",
        )
        .await;
        let grants: Vec<(String, String)> = fetch(
            &db,
            "SELECT CAST(ur.user_id AS TEXT), r.name FROM user_roles ur \
             JOIN roles r ON r.id = ur.role_id",
        )
        .await;
        let sessions: Vec<(String, i64)> =
            fetch(&db, "SELECT CAST(id AS TEXT), created_at_ms FROM sessions").await;
        let notes: Vec<(String, String, i64, i64)> = fetch(
            &db,
            "SELECT CAST(id AS TEXT), title, created_at_ms, updated_at_ms FROM notes",
        )
        .await;
        let mut events = rampart_store::audit::list(&db, &AuditFilter::default(), u32::MAX, None)
            .await
            .unwrap();
        events.reverse();
        db.close().await;
        let mut roles: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (user, role) in grants {
            roles.entry(user).or_default().insert(role);
        }
        Snapshot {
            users: users
                .into_iter()
                .map(|(id, created, updated)| (id, (created, updated)))
                .collect(),
            roles,
            sessions: sessions.into_iter().collect(),
            notes: notes
                .into_iter()
                .map(|(id, title, created, updated)| (id, (title, created, updated)))
                .collect(),
            events,
        }
    }

    /// The events of `actions`, grouped by target id, in chain order.
    fn events_by_target(&self, actions: &[&str]) -> BTreeMap<String, Vec<&AuditRecord>> {
        let mut by_target: BTreeMap<String, Vec<&AuditRecord>> = BTreeMap::new();
        for event in self
            .events
            .iter()
            .filter(|e| actions.contains(&e.action.as_str()))
        {
            let target = event.target_id.clone().unwrap_or_default();
            by_target.entry(target).or_default().push(event);
        }
        by_target
    }

    /// Every way in which rows and events disagree.
    fn inconsistencies(&self) -> Vec<String> {
        let mut problems = Vec::new();
        self.check_users(&mut problems);
        self.check_sessions(&mut problems);
        self.check_notes(&mut problems);
        problems
    }

    /// Users ↔ their creating event; grants ↔ the `user.roles_changed` sequence.
    fn check_users(&self, problems: &mut Vec<String>) {
        let by_target = self.events_by_target(&["auth.register", "user.roles_changed"]);
        for (target, events) in &by_target {
            if !self.users.contains_key(target) {
                problems.push(format!(
                    "{} event(s) ({}) for user {target}, which does not exist",
                    events.len(),
                    events[0].action
                ));
            }
        }
        for (id, &(created_at, updated_at)) in &self.users {
            let Some(events) = by_target.get(id) else {
                problems.push(format!("user {id} exists without any audit event"));
                continue;
            };
            let first = events[0];
            let details: Value = serde_json::from_str(&first.details).unwrap();
            let registered = first.action == "auth.register";
            if !registered && details["created"] != json!(true) {
                problems.push(format!(
                    "user {id}: its first event is {} seq={}, not its creation",
                    first.action, first.seq
                ));
            }
            if first.at_ms != created_at {
                problems.push(format!(
                    "user {id} created at {created_at} but its creation event seq={} is at {}",
                    first.seq, first.at_ms
                ));
            }
            let last = events[events.len() - 1];
            if last.at_ms != updated_at {
                problems.push(format!(
                    "user {id} last changed at {updated_at} but its last event seq={} is at {}",
                    last.seq, last.at_ms
                ));
            }
            // Registration grants `user`; the CLI's creating event states what it granted.
            let mut current = if registered {
                role_set(&["user"])
            } else {
                names(&details["to"])
            };
            for event in &events[1..] {
                if event.action != "user.roles_changed" {
                    problems.push(format!(
                        "user {id}: second creation event {} seq={}",
                        event.action, event.seq
                    ));
                    continue;
                }
                let details: Value = serde_json::from_str(&event.details).unwrap();
                let from = names(&details["from"]);
                if current != from {
                    problems.push(format!(
                        "user {id}: roles_changed seq={} from {from:?}, but the events before \
                         left {current:?}",
                        event.seq
                    ));
                }
                current = names(&details["to"]);
            }
            let held = self.roles.get(id).cloned().unwrap_or_default();
            if current != held {
                problems.push(format!(
                    "user {id} holds {held:?}, but its events end at {current:?}"
                ));
            }
        }
    }

    /// Sessions ↔ `auth.login_succeeded`, one each.
    fn check_sessions(&self, problems: &mut Vec<String>) {
        let by_target = self.events_by_target(&["auth.login_succeeded"]);
        for (target, events) in &by_target {
            match self.sessions.get(target) {
                None => problems.push(format!(
                    "login event seq={} for session {target}, which does not exist",
                    events[0].seq
                )),
                Some(&created_at) if events[0].at_ms != created_at => problems.push(format!(
                    "session {target} created at {created_at}, its login event seq={} at {}",
                    events[0].seq, events[0].at_ms
                )),
                Some(_) => {}
            }
            if events.len() > 1 {
                problems.push(format!(
                    "session {target} has {} login events",
                    events.len()
                ));
            }
        }
        for id in self.sessions.keys() {
            if !by_target.contains_key(id) {
                problems.push(format!("session {id} exists without its login event"));
            }
        }
    }

    /// Notes ↔ created, then updated…, then (for a note that is gone) deleted.
    fn check_notes(&self, problems: &mut Vec<String>) {
        let by_target = self.events_by_target(&["note.created", "note.updated", "note.deleted"]);
        for (target, events) in &by_target {
            let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
            let well_formed = actions[0] == "note.created"
                && actions[1..].iter().enumerate().all(|(i, a)| {
                    *a == "note.updated" || (*a == "note.deleted" && i == actions.len() - 2)
                });
            if !well_formed {
                problems.push(format!("note {target}: events out of order: {actions:?}"));
            }
            let deleted = actions.last() == Some(&"note.deleted");
            match (self.notes.get(target), deleted) {
                (None, false) => problems.push(format!(
                    "note {target} is gone without a note.deleted event ({actions:?})"
                )),
                (Some(_), true) => problems.push(format!(
                    "note {target} still exists after its note.deleted event"
                )),
                (Some((_, created_at, updated_at)), false) => {
                    if events[0].at_ms != *created_at {
                        problems.push(format!(
                            "note {target} created at {created_at}, its note.created seq={} at {}",
                            events[0].seq, events[0].at_ms
                        ));
                    }
                    let last = events[events.len() - 1];
                    if last.at_ms != *updated_at {
                        problems.push(format!(
                            "note {target} last changed at {updated_at}, its last event {} \
                             seq={} at {}",
                            last.action, last.seq, last.at_ms
                        ));
                    }
                }
                (None, true) => {}
            }
        }
        for id in self.notes.keys() {
            if !by_target.contains_key(id) {
                problems.push(format!("note {id} exists without its note.created event"));
            }
        }
    }
}

fn names(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

impl Ledger {
    /// Acknowledged writes the database lost.
    fn losses(&self, db: &Snapshot) -> Vec<String> {
        let mut lost = Vec::new();
        for id in self.users.difference(&db.users.keys().cloned().collect()) {
            lost.push(format!("acknowledged registration {id} is missing"));
        }
        for id in self
            .sessions
            .difference(&db.sessions.keys().cloned().collect())
        {
            lost.push(format!("acknowledged login (session {id}) is missing"));
        }
        for (id, expected) in &self.notes {
            let held = db.notes.get(id).map(|(title, _, _)| title.clone());
            if !expected.admits(&held) {
                lost.push(format!("note {id} holds {held:?}, expected {expected:?}"));
            }
        }
        for (id, expected) in &self.roles {
            let held = db.roles.get(id).cloned().unwrap_or_default();
            if !expected.admits(&held) {
                lost.push(format!("user {id} holds {held:?}, expected {expected:?}"));
            }
        }
        lost
    }

    /// After a check: what was unknown is now what the database holds.
    fn settle(&mut self, db: &Snapshot) {
        for (id, expected) in &mut self.notes {
            *expected = Expected::settled(db.notes.get(id).map(|(title, _, _)| title.clone()));
        }
        for (id, expected) in &mut self.roles {
            *expected = Expected::settled(db.roles.get(id).cloned().unwrap_or_default());
        }
    }
}

struct Deployment {
    dir: tempfile::TempDir,
    url: String,
    env: Vec<(String, String)>,
}

impl Deployment {
    fn new(url: &str) -> Deployment {
        let dir = tempdir();
        let keys: PathBuf = dir.path().join("keys");
        let env = [
            ("DATABASE_URL", url.to_owned()),
            ("RAMPART_JWT_ALG", "EdDSA".to_owned()),
            ("RAMPART_JWT_KEYS_DIR", path_str(&keys)),
            ("RAMPART_ARGON2_MEMORY_KIB", "256".to_owned()),
            ("RAMPART_ARGON2_ITERATIONS", "1".to_owned()),
            ("RAMPART_RATE_LIMIT_PER_MINUTE", "100000".to_owned()),
            ("RAMPART_LOGIN_RATE_PER_MINUTE", "100000".to_owned()),
            ("RAMPART_REGISTER_RATE_PER_HOUR", "100000".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Deployment {
            dir,
            url: url.to_owned(),
            env,
        }
    }

    async fn start(&self) -> Server {
        Server::start(self.dir.path(), &borrow(&self.env), &[]).await
    }
}

async fn token(server: &Server, email: &str) -> String {
    login(server, email, PASSWORD).await.access
}

/// Starts the load on `server`, kills it with SIGKILL once every kind of write has been
/// acknowledged a few times (plus a random delay), and returns how many tasks had a
/// request in flight at that moment.
async fn load_and_kill(
    server: &mut Server,
    ledger: &Arc<Mutex<Ledger>>,
    round: usize,
    writers: &[String],
    logins: &[String],
    targets: &[String],
) -> usize {
    let admin = token(server, ADMIN_EMAIL).await;
    let mut writer_tokens = Vec::new();
    for email in writers {
        writer_tokens.push(token(server, email).await);
    }
    let load = Load {
        client: server.client.clone(),
        base: server.base.clone(),
        ledger: ledger.clone(),
    };
    let before = ledger.lock().unwrap().counts;
    let mut tasks = tokio::task::JoinSet::new();
    for r in 0..REGISTRARS {
        tasks.spawn(registrar(load.clone(), format!("r{round}-{r}")));
    }
    for email in logins {
        tasks.spawn(login_loop(load.clone(), email.clone()));
    }
    for (w, token) in writer_tokens.into_iter().enumerate() {
        tasks.spawn(note_writer(load.clone(), token, format!("n{round}-{w}")));
    }
    tasks.spawn(role_changer(load.clone(), admin, targets.to_vec()));

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let counts = ledger.lock().unwrap().counts;
        if counts.all_at_least(&before, MIN_ACKED) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "round {round}: the load made too little progress: {counts:?} since {before:?}; {:?}\n{}",
            ledger.lock().unwrap().anomalies,
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let extra = random_below(MAX_EXTRA_DELAY_MS) as u64;
    tokio::time::sleep(Duration::from_millis(extra)).await;

    // A real SIGKILL of the server process itself: no handler runs, nothing is flushed.
    server.signal("KILL");
    let status = tokio::time::timeout(Duration::from_secs(10), server.child.wait())
        .await
        .expect("the server died after SIGKILL")
        .unwrap();
    assert_eq!(status.signal(), Some(9), "not killed by SIGKILL: {status}");

    let mut in_flight = 0;
    let joined = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(result) = tasks.join_next().await {
            in_flight += usize::from(result.unwrap());
        }
    })
    .await;
    assert!(
        joined.is_ok(),
        "round {round}: load tasks did not end after the kill"
    );
    let counts = ledger.lock().unwrap().counts;
    eprintln!(
        "crash round {round}: killed {extra} ms after the minimum; acknowledged since the \
         last round: {} registrations, {} logins, {} note writes, {} role changes; \
         {in_flight} request(s) in flight",
        counts.registrations - before.registrations,
        counts.logins - before.logins,
        counts.note_writes - before.note_writes,
        counts.role_changes - before.role_changes,
    );
    in_flight
}

/// After a restart: the chain verifies, nothing acknowledged is lost, rows and events
/// agree, and the server serves.
async fn check_after_restart(
    deployment: &Deployment,
    server: &Server,
    ledger: &Arc<Mutex<Ledger>>,
    round: usize,
) {
    let out = run(
        deployment.dir.path(),
        &borrow(&deployment.env),
        &["audit", "verify"],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "round {round}: audit verify: {}{}",
        out.stdout,
        out.stderr
    );
    let snapshot = Snapshot::read(&deployment.url).await;
    assert!(
        out.stdout
            .contains(&format!("{} record(s)", snapshot.events.len())),
        "round {round}: verify saw another chain than {} records: {}",
        snapshot.events.len(),
        out.stdout
    );
    // Serving: a login works (it is itself audited, and checked next round).
    login(server, ADMIN_EMAIL, PASSWORD).await;
    let mut ledger = ledger.lock().unwrap();
    assert!(
        ledger.anomalies.is_empty(),
        "round {round}: unexpected answers under load: {:#?}",
        ledger.anomalies
    );
    let lost = ledger.losses(&snapshot);
    assert!(
        lost.is_empty(),
        "round {round}: acknowledged writes lost: {lost:#?}"
    );
    let problems = snapshot.inconsistencies();
    assert!(
        problems.is_empty(),
        "round {round}: rows and audit events disagree: {problems:#?}"
    );
    ledger.settle(&snapshot);
    eprintln!(
        "crash round {round}: consistent: {} users, {} sessions, {} notes, {} audit records",
        snapshot.users.len(),
        snapshot.sessions.len(),
        snapshot.notes.len(),
        snapshot.events.len()
    );
}

async fn crash_cycle(url: &str) {
    let deployment = Deployment::new(url);
    let env = borrow(&deployment.env);
    let dir = deployment.dir.path();
    let out = run(dir, &env, &["migrate"]).await;
    assert!(out.status.success(), "{}", out.stderr);
    let out = run_with_stdin(
        dir,
        &env,
        &["admin", "create", "--email", ADMIN_EMAIL],
        &format!("{PASSWORD}\n"),
    )
    .await;
    assert!(out.status.success(), "{}{}", out.stdout, out.stderr);

    let mut server = deployment.start().await;
    let admin = token(&server, ADMIN_EMAIL).await;
    let r = server
        .client
        .post(server.url("/api/v1/rbac/roles"))
        .bearer_auth(&admin)
        .json(&json!({"name": EDITOR, "description": "Reads every note", "permissions": ["notes:read_any"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let members = |prefix: &str, n: usize| {
        (0..n)
            .map(|i| format!("{prefix}{i}@example.org"))
            .collect::<Vec<_>>()
    };
    let writers = members("writer", NOTE_WRITERS);
    let logins = members("login", LOGIN_TASKS);
    let target_emails = members("target", ROLE_TARGETS);
    for email in writers.iter().chain(&logins) {
        register(&server, email, PASSWORD).await;
    }
    let mut targets = Vec::new();
    for email in &target_emails {
        let id = register(&server, email, PASSWORD).await;
        ledger
            .lock()
            .unwrap()
            .roles
            .insert(id.clone(), Expected::settled(role_set(&["user"])));
        targets.push(id);
    }

    let mut in_flight = 0;
    for round in 0..ROUNDS {
        in_flight += load_and_kill(&mut server, &ledger, round, &writers, &logins, &targets).await;
        server = deployment.start().await;
        check_after_restart(&deployment, &server, &ledger, round).await;
    }
    assert!(
        in_flight > 0,
        "no kill caught a request in flight: the test proved nothing about crashes"
    );
    assert!(server.stop_with("TERM").await.success());
}

#[tokio::test]
async fn kill_9_under_write_load_on_sqlite() {
    let dir = tempdir();
    let url = format!("sqlite://{}", dir.path().join("crash.db").display());
    crash_cycle(&url).await;
}

#[tokio::test]
async fn kill_9_under_write_load_on_postgres() {
    let Some(pg) = PgDb::create().await else {
        return;
    };
    crash_cycle(&pg.url).await;
}
