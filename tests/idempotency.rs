//! Idempotent publishing: a publisher that retries with the same `idempotency_key` delivers
//! once (live, to history and to offline queues), on one node and across a cluster; other
//! keys and calls without a key are not affected.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{json, Value};
use support::*;

/// Triggers `name` on `channel` with `key`; asserts 200.
async fn trigger(api: &Api, channel: &str, name: &str, key: Option<&str>) {
    let mut body = json!({"name":name,"channel":channel,"data":"{}"});
    if let Some(k) = key {
        body["idempotency_key"] = json!(k);
    }
    let (status, v) = api.trigger(body).await;
    assert_eq!(status, 200, "{v}");
}

/// The names of the events `c` receives on `channel` up to and including `marker`.
async fn names_until(c: &mut PusherClient, marker: &str) -> Vec<String> {
    let mut names = Vec::new();
    loop {
        let v = c.recv().await;
        if v["event"].as_str().is_some_and(|e| e.starts_with("pusher")) {
            continue;
        }
        let name = v["event"].as_str().unwrap().to_owned();
        if name == marker {
            return names;
        }
        names.push(name);
    }
}

#[tokio::test]
async fn a_retried_trigger_is_delivered_once() {
    let server = TestServer::start().await;
    let api = server.api();
    let mut c = server.pusher().await;
    c.subscribe("orders").await;
    trigger(&api, "orders", "placed", Some("order-1")).await;
    trigger(&api, "orders", "placed", Some("order-1")).await; // the retry
    trigger(&api, "orders", "shipped", Some("order-2")).await; // another key
    trigger(&api, "orders", "plain", None).await;
    trigger(&api, "orders", "plain", None).await; // no key: no dedupe
    trigger(&api, "orders", "marker", None).await;
    assert_eq!(
        names_until(&mut c, "marker").await,
        ["placed", "shipped", "plain", "plain"]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_key_covers_every_channel_of_a_trigger_and_each_batch_item() {
    let server = TestServer::start().await;
    let api = server.api();
    let mut a = server.pusher().await;
    a.subscribe("a").await;
    let mut b = server.pusher().await;
    b.subscribe("b").await;
    for _ in 0..2 {
        let body = json!({"name":"multi","channels":["a","b"],"data":"{}","idempotency_key":"m"});
        assert_eq!(api.trigger(body).await.0, 200);
        let batch = json!({"batch":[
            {"name":"item1","channel":"a","data":"{}","idempotency_key":"i1"},
            {"name":"item2","channel":"b","data":"{}","idempotency_key":"i2"},
        ]});
        assert_eq!(api.post("/batch_events", &batch.to_string()).await.0, 200);
    }
    trigger(&api, "a", "marker", None).await;
    trigger(&api, "b", "marker", None).await;
    assert_eq!(names_until(&mut a, "marker").await, ["multi", "item1"]);
    assert_eq!(names_until(&mut b, "marker").await, ["multi", "item2"]);
    server.stop().await;
}

#[tokio::test]
async fn a_retried_notification_is_queued_once_for_an_absent_user() {
    let server = TestServer::start().await;
    let api = server.api();
    for _ in 0..2 {
        api.notify("abe", "once", json!({"idempotency_key":"n-1"}))
            .await;
    }
    api.notify("abe", "twice", json!({})).await;
    api.notify("abe", "twice", json!({})).await;
    let mut c = server.bus("abe").await;
    c.subscribe(&["notification"], &[]).await;
    let replay = c.recv_type("replay").await;
    assert_eq!(replay["count"], 3, "{replay}");
    let got: Vec<Value> = vec![
        c.recv_type("notification").await["message"].clone(),
        c.recv_type("notification").await["message"].clone(),
        c.recv_type("notification").await["message"].clone(),
    ];
    assert_eq!(got, ["once", "twice", "twice"]);
    c.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn a_malformed_key_is_refused() {
    let server = TestServer::start().await;
    let api = server.api();
    for key in [json!(""), json!("x".repeat(129)), json!("a\u{0}b")] {
        let body = json!({"name":"e","channel":"c","data":"{}","idempotency_key":key});
        let (status, v) = api.trigger(body).await;
        assert_eq!(status, 400, "{v}");
    }
    server.stop().await;
}

fn unique_prefix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("sbtest-idem-{}-{nanos}-{n}", std::process::id())
}

#[tokio::test]
async fn a_retry_through_another_node_is_delivered_once() {
    let prefix = unique_prefix();
    let node = |prefix: String| {
        TestServer::start_with(move |c| {
            c.redis.url = Some(redis_url());
            c.redis.prefix = prefix;
            c.redis.lease_secs = 1;
        })
    };
    let a = node(prefix.clone()).await;
    let b = node(prefix).await;
    let mut c = a.pusher().await;
    c.subscribe("pay").await;
    trigger(&a.api(), "pay", "charged", Some("charge-9")).await;
    // The publisher timed out and retried on another node behind the load balancer.
    trigger(&b.api(), "pay", "charged", Some("charge-9")).await;
    trigger(&b.api(), "pay", "marker", None).await;
    assert_eq!(names_until(&mut c, "marker").await, ["charged"]);
    a.stop().await;
    b.stop().await;
}
