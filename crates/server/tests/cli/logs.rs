//! One JSON line per request with the contract's fields, and never a secret: the test sends
//! credentials in every place a client could and scans everything the process printed.

use crate::support::{Server, tempdir};

const SECRETS: [&str; 4] = [
    "bearer-secret-4f1c9e",
    "cookie-secret-8d2a7b",
    "query-secret-1b3c5d",
    "body-secret-password-9e8f7a",
];

const PASSWORD: &str = "log test passphrase 8c1e";

#[tokio::test]
async fn access_log_lines_have_the_fields_and_no_secrets() {
    let dir = tempdir();
    let mut server = Server::start(
        dir.path(),
        &[
            ("RAMPART_JWT_ALG", "EdDSA"),
            ("RAMPART_COOKIE_SECURE", "false"),
        ],
        &[],
    )
    .await;
    let r = server
        .client
        .get(server.url(&format!("/api/v1/users/me?token={}", SECRETS[2])))
        .header("authorization", format!("Bearer {}", SECRETS[0]))
        .header("cookie", format!("rampart_refresh={}", SECRETS[1]))
        .header("x-request-id", "log-test-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = server
        .client
        .post(server.url("/api/v1/auth/login"))
        .header("content-type", "application/json")
        .header("x-request-id", "log-test-2")
        .body(format!(
            r#"{{"email":"a@example.org","password":"{}"}}"#,
            SECRETS[3]
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A real account: its password, access token and refresh token must not be logged.
    let r = server
        .client
        .post(server.url("/api/v1/auth/register"))
        .json(&serde_json::json!({"email": "logs@example.org", "password": PASSWORD, "displayName": "Logs"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = server
        .client
        .post(server.url("/api/v1/auth/login"))
        .json(&serde_json::json!({"email": "logs@example.org", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    let refresh = cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned();
    let body: serde_json::Value = r.json().await.unwrap();
    let access = body["accessToken"].as_str().unwrap().to_owned();
    let r = server
        .client
        .get(server.url("/api/v1/users/me"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = server
        .client
        .post(server.url("/api/v1/auth/refresh"))
        .header("cookie", format!("rampart_refresh={refresh}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = server
        .client
        .get(server.url("/.well-known/jwks.json"))
        .header("x-request-id", "log-test-3")
        .send()
        .await
        .unwrap();
    assert!(server.stop_with("TERM").await.success());

    let log = server.log();
    for secret in
        SECRETS
            .iter()
            .copied()
            .chain([PASSWORD, access.as_str(), refresh.as_str(), "$argon2"])
    {
        assert!(!log.contains(secret), "{secret} reached the log:\n{log}");
    }
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let access_line = |id: &str| {
        lines
            .iter()
            .find(|l| l["message"] == "request" && l["span"]["request_id"] == id)
            .unwrap_or_else(|| panic!("no access line for {id}:\n{log}"))
            .clone()
    };
    let line = access_line("log-test-1");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["status"], 401);
    assert_eq!(line["route"], "/api/v1/users/me");
    assert_eq!(line["client_ip"], "127.0.0.1");
    assert!(line["latency_ms"].is_number());
    assert_eq!(line["level"], "INFO");
    let line = access_line("log-test-3");
    assert_eq!(line["route"], "/.well-known/jwks.json");
    assert_eq!(line["status"], 200);
    let request_lines = lines.iter().filter(|l| l["message"] == "request").count();
    assert!(request_lines >= 7, "one line per request");
}

#[tokio::test]
async fn pretty_format_is_for_people() {
    let dir = tempdir();
    // The harness finds the address in a JSON line; with pretty logs, bind a known port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let bind = format!("127.0.0.1:{port}");
    let child = crate::support::rampart(
        dir.path(),
        &[
            ("RAMPART_LOG_FORMAT", "pretty"),
            ("RAMPART_BIND", &bind),
            ("RAMPART_JWT_ALG", "EdDSA"),
        ],
    )
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let client = reqwest::Client::new();
    let mut ok = false;
    for _ in 0..200 {
        if let Ok(r) = client
            .get(format!("http://{bind}/health/ready"))
            .send()
            .await
            && r.status() == 200
        {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ok, "server did not come up");
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or_default();
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_err(),
        "{first}"
    );
    assert!(text.contains("rampart listening"), "{text}");
}
