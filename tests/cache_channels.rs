//! Cache channels: the last event reaches new subscribers; a miss is announced.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

#[tokio::test]
async fn empty_cache_channel_announces_a_miss() {
    let server = TestServer::start().await;
    let mut c = server.pusher().await;
    c.subscribe("cache-empty").await;
    let miss = c.recv().await;
    assert_eq!(
        miss,
        json!({"event":"pusher:cache_miss","channel":"cache-empty"})
    );
    server.stop().await;
}

#[tokio::test]
async fn new_subscribers_get_the_last_event_right_after_success() {
    let server = TestServer::start().await;
    let api = server.api();
    for n in [1, 2] {
        let (status, _) = api
            .trigger(
                json!({"name":"price","channel":"cache-ticker","data":format!("{{\"n\":{n}}}")}),
            )
            .await;
        assert_eq!(status, 200);
    }
    let mut c = server.pusher().await;
    c.subscribe("cache-ticker").await;
    let cached = c.recv().await;
    assert_eq!(cached["event"], "price");
    assert_eq!(cached["channel"], "cache-ticker");
    assert_eq!(cached["data"], "{\"n\":2}", "only the last event is kept");
    // A plain channel has no cache frame: the next frame answers our ping.
    c.subscribe("not-cached").await;
    c.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn private_cache_channels_need_auth_and_keep_client_events() {
    let server = TestServer::start().await;
    let mut a = server.pusher().await;
    a.subscribe_private("private-cache-room").await;
    assert_eq!(a.recv().await["event"], "pusher:cache_miss");
    a.send(json!({"event":"client-move","channel":"private-cache-room","data":{"x":3}}))
        .await;
    a.ping().await;
    let mut b = server.pusher().await;
    b.subscribe_private("private-cache-room").await;
    let cached = b.recv().await;
    assert_eq!(cached["event"], "client-move");
    assert_eq!(cached["data"], json!({"x":3}));
    server.stop().await;
}

#[tokio::test]
async fn cached_events_expire() {
    let server = TestServer::start_with(|c| c.server.cache_ttl_secs = 1).await;
    let api = server.api();
    api.trigger(json!({"name":"e","channel":"cache-short","data":"x"}))
        .await;
    // The TTL is the behaviour under test: wait past it.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let mut c = server.pusher().await;
    c.subscribe("cache-short").await;
    assert_eq!(c.recv().await["event"], "pusher:cache_miss");
    server.stop().await;
}
