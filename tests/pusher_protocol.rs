//! Pusher Channels protocol v7 over a real server and a raw WebSocket client.
//!
//! Silence is checked with [`PusherClient::ping`] wherever possible: the server handles a
//! connection's messages in order and delivers synchronously, so once the actor's own
//! answer has arrived, anything meant for another socket is already queued before that
//! socket's pong. Time windows are used only where delivery is asynchronous.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use switchboard::config::AppConfig;
use tokio_tungstenite::tungstenite::Message;

/// A bounded window for "nothing more arrives" where no synchronous proof is possible.
const SHORT: Duration = Duration::from_millis(300);

fn presence_of(subscribed: &Value) -> Value {
    data_of(subscribed)["presence"].clone()
}

/// Connects to `url` and returns the refusal: the `pusher:error` frame and the close code.
async fn refused(url: &str) -> (Value, u16) {
    let mut ws = PusherClient::connect_raw(url).await;
    let err = recv_json(&mut ws).await;
    let code = expect_close(&mut ws).await;
    (err, code)
}

fn assert_refusal((err, close): (Value, u16), code: u16) {
    assert_eq!(err["event"], "pusher:error", "{err}");
    assert_eq!(err["data"]["code"], code, "{err}");
    assert!(err["data"]["message"].is_string(), "{err}");
    assert_eq!(close, code);
}

// ---------------------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn connection_established_has_socket_id_and_default_activity_timeout() {
    let server = TestServer::start().await;
    let mut ws = PusherClient::connect_raw(&server.ws_url(KEY)).await;
    let hello = recv_json(&mut ws).await;
    assert_eq!(hello["event"], "pusher:connection_established");
    assert!(
        hello["data"].is_string(),
        "data must be a JSON-encoded string: {hello}"
    );
    let data = data_of(&hello);
    let id = data["socket_id"].as_str().expect("socket_id string");
    assert!(
        is_socket_id(id),
        "socket_id {id:?} must match ^\\d+\\.\\d+$"
    );
    assert_eq!(data["activity_timeout"], 120);

    let other = server.pusher().await;
    assert!(is_socket_id(&other.socket_id));
    assert_ne!(other.socket_id, id, "socket ids are unique");
}

#[tokio::test]
async fn activity_timeout_is_advertised_from_config() {
    let server = TestServer::start_with(|c| c.server.activity_timeout = 7).await;
    let mut ws = PusherClient::connect_raw(&server.ws_url(KEY)).await;
    let hello = recv_json(&mut ws).await;
    assert_eq!(data_of(&hello)["activity_timeout"], 7);
}

#[tokio::test]
async fn unknown_app_key_is_refused_with_4001() {
    let server = TestServer::start().await;
    assert_refusal(refused(&server.ws_url("no-such-key")).await, 4001);
}

#[tokio::test]
async fn disabled_app_is_refused_with_4003() {
    let server = TestServer::start_with(|c| c.app.enabled = false).await;
    assert_refusal(refused(&server.ws_url(KEY)).await, 4003);
}

#[tokio::test]
async fn protocol_version_is_required_and_checked() {
    let server = TestServer::start().await;
    let base = format!("ws://{}/app/{KEY}", server.addr);
    assert_refusal(refused(&base).await, 4008);
    assert_refusal(refused(&format!("{base}?client=js")).await, 4008);
    assert_refusal(refused(&format!("{base}?protocol=99")).await, 4007);
    assert_refusal(refused(&format!("{base}?protocol=abc")).await, 4007);
    // Every supported version connects.
    for v in 5..=7 {
        PusherClient::connect(&format!("{base}?protocol={v}")).await;
    }
}

#[tokio::test]
async fn node_connection_limit_refuses_with_4100_and_frees_the_slot() {
    let server = TestServer::start_with(|c| c.server.max_connections = 1).await;
    let first = server.pusher().await;
    assert_refusal(refused(&server.ws_url(KEY)).await, 4100);
    first.close().await;
    // The slot is released once the first connection has ended.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut ws = PusherClient::connect_raw(&server.ws_url(KEY)).await;
        let v = recv_json(&mut ws).await;
        if v["event"] == "pusher:connection_established" {
            break;
        }
        assert_eq!(v["data"]["code"], 4100, "{v}");
        assert!(tokio::time::Instant::now() < deadline, "slot not released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn app_connection_quota_refuses_with_4004_per_app() {
    let server = TestServer::start_with(|c| {
        c.app.max_connections = 1;
        c.apps.push(AppConfig {
            id: "other-id".into(),
            key: "other-key".into(),
            secret: "other-secret".into(),
            ..AppConfig::default()
        });
    })
    .await;
    let mut first = server.pusher().await;
    assert_refusal(refused(&server.ws_url(KEY)).await, 4004);
    // Another app is not affected by this app's quota.
    PusherClient::connect(&server.ws_url("other-key")).await;
    first.ping().await;
}

// ---------------------------------------------------------------------------------------
// Heartbeat
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn client_ping_gets_pong() {
    let server = TestServer::start().await;
    let mut c = server.pusher().await;
    c.ping().await;
    c.ping().await;
}

#[tokio::test]
async fn server_pings_after_inactivity_and_closes_4201_without_pong() {
    let server = TestServer::start_with(|c| {
        c.server.activity_timeout = 1;
        c.server.pong_timeout = 1;
    })
    .await;
    let mut c = server.pusher().await;
    let ping = c.recv().await;
    assert_eq!(ping["event"], "pusher:ping", "{ping}");
    assert_eq!(c.expect_close().await, 4201);
}

#[tokio::test]
async fn answering_server_pings_keeps_the_connection() {
    let server = TestServer::start_with(|c| {
        c.server.activity_timeout = 1;
        c.server.pong_timeout = 1;
    })
    .await;
    let mut c = server.pusher().await;
    // Without the pongs, the connection would be closed 1 s after the first ping; recv
    // panics on a close frame.
    for _ in 0..3 {
        let ping = c.recv().await;
        assert_eq!(ping["event"], "pusher:ping", "{ping}");
        c.send(json!({"event":"pusher:pong","data":{}})).await;
    }
    c.send(json!({"event":"pusher:ping","data":{}})).await;
    c.expect("pusher:pong").await;
}

// ---------------------------------------------------------------------------------------
// Channels
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn public_subscribe_then_http_trigger_passes_data_as_a_string() {
    let server = TestServer::start().await;
    let api = server.api();
    let mut c = server.pusher().await;
    let ok = c.subscribe("my-channel").await;
    assert_eq!(ok["data"], "{}", "{ok}");

    let (status, body) = api
        .trigger(json!({"name":"my-event","channel":"my-channel","data":"{\"x\":1}"}))
        .await;
    assert_eq!((status, body), (200, json!({})));
    let ev = c.recv().await;
    assert_eq!(ev["event"], "my-event");
    assert_eq!(ev["channel"], "my-channel");
    assert_eq!(
        ev["data"], "{\"x\":1}",
        "data passes through as the string sent: {ev}"
    );

    // A non-string data value travels as the string of its JSON text.
    let (status, _) = api
        .trigger(json!({"name":"obj","channels":["my-channel","elsewhere"],"data":{"y":[1,2]}}))
        .await;
    assert_eq!(status, 200);
    let ev = c.recv().await;
    assert_eq!(ev["event"], "obj");
    assert_eq!(ev["data"], "{\"y\":[1,2]}", "{ev}");
    c.ping().await;
}

#[tokio::test]
async fn unsubscribed_clients_get_no_more_events() {
    let server = TestServer::start().await;
    let api = server.api();
    let mut c = server.pusher().await;
    c.subscribe("news").await;
    c.unsubscribe("news").await;
    c.ping().await;
    api.wait_subscription_count("news", 0).await;
    let (status, _) = api
        .trigger(json!({"name":"e","channel":"news","data":"x"}))
        .await;
    assert_eq!(status, 200);
    c.ping().await;
}

#[tokio::test]
async fn private_channel_auth_is_checked() {
    let server = TestServer::start().await;
    let mut c = server.pusher().await;
    let ch = "private-room";

    c.send_subscribe(ch, None, None).await;
    assert_eq!(c.expect_subscription_error(ch).await, 401);
    c.send_subscribe(ch, Some("app-key:deadbeef"), None).await;
    assert_eq!(c.expect_subscription_error(ch).await, 401);
    // A valid signature for another socket.
    let theirs = channel_auth("1.2", ch, None);
    c.send_subscribe(ch, Some(&theirs), None).await;
    assert_eq!(c.expect_subscription_error(ch).await, 401);
    // A valid signature under another key prefix.
    let ours = channel_auth(&c.socket_id, ch, None);
    let wrong_key = ours.replacen(KEY, "other-key", 1);
    c.send_subscribe(ch, Some(&wrong_key), None).await;
    assert_eq!(c.expect_subscription_error(ch).await, 401);
    // Still usable, and the right auth works.
    c.ping().await;
    let ok = c.subscribe_private(ch).await;
    assert_eq!(ok["data"], "{}");
    // Failed attempts did not subscribe; the good one did, once.
    assert_eq!(server.api().subscription_count(ch).await, 1);
}

#[tokio::test]
async fn private_encrypted_channel_subscribes_with_auth() {
    let server = TestServer::start().await;
    let mut c = server.pusher().await;
    let ch = "private-encrypted-vault";
    c.send_subscribe(ch, Some("app-key:bad"), None).await;
    assert_eq!(c.expect_subscription_error(ch).await, 401);
    c.subscribe_private(ch).await;
    let (status, _) = server
        .api()
        .trigger(json!({"name":"e","channel":ch,"data":"ciphertext"}))
        .await;
    assert_eq!(status, 200);
    let ev = c.recv().await;
    assert_eq!(
        (ev["event"].as_str(), ev["data"].as_str()),
        (Some("e"), Some("ciphertext"))
    );
}

// ---------------------------------------------------------------------------------------
// Presence
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn presence_membership_is_per_user() {
    let server = TestServer::start().await;
    let api = server.api();
    let ch = "presence-room";
    let (mut a1, mut a2, mut b) = (
        server.pusher().await,
        server.pusher().await,
        server.pusher().await,
    );

    let ok = a1
        .subscribe_presence(ch, r#"{"user_id":"u1","user_info":{"name":"A"}}"#)
        .await;
    assert_eq!(
        presence_of(&ok),
        json!({"ids":["u1"],"hash":{"u1":{"name":"A"}},"count":1})
    );
    a1.ping().await; // no member_added for oneself

    // The same user on a second socket: one member; nobody is told.
    let ok = a2
        .subscribe_presence(ch, r#"{"user_id":"u1","user_info":{"name":"A2"}}"#)
        .await;
    let p = presence_of(&ok);
    assert_eq!(p["ids"], json!(["u1"]));
    assert_eq!(p["count"], 1);
    a2.ping().await;
    a1.ping().await;

    // Another user: counted, announced to everyone but the joining socket.
    let ok = b
        .subscribe_presence(ch, r#"{"user_id":"u2","user_info":{"name":"B"}}"#)
        .await;
    let p = presence_of(&ok);
    assert_eq!(p["count"], 2, "{p}");
    assert_eq!(p["ids"], json!(["u1", "u2"]));
    assert_eq!(p["hash"]["u2"], json!({"name":"B"}));
    // The first connection's user_info stays.
    assert_eq!(p["hash"]["u1"], json!({"name":"A"}));
    b.ping().await;
    for a in [&mut a1, &mut a2] {
        let added = a.recv().await;
        assert_eq!(added["event"], "pusher_internal:member_added", "{added}");
        assert_eq!(added["channel"], ch);
        assert_eq!(
            data_of(&added),
            json!({"user_id":"u2","user_info":{"name":"B"}})
        );
        a.ping().await;
    }
    assert_eq!(api.subscription_count(ch).await, 3);

    // Unsubscribe path: u1 stays while a2 is subscribed...
    a1.unsubscribe(ch).await;
    a1.ping().await;
    b.ping().await;
    // ...and leaves with a2.
    a2.unsubscribe(ch).await;
    a2.ping().await;
    let removed = b.recv().await;
    assert_eq!(
        removed["event"], "pusher_internal:member_removed",
        "{removed}"
    );
    assert_eq!(removed["channel"], ch);
    assert_eq!(data_of(&removed), json!({"user_id":"u1"}));
    b.ping().await;

    // Disconnect path: u3 with two sockets, b watching.
    let (mut c1, mut c2) = (server.pusher().await, server.pusher().await);
    c1.subscribe_presence(ch, r#"{"user_id":"u3"}"#).await;
    c1.ping().await;
    let added = b.recv().await;
    assert_eq!(added["event"], "pusher_internal:member_added");
    assert_eq!(data_of(&added), json!({"user_id":"u3","user_info":null}));
    let ok = c2.subscribe_presence(ch, r#"{"user_id":"u3"}"#).await;
    assert_eq!(presence_of(&ok)["count"], 2);
    c2.ping().await;
    b.ping().await;

    c1.close().await;
    api.wait_subscription_count(ch, 2).await;
    b.ping().await; // u3 is still present through c2
    c2.close().await;
    let removed = b.expect("pusher_internal:member_removed").await;
    assert_eq!(data_of(&removed), json!({"user_id":"u3"}));
    b.ping().await;
}

#[tokio::test]
async fn presence_auth_covers_the_exact_channel_data_string() {
    let server = TestServer::start().await;
    let mut c = server.pusher().await;
    let ch = "presence-exact";
    let original = r#"{"user_id":"u1","user_info":{"name":"A"}}"#;
    let reserialized = r#"{ "user_id": "u1", "user_info": { "name": "A" } }"#;
    assert_eq!(
        serde_json::from_str::<Value>(original).unwrap(),
        serde_json::from_str::<Value>(reserialized).unwrap()
    );
    let auth = channel_auth(&c.socket_id, ch, Some(original));
    c.send_subscribe(ch, Some(&auth), Some(reserialized)).await;
    assert_eq!(c.expect_subscription_error(ch).await, 401);
    // Missing channel_data is refused too.
    c.send_subscribe(ch, Some(&auth), None).await;
    c.expect_subscription_error(ch).await;
    c.ping().await;
    c.send_subscribe(ch, Some(&auth), Some(original)).await;
    let ok = c.expect("pusher_internal:subscription_succeeded").await;
    assert_eq!(presence_of(&ok)["ids"], json!(["u1"]));
}

#[tokio::test]
async fn presence_numeric_user_id_becomes_a_string() {
    let server = TestServer::start().await;
    let ch = "presence-numbers";
    let (mut a, mut b) = (server.pusher().await, server.pusher().await);
    a.subscribe_presence(ch, r#"{"user_id":1}"#).await;
    let ok = b
        .subscribe_presence(ch, r#"{"user_id":42,"user_info":{"n":42}}"#)
        .await;
    assert_eq!(
        presence_of(&ok),
        json!({"ids":["1","42"],"hash":{"1":null,"42":{"n":42}},"count":2})
    );
    let added = a.expect("pusher_internal:member_added").await;
    assert_eq!(
        data_of(&added),
        json!({"user_id":"42","user_info":{"n":42}})
    );
    let (status, users) = server
        .api()
        .get(&format!("/channels/{ch}/users"), &[])
        .await;
    assert_eq!(status, 200);
    assert_eq!(users, json!({"users":[{"id":"1"},{"id":"42"}]}));
}

#[tokio::test]
async fn presence_member_limit_refuses_new_users_only() {
    let server = TestServer::start_with(|c| c.app.presence_max_members = 1).await;
    let ch = "presence-small";
    let (mut a1, mut a2, mut b) = (
        server.pusher().await,
        server.pusher().await,
        server.pusher().await,
    );
    a1.subscribe_presence(ch, r#"{"user_id":"u1"}"#).await;
    let data = r#"{"user_id":"u2"}"#;
    let auth = channel_auth(&b.socket_id, ch, Some(data));
    b.send_subscribe(ch, Some(&auth), Some(data)).await;
    // Authorized, but over a limit: LimitReached (as soketi), naming the limit.
    let e = b.expect_subscription_error_data(ch).await;
    assert_eq!(
        (&e["type"], &e["status"]),
        (&json!("LimitReached"), &json!(4100)),
        "{e}"
    );
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("presence_max_members: 1"),
        "{e}"
    );
    b.ping().await;
    a1.ping().await; // no member_added for a refused user
                     // The same user on another socket is not a new member.
    let ok = a2.subscribe_presence(ch, r#"{"user_id":"u1"}"#).await;
    assert_eq!(presence_of(&ok)["count"], 1);
    assert_eq!(server.api().subscription_count(ch).await, 2);
}

#[tokio::test]
async fn presence_oversized_user_info_is_refused() {
    let server = TestServer::start().await;
    let ch = "presence-big";
    let mut c = server.pusher().await;
    let data = json!({"user_id":"u1","user_info":{"bio":"x".repeat(2000)}}).to_string();
    let auth = channel_auth(&c.socket_id, ch, Some(&data));
    c.send_subscribe(ch, Some(&auth), Some(&data)).await;
    let e = c.expect_subscription_error_data(ch).await;
    assert_eq!(
        (&e["type"], &e["status"]),
        (&json!("LimitReached"), &json!(4301)),
        "{e}"
    );
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("presence_max_member_bytes"),
        "{e}"
    );
    c.ping().await;
    assert_eq!(server.api().subscription_count(ch).await, 0);
    // A modest user_info is fine.
    let ok = c
        .subscribe_presence(ch, r#"{"user_id":"u1","user_info":{"bio":"hi"}}"#)
        .await;
    assert_eq!(presence_of(&ok)["count"], 1);
}

#[tokio::test]
async fn presence_resubscribe_confirms_with_the_member_list() {
    // pusher-js sends pusher:subscribe again when `subscribe` is called for a channel it
    // already has; its presence channel reads `data.presence` from the confirmation.
    let server = TestServer::start().await;
    let ch = "presence-again";
    let (mut a, mut b) = (server.pusher().await, server.pusher().await);
    a.subscribe_presence(ch, r#"{"user_id":"u1"}"#).await;
    b.subscribe_presence(ch, r#"{"user_id":"u2"}"#).await;
    b.ping().await;
    a.expect("pusher_internal:member_added").await;
    let ok = b.subscribe_presence(ch, r#"{"user_id":"u2"}"#).await;
    assert_eq!(
        presence_of(&ok),
        json!({"ids":["u1","u2"],"hash":{"u1":null,"u2":null},"count":2})
    );
    b.ping().await;
    a.ping().await; // no second member_added
    assert_eq!(server.api().subscription_count(ch).await, 2);
}

// ---------------------------------------------------------------------------------------
// Client events
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn client_events_reach_other_subscribers_but_not_the_sender() {
    let server = TestServer::start().await;
    let ch = "private-chat";
    let (mut a, mut b, mut outsider) = (
        server.pusher().await,
        server.pusher().await,
        server.pusher().await,
    );
    a.subscribe_private(ch).await;
    b.subscribe_private(ch).await;
    outsider.subscribe_private("private-other").await;

    a.client_event("client-typing", ch, json!({"t":1})).await;
    a.ping().await; // never echoed
    let ev = b.recv().await;
    assert_eq!(ev["event"], "client-typing");
    assert_eq!(ev["channel"], ch);
    assert_eq!(ev["data"], json!({"t":1}));
    assert!(ev.get("user_id").is_none(), "{ev}");
    b.ping().await;
    outsider.ping().await;
}

#[tokio::test]
async fn client_events_on_presence_carry_the_user_id() {
    let server = TestServer::start().await;
    let ch = "presence-chat";
    let (mut a, mut b) = (server.pusher().await, server.pusher().await);
    a.subscribe_presence(ch, r#"{"user_id":"alice"}"#).await;
    b.subscribe_presence(ch, r#"{"user_id":"bob"}"#).await;
    b.ping().await;
    a.expect("pusher_internal:member_added").await;
    a.ping().await;

    b.client_event("client-wave", ch, json!("hi")).await;
    b.ping().await;
    let ev = a.recv().await;
    assert_eq!(ev["event"], "client-wave");
    assert_eq!(ev["data"], "hi");
    assert_eq!(ev["user_id"], "bob");
}

async fn assert_client_event_refused(
    sender: &mut PusherClient,
    other: &mut PusherClient,
    ch: &str,
) {
    sender.client_event("client-x", ch, json!({})).await;
    sender.expect_error(4300).await;
    sender.ping().await; // the connection stays open
    other.ping().await; // and nothing was delivered
}

#[tokio::test]
async fn client_events_are_refused_on_public_and_unsubscribed_channels() {
    let server = TestServer::start().await;
    let (mut a, mut b) = (server.pusher().await, server.pusher().await);
    a.subscribe("public-room").await;
    b.subscribe("public-room").await;
    assert_client_event_refused(&mut a, &mut b, "public-room").await;
    // b is subscribed to the private channel, a is not.
    b.subscribe_private("private-room").await;
    assert_client_event_refused(&mut a, &mut b, "private-room").await;
    // A client event must name a channel.
    a.send(json!({"event":"client-x","data":{}})).await;
    a.expect_error(4300).await;
    a.ping().await;
}

#[tokio::test]
async fn client_events_are_refused_on_private_encrypted_channels() {
    let server = TestServer::start().await;
    let ch = "private-encrypted-room";
    let (mut a, mut b) = (server.pusher().await, server.pusher().await);
    a.subscribe_private(ch).await;
    b.subscribe_private(ch).await;
    assert_client_event_refused(&mut a, &mut b, ch).await;
}

#[tokio::test]
async fn client_events_are_refused_when_the_app_disables_them() {
    let server = TestServer::start_with(|c| c.app.client_events = false).await;
    let ch = "private-room";
    let (mut a, mut b) = (server.pusher().await, server.pusher().await);
    a.subscribe_private(ch).await;
    b.subscribe_private(ch).await;
    assert_client_event_refused(&mut a, &mut b, ch).await;
}

#[tokio::test]
async fn client_event_rate_limit_errors_4301_without_closing() {
    let server = TestServer::start().await;
    let ch = "private-rate";
    let (mut a, mut b) = (server.pusher().await, server.pusher().await);
    a.subscribe_private(ch).await;
    b.subscribe_private(ch).await;

    const SENT: usize = 25;
    for i in 0..SENT {
        a.client_event("client-n", ch, json!(i)).await;
    }
    a.send(json!({"event":"pusher:ping","data":{}})).await;
    let mut limited = 0;
    loop {
        let v = a.recv().await;
        if v["event"] == "pusher:pong" {
            break;
        }
        assert_eq!(v["event"], "pusher:error", "{v}");
        assert_eq!(v["data"]["code"], 4301, "{v}");
        limited += 1;
    }
    assert!(
        limited >= SENT - 10 - 2,
        "only {limited} of {SENT} were limited"
    );

    // Exactly the events that were not limited reached b.
    b.send(json!({"event":"pusher:ping","data":{}})).await;
    let mut delivered = 0;
    loop {
        let v = b.recv().await;
        if v["event"] == "pusher:pong" {
            break;
        }
        assert_eq!(v["event"], "client-n", "{v}");
        delivered += 1;
    }
    assert_eq!(delivered + limited, SENT);

    // No close: the connection still answers, and nothing else arrives.
    a.ping().await;
    a.expect_silence(SHORT).await;
    a.ping().await;
}

// ---------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn signin_checks_the_signature() {
    let server = TestServer::start().await;
    let mut c = server.pusher().await;
    let user_data = r#"{"id":"u1","user_info":{"name":"A"}}"#;
    c.send(json!({"event":"pusher:signin","data":{"auth":"app-key:bad","user_data":user_data}}))
        .await;
    c.expect_error(4009).await;
    // Signed for another socket.
    let theirs = user_auth("1.1", user_data);
    c.send(json!({"event":"pusher:signin","data":{"auth":theirs,"user_data":user_data}}))
        .await;
    c.expect_error(4009).await;
    c.ping().await;
    let ok = c.signin(user_data).await;
    assert_eq!(ok["data"]["user_data"], user_data);
}

#[tokio::test]
async fn signin_with_a_numeric_id_works_like_a_string_id() {
    // Issue 20: Laravel signs the model's integer key; sign-in refused it with 4009.
    let server = TestServer::start().await;
    let (mut a, mut watcher) = (server.pusher().await, server.pusher().await);
    watcher.signin(r#"{"id":"w","watchlist":[7]}"#).await;
    let ok = a.signin(r#"{"id":7,"user_info":{"name":"Seven"}}"#).await;
    assert_eq!(ok["event"], "pusher:signin_success", "{ok}");
    let ev = watcher.expect("pusher_internal:watchlist_events").await;
    assert_eq!(
        ev["data"]["events"],
        json!([{"name":"online","user_ids":["7"]}])
    );
    a.subscribe("#server-to-user-7").await;
    let (status, _) = server
        .api()
        .trigger(json!({"name":"hello","channel":"#server-to-user-7","data":"hi"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(a.recv().await["event"], "hello");
    let (status, _) = server
        .api()
        .post("/users/7/terminate_connections", "")
        .await;
    assert_eq!(status, 200);
    assert_eq!(a.expect_close().await, 4009);
    // Not every JSON value is an id.
    let mut b = server.pusher().await;
    let data = r#"{"id":true}"#;
    let auth = user_auth(&b.socket_id, data);
    b.send(json!({"event":"pusher:signin","data":{"auth":auth,"user_data":data}}))
        .await;
    let e = b.expect_error(4009).await;
    assert!(
        e["data"]["message"]
            .as_str()
            .unwrap()
            .contains("user_data.id"),
        "{e}"
    );
}

#[tokio::test]
async fn require_signin_closes_connections_that_do_not_sign_in() {
    let server = TestServer::start_with(|c| c.app.require_signin_secs = 1).await;
    let mut anonymous = server.pusher().await;
    let mut signed = server.pusher().await;
    signed.signin(r#"{"id":"u1"}"#).await;
    // The anonymous one is told why, then closed with 4009 at the deadline...
    let e = anonymous.expect_error(4009).await;
    assert!(
        e["data"]["message"]
            .as_str()
            .unwrap()
            .contains("require_signin_secs"),
        "{e}"
    );
    assert_eq!(anonymous.expect_close().await, 4009);
    // ...while the one that signed in within it stays open past it.
    signed.ping().await;
    // Without the setting nobody has to sign in (the default).
    let free = TestServer::start().await;
    let mut c = free.pusher().await;
    c.subscribe("public").await;
    c.ping().await;
}

#[tokio::test]
async fn send_to_user_reaches_every_socket_of_that_user_only() {
    let server = TestServer::start().await;
    let (mut u1a, mut u1b, mut u2, mut anon) = (
        server.pusher().await,
        server.pusher().await,
        server.pusher().await,
        server.pusher().await,
    );
    u1a.signin(r#"{"id":"u1"}"#).await;
    u1b.signin(r#"{"id":"u1"}"#).await;
    u2.signin(r#"{"id":"u2"}"#).await;
    // pusher-js subscribes to its own user channel after sign-in.
    u1a.subscribe("#server-to-user-u1").await;
    anon.send_subscribe("#server-to-user-u1", None, None).await;
    anon.expect_subscription_error("#server-to-user-u1").await;

    let (status, _) = server
        .api()
        .trigger(json!({"name":"hello","channel":"#server-to-user-u1","data":"hi"}))
        .await;
    assert_eq!(status, 200);
    for c in [&mut u1a, &mut u1b] {
        let ev = c.recv().await;
        assert_eq!(ev["event"], "hello");
        assert_eq!(ev["channel"], "#server-to-user-u1");
        assert_eq!(ev["data"], "hi");
        c.ping().await; // once, even when subscribed to the user channel
    }
    u2.ping().await;
    anon.ping().await;
}

#[tokio::test]
async fn watchlist_reports_online_and_offline() {
    let server = TestServer::start_with(|c| c.bus.presence_throttle_ms = 100).await;
    let api = server.api();
    let mut a = server.pusher().await;
    a.signin(r#"{"id":"a","watchlist":["b"]}"#).await;
    a.ping().await; // b is offline: nothing at sign-in

    let mut b1 = server.pusher().await;
    b1.signin(r#"{"id":"b"}"#).await;
    let ev = a.expect("pusher_internal:watchlist_events").await;
    assert_eq!(
        ev["data"]["events"],
        json!([{"name":"online","user_ids":["b"]}])
    );
    // A watcher signing in while b is online learns it at once.
    let mut c = server.pusher().await;
    c.signin(r#"{"id":"c","watchlist":["b","nobody"]}"#).await;
    let ev = c.recv().await;
    assert_eq!(ev["event"], "pusher_internal:watchlist_events");
    assert_eq!(
        ev["data"]["events"],
        json!([{"name":"online","user_ids":["b"]}])
    );

    // b's second connection changes nothing; closing one of two changes nothing.
    let mut b2 = server.pusher().await;
    b2.signin(r#"{"id":"b"}"#).await;
    b1.subscribe("b1-marker").await;
    b1.close().await;
    api.wait_subscription_count("b1-marker", 0).await;
    a.expect_silence(SHORT).await;

    // b's last connection closes: offline.
    b2.close().await;
    let ev = a.expect("pusher_internal:watchlist_events").await;
    assert_eq!(
        ev["data"]["events"],
        json!([{"name":"offline","user_ids":["b"]}])
    );
    let ev = c.expect("pusher_internal:watchlist_events").await;
    assert_eq!(ev["data"]["events"][0]["name"], "offline");
}

#[tokio::test]
async fn terminate_connections_closes_only_that_users_sockets() {
    let server = TestServer::start().await;
    let (mut u1a, mut u1b, mut u2, mut anon) = (
        server.pusher().await,
        server.pusher().await,
        server.pusher().await,
        server.pusher().await,
    );
    u1a.signin(r#"{"id":"u1"}"#).await;
    u1b.signin(r#"{"id":"u1"}"#).await;
    u2.signin(r#"{"id":"u2"}"#).await;
    let (status, body) = server
        .api()
        .post("/users/u1/terminate_connections", "")
        .await;
    assert_eq!((status, body), (200, json!({})));
    assert_eq!(u1a.expect_close().await, 4009);
    assert_eq!(u1b.expect_close().await, 4009);
    u2.ping().await;
    anon.ping().await;
}

// ---------------------------------------------------------------------------------------
// Bad input and limits
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn bad_input_gets_error_4300_and_the_connection_survives() {
    let server = TestServer::start().await;
    let mut c = server.pusher().await;
    for bad in [
        "this is not json",
        "[1,2,3]",
        r#"{"event":1}"#,
        r#"{"event":"no-such-event","data":{}}"#,
        r#"{"event":"pusher:subscribe","data":{"channel":5}}"#,
        r#"{"event":"pusher:subscribe"}"#,
        r#"{"event":"pusher:signin","data":{"auth":1,"user_data":"{}"}}"#,
        r#"{"event":"pusher:unsubscribe","data":"nope"}"#,
    ] {
        c.send_text(bad).await;
        let v = c.recv().await;
        assert_eq!(v["event"], "pusher:error", "for {bad}: {v}");
        assert_eq!(v["data"]["code"], 4300, "for {bad}: {v}");
        c.ping().await;
    }
    c.send_binary(&[0, 1, 2, 3]).await;
    c.expect_error(4300).await;
    c.ping().await;
    // Still fully working.
    c.subscribe("after-bad-input").await;
}

#[tokio::test]
async fn oversized_frame_closes_only_that_connection() {
    let server = TestServer::start_with(|c| c.server.max_message_bytes = 1024).await;
    let (mut big, mut other) = (server.pusher().await, server.pusher().await);
    other.subscribe("still-here").await;
    // Just under the limit is fine.
    big.send(json!({"event":"pusher:ping","data":{"pad":"x".repeat(900)}}))
        .await;
    big.expect("pusher:pong").await;

    big.send(json!({"event":"pusher:ping","data":{"pad":"x".repeat(4096)}}))
        .await;
    // The server ends the connection (with a close frame, or by dropping the socket).
    big.expect_end().await;

    other.ping().await;
    let (status, _) = server
        .api()
        .trigger(json!({"name":"e","channel":"still-here","data":"x"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(other.recv().await["event"], "e");
    server.pusher().await.ping().await;
}

#[tokio::test]
async fn slow_consumer_is_disconnected_without_hurting_others() {
    let server = TestServer::start_with(|c| {
        c.server.outbox_capacity = 4;
        c.app.max_event_bytes = 512 * 1024;
    })
    .await;
    let api = server.api();
    let mut slow = server.pusher().await;
    slow.subscribe("firehose").await;
    let mut fast = server.pusher().await;
    fast.subscribe("calm").await;

    // `slow` never reads while large events pile up; the trigger's info reports the
    // subscription count once the server has dropped it.
    let payload = "x".repeat(200 * 1024);
    let mut dropped = false;
    for _ in 0..500 {
        let body =
            json!({"name":"big","channel":"firehose","data":payload,"info":"subscription_count"});
        let (status, v) = api.trigger(body).await;
        assert_eq!(status, 200, "{v}");
        if v["channels"]["firehose"]["subscription_count"] == 0 {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "the slow consumer was never disconnected");
    assert_eq!(api.subscription_count("firehose").await, 0);

    // Everyone else is fine.
    let (status, _) = api
        .trigger(json!({"name":"e","channel":"calm","data":"ok"}))
        .await;
    assert_eq!(status, 200);
    let ev = fast.recv().await;
    assert_eq!(
        (ev["event"].as_str(), ev["data"].as_str()),
        (Some("e"), Some("ok"))
    );
    fast.ping().await;
    let (status, _) = api.raw("GET", "/up", "").await;
    assert_eq!(status, 200);

    // The slow client's stream ends, with 4100 if a close frame made it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let msg = tokio::time::timeout_at(deadline, futures_util::StreamExt::next(&mut slow.ws))
            .await
            .expect("the slow consumer's stream ends");
        match msg {
            Some(Ok(Message::Text(_))) | Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(Some(f)))) => {
                assert_eq!(u16::from(f.code), 4100);
                break;
            }
            Some(Ok(other)) => panic!("unexpected frame {other:?}"),
            Some(Err(_)) | None => break,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn graceful_shutdown_closes_clients_with_4200() {
    let server = TestServer::start().await;
    let mut a = server.pusher().await;
    let mut b = server.pusher().await;
    b.subscribe_private("private-x").await;
    let stop = tokio::spawn(server.stop());
    assert_eq!(a.expect_close().await, 4200);
    assert_eq!(b.expect_close().await, 4200);
    stop.await.expect("server stopped cleanly");
}
