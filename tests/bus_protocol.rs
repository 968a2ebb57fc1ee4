//! The bus protocol (`/ws/bus`) over real sockets: upgrade and token checks, the message
//! envelope, event-type and room subscriptions, presence, typing, the bus HTTP API,
//! cross-protocol delivery and limits.
//!
//! Absence is proved by ordering wherever possible: the memory broker delivers an event
//! before the publishing call returns, and a connection's frames keep their order, so a
//! `ping` answered by `pong` as the very next frame proves nothing was queued before it.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{json, Value};
use support::*;
use switchboard::auth::BusClaims;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A bounded window to check that something does *not* happen, where ordering cannot prove it.
const SILENCE: Duration = Duration::from_millis(300);

/// The base64url JWT header `{"alg":"none","typ":"JWT"}`.
const ALG_NONE_HEADER: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";

/// A server with default settings except for presence throttling, which is off: a user who
/// disconnects inside the throttle window leaves a delayed `offline` announcement that
/// shutdown waits for, a second per test. Tests of defaults use `TestServer::start()`.
async fn server() -> TestServer {
    TestServer::start_with(|c| c.bus.presence_throttle_ms = 0).await
}

fn names(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn claims_with(user: &str, f: impl FnOnce(&mut BusClaims)) -> BusClaims {
    let mut c = bus_claims(user);
    f(&mut c);
    c
}

fn watching(user: &str, watchlist: &[&str]) -> BusClaims {
    claims_with(user, |c| {
        c.watchlist = watchlist.iter().map(|s| s.to_string()).collect()
    })
}

/// `GET /ws/bus` with proper upgrade headers through a plain HTTP client, so a refusal's
/// status, content type and body can be read. Returns (status, content-type, body).
async fn upgrade_http(
    server: &TestServer,
    token: Option<&str>,
    bearer: Option<&str>,
) -> (u16, String, Value) {
    let mut url = format!("http://{}/ws/bus", server.addr);
    if let Some(t) = token {
        url.push_str(&format!("?token={t}"));
    }
    let mut req = reqwest::Client::new()
        .get(url)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    if let Some(b) = bearer {
        req = req.header("authorization", format!("Bearer {b}"));
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let ctype = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = res.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, ctype, body)
}

/// Asserts a WebSocket handshake is refused with HTTP `status` (no upgrade happens).
async fn assert_handshake_refused<R: IntoClientRequest + Unpin>(req: R, status: u16) {
    match tokio_tungstenite::connect_async(req).await {
        Err(tungstenite::Error::Http(res)) => assert_eq!(res.status().as_u16(), status),
        Err(e) => panic!("expected HTTP {status}, got {e}"),
        Ok(_) => panic!("expected HTTP {status}, but the upgrade succeeded"),
    }
}

/// Asserts the upgrade with `token` is refused with 401 and a JSON error, both through a
/// plain HTTP request and through a WebSocket handshake.
async fn assert_token_refused(server: &TestServer, token: &str, what: &str) {
    let (status, ctype, body) = upgrade_http(server, Some(token), None).await;
    assert_eq!(status, 401, "{what}: {body}");
    assert!(ctype.starts_with("application/json"), "{what}: {ctype}");
    assert!(body["error"].is_string(), "{what}: {body}");
    assert_handshake_refused(server.bus_url(token), 401).await;
}

fn is_socket_id(s: &str) -> bool {
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit());
    s.split_once('.')
        .is_some_and(|(a, b)| digits(a) && digits(b))
}

// ---------------------------------------------------------------------------------------------
// Upgrade
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn missing_token_is_refused_with_401_json() {
    let server = server().await;
    let (status, ctype, body) = upgrade_http(&server, None, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(ctype.starts_with("application/json"), "{ctype}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert_handshake_refused(format!("ws://{}/ws/bus", server.addr), 401).await;
    // An empty token or a non-Bearer authorization header is no token either.
    let (status, _, _) = upgrade_http(&server, Some(""), None).await;
    assert_eq!(status, 401);
    let mut req = format!("ws://{}/ws/bus", server.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Basic {}", bus_token(&bus_claims("alice")))
            .parse()
            .unwrap(),
    );
    assert_handshake_refused(req, 401).await;
    server.stop().await;
}

#[tokio::test]
async fn bad_tokens_are_refused_with_401_before_the_upgrade() {
    let server = server().await;
    let good = bus_token(&bus_claims("alice"));
    let parts: Vec<&str> = good.split('.').collect();
    assert_eq!(parts.len(), 3);

    // Another user's claims under alice's signature.
    let mallory = bus_token(&bus_claims("mallory"));
    let mallory_payload = mallory.split('.').nth(1).unwrap();
    let tampered = format!("{}.{mallory_payload}.{}", parts[0], parts[2]);
    assert_token_refused(&server, &tampered, "payload not covered by the signature").await;

    // A corrupted signature (first character changed: changes the first decoded byte).
    let sig = parts[2];
    let first = if sig.starts_with('A') { 'B' } else { 'A' };
    let corrupted = format!("{}.{}.{first}{}", parts[0], parts[1], &sig[1..]);
    assert_token_refused(&server, &corrupted, "corrupted signature").await;

    let expired = bus_token(&claims_with("alice", |c| c.exp = now() - 30));
    assert_token_refused(&server, &expired, "expired").await;

    let unknown_iss = bus_token(&claims_with("alice", |c| c.iss = "no-such-key".into()));
    assert_token_refused(&server, &unknown_iss, "unknown issuer").await;

    let alg_none = format!("{ALG_NONE_HEADER}.{}.", parts[1]);
    assert_token_refused(&server, &alg_none, "alg none").await;

    let mut other = bus_app();
    other.credentials = switchboard::apps::Credentials::new("another-secret");
    let other_secret = switchboard::auth::mint_bus_token(&other, &bus_claims("alice"));
    assert_token_refused(&server, &other_secret, "signed with another secret").await;

    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    let hs384 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
        &bus_claims("alice"),
        &key,
    )
    .unwrap();
    assert_token_refused(&server, &hs384, "HS384, right secret").await;

    let no_exp = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"iss": KEY, "sub": "alice"}),
        &key,
    )
    .unwrap();
    assert_token_refused(&server, &no_exp, "no exp").await;

    let empty_sub = bus_token(&bus_claims(""));
    assert_token_refused(&server, &empty_sub, "empty sub").await;

    assert_token_refused(&server, "not-a-jwt", "garbage").await;

    // The control: the untouched token upgrades and is welcomed.
    let c = BusClient::connect(&server.bus_url(&good)).await;
    assert_eq!(c.user, "alice");
    server.stop().await;
}

#[tokio::test]
async fn authorization_bearer_header_works() {
    let server = server().await;
    let token = bus_token(&bus_claims("bearer-user"));
    let mut req = format!("ws://{}/ws/bus", server.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (ws, res) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(res.status().as_u16(), 101);
    let mut c = BusClient::welcomed(ws).await;
    assert_eq!(c.user, "bearer-user");
    c.ping().await;

    // A bad token in the header is refused like one in the query.
    let expired = bus_token(&claims_with("bearer-user", |c| c.exp = now() - 30));
    let (status, _, body) = upgrade_http(&server, None, Some(&expired)).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].is_string(), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn welcome_is_the_first_frame() {
    let server = server().await;
    let token = bus_token(&bus_claims("alice"));
    let mut ws = BusClient::connect_raw(&server.bus_url(&token)).await;
    let first = recv_json(&mut ws).await;
    assert_eq!(first["type"], "welcome", "{first}");
    assert_eq!(first["user"], "alice", "{first}");
    assert!(
        first["session_id"].as_str().is_some_and(is_socket_id),
        "{first}"
    );
    assert_bus_envelope(&first);
    // Each connection has its own session id.
    let other = server.bus("alice").await;
    assert_ne!(other.session_id, first["session_id"].as_str().unwrap());
    assert!(is_socket_id(&other.session_id));
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Envelope, heartbeat, invalid input
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn ping_is_answered_with_pong() {
    let server = server().await;
    let mut c = server.bus("alice").await;
    for _ in 0..3 {
        c.send(json!({"type":"ping"})).await;
        let v = c.recv().await;
        assert_eq!(v["type"], "pong", "{v}");
        assert!(v["timestamp"].is_u64(), "{v}");
    }
    server.stop().await;
}

#[tokio::test]
async fn invalid_messages_get_e_ws_invalid_and_the_connection_keeps_working() {
    let server = server().await;
    let mut c = server.bus("alice").await;
    let bad = [
        "not json",
        "{\"type\":\"ping\"",
        "[]",
        r#"{"no":"type"}"#,
        r#"{"type":1}"#,
        r#"{"type":"nope"}"#,
        r#"{"type":"subscribe","events":"presence"}"#,
        r#"{"type":"subscribe","events":[1]}"#,
        r#"{"type":"subscribe","rooms":{"a":1}}"#,
        r#"{"type":"presence","status":"sleeping"}"#,
        r#"{"type":"presence"}"#,
        r#"{"type":"typing","recipient":1,"conversation_id":"c"}"#,
        r#"{"type":"typing","recipient":"bob"}"#,
        // Unknown event types, alone or next to valid ones: the message is refused whole.
        r#"{"type":"subscribe","events":["bogus"]}"#,
        r#"{"type":"subscribe","events":["notification","bogus"]}"#,
        r#"{"type":"unsubscribe","events":["bogus"]}"#,
    ];
    for text in bad {
        c.send_text(text).await;
        let v = c.expect_error("E-WS-INVALID").await;
        assert!(!v["message"].as_str().unwrap().is_empty(), "{text}: {v}");
    }
    c.ws.send(tungstenite::Message::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    c.expect_error("E-WS-INVALID").await;
    // Still open and working; the refused subscribe did not apply in part.
    c.ping().await;
    let ack = c.subscribe(&[], &[]).await;
    assert_eq!(names(&ack["events"]), set(&[]), "{ack}");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Event-type subscriptions
// ---------------------------------------------------------------------------------------------

async fn notify(api: &Api, to: &[&str], message: &str) {
    let (status, v) = api
        .bus_call(
            "POST",
            "/bus/notifications",
            &json!({"to": to, "notification_type": "test", "message": message}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
}

async fn direct_message(api: &Api, participants: &[&str], id: &str, content: &str) -> Value {
    let (status, v) = api
        .bus_call(
            "POST",
            "/bus/messages",
            &json!({"message_id": id, "sender": "someone", "participants": participants,
                    "content": content}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v
}

#[tokio::test]
async fn only_subscribed_event_types_are_delivered() {
    let server = server().await;
    let api = server.api();
    let mut c = server.bus("alice").await;

    // Before the first subscribe, user events wait for it (a client never loses what
    // arrives between its welcome and its subscribe); a type it does not subscribe to is
    // then dropped.
    notify(&api, &["alice"], "before").await;
    direct_message(&api, &["alice"], "m0", "not wanted").await;
    c.ping().await;

    let ack = c.subscribe(&["notification"], &[]).await;
    assert_eq!(names(&ack["events"]), set(&["notification"]));
    let v = c.recv_type("notification").await;
    assert_eq!(v["message"], "before", "{v}");
    notify(&api, &["alice"], "during").await;
    let v = c.recv_type("notification").await;
    assert_eq!(v["message"], "during", "{v}");

    // Other types stay filtered.
    direct_message(&api, &["alice"], "m1", "hello").await;
    c.ping().await;

    let ack = c.unsubscribe(&["notification"], &[]).await;
    assert_eq!(names(&ack["events"]), set(&[]));
    notify(&api, &["alice"], "after").await;
    c.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn subscribed_reports_the_full_set() {
    let server = server().await;
    let claims = claims_with("alice", |c| c.channels = vec!["chat-*".into()]);
    let mut c = server.bus_with(&claims).await;

    let ack = c.subscribe(&["presence", "typing"], &[]).await;
    assert_eq!(names(&ack["events"]), set(&["presence", "typing"]), "{ack}");
    assert_eq!(names(&ack["rooms"]), set(&[]), "{ack}");

    let ack = c.subscribe(&["notification"], &["chat-1"]).await;
    assert_eq!(
        names(&ack["events"]),
        set(&["presence", "typing", "notification"]),
        "{ack}"
    );
    assert_eq!(names(&ack["rooms"]), set(&["chat-1"]), "{ack}");

    // Re-subscribing changes nothing and lists nothing twice.
    let ack = c.subscribe(&["typing"], &["chat-1"]).await;
    assert_eq!(ack["events"].as_array().unwrap().len(), 3, "{ack}");
    assert_eq!(ack["rooms"], json!(["chat-1"]), "{ack}");

    let ack = c.unsubscribe(&["typing"], &["chat-1"]).await;
    assert_eq!(
        names(&ack["events"]),
        set(&["presence", "notification"]),
        "{ack}"
    );
    assert_eq!(names(&ack["rooms"]), set(&[]), "{ack}");

    let ack = c.unsubscribe(&[], &[]).await;
    assert_eq!(
        names(&ack["events"]),
        set(&["presence", "notification"]),
        "{ack}"
    );

    let all = ["action", "presence", "typing", "notification", "message"];
    let ack = c.subscribe(&all, &["chat-2", "chat-1"]).await;
    assert_eq!(names(&ack["events"]), set(&all), "{ack}");
    assert_eq!(ack["rooms"], json!(["chat-1", "chat-2"]), "{ack}");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Rooms
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn rooms_allowed_by_the_token_receive_channel_events_like_pusher() {
    let server = server().await;
    let api = server.api();
    let mut pusher = server.pusher().await;
    pusher.subscribe("chat-1").await;

    let claims = claims_with("alice", |c| {
        c.channels = vec!["chat-*".into(), "team-?".into()]
    });
    let mut c = server.bus_with(&claims).await;
    c.send(json!({"type":"subscribe","rooms":["chat-1","admin","team-12","team-1"]}))
        .await;
    let e = c.expect_error("E-WS-PERMISSION").await;
    assert!(e["message"].as_str().unwrap().contains("admin"), "{e}");
    let e = c.expect_error("E-WS-PERMISSION").await;
    assert!(e["message"].as_str().unwrap().contains("team-12"), "{e}");
    let ack = c.recv_type("subscribed").await;
    assert_eq!(ack["rooms"], json!(["chat-1", "team-1"]), "{ack}");
    assert_eq!(ack["events"], json!([]), "{ack}");

    // A room event needs no event-type subscription: the room is the opt-in.
    let data = r#"{"text":"hi"}"#;
    let (status, v) = api
        .trigger(json!({"name":"new-message","channel":"chat-1","data":data}))
        .await;
    assert_eq!(status, 200, "{v}");
    let v = c.recv_type("event").await;
    assert_eq!(v["room"], "chat-1", "{v}");
    assert_eq!(v["event"], "new-message", "{v}");
    assert_eq!(v["data"], data, "{v}");
    let p = pusher.expect("new-message").await;
    assert_eq!(p["channel"], "chat-1", "{p}");
    assert_eq!(p["data"], data, "{p}");

    // Non-string data reaches the bus as the string Pusher clients get.
    api.trigger(json!({"name":"obj","channel":"team-1","data":{"n":1}}))
        .await;
    let v = c.recv_type("event").await;
    assert_eq!(
        (v["room"].as_str(), v["event"].as_str()),
        (Some("team-1"), Some("obj"))
    );
    assert_eq!(
        serde_json::from_str::<Value>(v["data"].as_str().unwrap()).unwrap(),
        json!({"n":1})
    );

    // Rooms not joined (allowed or not) deliver nothing.
    api.trigger(json!({"name":"x","channel":"admin","data":"{}"}))
        .await;
    api.trigger(json!({"name":"x","channel":"chat-2","data":"{}"}))
        .await;
    c.ping().await;

    // After leaving the room its events stop; Pusher still gets them.
    let ack = c.unsubscribe(&[], &["chat-1"]).await;
    assert_eq!(ack["rooms"], json!(["team-1"]), "{ack}");
    api.trigger(json!({"name":"later","channel":"chat-1","data":"{}"}))
        .await;
    pusher.expect("later").await;
    c.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn rooms_outside_the_globs_are_denied() {
    let server = server().await;
    // No `channels` claim: no room at all.
    let mut c = server.bus("alice").await;
    c.send(json!({"type":"subscribe","rooms":["chat-1"]})).await;
    c.expect_error("E-WS-PERMISSION").await;
    let ack = c.recv_type("subscribed").await;
    assert_eq!(ack["rooms"], json!([]), "{ack}");

    // Even `*` does not open another user's server-to-user channel.
    let claims = claims_with("alice", |c| c.channels = vec!["*".into()]);
    let mut c = server.bus_with(&claims).await;
    c.send(json!({"type":"subscribe","rooms":["#server-to-user-bob","anything"]}))
        .await;
    c.expect_error("E-WS-PERMISSION").await;
    let ack = c.recv_type("subscribed").await;
    assert_eq!(ack["rooms"], json!(["anything"]), "{ack}");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Presence
// ---------------------------------------------------------------------------------------------

async fn expect_presence(c: &mut BusClient, user: &str, status: &str, activity: Option<&str>) {
    let v = c.recv_type("presence").await;
    assert_eq!(v["user"], user, "{v}");
    assert_eq!(v["status"], status, "{v}");
    match activity {
        Some(a) => assert_eq!(v["activity"], a, "{v}"),
        None => assert!(v.get("activity").is_none(), "{v}"),
    }
}

async fn declare(c: &mut BusClient, status: &str, activity: Option<&str>) {
    let mut m = json!({"type":"presence","status":status});
    if let Some(a) = activity {
        m["activity"] = json!(a);
    }
    c.send(m).await;
}

#[tokio::test]
async fn watchers_follow_a_users_presence() {
    let server = server().await;
    let mut alice = server.bus_with(&watching("alice", &["bob"])).await;
    alice.subscribe(&["presence"], &[]).await;
    // Carol is subscribed to presence but watches nobody.
    let mut carol = server.bus("carol").await;
    carol.subscribe(&["presence"], &[]).await;
    // Dave watches bob but never subscribed to presence.
    let mut dave = server.bus_with(&watching("dave", &["bob"])).await;

    let mut bob1 = server.bus("bob").await;
    expect_presence(&mut alice, "bob", "online", None).await;

    declare(&mut bob1, "busy", Some("in a call")).await;
    expect_presence(&mut alice, "bob", "busy", Some("in a call")).await;
    declare(&mut bob1, "away", None).await;
    expect_presence(&mut alice, "bob", "away", None).await;
    declare(&mut bob1, "online", Some("browsing")).await;
    expect_presence(&mut alice, "bob", "online", Some("browsing")).await;
    // `offline` is invisible while connected.
    declare(&mut bob1, "offline", None).await;
    expect_presence(&mut alice, "bob", "offline", None).await;
    declare(&mut bob1, "online", None).await;
    expect_presence(&mut alice, "bob", "online", None).await;

    // A second session changes nothing; closing one of two changes nothing.
    let mut bob2 = server.bus("bob").await;
    bob2.ping().await; // its connect was counted before its first message is handled
    alice.ping().await;
    bob1.close().await;
    alice.expect_silence(SILENCE).await;
    bob2.close().await;
    expect_presence(&mut alice, "bob", "offline", None).await;

    // Non-watchers and watchers not subscribed to presence got none of it.
    carol.ping().await;
    dave.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn subscribing_to_presence_sends_a_snapshot_of_watched_users() {
    let server = server().await;
    let mut bob = server.bus("bob").await;
    bob.ping().await; // its connect is applied
    let mut carol = server.bus("carol").await;
    declare(&mut carol, "busy", Some("coding")).await;
    carol.ping().await; // the declaration is applied

    let mut alice = server
        .bus_with(&watching("alice", &["bob", "carol", "dave", "alice"]))
        .await;
    // Nothing before the subscription.
    alice.ping().await;
    alice.subscribe(&["presence"], &[]).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let v = alice.recv_type("presence").await;
        seen.push((
            v["user"].as_str().unwrap().to_owned(),
            v["status"].as_str().unwrap().to_owned(),
            v["activity"].as_str().map(str::to_owned),
        ));
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("bob".into(), "online".into(), None),
            ("carol".into(), "busy".into(), Some("coding".into())),
        ]
    );
    // Dave (offline) and alice herself are not in it.
    alice.ping().await;
    // A second subscribe to presence does not repeat it.
    alice.subscribe(&["presence"], &[]).await;
    alice.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn contacts_make_presence_visible_from_the_next_connection() {
    let server = server().await;
    let api = server.api();
    let mut before = server.bus("alice").await;
    before.subscribe(&["presence"], &[]).await;

    let (status, v) = api
        .bus_call("PUT", "/users/alice/contacts", &json!({"contacts":["bob"]}))
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = api
        .bus_call("GET", "/users/alice/contacts", &Value::Null)
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["contacts"], json!(["bob"]), "{v}");

    let mut after = server.bus("alice").await;
    after.subscribe(&["presence"], &[]).await;
    let _bob = server.bus("bob").await;
    expect_presence(&mut after, "bob", "online", None).await;
    // The connection opened before the contacts were set does not watch bob.
    before.ping().await;

    // Signed like every API call.
    let mut wrong = server.api();
    wrong.secret = "wrong-secret".into();
    let (status, _) = wrong
        .bus_call("PUT", "/users/alice/contacts", &json!({"contacts":["eve"]}))
        .await;
    assert_eq!(status, 401);
    server.stop().await;
}

#[tokio::test]
async fn idle_sessions_go_away_and_activity_brings_them_back() {
    let server = TestServer::start_with(|c| {
        c.bus.presence_throttle_ms = 0;
        c.bus.idle_timeout = 1;
    })
    .await;
    let mut alice = server.bus_with(&watching("alice", &["bob"])).await;
    alice.subscribe(&["presence"], &[]).await;
    let mut bob = server.bus("bob").await;
    let connected = Instant::now();
    expect_presence(&mut alice, "bob", "online", None).await;

    // Pings are not activity: bob pings all along and still goes away after the timeout.
    let deadline = Instant::now() + WAIT;
    let away = loop {
        tokio::select! {
            v = alice.recv() => break v,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                assert!(Instant::now() < deadline, "bob never went away");
                bob.ping().await;
            }
        }
    };
    assert_eq!(away["type"], "presence", "{away}");
    assert_eq!(
        (away["user"].as_str(), away["status"].as_str()),
        (Some("bob"), Some("away"))
    );
    assert!(
        connected.elapsed() >= Duration::from_millis(900),
        "away after {:?}, before the 1 s idle timeout",
        connected.elapsed()
    );

    // Any other message is activity.
    bob.subscribe(&[], &[]).await;
    expect_presence(&mut alice, "bob", "online", None).await;
    server.stop().await;
}

#[tokio::test]
async fn presence_announcements_are_throttled_and_coalesced() {
    // The default: one announcement per second per user.
    let server = TestServer::start().await;
    let mut alice = server.bus_with(&watching("alice", &["bob"])).await;
    alice.subscribe(&["presence"], &[]).await;
    let mut bob = server.bus("bob").await;
    expect_presence(&mut alice, "bob", "online", None).await;
    // Let the window of that first announcement pass.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let sent = Instant::now();
    declare(&mut bob, "busy", Some("first")).await;
    declare(&mut bob, "away", Some("middle")).await;
    declare(&mut bob, "online", Some("last")).await;
    expect_presence(&mut alice, "bob", "busy", Some("first")).await;
    let first = sent.elapsed();
    assert!(first < Duration::from_millis(500), "first took {first:?}");
    // The middle one is never announced: the next one is the last, a window later.
    expect_presence(&mut alice, "bob", "online", Some("last")).await;
    let last = sent.elapsed();
    assert!(
        last >= Duration::from_millis(800),
        "coalesced one came after {last:?}"
    );
    alice.expect_silence(SILENCE).await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Typing
// ---------------------------------------------------------------------------------------------

async fn typing(c: &mut BusClient, to: &str, conversation: &str) {
    c.send(json!({"type":"typing","recipient":to,"conversation_id":conversation}))
        .await;
}

async fn expect_typing(c: &mut BusClient, from: &str, conversation: &str) {
    let v = c.recv_type("typing").await;
    assert_eq!(v["user"], from, "{v}");
    assert_eq!(v["conversation_id"], conversation, "{v}");
}

#[tokio::test]
async fn typing_reaches_every_subscribed_session_of_the_recipient_only() {
    let server = TestServer::start_with(|c| {
        c.bus.presence_throttle_ms = 0;
        c.bus.typing_throttle_ms = 500;
    })
    .await;
    let mut alice = server.bus("alice").await;
    alice.subscribe(&["typing"], &[]).await;
    let mut bob1 = server.bus("bob").await;
    bob1.subscribe(&["typing"], &[]).await;
    let mut bob2 = server.bus("bob").await;
    bob2.subscribe(&["typing", "presence"], &[]).await;
    let mut bob3 = server.bus("bob").await;
    bob3.subscribe(&["notification"], &[]).await;
    let mut carol = server.bus("carol").await;
    carol.subscribe(&["typing"], &[]).await;

    typing(&mut alice, "bob", "c1").await;
    expect_typing(&mut bob1, "alice", "c1").await;
    expect_typing(&mut bob2, "alice", "c1").await;
    bob3.ping().await; // not subscribed to typing
    carol.ping().await; // not the recipient
    alice.ping().await; // the sender does not get it back

    // A repeat inside the throttle window is dropped; another conversation is not.
    typing(&mut alice, "bob", "c1").await;
    typing(&mut alice, "bob", "c2").await;
    expect_typing(&mut bob1, "alice", "c2").await;
    expect_typing(&mut bob2, "alice", "c2").await;
    // After the window the same indicator goes through again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    typing(&mut alice, "bob", "c1").await;
    expect_typing(&mut bob1, "alice", "c1").await;

    // Invalid indicators are refused.
    typing(&mut alice, "", "c1").await;
    alice.expect_error("E-WS-INVALID").await;
    typing(&mut alice, "bob", "").await;
    alice.expect_error("E-WS-INVALID").await;
    bob1.ping().await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Notifications, messages, actions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn notifications_reach_every_user_in_to() {
    let server = server().await;
    let api = server.api();
    let mut alice = server.bus("alice").await;
    alice.subscribe(&["notification"], &[]).await;
    let mut alice2 = server.bus("alice").await;
    alice2.subscribe(&["notification"], &[]).await;
    let mut bob = server.bus("bob").await;
    bob.subscribe(&["notification"], &[]).await;
    let mut carol = server.bus("carol").await;
    carol.subscribe(&["notification"], &[]).await;

    let body = json!({"to":["alice","bob"],"notification_type":"connection_request",
        "from":"charlie","message":"Charlie wants to connect",
        "action_url":"/connections/pending"});
    let (status, v) = api.bus_call("POST", "/bus/notifications", &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["recipients"], json!(["alice", "bob"]), "{v}");
    for c in [&mut alice, &mut alice2, &mut bob] {
        let n = c.recv_type("notification").await;
        assert_eq!(n["notification_type"], "connection_request", "{n}");
        assert_eq!(n["from"], "charlie", "{n}");
        assert_eq!(n["message"], "Charlie wants to connect", "{n}");
        assert_eq!(n["action_url"], "/connections/pending", "{n}");
    }
    carol.ping().await;

    // Optional fields are left out when absent.
    notify(&api, &["bob"], "plain").await;
    let n = bob.recv_type("notification").await;
    assert!(
        n.get("from").is_none() && n.get("action_url").is_none(),
        "{n}"
    );

    // Refusals deliver nothing.
    for bad in [
        json!({"notification_type":"t","message":"m"}),
        json!({"to":[],"notification_type":"t","message":"m"}),
        json!({"to":["alice"],"message":"m"}),
        json!({"to":[""],"notification_type":"t","message":"m"}),
    ] {
        let (status, v) = api.bus_call("POST", "/bus/notifications", &bad).await;
        assert_eq!(status, 400, "{bad}: {v}");
        assert!(v["error"].is_string(), "{v}");
    }
    let mut wrong = server.api();
    wrong.secret = "wrong-secret".into();
    let (status, v) = wrong.bus_call("POST", "/bus/notifications", &body).await;
    assert_eq!(status, 401, "{v}");
    alice.ping().await;
    bob.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn messages_reach_every_participant_with_a_100_character_preview() {
    let server = server().await;
    let api = server.api();
    let mut alice = server.bus("alice").await;
    alice.subscribe(&["message"], &[]).await;
    let mut bob = server.bus("bob").await;
    bob.subscribe(&["message"], &[]).await;
    let mut carol = server.bus("carol").await;
    carol.subscribe(&["message"], &[]).await;

    // 150 characters, multi-byte ones included: the preview counts characters, not bytes.
    let content: String = "héllo wörld ✓ ".repeat(11).chars().take(150).collect();
    assert_eq!(content.chars().count(), 150);
    let expected: String = content.chars().take(100).collect();
    let body = json!({"message_id":"m1","sender":"bob","participants":["alice","bob"],
        "content":content,"conversation_id":"conv_123"});
    let (status, v) = api.bus_call("POST", "/bus/messages", &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["recipients"], json!(["alice", "bob"]), "{v}");
    for c in [&mut alice, &mut bob] {
        let m = c.recv_type("message").await;
        assert_eq!(m["message_id"], "m1", "{m}");
        assert_eq!(m["sender"], "bob", "{m}");
        assert_eq!(m["preview"], expected.as_str(), "{m}");
        assert_eq!(m["conversation_id"], "conv_123", "{m}");
    }
    carol.ping().await;

    // Short content is its own preview.
    direct_message(&api, &["carol"], "m2", "hi").await;
    let m = carol.recv_type("message").await;
    assert_eq!(m["preview"], "hi", "{m}");
    assert!(m.get("conversation_id").is_none(), "{m}");

    for bad in [
        json!({"message_id":"m","sender":"bob","content":"x"}),
        json!({"message_id":"m","sender":"bob","participants":[],"content":"x"}),
        json!({"message_id":"m","participants":["alice"],"content":"x"}),
    ] {
        let (status, v) = api.bus_call("POST", "/bus/messages", &bad).await;
        assert_eq!(status, 400, "{bad}: {v}");
    }
    let mut wrong = server.api();
    wrong.secret = "wrong-secret".into();
    let (status, _) = wrong.bus_call("POST", "/bus/messages", &body).await;
    assert_eq!(status, 401);
    alice.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn actions_follow_the_audience_rules() {
    let server = server().await;
    let api = server.api();
    let users = ["alice", "bob", "carol", "dave"];
    let mut clients = Vec::new();
    for u in users {
        let mut c = server.bus(u).await;
        c.subscribe(&["action"], &[]).await;
        clients.push(c);
    }
    let post = |body: Value| {
        let api = &api;
        async move {
            let (status, v) = api.bus_call("POST", "/bus/actions", &body).await;
            (status, v)
        }
    };
    let ok = [
        // POST → the issuer only (other audience fields are ignored).
        json!({"action_type":"POST","action_id":"a1","issuer":"bob","content":"Check this out",
               "participants":["alice"],"to":["carol"],"parent_owner":"dave"}),
        // MSG → every participant.
        json!({"action_type":"MSG","action_id":"a2","issuer":"bob","content":{"k":[1,2]},
               "participants":["alice","carol"]}),
        // CMNT / REACT → the parent's owner.
        json!({"action_type":"CMNT","action_id":"a3","issuer":"alice","content":"nice",
               "parent_owner":"dave"}),
        json!({"action_type":"REACT","action_id":"a4","issuer":"bob","content":"+1",
               "parent_owner":"carol","to":["dave"]}),
        // Federated → the tenant, whatever the type.
        json!({"action_type":"POST","action_id":"a5","issuer":"bob","content":null,
               "source":"federated","tenant":"alice"}),
        // Any other type → `to`.
        json!({"action_type":"FLLW","action_id":"a6","issuer":"carol","source":"local",
               "to":["bob","dave"]}),
    ];
    let expected_recipients = [
        vec!["bob"],
        vec!["alice", "carol"],
        vec!["dave"],
        vec!["carol"],
        vec!["alice"],
        vec!["bob", "dave"],
    ];
    for (body, want) in ok.iter().zip(&expected_recipients) {
        let (status, v) = post(body.clone()).await;
        assert_eq!(status, 200, "{body}: {v}");
        assert_eq!(v["recipients"], json!(want), "{body}: {v}");
    }
    // A missing audience field (or a bad source) is a 400 and delivers nothing.
    let bad = [
        json!({"action_type":"CMNT","action_id":"b1","issuer":"alice","to":["bob"]}),
        json!({"action_type":"REACT","action_id":"b2","issuer":"alice"}),
        json!({"action_type":"MSG","action_id":"b3","issuer":"alice","to":["bob"]}),
        json!({"action_type":"POST","action_id":"b4","issuer":"alice","source":"federated",
               "to":["bob"]}),
        json!({"action_type":"FLLW","action_id":"b5","issuer":"alice"}),
        json!({"action_type":"FLLW","action_id":"b6","issuer":"alice","to":["bob"],
               "source":"elsewhere"}),
        json!({"action_type":"","action_id":"b7","issuer":"alice","to":["bob"]}),
    ];
    for body in bad {
        let (status, v) = post(body.clone()).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert!(v["error"].is_string(), "{v}");
    }
    let mut wrong = server.api();
    wrong.secret = "wrong-secret".into();
    let (status, _) = wrong.bus_call("POST", "/bus/actions", &ok[0]).await;
    assert_eq!(status, 401);

    // A final marker to everyone: whatever each user got before it is all they got.
    let (status, _) = post(json!({"action_type":"MARK","action_id":"end","issuer":"x",
        "to":users}))
    .await;
    assert_eq!(status, 200);
    let want: [&[&str]; 4] = [&["a2", "a5"], &["a1", "a6"], &["a2", "a4"], &["a3", "a6"]];
    let mut frames = std::collections::HashMap::new();
    for (i, c) in clients.iter_mut().enumerate() {
        let mut got = Vec::new();
        loop {
            let v = c.recv_type("action").await;
            if v["action_id"] == "end" {
                break;
            }
            got.push(v["action_id"].as_str().unwrap().to_owned());
            frames.insert(v["action_id"].as_str().unwrap().to_owned(), v);
        }
        assert_eq!(got, want[i], "actions received by {}", users[i]);
    }
    let a1 = &frames["a1"];
    assert_eq!(a1["action_type"], "POST", "{a1}");
    assert_eq!(a1["issuer"], "bob", "{a1}");
    assert_eq!(a1["content"], "Check this out", "{a1}");
    assert_eq!(a1["source"], "local", "{a1}");
    assert_eq!(frames["a2"]["content"], json!({"k":[1,2]}));
    assert_eq!(frames["a5"]["source"], "federated");
    assert_eq!(frames["a5"]["content"], Value::Null);
    assert_eq!(frames["a6"]["content"], Value::Null);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Cross-protocol
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn user_events_reach_bus_sessions_and_signed_in_pusher_connections() {
    let server = server().await;
    let api = server.api();
    let mut bus = server.bus("alice").await;
    bus.subscribe(&["notification", "message"], &[]).await;
    let mut pusher = server.pusher().await;
    pusher.signin(r#"{"id":"alice"}"#).await;
    // Another Pusher connection, signed in as someone else, gets nothing.
    let mut other = server.pusher().await;
    other.signin(r#"{"id":"bob"}"#).await;

    let body = json!({"to":["alice"],"notification_type":"connection_request",
        "from":"charlie","message":"Charlie wants to connect","action_url":"/c"});
    let (status, v) = api.bus_call("POST", "/bus/notifications", &body).await;
    assert_eq!(status, 200, "{v}");
    let n = bus.recv_type("notification").await;
    assert_eq!(n["message"], "Charlie wants to connect", "{n}");
    let p = pusher.expect("notification").await;
    assert_eq!(p["channel"], "#server-to-user-alice", "{p}");
    let data: Value = serde_json::from_str(p["data"].as_str().expect("string data")).unwrap();
    assert_eq!(
        data,
        json!({"notification_type":"connection_request","from":"charlie",
               "message":"Charlie wants to connect","action_url":"/c"})
    );

    direct_message(&api, &["alice"], "m9", "hello").await;
    bus.recv_type("message").await;
    let p = pusher.expect("message").await;
    assert_eq!(p["channel"], "#server-to-user-alice", "{p}");
    let data: Value = serde_json::from_str(p["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["message_id"], "m9");
    assert_eq!(data["preview"], "hello");

    other.send(json!({"event":"pusher:ping","data":{}})).await;
    let v = other.recv().await;
    assert_eq!(v["event"], "pusher:pong", "bob's Pusher connection got {v}");
    server.stop().await;
}

#[tokio::test]
async fn bus_presence_reaches_pusher_watchlists() {
    let server = server().await;
    let mut pusher = server.pusher().await;
    pusher
        .signin(r#"{"id":"watcher","watchlist":["bob"]}"#)
        .await;

    let mut bob = server.bus("bob").await;
    let v = pusher.expect("pusher_internal:watchlist_events").await;
    assert_eq!(
        v["data"]["events"],
        json!([{"name":"online","user_ids":["bob"]}]),
        "{v}"
    );
    // busy and away are still online for Pusher: no event.
    declare(&mut bob, "busy", None).await;
    bob.ping().await;
    bob.close().await;
    let v = pusher.recv().await;
    assert_eq!(v["event"], "pusher_internal:watchlist_events", "{v}");
    assert_eq!(
        v["data"]["events"],
        json!([{"name":"offline","user_ids":["bob"]}]),
        "{v}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_pusher_signin_is_presence_for_bus_watchers() {
    let server = server().await;
    let mut alice = server.bus_with(&watching("alice", &["bob"])).await;
    alice.subscribe(&["presence"], &[]).await;
    let mut pusher = server.pusher().await;
    pusher.signin(r#"{"id":"bob"}"#).await;
    expect_presence(&mut alice, "bob", "online", None).await;
    pusher.close().await;
    expect_presence(&mut alice, "bob", "offline", None).await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Limits, expiry, tokens, termination
// ---------------------------------------------------------------------------------------------

/// Connects `user` and returns the first frame without asserting it.
async fn connect_first_frame(server: &TestServer, user: &str) -> (Ws, Value) {
    let token = bus_token(&bus_claims(user));
    let mut ws = BusClient::connect_raw(&server.bus_url(&token)).await;
    let first = recv_json(&mut ws).await;
    assert_bus_envelope(&first);
    (ws, first)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[tokio::test]
async fn a_sixth_connection_for_one_user_is_refused_with_4003() {
    let server = server().await;
    // A signed-in Pusher connection does not count against the bus limit.
    let mut pusher = server.pusher().await;
    pusher.signin(r#"{"id":"alice"}"#).await;
    let mut sessions = Vec::new();
    for _ in 0..5 {
        sessions.push(server.bus("alice").await);
    }
    let (mut ws, first) = connect_first_frame(&server, "alice").await;
    assert_eq!(first["type"], "error", "{first}");
    assert_eq!(first["code"], "E-WS-PERMISSION", "{first}");
    assert_eq!(expect_close(&mut ws).await, 4003);

    // Other users are not affected, nor are the five sessions.
    let mut bob = server.bus("bob").await;
    bob.ping().await;
    for s in &mut sessions {
        s.ping().await;
    }

    // Closing one frees a slot.
    sessions.pop().unwrap().close().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (mut ws, first) = connect_first_frame(&server, "alice").await;
        if first["type"] == "welcome" {
            break;
        }
        assert_eq!(first["code"], "E-WS-PERMISSION", "{first}");
        assert_eq!(expect_close(&mut ws).await, 4003);
        assert!(Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn over_the_rate_limit_messages_are_dropped_and_the_connection_stays() {
    let server = TestServer::start_with(|c| {
        c.bus.presence_throttle_ms = 0;
        c.bus.messages_per_minute = 60;
        c.bus.message_burst = 3;
    })
    .await;
    let api = server.api();
    let mut c = server.bus("alice").await;
    c.subscribe(&["notification"], &[]).await; // 1
    c.ping().await; // 2
    c.ping().await; // 3
    c.send(json!({"type":"subscribe","events":["message"]}))
        .await;
    c.expect_error("E-WS-RATE").await;
    c.send(json!({"type":"ping"})).await;
    c.expect_error("E-WS-RATE").await;

    // Still open; the dropped subscribe did not apply: the message is not delivered, the
    // notification is.
    direct_message(&api, &["alice"], "m1", "dropped").await;
    notify(&api, &["alice"], "still here").await;
    let n = c.recv_type("notification").await;
    assert_eq!(n["message"], "still here", "{n}");

    // The allowance refills (one a second): a ping is answered again.
    let deadline = Instant::now() + WAIT;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        c.send(json!({"type":"ping"})).await;
        let v = c.recv().await;
        if v["type"] == "pong" {
            break;
        }
        assert_eq!(v["code"], "E-WS-RATE", "{v}");
        assert!(Instant::now() < deadline, "the rate limit never refilled");
    }
    server.stop().await;
}

#[tokio::test]
async fn token_expiry_during_a_connection_closes_it_with_4001() {
    let server = server().await;
    let exp = now() + 2;
    let mut c = server
        .bus_with(&claims_with("alice", |c| c.exp = exp))
        .await;
    c.ping().await;
    let v = c.expect_error("E-WS-AUTH").await;
    assert!(
        v["timestamp"].as_u64().unwrap() >= exp,
        "expiry announced before exp {exp}: {v}"
    );
    assert_eq!(c.expect_close().await, 4001);
    server.stop().await;
}

#[tokio::test]
async fn the_token_api_mints_tokens_that_connect() {
    let server = server().await;
    let api = server.api();
    let (status, v) = api
        .bus_call(
            "POST",
            "/bus/tokens",
            &json!({"user_id":"alice","ttl":600,"watchlist":["bob"],"channels":["chat-*"]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let token = v["token"].as_str().expect("token").to_owned();
    let expires_at = v["expires_at"].as_u64().expect("expires_at");
    assert!(expires_at.abs_diff(now() + 600) <= 5, "{v}");

    let mut alice = BusClient::connect(&server.bus_url(&token)).await;
    assert_eq!(alice.user, "alice");
    // Its channels and watchlist claims apply.
    alice
        .send(json!({"type":"subscribe","events":["presence"],"rooms":["chat-1","admin"]}))
        .await;
    alice.expect_error("E-WS-PERMISSION").await;
    let ack = alice.recv_type("subscribed").await;
    assert_eq!(ack["rooms"], json!(["chat-1"]), "{ack}");
    let _bob = server.bus("bob").await;
    expect_presence(&mut alice, "bob", "online", None).await;

    // The default ttl is an hour.
    let (status, v) = api
        .bus_call("POST", "/bus/tokens", &json!({"user_id":"carol"}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v["expires_at"].as_u64().unwrap().abs_diff(now() + 3600) <= 5,
        "{v}"
    );

    for bad in [
        json!({"ttl":60}),
        json!({"user_id":""}),
        json!({"user_id":"alice","ttl":0}),
        json!({"user_id":"alice","ttl":86_401}),
    ] {
        let (status, v) = api.bus_call("POST", "/bus/tokens", &bad).await;
        assert_eq!(status, 400, "{bad}: {v}");
    }
    let mut wrong = server.api();
    wrong.secret = "wrong-secret".into();
    let (status, v) = wrong
        .bus_call("POST", "/bus/tokens", &json!({"user_id":"alice"}))
        .await;
    assert_eq!(status, 401, "{v}");
    assert!(v.get("token").is_none(), "{v}");
    server.stop().await;
}

#[tokio::test]
async fn terminate_connections_closes_the_users_bus_sessions_with_4009() {
    let server = server().await;
    let api = server.api();
    let mut a1 = server.bus("alice").await;
    let mut a2 = server.bus("alice").await;
    let mut bob = server.bus("bob").await;
    let (status, v) = api
        .bus_call("POST", "/users/alice/terminate_connections", &json!({}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(a1.expect_close().await, 4009);
    assert_eq!(a2.expect_close().await, 4009);
    bob.ping().await;
    // Alice may connect again.
    let mut again = server.bus("alice").await;
    again.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn the_default_rate_limit_allows_a_burst_of_20() {
    let server = TestServer::start().await;
    let mut c = server.bus("alice").await;
    // Sent back to back, so the allowance cannot refill in between.
    for _ in 0..21 {
        c.send(json!({"type":"ping"})).await;
    }
    for _ in 0..20 {
        c.recv_type("pong").await;
    }
    c.expect_error("E-WS-RATE").await;
    server.stop().await;
}

#[tokio::test]
async fn a_token_with_a_huge_exp_works() {
    let server = server().await;
    let mut alice = server.bus_with(&watching("alice", &["bob"])).await;
    alice.subscribe(&["presence"], &[]).await;
    // A validly signed token may carry any exp; the session must not fall over on it.
    let mut bob = server
        .bus_with(&claims_with("bob", |c| c.exp = u64::MAX))
        .await;
    expect_presence(&mut alice, "bob", "online", None).await;
    bob.ping().await;
    bob.close().await;
    expect_presence(&mut alice, "bob", "offline", None).await;
    server.stop().await;
}

#[tokio::test]
async fn unanswered_heartbeats_close_with_4201() {
    let server = TestServer::start_with(|c| {
        c.bus.presence_throttle_ms = 0;
        c.server.activity_timeout = 1;
        c.server.pong_timeout = 1;
    })
    .await;
    let mut reading = server.bus("alice").await;
    let mut silent = server.bus("bob").await;
    // A client that reads answers the server's WebSocket pings (tungstenite does it, as
    // browsers do) and stays; one that never reads never answers.
    reading.expect_silence(Duration::from_millis(2500)).await;
    reading.ping().await;
    assert_eq!(silent.expect_close().await, 4201);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_bus_sessions_with_4200() {
    let server = server().await;
    let mut c = server.bus("alice").await;
    c.ping().await;
    let closed = tokio::spawn(async move { c.expect_close().await });
    server.stop().await;
    assert_eq!(closed.await.unwrap(), 4200);
}

#[tokio::test]
async fn full_apps_and_nodes_are_refused_before_the_upgrade() {
    let server = TestServer::start_with(|c| {
        c.bus.presence_throttle_ms = 0;
        c.app.max_connections = 1;
    })
    .await;
    let mut first = server.bus("alice").await;
    let token = bus_token(&bus_claims("bob"));
    let (status, ctype, body) = upgrade_http(&server, Some(&token), None).await;
    assert_eq!(status, 429, "{body}");
    assert!(ctype.starts_with("application/json"), "{ctype}");
    assert!(body["error"].is_string(), "{body}");
    assert_handshake_refused(server.bus_url(&token), 429).await;
    first.ping().await;
    server.stop().await;

    let server = TestServer::start_with(|c| {
        c.bus.presence_throttle_ms = 0;
        c.server.max_connections = 1;
    })
    .await;
    let mut first = server.bus("alice").await;
    let (status, _, body) = upgrade_http(&server, Some(&token), None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].is_string(), "{body}");
    assert_handshake_refused(server.bus_url(&token), 503).await;
    first.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn the_issuer_selects_the_app_and_apps_are_isolated() {
    let server = TestServer::start_with(|c| {
        c.bus.presence_throttle_ms = 0;
        c.apps.push(switchboard::config::AppConfig {
            id: "2".into(),
            key: "second-key".into(),
            secret: "second-secret".into(),
            ..Default::default()
        });
    })
    .await;
    let mut second = bus_app();
    second.credentials = switchboard::apps::Credentials::new("second-secret");
    let claims = claims_with("alice", |c| c.iss = "second-key".into());
    // The second app's key with the first app's secret is refused.
    assert_token_refused(
        &server,
        &bus_token(&claims),
        "iss of app 2, secret of app 1",
    )
    .await;
    let token = switchboard::auth::mint_bus_token(&second, &claims);
    let mut other_app = BusClient::connect(&server.bus_url(&token)).await;
    assert_eq!(other_app.user, "alice");
    other_app.subscribe(&["notification"], &[]).await;
    let mut this_app = server.bus("alice").await;
    this_app.subscribe(&["notification"], &[]).await;

    // The default app's API reaches its own alice only.
    notify(&server.api(), &["alice"], "app 1").await;
    let n = this_app.recv_type("notification").await;
    assert_eq!(n["message"], "app 1", "{n}");
    other_app.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn rooms_per_connection_are_limited() {
    let server = TestServer::start_with(|c| {
        c.bus.presence_throttle_ms = 0;
        c.bus.max_rooms_per_connection = 2;
    })
    .await;
    let claims = claims_with("alice", |c| c.channels = vec!["r-*".into()]);
    let mut c = server.bus_with(&claims).await;
    c.send(json!({"type":"subscribe","rooms":["r-1","r-2","r-3"]}))
        .await;
    c.expect_error("E-WS-PERMISSION").await;
    let ack = c.recv_type("subscribed").await;
    assert_eq!(ack["rooms"], json!(["r-1", "r-2"]), "{ack}");
    // Leaving one makes room for another.
    c.unsubscribe(&[], &["r-1"]).await;
    let ack = c.subscribe(&[], &["r-3"]).await;
    assert_eq!(ack["rooms"], json!(["r-2", "r-3"]), "{ack}");
    server.stop().await;
}
