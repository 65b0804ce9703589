//! `rediss://`: Rampart reaches Redis over TLS and verifies its certificate against the
//! system trust store (here a test CA given through `SSL_CERT_FILE`, which
//! rustls-native-certs honours). A certificate it cannot verify keeps the instance not
//! ready instead of connecting anyway, and every warning it logs about Redis names the
//! certificate problem (not only `Io`).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::support::{Server, free_port, path_str, status_and_body, tempdir};

fn openssl(dir: &Path, args: &[&str]) {
    let status = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl {args:?}");
}

/// A CA and a certificate for `localhost` signed by it.
fn make_certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"]);
    ca.extend(["-subj", "/CN=rampart test CA"]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

struct TlsRedis(std::process::Child);

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_tls_redis(dir: &Path, port: u16) -> TlsRedis {
    let child = std::process::Command::new("redis-server")
        .current_dir(dir)
        .args(["--port", "0", "--tls-port", &port.to_string()])
        .args(["--tls-cert-file", "srv.pem", "--tls-key-file", "srv.key"])
        .args(["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no"])
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--dir", &path_str(dir)])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    TlsRedis(child)
}

fn tools_present() -> bool {
    let present = |p: &str| {
        std::process::Command::new(p)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    if present("openssl") && present("redis-server") {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "openssl and redis-server are needed in CI"
    );
    eprintln!("notice: openssl or redis-server missing, skipping the Redis TLS test");
    false
}

#[tokio::test]
async fn rediss_verifies_the_certificate() {
    if !tools_present() {
        return;
    }
    let certs = tempdir();
    make_certificates(certs.path());
    let port = free_port();
    let _redis = start_tls_redis(certs.path(), port);
    let url = format!("rediss://localhost:{port}/0");
    let ca = path_str(&certs.path().join("ca.pem"));

    // Trusted CA: ready, with Redis answering over TLS.
    let dir = tempdir();
    let mut trusted = Server::start(
        dir.path(),
        &[("REDIS_URL", &url), ("SSL_CERT_FILE", &ca)],
        &["serve"],
    )
    .await;
    let (status, body) = status_and_body(
        trusted
            .client
            .get(trusted.url("/health/ready"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, &body["checks"]["redis"]),
        (200, &"ok".into()),
        "{body}"
    );
    trusted.stop_with("TERM").await;

    // The same server, but its CA is not trusted: never ready, Redis named, and the log
    // says why (the certificate), not only that an I/O error happened.
    let dir = tempdir();
    let mut untrusted =
        Server::start_listening(dir.path(), &[("REDIS_URL", &url)], &["serve"]).await;
    let (status, body) = status_and_body(
        untrusted
            .client
            .get(untrusted.url("/health/ready"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        status, 503,
        "an unverified Redis must not count as ready: {body}"
    );
    assert_eq!(body["checks"]["redis"], "failing", "{body}");
    // Every warning about Redis (the readiness check just asked, and the invalidation
    // subscriber) carries the cause.
    let redis_errors = |server: &Server| -> Vec<(String, String)> {
        server
            .log()
            .lines()
            .filter_map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).ok()?;
                let error = v["error"].as_str()?;
                error.contains("Redis").then(|| {
                    (
                        v["message"].as_str().unwrap_or("").to_owned(),
                        error.to_owned(),
                    )
                })
            })
            .collect()
    };
    let mut logged = Vec::new();
    for _ in 0..100 {
        logged = redis_errors(&untrusted);
        if logged.iter().any(|(m, _)| m.starts_with("readiness"))
            && logged.iter().any(|(m, _)| m.contains("subscribe"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("{logged:#?}");
    assert!(
        logged.iter().any(|(m, _)| m.starts_with("readiness"))
            && logged.iter().any(|(m, _)| m.contains("subscribe")),
        "readiness and the subscriber each log the Redis failure: {}",
        untrusted.log()
    );
    for (message, error) in &logged {
        assert!(
            error.contains("invalid peer certificate: UnknownIssuer"),
            "{message}: the log must name the certificate problem: {error}"
        );
    }
    untrusted.stop_with("TERM").await;
}
