//! The broker's interest routing on its own, against the real Redis (a Redis Cluster too):
//! a topic is heard as soon as `Hub::settled` resolves after its first subscriber, which is
//! what lets a session answer a subscription knowing nothing published after it is missed.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::*;
use switchboard::broker::{Broker, RedisBroker};
use switchboard::config::{HistoryConfig, OfflineConfig};
use switchboard::event::Event;
use switchboard::hub::{Hub, Recipient};
use switchboard::ids::{AppId, ChannelName, SocketId};
use switchboard::redis_base::{Redis, Topology};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_is_heard_once_settled_resolves() {
    let prefix = format!("sbtest-routes-{}-{}", std::process::id(), now());
    let redis = Redis::open(
        Topology::Detect(redis_url()),
        &prefix,
        "n".into(),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let (tracker, stop) = (TaskTracker::new(), CancellationToken::new());
    redis.spawn_connector(&tracker, stop.clone());
    let hub = Hub::new();
    let broker = RedisBroker::new(
        redis.clone(),
        Duration::from_secs(60),
        HistoryConfig::default(),
        OfflineConfig::default(),
    );
    broker.spawn_subscriber(hub.clone(), &tracker, stop.clone());
    let deadline = tokio::time::Instant::now() + WAIT;
    while !redis.is_up() {
        assert!(tokio::time::Instant::now() < deadline, "redis never up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let app = AppId::new(APP_ID);
    // Each round a new channel, published to right after `settled`: had the answer not
    // waited for the SUBSCRIBE, the publish (on another connection) would often win.
    for i in 0..100 {
        let ch = ChannelName::parse(&format!("room-{i}")).unwrap();
        let (outbox, mut rx) = hub.outbox(16, CancellationToken::new());
        let r = Recipient {
            encoder: &switchboard::protocol::pusher::ENCODER,
            outbox,
            filter: None,
            delta: None,
        };
        hub.subscribe(&app, &ch, SocketId::next(1), r);
        hub.settled().await;
        let e = Event::message(app.clone(), ch, "e", Arc::from("\"x\""));
        broker.publish(e, None).await.unwrap();
        let mut out = Vec::new();
        let got = tokio::time::timeout(Duration::from_secs(2), rx.take(&mut out, 1)).await;
        assert!(
            got.is_ok(),
            "round {i}: published after settled, never heard"
        );
    }
    stop.cancel();
}
