//! Contract §12 against real receivers: `/metrics` scraped from its own listener and parsed
//! with a Prometheus text parser (`prometheus-parse`), values that move with requests,
//! bounded route cardinality, nothing on the API port; traces received by an in-test
//! OTLP/HTTP receiver decoding `ExportTraceServiceRequest` (`opentelemetry-proto`): the
//! span tree of a login, a continued `traceparent`, `trace_id` in the request's log lines,
//! and no password or token in any exported attribute. Alert rules name only exported series.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::support::{PgDb, Server, register, tempdir, try_login, try_refresh};

const PASSWORD: &str = "observability passphrase 5d1e";

/// The `metrics listening` address the server logged.
async fn metrics_url(server: &Server) -> String {
    for _ in 0..200 {
        let found = server.lines.lock().unwrap().iter().find_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            (v["message"] == "metrics listening (GET /metrics)")
                .then(|| v["address"].as_str().map(str::to_owned))?
        });
        if let Some(addr) = found {
            return format!("http://{addr}/metrics");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no metrics listener logged: {}", server.log());
}

/// One scrape: every sample as `name{sorted labels}` → value.
async fn scrape(server: &Server, url: &str) -> HashMap<String, f64> {
    let r = server.client.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = r.text().await.unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let mut out = HashMap::new();
    for sample in parsed.samples {
        let mut labels: Vec<String> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        labels.sort();
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            prometheus_parse::Value::Summary(_) => f64::NAN,
        };
        out.insert(format!("{}{{{}}}", sample.metric, labels.join(",")), value);
    }
    out
}

fn value(samples: &HashMap<String, f64>, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

async fn metrics_move_on(database_url: Option<&str>) {
    let dir = tempdir();
    let mut env = vec![
        ("RAMPART_METRICS_BIND", "127.0.0.1:0"),
        ("RAMPART_LOGIN_MAX_FAILURES", "3"),
        ("RAMPART_LOGIN_RATE_PER_MINUTE", "8"),
        ("RAMPART_RATE_LIMIT_PER_MINUTE", "100000"),
    ];
    if let Some(url) = database_url {
        env.push(("DATABASE_URL", url));
    }
    let server = Server::start(dir.path(), &env, &[]).await;
    let url = metrics_url(&server).await;

    // Not on the API port.
    let r = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // And the metrics listener serves nothing else.
    let other = url.replace("/metrics", "/health/ready");
    assert_eq!(
        server.client.get(&other).send().await.unwrap().status(),
        404
    );

    let before = scrape(&server, &url).await;
    // Every login request from here on: the latency histogram's count must grow by exactly
    // this many (each request is recorded once, through the per-thread handle cache).
    let mut logins = 0.0;
    let mut login_401s = 0.0;
    for name in [
        "process_resident_memory_bytes",
        "rampart_hash_queue_depth",
        "rampart_db_pool_connections",
        "rampart_lockouts_total",
    ] {
        assert!(
            before.keys().any(|k| k.starts_with(&format!("{name}{{"))),
            "{name} missing: {before:?}"
        );
    }
    assert!(value(&before, r#"rampart_db_pool_connections{state="max"}"#) >= 1.0);

    register(&server, "metrics@example.org", PASSWORD).await;
    let failure = r#"rampart_logins_total{method="password",outcome="failure"}"#;
    let r = try_login(&server, "metrics@example.org", "wrong passphrase 1").await;
    assert_eq!(r.status(), 401);
    logins += 1.0;
    login_401s += 1.0;
    let after_one = scrape(&server, &url).await;
    assert_eq!(value(&after_one, failure), value(&before, failure) + 1.0);
    let login_route =
        r#"rampart_http_requests_total{method="POST",route="/api/v1/auth/login",status="401"}"#;
    assert_eq!(
        value(&after_one, login_route),
        value(&before, login_route) + 1.0
    );
    assert!(
        value(&after_one, "rampart_audit_events_total{}")
            > value(&before, "rampart_audit_events_total{}")
    );

    // Two more failures lock the account; the next attempt is refused by the lockout.
    for _ in 0..2 {
        let r = try_login(&server, "metrics@example.org", "wrong passphrase 2").await;
        assert_eq!(r.status(), 401);
        logins += 1.0;
        login_401s += 1.0;
    }
    let r = try_login(&server, "metrics@example.org", PASSWORD).await;
    assert_eq!(r.status(), 429);
    logins += 1.0;
    let locked = scrape(&server, &url).await;
    // The same series again and again: each request counted, not only the first.
    assert_eq!(
        value(&locked, login_route),
        value(&before, login_route) + login_401s
    );
    assert_eq!(
        value(&locked, "rampart_lockouts_total{}"),
        value(&before, "rampart_lockouts_total{}") + 1.0
    );
    let lockout_429 = r#"rampart_rate_limited_total{limit="lockout"}"#;
    assert_eq!(
        value(&locked, lockout_429),
        value(&before, lockout_429) + 1.0
    );
    let locked_logins = r#"rampart_logins_total{method="password",outcome="locked"}"#;
    assert_eq!(
        value(&locked, locked_logins),
        value(&before, locked_logins) + 1.0
    );

    // The per-IP login limit (8 a minute): the ninth login request is a 429.
    let mut limited = false;
    for i in 0..10 {
        let r = try_login(&server, &format!("nobody{i}@example.org"), "whatever").await;
        logins += 1.0;
        if r.status() == 401 {
            login_401s += 1.0;
        }
        if r.status() == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "the login limit never refused");
    let after = scrape(&server, &url).await;
    let login_429 = r#"rampart_rate_limited_total{limit="login"}"#;
    assert_eq!(value(&after, login_429), value(&before, login_429) + 1.0);
    assert_eq!(
        value(&after, login_route),
        value(&before, login_route) + login_401s
    );
    // A histogram's value here is its `+Inf` bucket: the number of observations.
    let duration =
        r#"rampart_http_request_duration_seconds{method="POST",route="/api/v1/auth/login"}"#;
    assert_eq!(value(&after, duration), value(&before, duration) + logins);
    drop(server);
}

#[tokio::test]
async fn metrics_move_with_requests_sqlite() {
    metrics_move_on(None).await;
}

#[tokio::test]
async fn metrics_move_with_requests_postgres() {
    let Some(pg) = PgDb::create().await else {
        return;
    };
    metrics_move_on(Some(&pg.url)).await;
}

/// 1 000 random paths (and odd methods) make no new series: unmatched requests are one
/// `route="unmatched"` series per method and status, whatever the path. Sent by ten
/// clients started together, they are also counted exactly: each of the server's worker
/// threads keeps its own handles to the series (`telemetry::record_http`), and every
/// request must land in the one shared count.
#[tokio::test]
async fn random_paths_make_no_new_series() {
    let dir = tempdir();
    let server = Server::start(
        dir.path(),
        &[
            ("RAMPART_METRICS_BIND", "127.0.0.1:0"),
            ("RAMPART_RATE_LIMIT_PER_MINUTE", "1000000"),
        ],
        &[],
    )
    .await;
    let url = metrics_url(&server).await;
    let odd = reqwest::Method::from_bytes(b"BREW").unwrap();
    // One of each kind first, so the series exist.
    for method in [reqwest::Method::GET, odd.clone()] {
        let r = server
            .client
            .request(method, server.url("/seed/path"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    let series = |s: &HashMap<String, f64>| -> BTreeSet<String> { s.keys().cloned().collect() };
    let before_values = scrape(&server, &url).await;
    let before = series(&before_values);
    let start = Arc::new(tokio::sync::Barrier::new(10));
    let mut tasks = Vec::new();
    for chunk in 0..10 {
        let (client, base, odd) = (server.client.clone(), server.base.clone(), odd.clone());
        let start = Arc::clone(&start);
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            for i in 0..100 {
                let path = format!(
                    "/{}/{}/x{}",
                    uuid::Uuid::new_v4().simple(),
                    chunk * 100 + i,
                    uuid::Uuid::new_v4()
                );
                let method = if i % 10 == 0 {
                    odd.clone()
                } else {
                    reqwest::Method::GET
                };
                let r = client
                    .request(method, format!("{base}{path}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 404, "{path}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let scraped = scrape(&server, &url).await;
    let after = series(&scraped);
    let new: Vec<&String> = after
        .difference(&before)
        .filter(|k| !k.starts_with("process_"))
        .collect();
    assert!(new.is_empty(), "new series: {new:?}");
    for (key, sent) in [
        (
            r#"rampart_http_requests_total{method="GET",route="unmatched",status="404"}"#,
            900.0,
        ),
        (
            r#"rampart_http_requests_total{method="other",route="unmatched",status="404"}"#,
            100.0,
        ),
        (
            r#"rampart_http_request_duration_seconds{method="GET",route="unmatched"}"#,
            900.0,
        ),
        (
            r#"rampart_http_request_duration_seconds{method="other",route="unmatched"}"#,
            100.0,
        ),
    ] {
        assert_eq!(
            value(&scraped, key) - value(&before_values, key),
            sent,
            "{key}"
        );
    }
    assert!(!after.iter().any(|k| k.contains("/x")));
}

/// Spans as the in-test OTLP/HTTP receiver decoded them, with their service name.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    services: BTreeSet<String>,
}

async fn otlp_receiver() -> (String, Arc<Mutex<Received>>) {
    let received = Arc::new(Mutex::new(Received::default()));
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut sink = sink.lock().unwrap();
                for resource_spans in request.resource_spans {
                    if let Some(resource) = &resource_spans.resource {
                        for kv in &resource.attributes {
                            if kv.key == "service.name" {
                                sink.services.insert(string_of(kv.value.as_ref()));
                            }
                        }
                    }
                    for scope in resource_spans.scope_spans {
                        sink.spans.extend(scope.spans);
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), received)
}

fn string_of(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a KeyValue> {
    span.attributes.iter().find(|kv| kv.key == key)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `redis`: also with Redis (`REDIS_URL`, a prefix of its own): the login's rate-limit
/// check is then a `redis` child span.
async fn traces_on(database_url: Option<&str>, redis: Option<(&str, &str)>) {
    let (endpoint, received) = otlp_receiver().await;
    let dir = tempdir();
    let mut env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_SERVICE_NAME", "rampart-under-test"),
        ("OTEL_TRACES_SAMPLER", "parentbased_always_on"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("RAMPART_COOKIE_SECURE", "false"),
    ];
    if let Some(url) = database_url {
        env.push(("DATABASE_URL", url));
    }
    if let Some((url, prefix)) = redis {
        env.push(("REDIS_URL", url));
        env.push(("RAMPART_REDIS_PREFIX", prefix));
    }
    let mut server = Server::start(dir.path(), &env, &[]).await;
    register(&server, "traces@example.org", PASSWORD).await;

    // A login continuing the caller's trace.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let r = server
        .client
        .post(server.url("/api/v1/auth/login"))
        .header("traceparent", format!("00-{trace_id}-{parent_id}-01"))
        .header("x-request-id", "traced-login-1")
        .json(&serde_json::json!({"email": "traces@example.org", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let refresh = crate::support::refresh_cookie_of(&r).expect("a refresh cookie");
    let body: serde_json::Value = r.json().await.unwrap();
    let access = body["accessToken"].as_str().unwrap().to_owned();
    let me = server
        .client
        .get(server.url("/api/v1/users/me"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    // A request whose caller did not sample its trace (flags 00): the parent-based default
    // sampler drops it, so neither its server span nor any child is exported, while its
    // log lines still carry the trace id.
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let me = server
        .client
        .get(server.url("/api/v1/users/me"))
        .header("traceparent", format!("00-{unsampled}-b7ad6b7169203331-00"))
        .header("x-request-id", "unsampled-me-1")
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let refreshed = try_refresh(&server, &refresh).await;
    assert_eq!(refreshed.status(), 200);
    // A request without `traceparent` starts its own trace.
    let r = try_login(&server, "traces@example.org", "a wrong passphrase 77").await;
    assert_eq!(r.status(), 401);

    let login = wait_for(&received, |s| {
        s.name == "POST /api/v1/auth/login" && hex(&s.trace_id) == trace_id
    })
    .await;
    assert_eq!(hex(&login.parent_span_id), parent_id, "the incoming parent");
    assert_eq!(login.kind, 2, "a server span"); // SPAN_KIND_SERVER
    // Children: database queries and the password hash, in the same trace.
    let _ = wait_for(&received, |s| {
        s.name == "password.hash" && s.parent_span_id == login.span_id
    })
    .await;
    let children: Vec<Span> = received
        .lock()
        .unwrap()
        .spans
        .iter()
        .filter(|s| s.parent_span_id == login.span_id)
        .cloned()
        .collect();
    let names: BTreeSet<&str> = children.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains("db.query"), "{names:?}");
    assert!(names.contains("password.hash"), "{names:?}");
    if redis.is_some() {
        assert!(names.contains("redis"), "{names:?}");
        let r = children.iter().find(|s| s.name == "redis").unwrap();
        let op = string_of(attribute(r, "db.operation.name").and_then(|kv| kv.value.as_ref()));
        assert_eq!(op, "EVALSHA");
        assert_eq!(r.kind, 3, "a client span"); // SPAN_KIND_CLIENT
    }
    for child in &children {
        assert_eq!(hex(&child.trace_id), trace_id);
    }
    let db = children.iter().find(|s| s.name == "db.query").unwrap();
    let system = string_of(attribute(db, "db.system.name").and_then(|kv| kv.value.as_ref()));
    let expected = if database_url.is_some() {
        "postgresql"
    } else {
        "sqlite"
    };
    assert_eq!(system, expected);
    // The other requests are server spans of their own traces.
    let failed = wait_for(&received, |s| {
        s.name == "POST /api/v1/auth/login" && hex(&s.trace_id) != trace_id
    })
    .await;
    assert!(failed.parent_span_id.is_empty(), "a new trace is a root");
    wait_for(&received, |s| s.name == "GET /api/v1/users/me").await;
    wait_for(&received, |s| s.name == "POST /api/v1/auth/refresh").await;
    assert!(
        received
            .lock()
            .unwrap()
            .services
            .contains("rampart-under-test"),
        "OTEL_SERVICE_NAME honoured"
    );

    // `trace_id` in the log lines of the traced request, and of the unsampled one.
    assert_log_lines_carry(&server, "traced-login-1", trace_id);
    assert_log_lines_carry(&server, "unsampled-me-1", unsampled);

    server.stop_with("TERM").await;
    let exported_unsampled: Vec<String> = received
        .lock()
        .unwrap()
        .spans
        .iter()
        .filter(|s| hex(&s.trace_id) == unsampled)
        .map(|s| s.name.clone())
        .collect();
    assert!(exported_unsampled.is_empty(), "{exported_unsampled:?}");
    // No secret in any attribute, name or event of any span.
    let new_refresh = crate::support::refresh_cookie_of(&refreshed).unwrap_or_default();
    let secrets = [
        PASSWORD,
        "a wrong passphrase 77",
        access.as_str(),
        refresh.as_str(),
        new_refresh.as_str(),
    ];
    let received = received.lock().unwrap();
    assert!(received.spans.len() >= 8, "{}", received.spans.len());
    for span in &received.spans {
        let mut texts = vec![span.name.clone()];
        for kv in span
            .attributes
            .iter()
            .chain(span.events.iter().flat_map(|e| e.attributes.iter()))
        {
            texts.push(format!("{}={}", kv.key, string_of(kv.value.as_ref())));
        }
        for text in texts {
            for secret in secrets.iter().filter(|s| !s.is_empty()) {
                assert!(
                    !text.contains(secret),
                    "a secret in span {}: {text}",
                    span.name
                );
            }
            assert!(
                !text.contains('?'),
                "a query string in span {}: {text}",
                span.name
            );
        }
    }
}

/// The server logged lines for request `request_id`, each with `trace_id`.
fn assert_log_lines_carry(server: &Server, request_id: &str, trace_id: &str) {
    let lines: Vec<serde_json::Value> = server
        .lines
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["span"]["request_id"] == request_id)
        .collect();
    assert!(!lines.is_empty(), "{}", server.log());
    for line in &lines {
        assert_eq!(line["span"]["trace_id"], trace_id, "{line}");
    }
}

async fn wait_for(received: &Arc<Mutex<Received>>, found: impl Fn(&Span) -> bool) -> Span {
    for _ in 0..200 {
        if let Some(span) = received.lock().unwrap().spans.iter().find(|s| found(s)) {
            return span.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let names: Vec<String> = received
        .lock()
        .unwrap()
        .spans
        .iter()
        .map(|s| format!("{} {}", s.name, hex(&s.trace_id)))
        .collect();
    panic!("span not received; got {names:?}");
}

#[tokio::test]
async fn traces_reach_an_otlp_receiver_sqlite() {
    traces_on(None, None).await;
}

#[tokio::test]
async fn traces_reach_an_otlp_receiver_postgres() {
    let Some(pg) = PgDb::create().await else {
        return;
    };
    let redis = crate::support::test_redis_url();
    let prefix = crate::support::unique_redis_prefix();
    traces_on(
        Some(&pg.url),
        redis.as_deref().map(|url| (url, prefix.as_str())),
    )
    .await;
}

/// An unsupported OTLP protocol is refused at start, not silently mis-sent.
#[tokio::test]
async fn an_unsupported_otlp_protocol_is_refused() {
    let dir = tempdir();
    let out = crate::support::run(
        dir.path(),
        &[
            ("RAMPART_BIND", "127.0.0.1:0"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ],
        &["serve"],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL"),
        "{}",
        out.stderr
    );
}

/// Every alert rule in docs/ops/alerts.yml has a runbook and names only series Rampart
/// exports (the `promtool check rules` step in `.ci/run` checks the syntax).
#[test]
fn alert_rules_name_only_exported_series() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/ops/alerts.yml");
    let text = std::fs::read_to_string(path).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let exported: Vec<&str> = rampart_api::telemetry::SERIES
        .iter()
        .map(|(n, _)| *n)
        .collect();
    let mut alerts = BTreeSet::new();
    for group in doc["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().expect("an alerting rule");
            alerts.insert(name.to_owned());
            let expr = rule["expr"].as_str().unwrap();
            let runbook = rule["annotations"]["runbook"].as_str().unwrap_or_default();
            assert!(runbook.len() > 40, "{name}: a runbook saying what to do");
            let mut named = 0;
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("rampart_") {
                    named += 1;
                    let base = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| word.strip_suffix(s))
                        .filter(|b| exported.contains(b))
                        .unwrap_or(word);
                    assert!(exported.contains(&base), "{name}: {word} is not exported");
                }
            }
            assert!(named > 0, "{name}: names no Rampart series");
        }
    }
    // The dashboard's queries too.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/ops/grafana-dashboard.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if let Some(base) = word.strip_prefix("rampart_").map(|_| word) {
                    let base = base.strip_suffix("_bucket").unwrap_or(base);
                    assert!(
                        exported.contains(&base),
                        "dashboard: {word} is not exported"
                    );
                }
            }
        }
    }
    for needed in [
        "RampartLockoutSpike",
        "RampartRefreshReuseDetected",
        "RampartHashQueueSaturated",
        "RampartHigh5xxRate",
        "RampartReadinessFlapping",
    ] {
        assert!(alerts.contains(needed), "{needed} missing");
    }
}
