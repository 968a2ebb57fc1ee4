//! Offline queues: user events for a user with no connection are kept (durably, in the
//! embedded store) and delivered in order when the user connects; `high` events are kept
//! until acknowledged; per-user limits drop the oldest low-priority events first and say so.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// Subscribes to notifications and messages; returns the `subscribed` answer.
async fn subscribe_user_events(c: &mut BusClient) -> Value {
    c.subscribe(&["notification", "message"], &[]).await
}

/// Reads `n` notifications, returning their messages and ids.
async fn messages(c: &mut BusClient, n: usize) -> (Vec<String>, Vec<String>) {
    let (mut msgs, mut ids) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let v = c.recv_type("notification").await;
        msgs.push(v["message"].as_str().unwrap().to_owned());
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    (msgs, ids)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn events_for_an_absent_user_arrive_in_order_when_they_connect() {
    let server = TestServer::start().await;
    let api = server.api();
    for i in 1..=5 {
        api.notify("amy", &format!("n{i}"), json!({})).await;
    }
    let mut c = server.bus("amy").await;
    subscribe_user_events(&mut c).await;
    let replay = c.recv_type("replay").await;
    assert_eq!(replay["stream"], "user");
    assert_eq!(replay["since"], Value::Null);
    assert_eq!(
        (replay["count"].clone(), replay["complete"].clone()),
        (json!(5), json!(true))
    );
    assert_eq!(replay["dropped"], 0);
    let (msgs, _) = messages(&mut c, 5).await;
    assert_eq!(msgs, strings(&["n1", "n2", "n3", "n4", "n5"]));
    // Then live.
    api.notify("amy", "live", json!({})).await;
    assert_eq!(c.recv_type("notification").await["message"], "live");
    c.close().await;

    // Delivered means gone: the next connection has nothing queued.
    let mut c = server.bus("amy").await;
    subscribe_user_events(&mut c).await;
    c.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn a_pusher_sign_in_receives_the_queue_on_its_user_channel() {
    let server = TestServer::start().await;
    let api = server.api();
    let body = json!({"name":"invoice","channel":"#server-to-user-bo","data":"{\"n\":1}"});
    assert_eq!(api.trigger(body).await.0, 200);
    api.notify("bo", "hello", json!({})).await;
    let mut p = server.pusher().await;
    p.signin(r#"{"id":"bo"}"#).await;
    let first = p.recv().await;
    assert_eq!(first["event"], "invoice", "{first}");
    assert_eq!(first["channel"], "#server-to-user-bo");
    let second = p.recv().await;
    assert_eq!(second["event"], "notification", "{second}");
    p.ping().await;
    // A bus session afterwards finds the queue empty.
    let mut c = server.bus("bo").await;
    subscribe_user_events(&mut c).await;
    c.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn the_queue_survives_a_restart() {
    let dir = temp_dir("restart");
    let d = dir.clone();
    let server = TestServer::start_with(move |c| c.data.dir = d).await;
    let api = server.api();
    for i in 1..=3 {
        api.notify("cy", &format!("before-{i}"), json!({})).await;
    }
    server.stop().await;

    let d = dir.clone();
    let server = TestServer::start_with(move |c| c.data.dir = d).await;
    let mut c = server.bus("cy").await;
    subscribe_user_events(&mut c).await;
    assert_eq!(c.recv_type("replay").await["count"], 3);
    let (msgs, _) = messages(&mut c, 3).await;
    assert_eq!(msgs, strings(&["before-1", "before-2", "before-3"]));
    server.stop().await;
}

#[tokio::test]
async fn expired_events_are_not_delivered() {
    let server = TestServer::start().await;
    let api = server.api();
    api.notify("di", "short", json!({"ttl": 1})).await;
    api.notify("di", "long", json!({"ttl": 60})).await;
    // The ttl is what is under test: wait past it.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut c = server.bus("di").await;
    subscribe_user_events(&mut c).await;
    let replay = c.recv_type("replay").await;
    assert_eq!(replay["count"], 1, "{replay}");
    assert_eq!(replay["complete"], true, "an expired event is not a gap");
    assert_eq!(c.recv_type("notification").await["message"], "long");
    server.stop().await;
}

#[tokio::test]
async fn high_priority_events_come_back_until_acknowledged() {
    let server = TestServer::start().await;
    let api = server.api();
    let mut c = server.bus("ed").await;
    subscribe_user_events(&mut c).await;
    // The drain of the (empty) queue runs after `subscribed` and is silent; the pong comes
    // after it. Without this a high event published now may be read by that drain and
    // arrive after a `replay` header instead of live: correct, but not what is under test.
    c.ping().await;
    api.notify("ed", "urgent", json!({"priority":"high"})).await;
    api.notify("ed", "casual", json!({})).await;
    let (msgs, ids) = messages(&mut c, 2).await;
    assert_eq!(msgs, strings(&["urgent", "casual"]));
    c.close().await;

    // Not acknowledged: delivered again (only the high one).
    let mut c = server.bus("ed").await;
    subscribe_user_events(&mut c).await;
    assert_eq!(c.recv_type("replay").await["count"], 1);
    let again = c.recv_type("notification").await;
    assert_eq!(
        (again["message"].as_str(), again["id"].as_str()),
        (Some("urgent"), Some(&*ids[0]))
    );
    c.send(json!({"type":"ack","id": ids[0]})).await;
    assert_eq!(c.recv_type("acked").await["count"], 1);
    c.close().await;

    let mut c = server.bus("ed").await;
    subscribe_user_events(&mut c).await;
    c.ping().await;
    // A bad ack is refused, the connection stays.
    c.send(json!({"type":"ack"})).await;
    c.expect_error("E-WS-INVALID").await;
    c.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn a_full_queue_drops_the_oldest_low_priority_events_first_and_says_so() {
    let server = TestServer::start_full(|c| c.offline.max_events = 4, true).await;
    let api = server.api();
    api.notify("fi", "low-1", json!({"priority":"low"})).await;
    api.notify("fi", "n-1", json!({})).await;
    api.notify("fi", "low-2", json!({"priority":"low"})).await;
    api.notify("fi", "n-2", json!({})).await;
    api.notify("fi", "n-3", json!({})).await; // drops low-1
    api.notify("fi", "h-1", json!({"priority":"high"})).await; // drops low-2
    api.notify("fi", "n-4", json!({})).await; // drops n-1
    let mut c = server.bus("fi").await;
    subscribe_user_events(&mut c).await;
    let replay = c.recv_type("replay").await;
    assert_eq!(
        (&replay["count"], &replay["dropped"], &replay["complete"]),
        (&json!(4), &json!(3), &json!(false)),
        "{replay}"
    );
    let (msgs, _) = messages(&mut c, 4).await;
    assert_eq!(msgs, strings(&["n-2", "n-3", "h-1", "n-4"]));
    let url = format!("http://{}/metrics", server.metrics_addr.unwrap());
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    let dropped = |p: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("switchboard_offline_dropped_total{")
                    && l.contains(&format!("priority=\"{p}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(dropped("low") >= 2 && dropped("normal") >= 1, "{text}");
    server.stop().await;
}

#[tokio::test]
async fn a_user_connecting_while_events_stream_in_gets_each_exactly_once_in_order() {
    let server = TestServer::start().await;
    let api = server.api();
    const N: usize = 300;
    let publisher = tokio::spawn(async move {
        for i in 0..N {
            api.notify("gu", &i.to_string(), json!({})).await;
        }
    });
    // Connect somewhere in the middle of the stream.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut c = server.bus("gu").await;
    subscribe_user_events(&mut c).await;
    let mut got = Vec::new();
    while got.len() < N {
        let v = c.recv().await;
        match v["type"].as_str() {
            Some("notification") => {
                got.push(v["message"].as_str().unwrap().parse::<usize>().unwrap())
            }
            Some("replay") => {}
            other => panic!("unexpected {other:?}: {v}"),
        }
    }
    publisher.await.unwrap();
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    c.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn subscribed_reports_stream_heads_to_resume_from() {
    let server = TestServer::start().await;
    let api = server.api();
    let mut claims = bus_claims("hu");
    claims.channels = vec!["room-*".into()];
    let body = json!({"name":"m","channel":"room-1","data":"{}"});
    assert_eq!(api.trigger(body.clone()).await.0, 200);
    let mut c = server.bus_with(&claims).await;
    c.send(json!({"type":"subscribe","rooms":["room-1","room-2"]}))
        .await;
    let sub = c.recv_type("subscribed").await;
    let head = sub["heads"]["room:room-1"]
        .as_str()
        .expect("head of room-1")
        .to_owned();
    assert!(sub["heads"].get("room:room-2").is_none(), "{sub}");
    c.close().await;
    // Resuming from the head replays only what came after it.
    assert_eq!(api.trigger(body).await.0, 200);
    let mut c = server.bus_with(&claims).await;
    c.send(json!({"type":"subscribe","rooms":["room-1"],"since":{"room:room-1":head}}))
        .await;
    c.recv_type("subscribed").await;
    let replay = c.recv_type("replay").await;
    assert_eq!(
        (&replay["count"], &replay["complete"]),
        (&json!(1), &json!(true))
    );
    server.stop().await;
}

#[tokio::test]
async fn low_priority_events_give_way_to_high_ones_under_a_stalled_reader() {
    let server = TestServer::start_full(|c| c.server.outbox_capacity = 32, true).await;
    let api = server.api();
    let mut claims = bus_claims("iv");
    claims.channels = vec!["room-*".into()];
    let mut c = server.bus_with(&claims).await;
    c.subscribe(&[], &["room-s"]).await;
    // The client stops reading: kernel buffers fill, then the outbox.
    let blob = "x".repeat(9_000);
    let event = |i: usize, p: &str| {
        json!({"name":"e","channel":"room-s","data":json!({"i":i,"b":blob}).to_string(),
               "priority":p})
    };
    const LOW: usize = 1_500;
    for chunk in (0..LOW).collect::<Vec<_>>().chunks(10) {
        let batch: Vec<Value> = chunk.iter().map(|i| event(*i, "low")).collect();
        let (status, v) = api
            .request(
                "POST",
                "/apps/app-id/batch_events",
                &[],
                &json!({"batch":batch}).to_string(),
            )
            .await;
        assert_eq!(status, 200, "{v}");
    }
    for i in 0..5 {
        assert_eq!(api.trigger(event(LOW + i, "high")).await.0, 200);
    }
    // Read everything now: every high event arrives, many low ones did not.
    let mut lows = 0;
    let mut highs = Vec::new();
    while highs.len() < 5 {
        let v = c.recv_type("event").await;
        let data: Value = serde_json::from_str(v["data"].as_str().unwrap()).unwrap();
        let i = data["i"].as_u64().unwrap() as usize;
        if i >= LOW {
            highs.push(i);
        } else {
            lows += 1;
        }
    }
    assert_eq!(highs, (LOW..LOW + 5).collect::<Vec<_>>());
    assert!(
        lows < LOW,
        "some low-priority events were dropped ({lows} of {LOW} arrived)"
    );
    c.ping().await;
    let url = format!("http://{}/metrics", server.metrics_addr.unwrap());
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("switchboard_low_priority_dropped_total")),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_burst_larger_than_the_store_keeps_up_with_is_refused_loudly_never_lost() {
    // A tiny write queue: a burst of offline events overflows it.
    let server = TestServer::start_with(|c| c.data.write_queue = 50).await;
    let api = server.api();
    let users: Vec<String> = (0..100).map(|i| format!("burst-{i}")).collect();
    let calls = (0..20).map(|n| {
        let (api, users) = (api.clone(), users.clone());
        async move {
            let body = json!({"to":users,"notification_type":"t","message":n.to_string()});
            api.bus_call("POST", "/bus/notifications", &body).await
        }
    });
    let answers = futures_util::future::join_all(calls).await;
    let accepted: Vec<usize> = answers
        .iter()
        .enumerate()
        .filter(|(_, (status, _))| *status == 200)
        .map(|(n, _)| n)
        .collect();
    for (status, v) in &answers {
        assert!(
            *status == 200 || (*status == 503 && v["error"].is_string()),
            "{status} {v}"
        );
    }
    assert!(!accepted.is_empty());
    // Every accepted notification is in every recipient's queue (refused calls may have
    // queued part of their recipients: those come too, but nothing accepted is missing).
    for user in ["burst-0", "burst-57", "burst-99"] {
        let mut c = server.bus(user).await;
        subscribe_user_events(&mut c).await;
        let count = c.recv_type("replay").await["count"].as_u64().unwrap() as usize;
        let (msgs, _) = messages(&mut c, count).await;
        for n in &accepted {
            assert!(
                msgs.contains(&n.to_string()),
                "{user} lacks accepted {n}: {msgs:?}"
            );
        }
    }
    server.stop().await;
}
