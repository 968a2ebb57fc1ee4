//! Queued bytes are bounded per connection (`server.outbox_max_bytes`) and per node
//! (`server.outbox_total_bytes`): a client that stops reading is closed with 4100 when its
//! queue holds too many bytes, long before it holds too many frames, and when the node's
//! budget is spent the connections holding the most go first while readers that keep up
//! are untouched.

mod support;

use serde_json::json;
use support::raw::*;
use support::*;

/// Publishes `batches` batches of ten 5 KB events to `channel`.
async fn flood(api: &Api, channel: &str, batches: usize) {
    let data = "x".repeat(5000);
    for _ in 0..batches {
        let batch: Vec<_> = (0..10)
            .map(|_| json!({"name":"e","channel":channel,"data":data}))
            .collect();
        let (status, body) = api
            .post("/batch_events", &json!({"batch":batch}).to_string())
            .await;
        assert_eq!(status, 200, "{body}");
    }
}

/// Reads `n` events of `channel` from a well-behaved client; then it is still open.
async fn reads_all(p: &mut PusherClient, channel: &str, n: usize) {
    for _ in 0..n {
        let v = p.expect("e").await;
        assert_eq!(v["channel"], channel);
    }
    p.ping().await;
}

#[tokio::test]
async fn a_connection_over_its_byte_budget_is_closed_before_its_frame_bound() {
    let server = TestServer::start_with(|c| {
        c.server.outbox_capacity = 10_000;
        c.server.outbox_max_bytes = 256 * 1024;
    })
    .await;
    let api = server.api();
    let mut slow = stalled_pusher(server.addr, "news").await;
    let mut reader = server.pusher().await;
    reader.subscribe("news").await;
    api.wait_subscription_count("news", 2).await;
    // 1000 frames of 5 KB: far under 10,000 frames, far over 256 KiB for a stalled reader.
    tokio::join!(
        flood(&api, "news", 100),
        reads_all(&mut reader, "news", 1000)
    );
    assert_eq!(close_code(&mut slow).await, Some(4100));
    server.stop().await;
}

#[tokio::test]
async fn over_the_node_budget_the_connections_holding_the_most_are_closed_first() {
    let server = TestServer::start_with(|c| {
        c.server.outbox_capacity = 10_000;
        c.server.outbox_max_bytes = 0;
        c.server.outbox_total_bytes = 512 * 1024;
    })
    .await;
    let api = server.api();
    // Each stalled client on its own channel: no frame is shared between them.
    let mut stalled = Vec::new();
    for i in 0..3 {
        stalled.push(stalled_pusher(server.addr, &format!("slow-{i}")).await);
    }
    let mut reader = server.pusher().await;
    reader.subscribe("fast").await;
    for i in 0..3 {
        api.wait_subscription_count(&format!("slow-{i}"), 1).await;
    }
    for i in 0..3 {
        flood(&api, &format!("slow-{i}"), 100).await;
    }
    tokio::join!(flood(&api, "fast", 30), reads_all(&mut reader, "fast", 300));
    for (i, tcp) in stalled.iter_mut().enumerate() {
        assert_eq!(close_code(tcp).await, Some(4100), "stalled client {i}");
    }
    // The reader that kept up was never at risk, and the node takes new clients.
    reader.ping().await;
    let mut late = server.pusher().await;
    late.subscribe("fast").await;
    server.stop().await;
}
