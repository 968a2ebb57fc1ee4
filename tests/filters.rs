//! Tag filtering (an extension): the server drops non-matching events per subscriber.

mod support;

use serde_json::json;
use support::*;

async fn names(c: &mut PusherClient, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(c.recv().await["event"].as_str().unwrap().to_owned());
    }
    out
}

async fn subscribe_filtered(c: &mut PusherClient, channel: &str, filter: serde_json::Value) {
    c.send(json!({"event":"pusher:subscribe","data":{"channel":channel,"filter":filter}}))
        .await;
    let ok = c.expect("pusher_internal:subscription_succeeded").await;
    assert_eq!(ok["channel"], channel);
}

#[tokio::test]
async fn only_matching_events_reach_a_filtered_subscriber() {
    let server = TestServer::start().await;
    let api = server.api();
    let mut goals = server.pusher().await;
    let mut home = server.pusher().await;
    let mut all = server.pusher().await;
    subscribe_filtered(&mut goals, "match-1", json!({"event_type":{"eq":"goal"}})).await;
    subscribe_filtered(
        &mut home,
        "match-1",
        json!({"or":[{"team":{"in":["home"]}},{"event_type":{"eq":"end"}}]}),
    )
    .await;
    all.subscribe("match-1").await;
    let events = [
        ("e1", json!({"event_type":"goal","team":"away"})),
        ("e2", json!({"event_type":"card","team":"home"})),
        ("e3", json!({"event_type":"end"})),
        ("e4", json!(null)),
    ];
    for (name, tags) in &events {
        let mut body = json!({"name":name,"channel":"match-1","data":"{}"});
        if !tags.is_null() {
            body["tags"] = tags.clone();
        }
        assert_eq!(api.trigger(body).await.0, 200);
    }
    assert_eq!(names(&mut all, 4).await, ["e1", "e2", "e3", "e4"]);
    assert_eq!(names(&mut goals, 1).await, ["e1"]);
    goals.ping().await; // nothing else was queued before the pong
    assert_eq!(names(&mut home, 2).await, ["e2", "e3"]);
    home.ping().await;
    // Tags never appear on the Pusher wire.
    server.stop().await;
}

#[tokio::test]
async fn bad_filters_and_tags_are_refused() {
    let server = TestServer::start().await;
    let mut c = server.pusher().await;
    c.send(json!({"event":"pusher:subscribe","data":{"channel":"m","filter":{"a":{"like":"x"}}}}))
        .await;
    let err = c.expect("pusher:subscription_error").await;
    assert_eq!(err["data"]["status"], 400);
    c.ping().await;
    let (status, body) = server
        .api()
        .trigger(json!({"name":"e","channel":"m","data":"{}","tags":{"a":[1]}}))
        .await;
    assert_eq!(status, 400, "{body}");
    server.stop().await;
}
