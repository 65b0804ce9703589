//! Outgoing mail (contract §9): SMTP when `RAMPART_SMTP_URL` is set, otherwise one RFC
//! 5322 `.eml` file per message in the outbox directory.
//!
//! Invariants: a recipient is one bare address and a subject one line: a CR, LF or any
//! other control character in either is refused before anything is built, so no caller
//! input can add a header or a recipient (header injection). Messages are plain text,
//! UTF-8, optionally with an HTML alternative (`multipart/alternative`). An outbox file appears whole or not at all: it is written to a hidden temporary
//! name in the same directory, synced, then renamed to `<epoch_ms>-<uuid>.eml` with mode
//! 0600 (the directory, when this creates it, gets 0700); so a reader globbing `*.eml`
//! never sees half a message, and a reset link in it is readable by its owner only. Its
//! body is `8bit` (the link stays greppable) unless a line is too long for that, then
//! `quoted-printable`. SMTP is refused without TLS: `smtps://` (implicit TLS, RFC 8314) or
//! `smtp://…?tls=required` (STARTTLS, and no credentials or mail go out unless the upgrade
//! succeeds); any weaker mode only towards a loopback host, for local test servers. TLS is
//! rustls on aws-lc-rs with the webpki roots. Neither errors nor `Debug` output carry the
//! SMTP URL (it may hold a password) or a message's body (it may hold a token).

use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use uuid::Uuid;

/// How long connecting to the SMTP server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one whole SMTP exchange (connect, TLS, auth, send) may take; lettre's own
/// timeout covers only the TCP connect.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// One message: plain text, and optionally an HTML alternative of the same words (then
/// sent as `multipart/alternative`). `Debug` leaves the bodies out: they may carry a token.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// One bare address (`user@example.org`), no display name, no list.
    pub to: String,
    /// One line.
    pub subject: String,
    /// Plain text, UTF-8; `\n` or `\r\n` line ends.
    pub text: String,
    /// HTML, UTF-8, already escaped by its template (`rampart_core::mail`).
    pub html: Option<String>,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("to", &self.to)
            .field("subject", &self.subject)
            .field("text", &"[REDACTED]")
            .field("html", &self.html.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

/// Where mail goes: SMTP in production, the outbox directory otherwise.
#[derive(Debug)]
pub enum Mailer {
    Outbox(OutboxMailer),
    Smtp(SmtpMailer),
}

impl Mailer {
    /// SMTP when `smtp_url` is given (see [`SmtpMailer::new`]), else the outbox at
    /// `outbox`; `from` is the sender (`noreply@example.org` or `Name <noreply@…>`).
    pub fn from_config(
        smtp_url: Option<&str>,
        outbox: &Path,
        from: &str,
    ) -> anyhow::Result<Mailer> {
        Ok(match smtp_url {
            Some(url) => Mailer::Smtp(SmtpMailer::new(url, from)?),
            None => Mailer::Outbox(OutboxMailer::new(outbox, from)?),
        })
    }

    pub async fn send(&self, msg: &Message) -> anyhow::Result<()> {
        match self {
            Mailer::Outbox(outbox) => outbox.send(msg).await.map(|_| ()),
            Mailer::Smtp(smtp) => smtp.send(msg).await,
        }
    }
}

/// Writes each message as an `.eml` file into a directory (see the module docs).
#[derive(Debug, Clone)]
pub struct OutboxMailer {
    dir: PathBuf,
    from: Mailbox,
}

impl OutboxMailer {
    /// The directory is created (0700) at the first message if missing.
    pub fn new(dir: impl Into<PathBuf>, from: &str) -> anyhow::Result<Self> {
        Ok(Self {
            dir: dir.into(),
            from: parse_sender(from)?,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `msg` and returns the new file's path.
    pub async fn send(&self, msg: &Message) -> anyhow::Result<PathBuf> {
        let id = Uuid::now_v7();
        let bytes = build(&self.from, msg, id, readable_body)?.formatted();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("reading the clock")?
            .as_millis();
        let name = format!("{now_ms}-{id}.eml");
        let dir = self.dir.clone();
        let path = tokio::task::spawn_blocking(move || write_atomically(&dir, &name, &bytes))
            .await
            .context("writing to the mail outbox")??;
        tracing::info!(file = %path.display(), "mail written to the outbox");
        Ok(path)
    }
}

/// Writes `bytes` as `dir/name` (mode 0600) through a hidden temporary file and a rename.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the mail outbox {}", dir.display()))?;
    let target = dir.join(name);
    let temp = dir.join(format!(".{name}.tmp"));
    let written = (|| -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        // The umask can only take bits away; this makes the mode exactly 0600.
        file.set_permissions(Permissions::from_mode(0o600))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, &target)?;
        // Make the rename itself durable.
        File::open(dir)?.sync_all()
    })();
    if let Err(err) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(
            anyhow::Error::new(err).context(format!("writing a message into {}", dir.display()))
        );
    }
    Ok(target)
}

/// How an [`SmtpMailer`] protects the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtps://`: TLS from the first byte (RFC 8314), port 465 by default.
    ImplicitTls,
    /// `smtp://…?tls=required`: STARTTLS, or nothing is sent; port 587 by default.
    StartTlsRequired,
    /// `smtp://…?tls=opportunistic`: loopback hosts only.
    StartTlsOpportunistic,
    /// `smtp://…` without `tls`: no encryption; loopback hosts only.
    Plain,
}

/// Sends through an SMTP server (lettre). `Debug` shows host, port and mode only.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    host: String,
    port: u16,
    security: SmtpSecurity,
}

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl SmtpMailer {
    /// A mailer for `url`: `smtps://[user:pass@]host[:port]` (implicit TLS) or
    /// `smtp://[user:pass@]host[:port]?tls=required` (STARTTLS required). `tls=opportunistic`
    /// or no `tls` at all (plain text) only when the host is loopback (`localhost`,
    /// `127.0.0.0/8`, `::1`). User and password are percent-decoded. No connection is made
    /// here. Errors never repeat the URL.
    pub fn new(url: &str, from: &str) -> anyhow::Result<Self> {
        let from = parse_sender(from)?;
        let parsed = url::Url::parse(url).map_err(|e| anyhow::anyhow!("invalid SMTP URL: {e}"))?;
        let host = parsed
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| anyhow::anyhow!("invalid SMTP URL: no host"))?
            .to_owned();
        let mut tls = None;
        for (key, value) in parsed.query_pairs() {
            match key.as_ref() {
                "tls" if tls.is_none() => tls = Some(value.into_owned()),
                "tls" => bail!("invalid SMTP URL: `tls` is given twice"),
                _ => bail!("invalid SMTP URL: unknown query parameter (only `tls` is understood)"),
            }
        }
        let security = match (parsed.scheme(), tls.as_deref()) {
            ("smtps", None) => SmtpSecurity::ImplicitTls,
            ("smtps", Some(_)) => {
                bail!("invalid SMTP URL: smtps:// is always TLS; drop the `tls` parameter")
            }
            ("smtp", Some("required")) => SmtpSecurity::StartTlsRequired,
            ("smtp", Some("opportunistic")) => SmtpSecurity::StartTlsOpportunistic,
            ("smtp", None) => SmtpSecurity::Plain,
            ("smtp", Some(_)) => bail!("invalid SMTP URL: `tls` must be `required`"),
            _ => {
                bail!("invalid SMTP URL: the scheme must be smtps:// or smtp:// with ?tls=required")
            }
        };
        let weak = matches!(
            security,
            SmtpSecurity::StartTlsOpportunistic | SmtpSecurity::Plain
        );
        if weak && !is_loopback(&parsed) {
            bail!(
                "refusing SMTP without required TLS to a non-loopback host: use smtps:// or \
                 smtp://…?tls=required"
            );
        }
        // lettre reads the same URL (host, port defaults, percent-decoded credentials,
        // EHLO name) into the TLS mode checked above. Its errors are not passed on: they
        // are not promised to leave the URL out.
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|_| anyhow::anyhow!("invalid SMTP URL: not understood by the SMTP client"))?
            .timeout(Some(CONNECT_TIMEOUT))
            .build();
        let port = parsed.port().unwrap_or(match security {
            SmtpSecurity::ImplicitTls => 465,
            SmtpSecurity::StartTlsRequired | SmtpSecurity::StartTlsOpportunistic => 587,
            SmtpSecurity::Plain => 25,
        });
        Ok(Self {
            transport,
            from,
            host,
            port,
            security,
        })
    }

    pub fn security(&self) -> SmtpSecurity {
        self.security
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub async fn send(&self, msg: &Message) -> anyhow::Result<()> {
        let email = build(&self.from, msg, Uuid::now_v7(), |text| Ok(Body::new(text)))?;
        tokio::time::timeout(SEND_TIMEOUT, self.transport.send(email))
            .await
            .map_err(|_| anyhow::anyhow!("sending mail over SMTP timed out"))?
            .context("sending mail over SMTP")?;
        Ok(())
    }
}

/// `localhost` or a loopback IP address. Hosts of `smtp:` URLs are opaque to the URL
/// parser (not a special scheme), so an IPv4 address arrives as a domain and is parsed here.
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => {
            domain.eq_ignore_ascii_case("localhost")
                || IpAddr::from_str(domain).is_ok_and(|ip| ip.is_loopback())
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn parse_sender(from: &str) -> anyhow::Result<Mailbox> {
    if from.chars().any(char::is_control) {
        bail!("invalid sender address: control characters");
    }
    Mailbox::from_str(from).map_err(|_| anyhow::anyhow!("invalid sender address"))
}

/// The longest line `8bit` allows (RFC 5322 §2.1.1), in octets without the CRLF.
const MAX_8BIT_LINE: usize = 998;

/// `8bit` (a link stays greppable in the outbox) unless a line is too long for that (over
/// 998 octets), or the text holds a NUL or a bare CR, then `quoted-printable`. lettre's
/// own choice would quote every line of 76 characters or more, which every link is.
fn readable_body(text: String) -> anyhow::Result<Body> {
    let crlf = text.replace("\r\n", "\n").replace('\n', "\r\n");
    let plain = !crlf.contains('\0')
        && crlf
            .split("\r\n")
            .all(|line| line.len() <= MAX_8BIT_LINE && !line.contains('\r'));
    if plain {
        return Ok(Body::dangerous_pre_encoded(
            crlf.into_bytes(),
            ContentTransferEncoding::EightBit,
        ));
    }
    Body::new_with_encoding(text, ContentTransferEncoding::QuotedPrintable)
        .map_err(|_| anyhow::anyhow!("encoding the message body"))
}

/// The RFC 5322 message: Date, From, To, Subject, Message-ID, MIME-Version, and a single
/// text/plain UTF-8 part, or with an HTML alternative a `multipart/alternative` of a
/// text/plain and a text/html part (plain first: clients show the last one they can),
/// each body encoded by `encode`.
fn build(
    from: &Mailbox,
    msg: &Message,
    id: Uuid,
    encode: impl Fn(String) -> anyhow::Result<Body>,
) -> anyhow::Result<lettre::Message> {
    if msg.to.chars().any(char::is_control) {
        bail!("invalid recipient: control characters");
    }
    if msg.subject.chars().any(char::is_control) {
        bail!("invalid subject: control characters");
    }
    let to = Address::from_str(msg.to.trim()).map_err(|_| anyhow::anyhow!("invalid recipient"))?;
    let message_id = format!("<{}@{}>", id.simple(), from.email.domain());
    let builder = lettre::Message::builder()
        .from(from.clone())
        .to(Mailbox::new(None, to))
        .subject(msg.subject.as_str())
        .message_id(Some(message_id))
        .date_now();
    let text = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(encode(msg.text.clone())?);
    match &msg.html {
        None => builder.singlepart(text),
        Some(html) => builder.multipart(
            MultiPart::alternative().singlepart(text).singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_HTML)
                    .body(encode(html.clone())?),
            ),
        ),
    }
    .context("building a mail message")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        let check = |url: &str| is_loopback(&url::Url::parse(url).unwrap());
        assert!(check("smtp://localhost:25"));
        assert!(check("smtp://LOCALHOST"));
        assert!(check("smtp://127.0.0.1:2525"));
        assert!(check("smtp://127.9.9.9"));
        assert!(check("smtp://[::1]:25"));
        assert!(!check("smtp://localhost.example.org"));
        assert!(!check("smtp://10.0.0.1"));
        assert!(!check("smtp://[::2]"));
        assert!(!check("smtp://mail.example.org"));
    }
}
