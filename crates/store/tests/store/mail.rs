//! Mail: the outbox writes whole, private, parseable `.eml` files and refuses header
//! injection; the configuration picks SMTP or the outbox; SMTP URLs without required TLS
//! are refused unless the host is loopback, and no error or `Debug` output shows the
//! password. No SMTP server runs here: sending over SMTP is only tried against a closed
//! port.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rampart_store::mail::{Mailer, Message, OutboxMailer, SmtpMailer, SmtpSecurity};

const FROM: &str = "Rampart <no-reply@rampart.example>";

fn reset_message() -> Message {
    Message {
        to: "ada@example.org".into(),
        subject: "Reset your password".into(),
        text: "Open this link:\n\nhttps://app.example/reset-password?token=abc_DEF-123\n\nBye.\n"
            .into(),
        html: None,
    }
}

fn eml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Splits an RFC 5322 message into unfolded headers and the body; every line must end
/// with CRLF.
fn parse_eml(bytes: &[u8]) -> (Vec<(String, String)>, String) {
    let text = std::str::from_utf8(bytes).expect("UTF-8 message");
    let bare = text.replace("\r\n", "");
    assert!(
        !bare.contains('\n') && !bare.contains('\r'),
        "a bare CR or LF"
    );
    let (head, body) = text
        .split_once("\r\n\r\n")
        .expect("a blank line ends the headers");
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with(' ') || line.starts_with('\t') {
            headers
                .last_mut()
                .expect("folded first line")
                .1
                .push_str(line);
        } else {
            let (name, value) = line.split_once(':').expect("name: value");
            headers.push((name.to_owned(), value.trim().to_owned()));
        }
    }
    // lettre ends a single-part body with one more CRLF.
    let body = body.strip_suffix("\r\n").expect("the body ends with CRLF");
    (headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

#[tokio::test]
async fn outbox_writes_a_whole_private_parseable_eml() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data/outbox");
    let mailer = OutboxMailer::new(&dir, FROM).unwrap();
    let path = mailer.send(&reset_message()).await.unwrap();

    assert_eq!(
        eml_files(&dir),
        vec![path.clone()],
        "no temporary file is left"
    );
    let name = path.file_name().unwrap().to_str().unwrap();
    let (stamp, rest) = name.split_once('-').unwrap();
    assert!(
        stamp.len() >= 13 && stamp.bytes().all(|b| b.is_ascii_digit()),
        "{name}"
    );
    let uuid = rest.strip_suffix(".eml").unwrap();
    uuid::Uuid::parse_str(uuid).unwrap();

    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir), 0o700);

    let (headers, body) = parse_eml(&std::fs::read(&path).unwrap());
    assert_eq!(
        header(&headers, "From"),
        vec!["Rampart <no-reply@rampart.example>"]
    );
    assert_eq!(header(&headers, "To"), vec!["ada@example.org"]);
    assert_eq!(header(&headers, "Subject"), vec!["Reset your password"]);
    assert_eq!(header(&headers, "MIME-Version"), vec!["1.0"]);
    assert_eq!(
        header(&headers, "Content-Type"),
        vec!["text/plain; charset=utf-8"]
    );
    assert_eq!(header(&headers, "Content-Transfer-Encoding"), vec!["8bit"]);
    let date = header(&headers, "Date");
    assert_eq!(date.len(), 1);
    time::OffsetDateTime::parse(date[0], &time::format_description::well_known::Rfc2822)
        .unwrap_or_else(|e| panic!("Date {:?}: {e}", date[0]));
    let message_id = header(&headers, "Message-ID");
    assert_eq!(message_id.len(), 1);
    assert!(
        message_id[0].starts_with('<') && message_id[0].ends_with("@rampart.example>"),
        "{message_id:?}"
    );
    // The link is there verbatim, lines end in CRLF.
    assert_eq!(
        body,
        "Open this link:\r\n\r\nhttps://app.example/reset-password?token=abc_DEF-123\r\n\r\nBye.\r\n"
    );

    // A second message gets its own file.
    mailer.send(&reset_message()).await.unwrap();
    assert_eq!(eml_files(&dir).len(), 2);
}

#[tokio::test]
async fn outbox_encodes_unicode_and_overlong_lines_safely() {
    let root = tempfile::tempdir().unwrap();
    let mailer = OutboxMailer::new(root.path(), "no-reply@rampart.example").unwrap();

    let path = mailer
        .send(&Message {
            to: "ada@example.org".into(),
            subject: "Grüße".into(),
            text: "Grüße\n".into(),
            html: None,
        })
        .await
        .unwrap();
    let raw = std::fs::read(&path).unwrap();
    let (headers, body) = parse_eml(&raw);
    // Non-ASCII header text is an RFC 2047 encoded word, so the header block stays ASCII;
    // the body stays 8bit UTF-8.
    let subject = header(&headers, "Subject")[0];
    assert!(
        subject.to_ascii_lowercase().starts_with("=?utf-8?"),
        "{subject}"
    );
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert!(raw[..head_end].is_ascii());
    assert_eq!(header(&headers, "Content-Transfer-Encoding"), vec!["8bit"]);
    assert_eq!(body, "Grüße\r\n");

    // A line too long for 8bit (over 998 octets) falls back to quoted-printable.
    let long = "x".repeat(2_000);
    let path = mailer
        .send(&Message {
            to: "ada@example.org".into(),
            subject: "Long".into(),
            text: long.clone(),
            html: None,
        })
        .await
        .unwrap();
    let (headers, body) = parse_eml(&std::fs::read(&path).unwrap());
    assert_eq!(
        header(&headers, "Content-Transfer-Encoding"),
        vec!["quoted-printable"]
    );
    assert!(body.split("\r\n").all(|line| line.len() <= 76));
    assert_eq!(body.replace("=\r\n", ""), long);
}

#[tokio::test]
async fn header_injection_is_refused_and_nothing_is_written() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("outbox");
    let mailer = OutboxMailer::new(&dir, FROM).unwrap();
    let bad = [
        Message {
            subject: "Hi\r\nBcc: victim@example.org".into(),
            ..reset_message()
        },
        Message {
            subject: "Hi\nX-Injected: 1".into(),
            ..reset_message()
        },
        Message {
            to: "ada@example.org\r\nBcc: victim@example.org".into(),
            ..reset_message()
        },
        Message {
            to: "ada@example.org\n".into(),
            ..reset_message()
        },
        // One bare address only: no lists, no display names.
        Message {
            to: "ada@example.org, eve@example.org".into(),
            ..reset_message()
        },
        Message {
            to: "Eve <eve@example.org>".into(),
            ..reset_message()
        },
        Message {
            to: "not-an-address".into(),
            ..reset_message()
        },
    ];
    for msg in &bad {
        assert!(mailer.send(msg).await.is_err(), "{msg:?} was accepted");
    }
    assert!(!dir.exists() || eml_files(&dir).is_empty());

    // The sender is checked when the mailer is built.
    assert!(OutboxMailer::new(&dir, "no-reply@rampart.example\r\nBcc: x@y.org").is_err());
    assert!(OutboxMailer::new(&dir, "not an address").is_err());
}

#[test]
fn message_debug_hides_the_text() {
    let debug = format!("{:?}", reset_message());
    assert!(debug.contains("ada@example.org"), "{debug}");
    assert!(!debug.contains("abc_DEF-123"), "{debug}");
}

#[tokio::test]
async fn from_config_picks_smtp_only_when_a_url_is_given() {
    let root = tempfile::tempdir().unwrap();
    let outbox = root.path().join("outbox");

    let mailer = Mailer::from_config(None, &outbox, FROM).unwrap();
    let Mailer::Outbox(inner) = &mailer else {
        panic!("expected the outbox, got {mailer:?}")
    };
    assert_eq!(inner.dir(), outbox);
    mailer.send(&reset_message()).await.unwrap();
    assert_eq!(eml_files(&outbox).len(), 1);

    let mailer =
        Mailer::from_config(Some("smtps://user:pw@smtp.example.org"), &outbox, FROM).unwrap();
    assert!(matches!(mailer, Mailer::Smtp(_)), "{mailer:?}");

    assert!(Mailer::from_config(Some("smtp://smtp.example.org"), &outbox, FROM).is_err());
    assert!(Mailer::from_config(None, &outbox, "bad sender").is_err());
}

#[test]
fn smtp_urls_need_tls_unless_the_host_is_loopback() {
    let ok = |url: &str| SmtpMailer::new(url, FROM).unwrap_or_else(|e| panic!("{url}: {e:#}"));
    let smtps = ok("smtps://user:pw@smtp.example.org");
    assert_eq!(
        (smtps.security(), smtps.host(), smtps.port()),
        (SmtpSecurity::ImplicitTls, "smtp.example.org", 465)
    );
    let smtps = ok("smtps://smtp.example.org:2465");
    assert_eq!(smtps.port(), 2465);
    let starttls = ok("smtp://user:pw@smtp.example.org?tls=required");
    assert_eq!(
        (starttls.security(), starttls.port()),
        (SmtpSecurity::StartTlsRequired, 587)
    );
    assert_eq!(ok("smtp://smtp.example.org:2587?tls=required").port(), 2587);

    // Weaker modes towards loopback only.
    assert_eq!(ok("smtp://localhost:1025").security(), SmtpSecurity::Plain);
    assert_eq!(ok("smtp://127.0.0.1:1025").security(), SmtpSecurity::Plain);
    assert_eq!(ok("smtp://[::1]:1025").security(), SmtpSecurity::Plain);
    assert_eq!(
        ok("smtp://localhost?tls=opportunistic").security(),
        SmtpSecurity::StartTlsOpportunistic
    );

    for url in [
        "smtp://smtp.example.org",
        "smtp://smtp.example.org:25",
        "smtp://user:pw@smtp.example.org?tls=opportunistic",
        "smtp://10.0.0.1:25",
        "smtp://localhost.example.org:25",
        "smtp://smtp.example.org?tls=none",
        "smtp://smtp.example.org?tls=required&tls=opportunistic",
        "smtp://smtp.example.org?tls=required&auth=plain",
        "smtps://smtp.example.org?tls=opportunistic",
        "http://smtp.example.org",
        "smtps://",
        "smtp.example.org:465",
        "",
    ] {
        assert!(SmtpMailer::new(url, FROM).is_err(), "{url} was accepted");
    }
    assert!(SmtpMailer::new("smtps://smtp.example.org", "bad sender").is_err());
}

#[tokio::test]
async fn smtp_secrets_stay_out_of_errors_and_debug() {
    let secret = "s3cr3t-Pa55";
    for url in [
        format!("smtp://mailer:{secret}@smtp.example.org:25"),
        format!("smtp://mailer:{secret}@smtp.example.org?tls=sometimes"),
        format!("ftp://mailer:{secret}@smtp.example.org"),
        format!("smtps://mailer:{secret}@smtp.example.org?x=1"),
        format!("smtps://mailer:{secret}@[::1"),
    ] {
        let err = SmtpMailer::new(&url, FROM).unwrap_err();
        let text = format!("{err:#} {err:?}");
        assert!(!text.contains(secret), "{text}");
        assert!(!text.contains("mailer"), "{text}");
    }

    let mailer =
        SmtpMailer::new(&format!("smtps://mailer:{secret}@smtp.example.org"), FROM).unwrap();
    let debug = format!("{mailer:?}");
    let debug = format!("{debug} {:?}", Mailer::Smtp(mailer));
    assert!(!debug.contains(secret), "{debug}");
    assert!(debug.contains("smtp.example.org"), "{debug}");

    // Port 1 on loopback is closed: the send fails fast, and says nothing secret.
    let mailer = SmtpMailer::new(&format!("smtp://mailer:{secret}@127.0.0.1:1"), FROM).unwrap();
    let err = mailer.send(&reset_message()).await.unwrap_err();
    let text = format!("{err:#} {err:?}");
    assert!(!text.contains(secret), "{text}");
    assert!(!text.contains("abc_DEF-123"), "{text}");
}
