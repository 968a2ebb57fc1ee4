//! The inter-node envelope is versioned (`protocol::node`): a node reads its own version and
//! the unversioned format of older nodes side by side, and drops (logs and counts) a version
//! it does not know, without losing what follows.
//!
//! Needs a Redis: `SWITCHBOARD_TEST_REDIS_URL`. Other nodes are played by this test, which
//! publishes raw envelopes on the channel's pub/sub topic.

mod support;

use std::sync::Arc;

use serde_json::json;
use support::*;
use switchboard::event::Event;
use switchboard::ids::{AppId, ChannelName};

fn event_json(channel: &str, name: &str, data: &str) -> Vec<u8> {
    let ch = ChannelName::parse(channel).unwrap();
    let e = Event::message(AppId::new(APP_ID), ch, name, Arc::from(data));
    serde_json::to_vec(&e).unwrap()
}

fn envelope(header: &str, id: &str, json: &[u8]) -> Vec<u8> {
    let mut out = format!("{header}{id}\n").into_bytes();
    out.extend_from_slice(json);
    out
}

async fn dropped_count(server: &TestServer, reason: &str) -> u64 {
    let url = format!("http://{}/metrics", server.metrics_addr.unwrap());
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| {
            l.starts_with("switchboard_node_envelopes_dropped_total{")
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn two_envelope_versions_side_by_side_and_an_unknown_one_dropped() {
    let url = redis_url();
    let prefix = format!("sbtest-envelope-{}-{}", std::process::id(), now());
    let server = TestServer::start_full(
        |c| {
            c.redis.url = Some(url.clone());
            c.redis.prefix = prefix.clone();
        },
        true,
    )
    .await;
    let mut redis = redis_conn(&url).await;
    // The node hears the channel's topic once it has a subscriber there, and the subscription
    // is answered only after Redis confirmed the node's SUBSCRIBE.
    let mut client = server.pusher().await;
    client.subscribe("news").await;
    let (_, topic) = redis_channel_topic(&url, &prefix, APP_ID, "news").await;
    let (_, n): (String, u64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(&topic)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(n, 1, "the node is not subscribed to {topic}");
    let before = dropped_count(&server, "unknown_version").await;
    let before_bad = dropped_count(&server, "malformed").await;

    let publish = |payload: Vec<u8>| {
        let mut redis = redis.clone();
        let topic = topic.clone();
        async move {
            let _: u64 = redis::cmd("PUBLISH")
                .arg(topic)
                .arg(payload)
                .query_async(&mut redis)
                .await
                .unwrap();
        }
    };
    // A newer node's envelope, one this node cannot read, then a broken one of its own.
    let future = envelope("v2\n", "", &event_json("news", "from-v2", "\"2\""));
    publish(future).await;
    publish(b"v1\n\nnot json".to_vec()).await;
    // An older node's (no version line), and this node's own (v1, through the API).
    let old = envelope("", "", &event_json("news", "from-v0", "\"0\""));
    publish(old).await;
    let (status, _) = server
        .api()
        .trigger(json!({"name": "from-v1", "channel": "news", "data": "1"}))
        .await;
    assert_eq!(status, 200);

    // One topic keeps one order: v1 arriving after v0 proves v2 was not delivered.
    let v0 = client.recv().await;
    assert_eq!(
        (&v0["event"], &v0["data"]),
        (&json!("from-v0"), &json!("0")),
        "{v0}"
    );
    let v1 = client.recv().await;
    assert_eq!(v1["event"], "from-v1", "{v1}");
    assert_eq!(dropped_count(&server, "unknown_version").await, before + 1);
    assert_eq!(dropped_count(&server, "malformed").await, before_bad + 1);
    client.close().await;
    server.stop().await;
}
