//! Cache channels, webhooks, tag filters, delta compression and offline queues on a two-node
//! cluster.
//!
//! Needs `SWITCHBOARD_TEST_REDIS_URL` (scripts/test.sh starts a Redis and exports it).

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::hooks::receiver;
use support::*;
use switchboard::config::{Config, WebhookConfig};

/// Two nodes of one fresh cluster, each adjusted by `f`, both with Redis up.
async fn two_nodes(test: &str, f: impl Fn(&mut Config)) -> (TestServer, TestServer) {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("sbext-{test}-{}-{nanos}", std::process::id());
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let url = redis_url();
        let p = prefix.clone();
        nodes.push(
            TestServer::start_with(|c| {
                c.redis.url = Some(url);
                c.redis.prefix = p;
                c.redis.lease_secs = 1;
                f(c);
            })
            .await,
        );
    }
    for n in &nodes {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let body: Value = reqwest::get(format!("http://{}/up", n.addr))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if body["redis"] == "up" {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis not up: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let b = nodes.pop().unwrap();
    (nodes.pop().unwrap(), b)
}

#[tokio::test]
async fn cache_channels_work_across_nodes() {
    let (a, b) = two_nodes("cache", |_| {}).await;
    let (status, _) = b
        .api()
        .trigger(json!({"name":"px","channel":"cache-x","data":"{\"v\":1}"}))
        .await;
    assert_eq!(status, 200);
    let mut c = a.pusher().await;
    c.subscribe("cache-x").await;
    let cached = c.recv().await;
    assert_eq!(
        (cached["event"].as_str(), cached["data"].as_str()),
        (Some("px"), Some("{\"v\":1}"))
    );
    c.subscribe("cache-fresh").await;
    assert_eq!(c.recv().await["event"], "pusher:cache_miss");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_channel_is_vacated_once_and_only_when_no_node_has_subscribers() {
    let mut r = receiver(0).await;
    let hook = WebhookConfig {
        url: r.url.clone(),
        event_types: vec!["channel_occupied".into(), "channel_vacated".into()],
        channel_prefix: None,
    };
    let (a, b) = two_nodes("hooks", |c| {
        c.app.webhooks = vec![hook.clone()];
        c.webhooks.leave_delay_ms = 300;
        c.webhooks.batch_ms = 20;
    })
    .await;
    let mut on_a = a.pusher().await;
    let mut on_b = b.pusher().await;
    on_a.subscribe("shared").await;
    on_b.subscribe("shared").await;
    let occupied = r.expect("channel_occupied").await;
    assert_eq!(occupied["channel"], "shared");
    // A leaves while B still holds the channel: nothing may be announced.
    on_a.send(json!({"event":"pusher:unsubscribe","data":{"channel":"shared"}}))
        .await;
    assert_eq!(
        r.names_within(Duration::from_millis(1200)).await,
        Vec::<String>::new()
    );
    on_b.send(json!({"event":"pusher:unsubscribe","data":{"channel":"shared"}}))
        .await;
    let vacated = r.expect("channel_vacated").await;
    assert_eq!(vacated["channel"], "shared");
    // Both nodes evaluated the channel; only one announced it.
    assert_eq!(
        r.names_within(Duration::from_millis(1200)).await,
        Vec::<String>::new()
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn tags_and_deltas_survive_the_trip_through_redis() {
    let (a, b) = two_nodes("tags", |_| {}).await;
    let mut goals = a.pusher().await;
    goals
        .send(json!({"event":"pusher:subscribe","data":{"channel":"m","filter":{"kind":{"eq":"goal"}}}}))
        .await;
    goals.expect("pusher_internal:subscription_succeeded").await;
    let mut d = a.pusher().await;
    d.send(json!({"event":"pusher:enable_delta_compression","data":{}}))
        .await;
    d.expect("pusher:delta_compression_enabled").await;
    d.subscribe("m").await;
    let api = b.api();
    let big = "y".repeat(300);
    for kind in ["card", "goal"] {
        let data = json!({"kind":kind,"pad":big}).to_string();
        let (s, _) = api
            .trigger(json!({"name":"ev","channel":"m","data":data,"tags":{"kind":kind}}))
            .await;
        assert_eq!(s, 200);
    }
    let got = goals.recv().await;
    assert_eq!(got["event"], "ev");
    assert!(got["data"].as_str().unwrap().contains("goal"), "{got}");
    goals.ping().await;
    assert_eq!(d.recv().await["sequence"], 1);
    assert_eq!(d.recv().await["event"], "pusher:delta");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn replay_comes_from_redis_streams_on_any_node() {
    let (a, b) = two_nodes("replay", |_| {}).await;
    let mut claims = bus_claims("u");
    claims.channels = vec!["room-*".into()];
    let send = |n: u64| json!({"name":"m","channel":"room-x","data":json!({"n":n}).to_string()});
    let mut c = a.bus_with(&claims).await;
    c.send(json!({"type":"subscribe","rooms":["room-x"]})).await;
    c.recv_type("subscribed").await;
    assert_eq!(b.api().trigger(send(1)).await.0, 200);
    let since = c.recv_type("event").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(c);
    for n in 2..=4 {
        assert_eq!(b.api().trigger(send(n)).await.0, 200);
    }
    // Reconnect to the other node.
    let mut c = b.bus_with(&claims).await;
    c.send(json!({"type":"subscribe","rooms":["room-x"],"since":since}))
        .await;
    c.recv_type("subscribed").await;
    let replay = c.recv_type("replay").await;
    assert_eq!(
        (replay["count"].as_u64(), replay["complete"].as_bool()),
        (Some(3), Some(true))
    );
    for n in 2..=4 {
        let e = c.recv_type("event").await;
        let data: Value = serde_json::from_str(e["data"].as_str().unwrap()).unwrap();
        assert_eq!(data["n"], n);
    }
    assert_eq!(a.api().trigger(send(5)).await.0, 200);
    let live = c.recv_type("event").await;
    assert!(live["data"].as_str().unwrap().contains("5"));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn the_offline_queue_is_cluster_wide() {
    let (a, b) = two_nodes("offline", |c| c.offline.max_events = 3).await;
    let api = a.api();
    // Queued through node A while the user is nowhere; one too many: the oldest low goes.
    api.notify("olga", "low", json!({"priority":"low"})).await;
    for i in 1..=3 {
        let p = if i == 2 { "high" } else { "normal" };
        api.notify("olga", &format!("m{i}"), json!({"priority": p}))
            .await;
    }
    // Connecting to node B drains it.
    let mut c = b.bus("olga").await;
    c.subscribe(&["notification"], &[]).await;
    let replay = c.recv_type("replay").await;
    assert_eq!(
        (&replay["count"], &replay["dropped"], &replay["complete"]),
        (&json!(3), &json!(1), &json!(false)),
        "{replay}"
    );
    let mut ids = Vec::new();
    for i in 1..=3 {
        let v = c.recv_type("notification").await;
        assert_eq!(v["message"], format!("m{i}"));
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    // While she is connected on B, a publish on A is live, not queued (unless high).
    api.notify("olga", "live", json!({})).await;
    assert_eq!(c.recv_type("notification").await["message"], "live");
    c.close().await;
    // The high one (m2) was not acknowledged: it comes back, on node A this time.
    let mut c = a.bus("olga").await;
    c.subscribe(&["notification"], &[]).await;
    assert_eq!(c.recv_type("replay").await["count"], 1);
    let again = c.recv_type("notification").await;
    assert_eq!(again["id"].as_str(), Some(ids[1].as_str()));
    c.send(json!({"type":"ack","ids":[ids[1]]})).await;
    assert_eq!(c.recv_type("acked").await["count"], 1);
    c.close().await;
    let mut c = b.bus("olga").await;
    c.subscribe(&["notification"], &[]).await;
    c.ping().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_node_serves_only_once_its_users_count_in_the_cluster() {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("sbext-lease-{}-{nanos}", std::process::id());
    let start = |p: String| {
        let url = redis_url();
        TestServer::start_with(move |c| {
            c.redis.url = Some(url);
            c.redis.prefix = p;
            c.redis.lease_secs = 1;
        })
    };
    let b = start(prefix.clone()).await;
    // The user connects to A the moment it starts; B publishes to her right away.
    let a = start(prefix).await;
    let mut c = a.bus("uma").await;
    c.subscribe(&["notification"], &[]).await;
    b.api().notify("uma", "hello", json!({})).await;
    assert_eq!(c.recv_type("notification").await["message"], "hello");
    c.close().await;
    // Had A's connections not counted yet, the event would also sit in her offline queue.
    let mut c = a.bus("uma").await;
    c.subscribe(&["notification"], &[]).await;
    c.ping().await;
    a.stop().await;
    b.stop().await;
}

/// Two nodes whose offline queues share `max_total_events = total` (and `ttl_secs`), and
/// the cluster's key prefix.
/// Two nodes whose offline queues hold `total` events in each shard (on a Redis Cluster
/// each shard keeps its own share of `max_total_events`: see `offline::redis`).
async fn two_nodes_bounded(
    test: &str,
    total: u64,
    ttl_secs: u64,
) -> (TestServer, TestServer, String) {
    let shards = redis_as_server(&redis_url(), "probe").await.shard_count();
    let prefix = std::sync::Mutex::new(String::new());
    let (a, b) = two_nodes(test, |c| {
        c.offline.max_total_events = total * shards;
        c.offline.ttl_secs = ttl_secs;
        *prefix.lock().unwrap() = c.redis.prefix.clone();
    })
    .await;
    (a, b, prefix.into_inner().unwrap())
}

/// `first`, and a user named after `second` whose keys are in the same shard (one shard's
/// total is what bounds them both).
async fn alike(first: &str, second: &str) -> (String, String) {
    let redis = redis_as_server(&redis_url(), "probe").await;
    let shard = redis.user_shard(APP_ID, first);
    let other = (0..)
        .map(|i| format!("{second}{i}"))
        .find(|u| redis.user_shard(APP_ID, u) == shard)
        .unwrap();
    (first.to_owned(), other)
}

/// The cluster's count of queued events (`{shard}:qtotal`, summed over the shards), read
/// from Redis.
async fn queued_total(prefix: &str) -> i64 {
    let mut total = 0;
    for (mut conn, qtotal) in redis_key_in_every_shard(&redis_url(), prefix, &["qtotal"]).await {
        let n: Option<i64> = redis::cmd("GET")
            .arg(&qtotal)
            .query_async(&mut conn)
            .await
            .unwrap();
        total += n.unwrap_or(0);
    }
    total
}

#[tokio::test]
async fn one_total_bounds_the_offline_queues_of_the_whole_cluster() {
    let (a, b, prefix) = two_nodes_bounded("offline-total", 3, 3600).await;
    let (tia, uma) = alike("tia", "uma").await;
    let (tia, uma) = (tia.as_str(), uma.as_str());
    a.api().notify(tia, "t1", json!({})).await;
    b.api().notify(tia, "t2", json!({})).await;
    a.api().notify(uma, "u1", json!({"priority":"high"})).await;
    // A fourth, through either node, is refused loudly, not accepted and lost.
    let body = json!({"to":[uma],"notification_type":"t","message":"u2"});
    let (status, v) = b.api().bus_call("POST", "/bus/notifications", &body).await;
    assert_eq!(status, 503, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("full")),
        "{v}"
    );

    // Draining tia's queue gives its share back.
    let mut c = b.bus(tia).await;
    c.subscribe(&["notification"], &[]).await;
    assert_eq!(c.recv_type("replay").await["count"], 2);
    for m in ["t1", "t2"] {
        assert_eq!(c.recv_type("notification").await["message"], m);
    }
    c.ping().await; // the drain (and its settle) is done
    c.close().await;
    a.api().notify(uma, "u3", json!({})).await;

    // uma gets what was kept, and hears of the refused one.
    let mut c = a.bus(uma).await;
    c.subscribe(&["notification"], &[]).await;
    let replay = c.recv_type("replay").await;
    assert_eq!(
        (&replay["count"], &replay["dropped"], &replay["complete"]),
        (&json!(2), &json!(1), &json!(false)),
        "{replay}"
    );
    let mut ids = Vec::new();
    for m in ["u1", "u3"] {
        let v = c.recv_type("notification").await;
        assert_eq!(v["message"], m);
        ids.push(v["id"].clone());
    }
    c.ping().await;
    assert_eq!(
        queued_total(&prefix).await,
        1,
        "u1 is high: kept until acked"
    );
    c.send(json!({"type":"ack","id":ids[0]})).await;
    assert_eq!(c.recv_type("acked").await["count"], 1);
    assert_eq!(queued_total(&prefix).await, 0, "every share given back");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn the_share_of_a_queue_that_expired_unread_is_given_back() {
    let (a, b, prefix) = two_nodes_bounded("offline-reclaim", 2, 1).await;
    let (vic, wes) = alike("vic", "wes").await;
    let (vic, wes) = (vic.as_str(), wes.as_str());
    a.api().notify(vic, "v1", json!({})).await;
    b.api().notify(vic, "v2", json!({})).await;
    // Nobody ever reads vic's queue. Its keys expire after `ttl_secs` (what is under test);
    // from then on the cluster has room again.
    let body = json!({"to":[wes],"notification_type":"t","message":"w1"});
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, v) = a.api().bus_call("POST", "/bus/notifications", &body).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{v}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "vic's expired queue still counts against the total"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(queued_total(&prefix).await, 1, "only wes's event counts");
    a.stop().await;
    b.stop().await;
}

/// Publishes `PUBLISHERS` concurrent streams for `user` through `a` while the user connects
/// to `b`; asserts each event arrives once, each stream in its order, all in id order.
async fn stream_while_connecting(a: &TestServer, b: &TestServer, user: &str) {
    const PUBLISHERS: usize = 8;
    const EACH: usize = 60;
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let (api, user) = (a.api(), user.to_owned());
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                api.notify(&user, &format!("{p}-{i}"), json!({})).await;
            }
        }));
    }
    // Connect somewhere in the middle of the streams.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut c = b.bus(user).await;
    c.subscribe(&["notification"], &[]).await;
    let mut got: Vec<(String, String)> = Vec::new();
    while got.len() < PUBLISHERS * EACH {
        let v = c.recv().await;
        match v["type"].as_str() {
            Some("notification") => got.push((
                v["id"].as_str().unwrap().to_owned(),
                v["message"].as_str().unwrap().to_owned(),
            )),
            Some("replay") => {}
            other => panic!("unexpected {other:?}: {v}"),
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    // A duplicate takes the place of a later event in the count, so it shows here.
    for p in 0..PUBLISHERS {
        let mine: Vec<&str> = got
            .iter()
            .map(|(_, m)| m.as_str())
            .filter(|m| m.starts_with(&format!("{p}-")))
            .collect();
        let want: Vec<String> = (0..EACH).map(|i| format!("{p}-{i}")).collect();
        assert_eq!(mine, want, "{user}: publisher {p}");
    }
    let ids: Vec<(u64, u64)> = got
        .iter()
        .map(|(id, _)| {
            let (ms, seq) = id.split_once('-').unwrap();
            (ms.parse().unwrap(), seq.parse().unwrap())
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{user}: ids in order");
    c.ping().await;
    c.close().await;
}

#[tokio::test]
async fn users_connecting_on_one_node_while_another_streams_get_each_event_once_in_order() {
    let (a, b) = two_nodes("offline-stream", |_| {}).await;
    // Events queued for the absent user can still be in flight to node B when the session
    // registers there: they are queued and delivered live, and the drain must drop one copy.
    // That window is short; a few users make it likely to be hit.
    for user in ["xu-1", "xu-2", "xu-3"] {
        stream_while_connecting(&a, &b, user).await;
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn short_visits_are_announced_once_across_nodes() {
    let mut r = receiver(0).await;
    let hook = WebhookConfig {
        url: r.url.clone(),
        event_types: vec!["channel_occupied".into(), "channel_vacated".into()],
        channel_prefix: None,
    };
    let (a, b) = two_nodes("short", |c| {
        c.app.webhooks = vec![hook.clone()];
        c.webhooks.leave_delay_ms = 300;
        c.webhooks.batch_ms = 20;
    })
    .await;
    // A visit on one node, shorter than the count sync.
    let mut on_a = a.pusher().await;
    on_a.subscribe("brief").await;
    on_a.send(json!({"event":"pusher:unsubscribe","data":{"channel":"brief"}}))
        .await;
    on_a.ping().await;
    assert_eq!(
        r.names_within(Duration::from_millis(1500)).await,
        ["channel_occupied", "channel_vacated"]
    );
    // Two overlapping short visits, one per node: still one of each, in order.
    let mut on_b = b.pusher().await;
    on_a.subscribe("brief-2").await;
    on_b.subscribe("brief-2").await;
    on_a.send(json!({"event":"pusher:unsubscribe","data":{"channel":"brief-2"}}))
        .await;
    on_b.send(json!({"event":"pusher:unsubscribe","data":{"channel":"brief-2"}}))
        .await;
    on_a.ping().await;
    on_b.ping().await;
    assert_eq!(
        r.names_within(Duration::from_millis(1500)).await,
        ["channel_occupied", "channel_vacated"]
    );
    a.stop().await;
    b.stop().await;
}
