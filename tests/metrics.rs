//! `/metrics` as an operator reads it: every series described, every series there from the
//! start (at zero), the build and the process, and connections and messages per app.
//!
//! One test: the recorder is process-wide, so a second test in this binary connecting
//! clients would make the zeros of a fresh node flaky.

mod support;

use std::collections::HashMap;

use serde_json::json;
use support::*;
use switchboard::config::AppConfig;

/// Series every node exposes from its first scrape, whatever it is configured with.
const AT_START: &[&str] = &[
    "switchboard_connections_refused_total",
    "switchboard_accept_errors_total",
    "switchboard_subscriptions",
    "switchboard_events_published_total",
    "switchboard_idempotent_repeats_total",
    "switchboard_slow_consumer_closes_total",
    "switchboard_outbox_over_budget_total",
    "switchboard_low_priority_dropped_total",
    "switchboard_client_errors_total",
    "switchboard_node_envelopes_dropped_total",
    "switchboard_nodes_reaped_total",
    "switchboard_lease_lost_total",
    "switchboard_webhook_events_dropped_total",
    "switchboard_webhook_events_total",
    "switchboard_webhook_requests_total",
    "switchboard_webhook_events_sent_total",
    "switchboard_webhook_retries_total",
    "switchboard_ingest_rows_total",
    "switchboard_ingest_rows_rejected_total",
    "switchboard_ingest_listener_reconnects_total",
    "switchboard_ingest_rows_deleted_total",
    "switchboard_store_busy_total",
    "switchboard_offline_events_total",
    "switchboard_offline_dropped_total",
    "switchboard_push_decisions_total",
    "switchboard_push_dropped_total",
    "switchboard_push_registrations_total",
    "switchboard_push_sends_total",
    "switchboard_push_retries_total",
];

async fn scrape(server: &TestServer) -> String {
    let url = format!("http://{}/metrics", server.metrics_addr.unwrap());
    let res = reqwest::get(&url).await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    res.text().await.unwrap()
}

/// Each sample line's series (name and labels, as rendered) and value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn name(series: &str) -> &str {
    series.split('{').next().unwrap()
}

/// A connection series as rendered: `protocol` and `app` first, as before the transport.
fn conn_series(name: &str, protocol: &str, app: &str, transport: &str) -> String {
    format!("{name}{{protocol=\"{protocol}\",app=\"{app}\",transport=\"{transport}\"}}")
}

fn value(text: &str, series: &str) -> Option<f64> {
    samples(text).get(series).copied()
}

/// Waits until `series` has `want` (gauges follow a connection's end asynchronously).
async fn wait_for(server: &TestServer, series: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = scrape(server).await;
        if value(&text, series) == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never became {want}:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_fresh_node_describes_every_series_at_zero_and_counts_per_app() {
    let server = TestServer::start_full(
        |c| {
            c.apps.push(AppConfig {
                id: "other-id".into(),
                key: "other-key".into(),
                secret: "other-secret".into(),
                ..AppConfig::default()
            })
        },
        true,
    )
    .await;
    let text = scrape(&server).await;
    let samples = samples(&text);

    // Every series is described and typed (`# HELP`, `# TYPE`).
    for series in samples.keys() {
        let base = name(series);
        let base = ["_sum", "_count"]
            .iter()
            .find_map(|s| base.strip_suffix(s))
            .filter(|b| text.contains(&format!("# TYPE {b} summary")))
            .unwrap_or(base);
        for what in ["HELP", "TYPE"] {
            assert!(
                text.contains(&format!("\n# {what} {base} "))
                    || text.starts_with(&format!("# {what} {base} ")),
                "no # {what} for {series}:\n{text}"
            );
        }
    }
    for n in AT_START {
        assert!(
            samples.keys().any(|s| name(s) == *n),
            "{n} is not registered at start:\n{text}"
        );
    }
    // Every bounded label value is there, at zero.
    for limit in ["node", "app", "user", "ip"] {
        let s = format!("switchboard_connections_refused_total{{limit=\"{limit}\"}}");
        assert_eq!(samples.get(&s), Some(&0.0), "{s}:\n{text}");
    }
    let s = r#"switchboard_push_sends_total{provider="apns",outcome="duplicate"}"#;
    assert_eq!(samples.get(s), Some(&0.0), "{text}");
    // Connections (by transport too) and messages of each configured app, for each
    // protocol, at zero.
    for app in [APP_ID, "other-id"] {
        for protocol in ["pusher", "bus"] {
            for n in ["switchboard_connections", "switchboard_connections_total"] {
                for transport in ["ws", "sse", "xhr"] {
                    let s = conn_series(n, protocol, app, transport);
                    assert_eq!(samples.get(&s), Some(&0.0), "{s}:\n{text}");
                }
            }
            let s =
                format!("switchboard_messages_in_total{{protocol=\"{protocol}\",app=\"{app}\"}}");
            assert_eq!(samples.get(&s), Some(&0.0), "{s}:\n{text}");
        }
        let s = format!("switchboard_messages_out_total{{app=\"{app}\"}}");
        assert_eq!(samples.get(&s), Some(&0.0), "{s}:\n{text}");
    }
    // No false alarm: a node without Redis or PostgreSQL has no Redis or ingest state.
    for n in [
        "switchboard_redis_up",
        "switchboard_ingest_leader",
        "switchboard_ingest_notify_ok",
    ] {
        assert!(!samples.keys().any(|s| name(s) == n), "{n}:\n{text}");
    }

    let build = format!(
        "switchboard_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(samples.get(&build), Some(&1.0), "{text}");

    // The process, read at the scrape.
    for n in [
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_threads",
        "process_start_time_seconds",
    ] {
        assert!(samples.get(n).is_some_and(|v| *v > 0.0), "{n}:\n{text}");
        assert!(text.contains(&format!("# HELP {n} ")), "{n}:\n{text}");
    }
    assert!(samples.contains_key("process_cpu_seconds_total"), "{text}");
    assert!(
        text.contains("# TYPE process_cpu_seconds_total counter"),
        "{text}"
    );

    // One Pusher client of the default app: its series move, the other app's do not.
    let mut c = server.pusher().await;
    c.subscribe("my-channel").await;
    let (status, _) = server
        .api()
        .trigger(json!({"name": "e", "channel": "my-channel", "data": "{}"}))
        .await;
    assert_eq!(status, 200);
    c.expect("e").await;
    // And one over pusher-js's xhr_polling: counted under its own transport.
    let poll = format!(
        "http://{}/pusher/app/{KEY}/123/abcdefgh/xhr?protocol=7&client=js&version=8.6.0",
        server.addr
    );
    let http = reqwest::Client::new();
    for want in [
        "o\n",
        "a[\"{\\\"event\\\":\\\"pusher:connection_established\\\"",
    ] {
        let body = http.post(&poll).send().await.unwrap().text().await;
        assert!(body.as_ref().unwrap().starts_with(want), "{body:?}");
    }
    let text = scrape(&server).await;
    let at = |n: &str, app: &str, transport: &str| {
        let s = conn_series(n, "pusher", app, transport);
        value(&text, &s).unwrap_or_else(|| panic!("no {s}:\n{text}"))
    };
    for transport in ["ws", "xhr"] {
        assert_eq!(
            at("switchboard_connections", APP_ID, transport),
            1.0,
            "{text}"
        );
        let total = at("switchboard_connections_total", APP_ID, transport);
        assert_eq!(total, 1.0, "{transport}: {text}");
    }
    assert_eq!(at("switchboard_connections", APP_ID, "sse"), 0.0, "{text}");
    let s = format!("switchboard_messages_in_total{{protocol=\"pusher\",app=\"{APP_ID}\"}}");
    assert_eq!(value(&text, &s), Some(1.0), "{text}");
    assert_eq!(
        at("switchboard_connections", "other-id", "ws"),
        0.0,
        "{text}"
    );
    let out = |app: &str| format!("switchboard_messages_out_total{{app=\"{app}\"}}");
    assert_eq!(value(&text, &out(APP_ID)), Some(1.0), "{text}");
    assert_eq!(value(&text, &out("other-id")), Some(0.0), "{text}");
    let subscriptions = value(&text, "switchboard_subscriptions");
    assert_eq!(subscriptions, Some(1.0), "{text}");

    c.close().await;
    let gauge = conn_series("switchboard_connections", "pusher", APP_ID, "ws");
    wait_for(&server, &gauge, 0.0).await;
    server.stop().await;
}
