//! A catch-up never overflows the connection it is catching up: an offline queue at or above
//! `server.outbox_capacity` arrives whole, in order, on the bus and on a Pusher sign-in, on
//! one node and on Redis; and what was sent leaves the queue (the next connection finds it
//! empty), while nothing leaves it unsent.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::json;
use support::*;
use switchboard::config::Config;

/// A Redis key prefix of its own for a test run.
fn unique_prefix(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("sbtest-{test}-{}-{nanos}-{n}", std::process::id())
}

fn on_redis(c: &mut Config, test: &str) {
    c.redis.url = Some(redis_url());
    c.redis.prefix = unique_prefix(test);
    c.redis.lease_secs = 1;
    c.bus.presence_throttle_ms = 0;
}

/// Queues `n` notifications for `user` (messages `n0`, `n1`, ...).
async fn queue(api: &Api, user: &str, n: usize) {
    for i in 0..n {
        api.notify(user, &format!("n{i}"), json!({})).await;
    }
}

/// Connects `user` on the bus, subscribes to notifications and reads the whole drain:
/// a `replay` header counting `n`, then `n` notifications in order.
async fn drain_bus(server: &TestServer, user: &str, n: usize) {
    let mut c = server.bus(user).await;
    c.subscribe(&["notification"], &[]).await;
    let replay = c.recv_type("replay").await;
    assert_eq!(replay["count"], n, "{replay}");
    for i in 0..n {
        let v = c.recv_type("notification").await;
        assert_eq!(v["message"], format!("n{i}"), "{v}");
    }
    c.ping().await;
    c.close().await;
    // Sent means gone: the next connection has nothing queued (pong right after subscribed).
    let mut c = server.bus(user).await;
    c.subscribe(&["notification"], &[]).await;
    c.ping().await;
    c.close().await;
}

#[tokio::test]
async fn a_bus_queue_at_and_above_the_outbox_capacity_arrives_whole() {
    let server = TestServer::start_with(|c| c.server.outbox_capacity = 20).await;
    let api = server.api();
    for (user, n) in [("at", 20), ("above", 50), ("below", 19)] {
        queue(&api, user, n).await;
        drain_bus(&server, user, n).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_bus_queue_as_long_as_the_default_outbox_arrives_whole() {
    let server = TestServer::start().await;
    let api = server.api();
    queue(&api, "amy", 1000).await;
    drain_bus(&server, "amy", 1000).await;
    server.stop().await;
}

#[tokio::test]
async fn a_bus_queue_above_the_outbox_capacity_arrives_whole_on_redis() {
    let server = TestServer::start_with(|c| {
        on_redis(c, "catchup-bus");
        c.server.outbox_capacity = 20;
    })
    .await;
    let api = server.api();
    queue(&api, "ray", 50).await;
    drain_bus(&server, "ray", 50).await;
    server.stop().await;
}

/// Signs `user` in over Pusher and reads `n` notifications on its user channel, then proves
/// the queue is empty for the next sign-in.
async fn drain_pusher(server: &TestServer, user: &str, n: usize) {
    let mut p = server.pusher().await;
    let user_data = format!(r#"{{"id":"{user}"}}"#);
    p.signin(&user_data).await;
    for i in 0..n {
        let v = p.recv().await;
        assert_eq!(v["event"], "notification", "{v}");
        assert_eq!(v["channel"], format!("#server-to-user-{user}"));
        let data: serde_json::Value = serde_json::from_str(v["data"].as_str().unwrap()).unwrap();
        assert_eq!(data["message"], format!("n{i}"), "{v}");
    }
    p.ping().await;
    p.close().await;
    let mut p = server.pusher().await;
    p.signin(&user_data).await;
    p.ping().await;
    p.close().await;
}

#[tokio::test]
async fn a_pusher_sign_in_receives_a_queue_above_the_outbox_capacity_whole() {
    let server = TestServer::start_with(|c| c.server.outbox_capacity = 20).await;
    let api = server.api();
    queue(&api, "pia", 50).await;
    drain_pusher(&server, "pia", 50).await;
    server.stop().await;
}

#[tokio::test]
async fn a_pusher_sign_in_receives_a_queue_above_the_outbox_capacity_whole_on_redis() {
    let server = TestServer::start_with(|c| {
        on_redis(c, "catchup-pusher");
        c.server.outbox_capacity = 20;
    })
    .await;
    let api = server.api();
    queue(&api, "rex", 50).await;
    drain_pusher(&server, "rex", 50).await;
    server.stop().await;
}
