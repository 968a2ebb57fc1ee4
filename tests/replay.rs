//! Envelopes, history and replay on the bus: a client that reconnects with the last id it saw
//! gets what it missed, in order, without duplicates, then live events.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use switchboard::config::Config;

fn room_claims(user: &str) -> switchboard::auth::BusClaims {
    let mut c = bus_claims(user);
    c.channels = vec!["room-*".into()];
    c
}

async fn trigger(api: &Api, room: &str, n: u64) {
    let body = json!({"name":"msg","channel":room,"data":json!({"n":n}).to_string()});
    assert_eq!(api.trigger(body).await.0, 200);
}

fn n_of(v: &Value) -> u64 {
    let data: Value = serde_json::from_str(v["data"].as_str().unwrap()).unwrap();
    data["n"].as_u64().unwrap()
}

/// Subscribes to `room` (with `since`), returns the `replay` header if one was asked for.
async fn join(c: &mut BusClient, room: &str, since: Option<&str>) -> Option<Value> {
    let mut msg = json!({"type":"subscribe","rooms":[room]});
    if let Some(s) = since {
        msg["since"] = s.into();
    }
    c.send(msg).await;
    c.recv_type("subscribed").await;
    match since {
        Some(_) => Some(c.recv_type("replay").await),
        None => None,
    }
}

#[tokio::test]
async fn a_reconnecting_client_gets_what_it_missed_then_live_events() {
    let server = TestServer::start().await;
    let api = server.api();
    let mut c = server.bus_with(&room_claims("u")).await;
    join(&mut c, "room-a", None).await;
    trigger(&api, "room-a", 1).await;
    trigger(&api, "room-a", 2).await;
    let e1 = c.recv_type("event").await;
    let e2 = c.recv_type("event").await;
    assert_eq!((n_of(&e1), n_of(&e2)), (1, 2));
    let last = e2["id"].as_str().unwrap().to_owned();
    drop(c);
    for n in 3..=5 {
        trigger(&api, "room-a", n).await;
    }
    let mut c = server.bus_with(&room_claims("u")).await;
    let replay = join(&mut c, "room-a", Some(&last)).await.unwrap();
    assert_eq!(replay["stream"], "room:room-a");
    assert_eq!(replay["count"], 3);
    assert_eq!(replay["complete"], true);
    let mut ids = vec![last.clone()];
    for n in 3..=5 {
        let e = c.recv_type("event").await;
        assert_eq!(n_of(&e), n);
        ids.push(e["id"].as_str().unwrap().to_owned());
    }
    trigger(&api, "room-a", 6).await;
    let live = c.recv_type("event").await;
    assert_eq!(n_of(&live), 6);
    ids.push(live["id"].as_str().unwrap().to_owned());
    let mut sorted = ids.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), ids.len(), "ids are unique: {ids:?}");
    server.stop().await;
}

#[tokio::test]
async fn replay_racing_live_publishes_loses_and_repeats_nothing() {
    let server = TestServer::start().await;
    let api = server.api();
    let mut first = server.bus_with(&room_claims("a")).await;
    join(&mut first, "room-race", None).await;
    trigger(&api, "room-race", 0).await;
    let since = first.recv_type("event").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Publish 1..=300 while a second client subscribes with `since` mid-stream.
    let publisher = {
        let api = server.api();
        tokio::spawn(async move {
            for n in 1..=300 {
                trigger(&api, "room-race", n).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut late = server.bus_with(&room_claims("b")).await;
    let replay = join(&mut late, "room-race", Some(&since)).await.unwrap();
    assert_eq!(replay["complete"], true, "{replay}");
    publisher.await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 300 {
        seen.push(n_of(&late.recv_type("event").await));
    }
    assert_eq!(
        seen,
        (1..=300).collect::<Vec<_>>(),
        "every event once, in order"
    );
    late.send(json!({"type":"ping"})).await;
    late.recv_type("pong").await;
    server.stop().await;
}

#[tokio::test]
async fn history_that_no_longer_reaches_back_says_so() {
    let server = TestServer::start_with(|c: &mut Config| c.history.size = 2).await;
    let api = server.api();
    let mut c = server.bus_with(&room_claims("u")).await;
    join(&mut c, "room-h", None).await;
    trigger(&api, "room-h", 1).await;
    let since = c.recv_type("event").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(c);
    for n in 2..=6 {
        trigger(&api, "room-h", n).await;
    }
    let mut c = server.bus_with(&room_claims("u")).await;
    let replay = join(&mut c, "room-h", Some(&since)).await.unwrap();
    assert_eq!(replay["complete"], false);
    assert_eq!(replay["count"], 2);
    assert_eq!(n_of(&c.recv_type("event").await), 5);
    assert_eq!(n_of(&c.recv_type("event").await), 6);
    // An id from another server epoch is out of reach too.
    let mut d = server.bus_with(&room_claims("v")).await;
    let replay = join(&mut d, "room-h", Some("1-1")).await.unwrap();
    assert_eq!(replay["complete"], false);
    server.stop().await;
}

#[tokio::test]
async fn user_events_missed_while_offline_are_replayed_and_ttl_is_honoured() {
    let server = TestServer::start().await;
    let api = server.api();
    let note = |msg: &str, ttl: Option<u32>| {
        let mut b = json!({"to":["u"],"notification_type":"t","message":msg});
        if let Some(t) = ttl {
            b["ttl"] = t.into();
        }
        b
    };
    let mut c = server.bus("u").await;
    c.send(json!({"type":"subscribe","events":["notification"]}))
        .await;
    c.recv_type("subscribed").await;
    api.bus_call("POST", "/bus/notifications", &note("one", None))
        .await;
    let since = c.recv_type("notification").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(c);
    api.bus_call("POST", "/bus/notifications", &note("short-lived", Some(1)))
        .await;
    api.bus_call("POST", "/bus/notifications", &note("two", Some(60)))
        .await;
    // The ttl is what is under test: wait past it.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let mut c = server.bus("u").await;
    c.send(json!({"type":"subscribe","events":["notification"],"since":since}))
        .await;
    c.recv_type("subscribed").await;
    let replay = c.recv_type("replay").await;
    assert_eq!(replay["stream"], "user");
    assert_eq!(replay["count"], 1, "the expired one is left out: {replay}");
    assert_eq!(
        replay["complete"], true,
        "an event past its own ttl is not a gap"
    );
    assert_eq!(c.recv_type("notification").await["message"], "two");
    server.stop().await;
}

#[tokio::test]
async fn since_can_name_a_different_id_per_stream() {
    let server = TestServer::start().await;
    let api = server.api();
    let mut c = server.bus_with(&room_claims("u")).await;
    c.send(json!({"type":"subscribe","rooms":["room-p","room-q"]}))
        .await;
    c.recv_type("subscribed").await;
    trigger(&api, "room-p", 1).await;
    trigger(&api, "room-q", 1).await;
    let p1 = c.recv_type("event").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let q1 = c.recv_type("event").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(c);
    trigger(&api, "room-p", 2).await;
    trigger(&api, "room-q", 2).await;
    let mut c = server.bus_with(&room_claims("u")).await;
    c.send(json!({"type":"subscribe","rooms":["room-p","room-q"],
        "since":{"room:room-p":p1,"room:room-q":q1}}))
        .await;
    c.recv_type("subscribed").await;
    for room in ["room-p", "room-q"] {
        let r = c.recv_type("replay").await;
        assert_eq!(
            (r["stream"].as_str(), r["count"].as_u64()),
            (Some(format!("room:{room}").as_str()), Some(1))
        );
        let e = c.recv_type("event").await;
        assert_eq!((e["room"].as_str(), n_of(&e)), (Some(room), 2));
    }
    server.stop().await;
}

#[tokio::test]
async fn history_survives_a_graceful_restart() {
    let dir = temp_dir("history");
    let d = dir.clone();
    let server = TestServer::start_with(move |c| c.data.dir = d).await;
    let api = server.api();
    let mut c = server.bus_with(&room_claims("u")).await;
    join(&mut c, "room-r", None).await;
    trigger(&api, "room-r", 1).await;
    trigger(&api, "room-r", 2).await;
    let first = c.recv_type("event").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = c.recv_type("event").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(c);
    server.stop().await;

    let d = dir.clone();
    let server = TestServer::start_with(move |c| c.data.dir = d).await;
    let api = server.api();
    trigger(&api, "room-r", 3).await;
    let mut c = server.bus_with(&room_claims("u")).await;
    let replay = join(&mut c, "room-r", Some(&first)).await.unwrap();
    assert_eq!(
        (&replay["count"], &replay["complete"]),
        (&json!(2), &json!(true)),
        "{replay}"
    );
    let e2 = c.recv_type("event").await;
    assert_eq!((n_of(&e2), e2["id"].as_str()), (2, Some(second.as_str())));
    let e3 = c.recv_type("event").await;
    assert_eq!(n_of(&e3), 3);
    assert_ne!(
        e3["id"],
        json!(second),
        "ids are not reused after a restart"
    );
    server.stop().await;

    // Each graceful stop saves what the process had, restored history included.
    let d = dir.clone();
    let server = TestServer::start_with(move |c| c.data.dir = d).await;
    let mut c = server.bus_with(&room_claims("u")).await;
    let replay = join(&mut c, "room-r", Some(&first)).await.unwrap();
    assert_eq!(replay["count"], 2, "{replay}");
    server.stop().await;
}

#[tokio::test]
async fn history_bounds_can_differ_by_channel_prefix() {
    let server = TestServer::start_with(|c| {
        c.history.rules = vec![switchboard::config::HistoryRule {
            app: None,
            prefix: "room-short".into(),
            users: false,
            size: 2,
            ttl_secs: 300,
        }]
    })
    .await;
    let api = server.api();
    let mut c = server.bus_with(&room_claims("u")).await;
    for room in ["room-short", "room-long"] {
        join(&mut c, room, None).await;
    }
    let mut first = std::collections::HashMap::new();
    for n in 1..=4 {
        for room in ["room-short", "room-long"] {
            trigger(&api, room, n).await;
            let e = c.recv_type("event").await;
            first
                .entry(room)
                .or_insert_with(|| e["id"].as_str().unwrap().to_owned());
        }
    }
    drop(c);
    let mut c = server.bus_with(&room_claims("u")).await;
    let short = join(&mut c, "room-short", Some(&first["room-short"]))
        .await
        .unwrap();
    assert_eq!(
        (&short["count"], &short["complete"]),
        (&json!(2), &json!(false)),
        "{short}"
    );
    let mut c = server.bus_with(&room_claims("u")).await;
    let long = join(&mut c, "room-long", Some(&first["room-long"]))
        .await
        .unwrap();
    assert_eq!(
        (&long["count"], &long["complete"]),
        (&json!(3), &json!(true)),
        "{long}"
    );
    server.stop().await;
}
