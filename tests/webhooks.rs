//! Webhooks against a real HTTP receiver on loopback.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::hooks::receiver;
use support::*;
use switchboard::apps::Secret;
use switchboard::auth;
use switchboard::config::{Config, WebhookConfig};

fn config(url: &str, types: &[&str]) -> impl FnOnce(&mut Config) {
    let hook = WebhookConfig {
        url: url.to_owned(),
        event_types: types.iter().map(|s| s.to_string()).collect(),
        channel_prefix: None,
    };
    move |c: &mut Config| {
        c.app.webhooks = vec![hook];
        c.webhooks.leave_delay_ms = 400;
        c.webhooks.batch_ms = 20;
        c.webhooks.backoff_initial_ms = 50;
        c.webhooks.backoff_max_ms = 200;
    }
}

#[tokio::test]
async fn occupied_then_vacated_signed_like_pusher() {
    let mut r = receiver(0).await;
    let server = TestServer::start_with(config(&r.url, &[])).await;
    let mut c = server.pusher().await;
    c.subscribe("wh-a").await;
    let first = r.next(WAIT).await.expect("a webhook request");
    assert_eq!(first.key, KEY);
    let expected = auth::sign(&Secret::new(SECRET), &first.raw);
    assert_eq!(
        first.signature, expected,
        "X-Pusher-Signature is the body's HMAC"
    );
    assert!(first.body["time_ms"].as_u64().unwrap() > 1_700_000_000_000);
    let events = first.body["events"].as_array().unwrap();
    assert!(
        events.contains(&json!({"name":"channel_occupied","channel":"wh-a"})),
        "{events:?}"
    );
    c.send(json!({"event":"pusher:unsubscribe","data":{"channel":"wh-a"}}))
        .await;
    let vacated = r.expect("channel_vacated").await;
    assert_eq!(vacated["channel"], "wh-a");
    server.stop().await;
}

#[tokio::test]
async fn quick_resubscribe_sends_no_vacated() {
    let mut r = receiver(0).await;
    let server =
        TestServer::start_with(config(&r.url, &["channel_occupied", "channel_vacated"])).await;
    let mut c = server.pusher().await;
    c.subscribe("wh-b").await;
    r.expect("channel_occupied").await;
    c.send(json!({"event":"pusher:unsubscribe","data":{"channel":"wh-b"}}))
        .await;
    c.subscribe("wh-b").await;
    // Longer than the leave delay: nothing, since the channel never stayed empty.
    assert_eq!(
        r.names_within(Duration::from_millis(900)).await,
        Vec::<String>::new()
    );
    server.stop().await;
}

#[tokio::test]
async fn member_events_and_a_member_who_comes_back() {
    let mut r = receiver(0).await;
    let server = TestServer::start_with(config(&r.url, &["member_added", "member_removed"])).await;
    let mut a = server.pusher().await;
    a.subscribe_presence("presence-wh", r#"{"user_id":"u1"}"#)
        .await;
    let added = r.expect("member_added").await;
    assert_eq!(
        added,
        json!({"name":"member_added","channel":"presence-wh","user_id":"u1"})
    );
    // Leaves and comes back within the delay: neither is announced.
    a.send(json!({"event":"pusher:unsubscribe","data":{"channel":"presence-wh"}}))
        .await;
    a.subscribe_presence("presence-wh", r#"{"user_id":"u1"}"#)
        .await;
    assert_eq!(
        r.names_within(Duration::from_millis(900)).await,
        Vec::<String>::new()
    );
    drop(a);
    let removed = r.expect("member_removed").await;
    assert_eq!(removed["user_id"], "u1");
    server.stop().await;
}

#[tokio::test]
async fn client_event_webhook_carries_socket_and_user() {
    let mut r = receiver(0).await;
    let server = TestServer::start_with(config(&r.url, &["client_event"])).await;
    let mut a = server.pusher().await;
    a.subscribe_presence("presence-ce", r#"{"user_id":"7"}"#)
        .await;
    a.send(json!({"event":"client-hi","channel":"presence-ce","data":{"x":1}}))
        .await;
    let e = r.expect("client_event").await;
    assert_eq!(e["event"], "client-hi");
    assert_eq!(e["channel"], "presence-ce");
    assert_eq!(e["socket_id"], a.socket_id.as_str());
    assert_eq!(e["user_id"], "7");
    assert_eq!(
        serde_json::from_str::<Value>(e["data"].as_str().unwrap()).unwrap(),
        json!({"x":1})
    );
    server.stop().await;
}

#[tokio::test]
async fn failed_requests_are_retried_until_delivered() {
    let mut r = receiver(2).await;
    let server = TestServer::start_with(config(&r.url, &["channel_occupied"])).await;
    let mut c = server.pusher().await;
    c.subscribe("wh-retry").await;
    let e = r.expect("channel_occupied").await;
    assert_eq!(e["channel"], "wh-retry");
    server.stop().await;
}

#[tokio::test]
async fn events_in_the_window_share_a_request() {
    let mut r = receiver(0).await;
    let server = TestServer::start_with(|c: &mut Config| {
        config(&r.url, &["channel_occupied"])(c);
        c.webhooks.batch_ms = 300;
    })
    .await;
    let mut c = server.pusher().await;
    for ch in ["wh-1", "wh-2", "wh-3"] {
        c.subscribe(ch).await;
    }
    let mut seen = Vec::new();
    let mut requests = 0;
    while seen.len() < 3 {
        let h = r.next(WAIT).await.expect("webhook requests");
        requests += 1;
        for e in h.body["events"].as_array().unwrap() {
            seen.push(e["channel"].as_str().unwrap().to_owned());
        }
    }
    seen.sort();
    assert_eq!(seen, ["wh-1", "wh-2", "wh-3"]);
    assert!(
        requests < 3,
        "batched into fewer requests than events ({requests})"
    );
    server.stop().await;
}

#[tokio::test]
async fn subscription_count_follows_changes_and_filters_apply() {
    let mut r = receiver(0).await;
    let server = TestServer::start_with(config(&r.url, &["subscription_count"])).await;
    let mut a = server.pusher().await;
    let mut b = server.pusher().await;
    a.subscribe("wh-count").await;
    let e = r.expect("subscription_count").await;
    assert_eq!(e["subscription_count"], 1);
    b.subscribe("wh-count").await;
    let e = r.expect("subscription_count").await;
    assert_eq!(e["subscription_count"], 2);
    // The filter: no occupied/vacated events reach this endpoint.
    drop(a);
    drop(b);
    let names = r.names_within(Duration::from_millis(1200)).await;
    assert!(names.iter().all(|n| n == "subscription_count"), "{names:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_short_visit_is_occupied_then_vacated() {
    // Issue 21: a channel occupied for less than the sampling delay (300 ms) was never
    // announced at all.
    let mut r = receiver(0).await;
    let server =
        TestServer::start_with(config(&r.url, &["channel_occupied", "channel_vacated"])).await;
    let mut c = server.pusher().await;
    c.subscribe("wh-short").await;
    c.send(json!({"event":"pusher:unsubscribe","data":{"channel":"wh-short"}}))
        .await;
    c.ping().await;
    assert_eq!(
        r.names_within(Duration::from_millis(1200)).await,
        ["channel_occupied", "channel_vacated"]
    );
    // A visit as short, by a client that closes its connection.
    let mut c = server.pusher().await;
    c.subscribe("wh-short-2").await;
    c.close().await;
    assert_eq!(
        r.names_within(Duration::from_millis(1200)).await,
        ["channel_occupied", "channel_vacated"]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_short_presence_visit_is_announced_in_full() {
    let mut r = receiver(0).await;
    let server = TestServer::start_with(config(
        &r.url,
        &[
            "channel_occupied",
            "channel_vacated",
            "member_added",
            "member_removed",
        ],
    ))
    .await;
    let mut c = server.pusher().await;
    c.subscribe_presence("presence-short", r#"{"user_id":"u9"}"#)
        .await;
    c.send(json!({"event":"pusher:unsubscribe","data":{"channel":"presence-short"}}))
        .await;
    c.ping().await;
    let names = r.names_within(Duration::from_millis(1200)).await;
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "channel_occupied",
            "channel_vacated",
            "member_added",
            "member_removed"
        ],
        "{names:?}"
    );
    let pos = |n: &str| names.iter().position(|x| x == n).unwrap();
    assert!(
        pos("channel_occupied") < pos("channel_vacated"),
        "{names:?}"
    );
    assert!(pos("member_added") < pos("member_removed"), "{names:?}");
    server.stop().await;
}
