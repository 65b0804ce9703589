//! The one template set of Rampart's mail (contract §4 Recovery, §11): password reset,
//! email verification, email change and the change notice to the old address.
//!
//! Invariants: every message has a plain-text and an HTML rendering of the same words;
//! every value placed into the HTML (links, addresses, durations) is HTML-escaped; links
//! are `RAMPART_PUBLIC_URL` + a fixed path + `?token=` + the token (URL-safe base64, so it
//! needs no escaping in a URL; it is escaped in the HTML anyway); every message with a
//! link states how long it works; the change notice carries no link and no token. Text
//! lines end in CRLF (mail is CRLF on the wire, and it keeps the body `8bit`, the link
//! readable, rather than quoted-printable).

use std::time::Duration;

/// What a message is about.
#[derive(Clone, Copy)]
pub enum Template<'a> {
    /// `/reset-password?token=…`, valid for `ttl`.
    PasswordReset { token: &'a str, ttl: Duration },
    /// `/verify-email?token=…`, valid for `ttl`.
    VerifyEmail { token: &'a str, ttl: Duration },
    /// `/confirm-email?token=…` to the new address, valid for `ttl`.
    ChangeEmail { token: &'a str, ttl: Duration },
    /// To the old address of an email change: no link; `new_email` masked by the caller.
    ChangeNotice { new_email: &'a str },
}

impl std::fmt::Debug for Template<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.write_str(match self {
            Template::PasswordReset { .. } => "PasswordReset",
            Template::VerifyEmail { .. } => "VerifyEmail",
            Template::ChangeEmail { .. } => "ChangeEmail",
            Template::ChangeNotice { .. } => "ChangeNotice",
        })
    }
}

/// A rendered message: one subject line, a text/plain and a text/html body.
#[derive(Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rendered")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// One paragraph of a message: plain words, or the link.
enum Block {
    Para(String),
    Link(String),
}

/// `public_url` + `path` + `?token=` + `token`.
pub fn link(public_url: &str, path: &str, token: &str) -> String {
    format!("{}{path}?token={token}", public_url.trim_end_matches('/'))
}

/// `30 minutes`, `24 hours`, `2 days`, `90 seconds`: the largest unit that divides `d`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = if secs >= 86_400 && secs.is_multiple_of(86_400) {
        (secs / 86_400, "day")
    } else if secs >= 3600 && secs.is_multiple_of(3600) {
        (secs / 3600, "hour")
    } else if secs >= 60 && secs.is_multiple_of(60) {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// Escapes `&`, `<`, `>`, `"` and `'` for HTML text and attribute values.
pub fn escape_html(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

impl Template<'_> {
    /// The message for `public_url` (`RAMPART_PUBLIC_URL`).
    pub fn render(&self, public_url: &str) -> Rendered {
        let (subject, blocks) = match *self {
            Template::PasswordReset { token, ttl } => (
                "Reset your password",
                vec![
                    Block::Para("Someone asked to reset the password of your account.".into()),
                    Block::Para(format!(
                        "To choose a new password, open this link within {}:",
                        human_duration(ttl)
                    )),
                    Block::Link(link(public_url, "/reset-password", token)),
                    Block::Para(
                        "If this was not you, ignore this message: your password stays as it is."
                            .into(),
                    ),
                ],
            ),
            Template::VerifyEmail { token, ttl } => (
                "Verify your email address",
                vec![
                    Block::Para("Please confirm that this address belongs to your account.".into()),
                    Block::Para(format!(
                        "To verify it, open this link within {}:",
                        human_duration(ttl)
                    )),
                    Block::Link(link(public_url, "/verify-email", token)),
                    Block::Para("If you did not create an account, ignore this message.".into()),
                ],
            ),
            Template::ChangeEmail { token, ttl } => (
                "Confirm your new email address",
                vec![
                    Block::Para(
                        "Someone asked to change the email address of an account to this address."
                            .into(),
                    ),
                    Block::Para(format!(
                        "To confirm the change, open this link within {}:",
                        human_duration(ttl)
                    )),
                    Block::Link(link(public_url, "/confirm-email", token)),
                    Block::Para(
                        "If this was not you, ignore this message: nothing changes.".into(),
                    ),
                ],
            ),
            Template::ChangeNotice { new_email } => (
                "Your email address is being changed",
                vec![
                    Block::Para(format!(
                        "Someone asked to change the email address of your account to {new_email}."
                    )),
                    Block::Para(
                        "The change happens only when the link sent to the new address is opened."
                            .into(),
                    ),
                    Block::Para(
                        "If this was not you, change your password now and end your other sessions."
                            .into(),
                    ),
                ],
            ),
        };
        let mut text = String::new();
        let mut html = String::from(
            "<!DOCTYPE html>\r\n<html><head><meta charset=\"utf-8\"></head><body>\r\n",
        );
        for block in &blocks {
            match block {
                Block::Para(words) => {
                    text.push_str(words);
                    html.push_str(&format!("<p>{}</p>\r\n", escape_html(words)));
                }
                Block::Link(url) => {
                    text.push_str(url);
                    let url = escape_html(url);
                    html.push_str(&format!("<p><a href=\"{url}\">{url}</a></p>\r\n"));
                }
            }
            text.push_str("\r\n\r\n");
        }
        html.push_str("</body></html>\r\n");
        Rendered {
            subject: subject.to_owned(),
            text,
            html,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human_duration(Duration::from_secs(1800)), "30 minutes");
        assert_eq!(human_duration(Duration::from_secs(86_400)), "1 day");
        assert_eq!(human_duration(Duration::from_secs(7200)), "2 hours");
        assert_eq!(human_duration(Duration::from_secs(90)), "90 seconds");
        assert_eq!(human_duration(Duration::from_secs(60)), "1 minute");
    }

    #[test]
    fn every_template_has_both_parts_and_escapes_the_html() {
        let ttl = Duration::from_secs(3600);
        let url = "https://app.example/<x>&\"";
        for template in [
            Template::PasswordReset { token: "t0k", ttl },
            Template::VerifyEmail { token: "t0k", ttl },
            Template::ChangeEmail { token: "t0k", ttl },
            Template::ChangeNotice {
                new_email: "<b>@example.org",
            },
        ] {
            let m = template.render(url);
            assert!(!m.text.is_empty() && !m.html.is_empty());
            assert!(
                !m.html.contains("<x>") && !m.html.contains("<b>"),
                "{}",
                m.html
            );
            if let Template::ChangeNotice { .. } = template {
                assert!(!m.text.contains("token") && !m.html.contains("href"));
                assert!(m.html.contains("&lt;b&gt;@example.org"));
            } else {
                assert!(m.text.contains("1 hour"), "{}", m.text);
                assert!(m.text.contains("https://app.example/<x>&\""));
                assert!(m.html.contains("https://app.example/&lt;x&gt;&amp;&quot;"));
                assert!(m.text.contains("?token=t0k"));
            }
        }
    }
}
