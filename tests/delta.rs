//! Delta compression (an extension): opt-in per connection, fossil deltas with sequences.

mod support;

use base64::Engine;
use serde_json::{json, Value};
use support::*;

fn price(p: u32) -> Value {
    // A payload where consecutive events share most bytes.
    let data = json!({"symbol":"ACME","price":p,"currency":"EUR","exchange":"XETRA","padding":"x".repeat(200)});
    json!({"name":"tick","channel":"ticker","data":data.to_string()})
}

fn raw_data(frame: &Value) -> String {
    serde_json::to_string(&frame["data"]).unwrap()
}

async fn delta_client(server: &TestServer) -> PusherClient {
    let mut c = server.pusher().await;
    c.send(json!({"event":"pusher:enable_delta_compression","data":{}}))
        .await;
    assert_eq!(c.recv().await["event"], "pusher:delta_compression_enabled");
    c
}

#[tokio::test]
async fn opted_in_clients_get_deltas_others_the_standard_protocol() {
    let server = TestServer::start().await;
    let api = server.api();
    let mut d = delta_client(&server).await;
    d.subscribe("ticker").await;
    let mut plain = server.pusher().await;
    plain.subscribe("ticker").await;
    for p in [100, 101, 102] {
        assert_eq!(api.trigger(price(p)).await.0, 200);
    }
    let first = d.recv().await;
    assert_eq!(first["event"], "tick");
    assert_eq!(first["sequence"], 1);
    let mut prev = raw_data(&first);
    for (seq, p) in [(2, 101), (3, 102)] {
        let f = d.recv().await;
        assert_eq!(f["event"], "pusher:delta", "{f}");
        assert_eq!(f["data"]["event"], "tick");
        assert_eq!(f["data"]["base_seq"], seq - 1);
        assert_eq!(f["data"]["target_seq"], seq);
        assert_eq!(f["data"]["algorithm"], "fossil");
        let delta = base64::engine::general_purpose::STANDARD
            .decode(f["data"]["delta"].as_str().unwrap())
            .unwrap();
        let next =
            String::from_utf8(fossil_delta::apply(prev.as_bytes(), &delta).unwrap()).unwrap();
        assert_eq!(next, raw_data(&json!({"data": price(p)["data"]})));
        prev = next;
    }
    for _ in 0..3 {
        let f = plain.recv().await;
        assert_eq!(f["event"], "tick");
        assert!(f.get("sequence").is_none(), "standard frames only: {f}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_gap_report_or_a_late_subscriber_gets_a_full_message() {
    let server = TestServer::start().await;
    let api = server.api();
    let mut early = delta_client(&server).await;
    early.subscribe("ticker").await;
    api.trigger(price(1)).await;
    assert_eq!(early.recv().await["sequence"], 1);
    let mut late = delta_client(&server).await;
    late.subscribe("ticker").await;
    api.trigger(price(2)).await;
    assert_eq!(early.recv().await["event"], "pusher:delta");
    let f = late.recv().await;
    assert_eq!(
        (f["event"].as_str(), f["sequence"].as_u64()),
        (Some("tick"), Some(2))
    );
    early
        .send(json!({"event":"pusher:delta_sync_error","data":{"channel":"ticker"}}))
        .await;
    early.ping().await;
    api.trigger(price(3)).await;
    let f = early.recv().await;
    assert_eq!(
        (f["event"].as_str(), f["sequence"].as_u64()),
        (Some("tick"), Some(3))
    );
    assert_eq!(late.recv().await["event"], "pusher:delta");
    server.stop().await;
}
