//! The push decision tree end to end: online elsewhere in a two-node cluster, ineligible
//! types, preferences, throttling, reaction grouping, and what happens to devices that are
//! gone, refused or failing for a while; and the push component on its own (sent once per
//! event and device, bounded queue).

#[path = "push_support/mod.rs"]
mod push_support;
mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use push_support::flow::*;
use push_support::*;
use serde_json::{json, Value};
use support::*;
use switchboard::config::PushConfig;
use switchboard::event::{Event, EventKind, Meta, Target};
use switchboard::ids::{AppId, UserId};
use switchboard::push::store::EmbeddedPushStore;
use switchboard::push::{Device, Platform, Push};
use switchboard::store::Store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[tokio::test]
async fn the_decision_tree_skips_ineligible_refused_and_throttled_events() {
    let mut svc = Services::start(Vec::new()).await;
    let vapid = Vapid::new();
    let server = TestServer::start_with(|c| {
        web(c, &vapid);
        c.push.max_per_hour = 2;
    })
    .await;
    let api = server.api();
    let mut w = watcher(&server, &["alice", "yan", "zed"]).await;
    let alice = Browser::new(format!("{}/push/alice", svc.base));
    let yan = Browser::new(format!("{}/push/yan", svc.base));
    let zed = Browser::new(format!("{}/push/zed", svc.base));
    register(&server, &mut w, "alice", "web", alice.subscription()).await;
    register(&server, &mut w, "yan", "web", yan.subscription()).await;
    register(&server, &mut w, "zed", "web", zed.subscription()).await;

    // Preferences: alice turns off messages, yan turns off everything.
    let put = |user: &str, body: Value| {
        let api = &api;
        let path = format!("/users/{user}/push/preferences");
        async move { call(api, "PUT", &path, &body.to_string()).await }
    };
    assert_eq!(put("alice", json!({"types":{"MSG":false}})).await.0, 200);
    assert_eq!(put("yan", json!({"enabled":false})).await.0, 200);
    assert_eq!(put("yan", json!({"types":{"POST":true}})).await.0, 400);
    assert_eq!(put("yan", json!({"enabled":"no"})).await.0, 400);
    let (status, prefs) = call(&api, "GET", "/users/alice/push/preferences", "").await;
    assert_eq!(
        (status, prefs),
        (200, json!({"enabled":true,"types":{"MSG":false}}))
    );
    let (_, prefs) = call(&api, "GET", "/users/nobody/push/preferences", "").await;
    assert_eq!(prefs, json!({"enabled":true,"types":{}}));

    action(&api, "POST", "alice", "alice").await; // ineligible type (to the issuer)
    let body = json!({"to":["alice"],"notification_type":"order_status","message":"shipped"});
    assert_eq!(
        api.bus_call("POST", "/bus/notifications", &body).await.0,
        200
    ); // ineligible
    dm(&api, "bob", "alice", 600).await; // alice: MSG off
    dm(&api, "bob", "yan", 600).await; // yan: push off
    action(&api, "CONN", "bob", "alice").await; // pushed (1 of 2 this hour)
    let body = json!({"to":["alice"],"notification_type":"follow","message":"m","from":"carol"});
    assert_eq!(
        api.bus_call("POST", "/bus/notifications", &body).await.0,
        200
    ); // pushed (2)
    action(&api, "FSHR", "dave", "alice").await; // throttled
    dm(&api, "bob", "zed", 600).await; // the marker

    let p = payload(&alice, &svc.next().await);
    assert_eq!(
        (p["type"].as_str(), p["body"].as_str()),
        (Some("CONN"), Some("bob wants to connect"))
    );
    assert_eq!(p["url"], "/users/bob");
    let p = payload(&alice, &svc.next().await);
    assert_eq!(p["body"], "carol started following you");
    let p = payload(&zed, &svc.next().await);
    assert_eq!(p["body"], "bob sent you a message");
    assert!(svc.pending().is_none());
    server.stop().await;
}

#[tokio::test]
async fn an_event_the_full_offline_queues_refuse_is_still_pushed() {
    let mut svc = Services::start(Vec::new()).await;
    let vapid = Vapid::new();
    let server = TestServer::start_with(|c| {
        web(c, &vapid);
        c.offline.max_total_events = 1;
    })
    .await;
    let api = server.api();
    let mut w = watcher(&server, &["alice", "bob"]).await;
    let alice = Browser::new(format!("{}/push/alice", svc.base));
    register(&server, &mut w, "alice", "web", alice.subscription()).await;
    // Bob's queue takes the node's one place.
    action(&api, "FLLW", "carol", "bob").await;
    // Alice's message cannot be queued: the publisher hears it, and she is pushed anyway.
    let body = json!({"message_id":"m2","sender":"bob","participants":["alice"],
                      "content":"hi","conversation_id":"c2","ttl":600});
    let (status, v) = api.bus_call("POST", "/bus/messages", &body).await;
    assert_eq!(status, 503, "{v}");
    let p = payload(&alice, &svc.next().await);
    assert_eq!(p["body"], "bob sent you a message");
    assert!(svc.pending().is_none());
    server.stop().await;
}

#[tokio::test]
async fn reactions_are_grouped_into_one_push() {
    let mut svc = Services::start(Vec::new()).await;
    let vapid = Vapid::new();
    let server = TestServer::start_with(|c| {
        web(c, &vapid);
        c.push.react_group_secs = 1;
    })
    .await;
    let api = server.api();
    let mut w = watcher(&server, &["alice"]).await;
    let alice = Browser::new(format!("{}/push/alice", svc.base));
    register(&server, &mut w, "alice", "web", alice.subscription()).await;
    for who in ["bob", "carol", "bob", "dave"] {
        action(&api, "REACT", who, "alice").await;
    }
    let seen = svc.next().await;
    assert_eq!(
        seen.header("topic"),
        "reactions",
        "a newer group replaces it"
    );
    let p = payload(&alice, &seen);
    assert_eq!(p["type"], "REACT");
    assert_eq!(p["body"], "bob and 2 others reacted to your post");
    dm(&api, "erin", "alice", 600).await;
    let seen = svc.next().await;
    assert!(
        seen.headers.get("topic").is_none(),
        "messages never collapse"
    );
    let p = payload(&alice, &seen);
    assert_eq!(
        p["body"], "erin sent you a message",
        "one push for the whole group"
    );
    assert!(svc.pending().is_none());
    server.stop().await;
}

#[tokio::test]
async fn gone_devices_are_removed_refused_ones_not_retried_transient_ones_retried() {
    let mut svc = Services::start(Vec::new()).await;
    let vapid = Vapid::new();
    let server = TestServer::start_with(|c| web(c, &vapid)).await;
    let api = server.api();
    let mut w = watcher(&server, &["alice", "bob", "carol", "zed"]).await;
    let devices = [
        ("alice", Browser::new(format!("{}/push/gone-a", svc.base))),
        ("bob", Browser::new(format!("{}/push/bad-b", svc.base))),
        ("carol", Browser::new(format!("{}/push/flaky-c", svc.base))),
        ("zed", Browser::new(format!("{}/push/zed", svc.base))),
    ];
    for (user, b) in &devices {
        register(&server, &mut w, user, "web", b.subscription()).await;
    }
    svc.fail("/push/flaky-c", 2);
    for (user, _) in &devices {
        dm(&api, "x", user, 600).await;
    }
    let mut bodies = Vec::new();
    for _ in 0..6 {
        bodies.push(svc.next().await);
    }
    let paths: Vec<&str> = bodies.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/push/gone-a",
            "/push/bad-b",
            "/push/flaky-c",
            "/push/flaky-c",
            "/push/flaky-c",
            "/push/zed"
        ]
    );
    // The third attempt carried the same push, freshly encrypted.
    let p = payload(&devices[2].1, &bodies[4]);
    assert_eq!(p["body"], "x sent you a message");
    assert_eq!(payload(&devices[2].1, &bodies[2])["id"], p["id"]);
    assert!(
        registrations(&api, "alice").await.is_empty(),
        "410: registration removed"
    );
    assert_eq!(
        registrations(&api, "bob").await.len(),
        1,
        "400: kept, not retried"
    );
    assert!(svc.pending().is_none());
    server.stop().await;
}

#[tokio::test]
async fn no_push_while_the_user_is_online_on_another_node() {
    let mut svc = Services::start(Vec::new()).await;
    let vapid = Vapid::new();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("sbpush-{}-{nanos}", std::process::id());
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let (url, p) = (redis_url(), prefix.clone());
        let vapid = &vapid;
        nodes.push(
            TestServer::start_with(move |c| {
                web(c, vapid);
                c.redis.url = Some(url);
                c.redis.prefix = p;
                c.redis.lease_secs = 1;
            })
            .await,
        );
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    for n in [a, b] {
        let deadline = tokio::time::Instant::now() + WAIT;
        let up = |n: &TestServer| reqwest::get(format!("http://{}/up", n.addr));
        while up(n).await.unwrap().json::<Value>().await.unwrap()["redis"] != "up" {
            assert!(tokio::time::Instant::now() < deadline, "redis not up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // A node's connections count cluster-wide once its lease is in Redis.
    let mut conn = redis_conn(&redis_url()).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let n: usize = redis::AsyncCommands::zcard(&mut conn, format!("{prefix}:nodes"))
            .await
            .unwrap();
        if n == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "leases not written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut w = watcher(a, &["alice", "zed"]).await;
    let alice = Browser::new(format!("{}/push/alice", svc.base));
    let zed = Browser::new(format!("{}/push/zed", svc.base));
    let zed_id = register(b, &mut w, "zed", "web", zed.subscription()).await;
    // Alice registers on node A and stays connected there.
    let mut online = a.bus("alice").await;
    online
        .send(json!({"type":"register_push","platform":"web","token":alice.subscription()}))
        .await;
    online.recv_type("push_registered").await;
    wait_status(&mut w, "alice", "online").await;
    // Registrations and preferences are cluster-wide (Redis): node B sees what A stored.
    assert_eq!(registrations(&b.api(), "alice").await.len(), 1);
    let prefs = json!({"enabled":true,"types":{"REACT":false}});
    let path = "/users/alice/push/preferences";
    assert_eq!(call(&a.api(), "PUT", path, &prefs.to_string()).await.0, 200);
    assert_eq!(call(&b.api(), "GET", path, "").await, (200, prefs));

    dm(&b.api(), "bob", "alice", 600).await; // online on A: no push
    dm(&b.api(), "bob", "zed", 600).await; // marker
    let p = payload(&zed, &svc.next().await);
    assert_eq!(p["body"], "bob sent you a message");
    assert!(
        svc.pending().is_none(),
        "nothing for alice while she is online"
    );

    // Once she is gone everywhere, node B pushes to her device.
    online.close().await;
    wait_status(&mut w, "alice", "offline").await;
    dm(&b.api(), "carol", "alice", 600).await;
    let p = payload(&alice, &svc.next().await);
    assert_eq!(p["body"], "carol sent you a message");
    // Deleted on one node, gone on the other.
    let path = format!("/users/zed/push/{zed_id}");
    assert_eq!(call(&a.api(), "DELETE", &path, "").await.0, 200);
    assert!(registrations(&b.api(), "zed").await.is_empty());
    for n in nodes {
        n.stop().await;
    }
}

/// The push component alone (no server): an embedded store and the webhook provider
/// pointing at `svc`, one delivery at a time, `capacity` events queued at most.
fn component(svc: &Services, capacity: usize) -> Push {
    let config = PushConfig {
        webhook_url: Some(format!("{}/hook/component", svc.base)),
        webhook_secret: Some("s".into()),
        concurrency: 1,
        queue_capacity: capacity,
        // Two pushes an hour: a duplicate offer must not spend one.
        max_per_hour: 2,
        ..PushConfig::default()
    };
    let store = Store::open(&temp_dir("push-store"), 1000).unwrap();
    Push::new(&config, Arc::new(EmbeddedPushStore::new(store))).unwrap()
}

fn message_for(user: &str, id: &str) -> Event {
    let ts_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    Event {
        app: AppId::new(APP_ID),
        target: Target::User(UserId::new(user)),
        kind: EventKind::DirectMessage {
            message_id: "m".into(),
            sender: "bob".into(),
            preview: "hi".into(),
            conversation_id: None,
        },
        exclude: None,
        meta: Meta {
            id: Some(id.into()),
            ts_ms,
            ..Meta::default()
        },
    }
}

#[tokio::test]
async fn an_event_offered_twice_is_pushed_once_per_device() {
    let mut svc = Services::start(Vec::new()).await;
    let push = component(&svc, 100);
    let (app, alice) = (AppId::new(APP_ID), UserId::new("alice"));
    for (platform, token) in [(Platform::Android, "tok-a"), (Platform::Ios, "tok-b")] {
        let device = Device::Token(token.into());
        push.register(&app, &alice, platform, device).await.unwrap();
    }
    let (tracker, stop) = (TaskTracker::new(), CancellationToken::new());
    push.spawn(&tracker, stop.clone());
    assert!(push.offer(message_for("alice", "7-1"), true));
    assert!(
        push.offer(message_for("alice", "7-1"), true),
        "the same event again"
    );
    assert!(push.offer(message_for("alice", "7-2"), true), "the marker");
    let mut got = Vec::new();
    for _ in 0..4 {
        let v = svc.next().await.json();
        got.push(format!(
            "{}@{}",
            v["notification"]["id"], v["device"]["token"]
        ));
    }
    got[..2].sort();
    got[2..].sort();
    assert_eq!(
        got,
        [
            r#""7-1"@"tok-a""#,
            r#""7-1"@"tok-b""#,
            r#""7-2"@"tok-a""#,
            r#""7-2"@"tok-b""#
        ]
    );
    assert!(svc.pending().is_none(), "7-1 reached each device once");
    stop.cancel();
    tracker.close();
    tracker.wait().await;
}

#[tokio::test]
async fn the_push_queue_is_bounded_and_online_users_are_never_queued() {
    let svc = Services::start(Vec::new()).await;
    let push = component(&svc, 2); // no worker: nothing drains the queue
    assert!(
        !push.offer(message_for("alice", "1-1"), false),
        "online: no push"
    );
    assert!(push.offer(message_for("alice", "1-2"), true));
    assert!(push.offer(message_for("alice", "1-3"), true));
    assert!(
        !push.offer(message_for("alice", "1-4"), true),
        "full: dropped"
    );
}
