//! Push notifications for offline users, end to end: devices register over the bus, events
//! are published through the signed API, and local push services (a browser push service,
//! FCM, APNs over h2c, a push webhook) receive, check and record what the server sends.
//!
//! Every test runs the server with `push.concurrency = 1`: a push starts only after the one
//! before it finished (retries and registration removal included), and the worker decides
//! events in publish order. So when a later "marker" push arrives, every earlier event has
//! been decided and any push it caused has already arrived: "no push" is an observation, not
//! a sleep.

#[path = "push_support/mod.rs"]
mod push_support;
mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use p256::pkcs8::EncodePrivateKey;
use push_support::*;
use serde_json::{json, Value};
use support::*;
use switchboard::config::Config;

const SUBJECT: &str = "mailto:ops@example.com";

fn base(c: &mut Config) {
    c.push.concurrency = 1;
    c.push.backoff_initial_ms = 20;
    c.push.webpush_allow_http = true;
    c.bus.presence_throttle_ms = 10;
}

fn web(c: &mut Config, vapid: &Vapid) {
    base(c);
    c.push.vapid_private_key = Some(vapid.private_b64.clone());
    c.push.vapid_subject = SUBJECT.into();
}

/// A bus client watching `users`' presence, to know when they are offline.
async fn watcher(server: &TestServer, users: &[&str]) -> BusClient {
    let mut claims = bus_claims("watcher");
    claims.watchlist = users.iter().map(|u| u.to_string()).collect();
    let mut w = server.bus_with(&claims).await;
    w.subscribe(&["presence"], &[]).await;
    w
}

async fn wait_status(w: &mut BusClient, user: &str, status: &str) {
    loop {
        let v = w.expect("presence").await;
        if v["user"] == user && v["status"] == status {
            return;
        }
    }
}

/// Registers a device for `user` over the bus, disconnects, and waits until the cluster
/// sees the user offline. Returns the registration id.
async fn register(
    server: &TestServer,
    w: &mut BusClient,
    user: &str,
    platform: &str,
    token: Value,
) -> String {
    let mut c = server.bus(user).await;
    c.send(json!({"type":"register_push","platform":platform,"token":token}))
        .await;
    let v = c.recv_type("push_registered").await;
    assert_eq!(v["platform"], platform, "{v}");
    c.close().await;
    wait_status(w, user, "offline").await;
    v["id"].as_str().unwrap().to_owned()
}

/// A direct message from `from` to `to` (the recipient only), with a ttl.
async fn dm(api: &Api, from: &str, to: &str, ttl: u32) {
    let body = json!({"message_id":"m1","sender":from,"participants":[to],
                      "content":"hello there","conversation_id":"c1","ttl":ttl});
    let (status, v) = api.bus_call("POST", "/bus/messages", &body).await;
    assert_eq!(status, 200, "{v}");
}

/// An action of `kind` by `issuer`, for `to` (as `to`, or `parent_owner` for CMNT/REACT).
async fn action(api: &Api, kind: &str, issuer: &str, to: &str) {
    let mut body = json!({"action_type":kind,"action_id":"a-1","issuer":issuer,
                          "content":{"text":"x"},"to":[to],"ttl":600});
    if kind == "CMNT" || kind == "REACT" {
        body["parent_owner"] = json!(to);
    }
    let (status, v) = api.bus_call("POST", "/bus/actions", &body).await;
    assert_eq!(status, 200, "{v}");
}

/// A signed request with any method to `/apps/app-id{path}`.
async fn call(api: &Api, method: &str, path: &str, body: &str) -> (u16, Value) {
    let path = format!("/apps/{}{path}", api.app_id);
    let q = api.signed_query(method, &path, &[], body, now());
    let url = format!("{}{path}?{q}", api.base);
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let res = api
        .http
        .request(m, url)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn registrations(api: &Api, user: &str) -> Vec<Value> {
    let (status, v) = call(api, "GET", &format!("/users/{user}/push"), "").await;
    assert_eq!(status, 200, "{v}");
    v["registrations"].as_array().unwrap().clone()
}

/// The decrypted JSON payload of a Web Push request to `browser`.
fn payload(browser: &Browser, seen: &Seen) -> Value {
    assert_eq!(
        seen.path,
        path_of(&browser.endpoint),
        "pushed to the wrong device"
    );
    serde_json::from_slice(&browser.decrypt(&seen.body)).unwrap()
}

fn path_of(url: &str) -> String {
    let after = url.split_once("://").unwrap().1;
    after[after.find('/').unwrap()..].to_owned()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn web_push_is_encrypted_signed_and_decrypted_end_to_end() {
    let mut svc = Services::start(Vec::new()).await;
    let vapid = Vapid::new();
    let server = TestServer::start_with(|c| web(c, &vapid)).await;
    let api = server.api();
    let mut w = watcher(&server, &["alice"]).await;

    // Bad registrations are answered with E-WS-INVALID; the connection stays usable.
    let mut c = server.bus("alice").await;
    for bad in [
        json!({"type":"register_push","platform":"fax","token":"x"}),
        json!({"type":"register_push","platform":"web","token":{"endpoint":"https://p.example/x","keys":{"p256dh":"AAAA","auth":"AAAA"}}}),
        json!({"type":"register_push","platform":"web","token":"not a subscription"}),
        json!({"type":"register_push","platform":"android"}),
    ] {
        c.send(bad).await;
        c.expect_error("E-WS-INVALID").await;
    }
    c.ping().await;
    c.close().await;
    wait_status(&mut w, "alice", "offline").await;

    // The same browser registered twice is one registration (the newer one).
    let browser = Browser::new(format!("{}/push/alice-1", svc.base));
    let first = register(&server, &mut w, "alice", "web", browser.subscription()).await;
    let id = register(&server, &mut w, "alice", "web", browser.subscription()).await;
    assert_ne!(first, id);
    let list = registrations(&api, "alice").await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["platform"], "web");
    assert_eq!(list[0]["device"], format!("{}/…", svc.base));
    let text = serde_json::to_string(&list).unwrap();
    let keys = browser.subscription()["keys"].clone();
    assert!(!text.contains(keys["auth"].as_str().unwrap()) && !text.contains("alice-1"));

    dm(&api, "bob", "alice", 120).await;
    let seen = svc.next().await;
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("POST", "/push/alice-1")
    );
    assert_eq!(seen.header("content-encoding"), "aes128gcm");
    let ttl: u64 = seen.header("ttl").parse().unwrap();
    assert!(
        (110..=120).contains(&ttl),
        "TTL is what is left of the event's ttl: {ttl}"
    );
    assert_eq!(seen.header("urgency"), "high");
    vapid.verify(seen.header("authorization"), &svc.base, SUBJECT);
    let p: Value = serde_json::from_slice(&browser.decrypt(&seen.body)).unwrap();
    assert_eq!(p["title"], "Direct message");
    assert_eq!(p["body"], "bob sent you a message");
    assert_eq!(
        (p["type"].as_str(), p["url"].as_str()),
        (Some("MSG"), Some("/conversations/c1"))
    );
    assert!(p["id"].as_str().is_some_and(|i| !i.is_empty()), "{p}");

    // Deleted through the API: gone from the list, and a second delete is a 404.
    let path = format!("/users/alice/push/{id}");
    assert_eq!(call(&api, "DELETE", &path, "").await.0, 200);
    assert_eq!(call(&api, "DELETE", &path, "").await.0, 404);
    assert!(registrations(&api, "alice").await.is_empty());
    assert!(svc.pending().is_none());
    server.stop().await;
}

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
    let p = payload(&alice, &svc.next().await);
    assert_eq!(p["type"], "REACT");
    assert_eq!(p["body"], "bob and 2 others reacted to your post");
    dm(&api, "erin", "alice", 600).await;
    let p = payload(&alice, &svc.next().await);
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

fn write_temp(name: &str, text: &str) -> String {
    let dir = temp_dir("push-keys");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn fcm_gets_an_oauth2_token_with_a_signed_assertion_then_the_message() {
    let mut svc = Services::start(Vec::new()).await;
    let account = json!({"type":"service_account","project_id":"proj-1",
        "client_email":"push@test.iam.gserviceaccount.com","private_key":FCM_KEY,
        "token_uri":format!("{}/token", svc.base)});
    let file = write_temp("sa.json", &account.to_string());
    let fcm = svc.base.clone();
    let server = TestServer::start_with(|c| {
        base(c);
        c.push.fcm_credentials_file = Some(file);
        c.push.fcm_endpoint = fcm;
    })
    .await;
    let api = server.api();
    let mut w = watcher(&server, &["alice", "bob"]).await;
    // No Web Push provider is configured: a browser cannot register.
    let mut c = server.bus("alice").await;
    let sub = Browser::new(format!("{}/push/x", svc.base)).subscription();
    c.send(json!({"type":"register_push","platform":"web","token":sub}))
        .await;
    c.expect_error("E-WS-INVALID").await;
    c.close().await;
    wait_status(&mut w, "alice", "offline").await;
    register(&server, &mut w, "alice", "android", json!("tok-alice")).await;
    register(&server, &mut w, "bob", "android", json!("gone-bob")).await;

    action(&api, "CMNT", "bob", "alice").await;
    let token = svc.next().await;
    assert_eq!(
        token.path, "/token",
        "the token endpoint checked the RS256 assertion"
    );
    let send = svc.next().await;
    assert_eq!(send.path, "/v1/projects/proj-1/messages:send");
    assert_eq!(send.header("authorization"), format!("Bearer {FCM_TOKEN}"));
    let m = &send.json()["message"];
    assert_eq!(m["token"], "tok-alice");
    assert_eq!(
        m["notification"],
        json!({"title":"Comment","body":"bob commented on your post"})
    );
    assert_eq!(m["data"]["type"], "CMNT");
    assert_eq!(m["data"]["url"], "/actions/a-1");
    let ttl = m["android"]["ttl"].as_str().unwrap();
    let secs: u64 = ttl.strip_suffix('s').unwrap().parse().unwrap();
    assert!(
        (590..=600).contains(&secs),
        "android.ttl follows the event ttl: {ttl}"
    );

    dm(&api, "alice", "bob", 600).await; // 404 UNREGISTERED: removed
    dm(&api, "bob", "alice", 600).await; // marker
    let gone = svc.next().await;
    assert_eq!(
        gone.json()["message"]["token"],
        "gone-bob",
        "the access token is reused"
    );
    assert_eq!(svc.next().await.json()["message"]["token"], "tok-alice");
    assert!(registrations(&api, "bob").await.is_empty());
    assert!(svc.pending().is_none());
    server.stop().await;
}

/// A PKCS#8 PEM for a P-256 key (what Apple's `.p8` files are).
fn p8(secret: &p256::SecretKey) -> String {
    let der = secret.to_pkcs8_der().unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_bytes());
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

#[tokio::test]
async fn apns_receives_http2_with_a_provider_token_and_the_apns_headers() {
    let (secret, public) = p256_pair();
    let mut svc = Services::start(public.clone()).await;
    let key = write_temp("AuthKey.p8", &p8(&secret));
    let endpoint = svc.base.clone();
    let server = TestServer::start_with(|c| {
        base(c);
        c.push.apns_key_file = Some(key);
        c.push.apns_key_id = APNS_KEY_ID.into();
        c.push.apns_team_id = APNS_TEAM.into();
        c.push.apns_topic = APNS_TOPIC.into();
        c.push.apns_endpoint = endpoint;
    })
    .await;
    let api = server.api();
    let mut w = watcher(&server, &["alice", "bob"]).await;
    register(&server, &mut w, "alice", "ios", json!("a1b2c3d4")).await;
    register(&server, &mut w, "bob", "ios", json!("gone-b0b")).await;

    dm(&api, "bob", "alice", 300).await;
    let seen = svc.next().await;
    assert_eq!(
        seen.version,
        axum::http::Version::HTTP_2,
        "APNs speaks HTTP/2 only"
    );
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("POST", "/3/device/a1b2c3d4")
    );
    verify_apns(&seen.headers, &public).expect("ES256 provider token with kid and iss");
    assert_eq!(seen.header("apns-topic"), APNS_TOPIC);
    assert_eq!(seen.header("apns-push-type"), "alert");
    assert_eq!(seen.header("apns-priority"), "10");
    let exp: u64 = seen.header("apns-expiration").parse().unwrap();
    assert!(
        exp.abs_diff(now_secs() + 300) <= 5,
        "apns-expiration is the event's expiry"
    );
    let body = seen.json();
    assert_eq!(
        body["aps"]["alert"],
        json!({"title":"Direct message","body":"bob sent you a message"})
    );
    assert_eq!(body["url"], "/conversations/c1");

    dm(&api, "alice", "bob", 300).await; // 410 Unregistered: removed
    dm(&api, "bob", "alice", 300).await; // marker
    assert_eq!(svc.next().await.path, "/3/device/gone-b0b");
    assert_eq!(svc.next().await.path, "/3/device/a1b2c3d4");
    assert!(registrations(&api, "bob").await.is_empty());
    assert_eq!(registrations(&api, "alice").await[0]["device"], "…");
    server.stop().await;
}

#[tokio::test]
async fn a_push_service_of_your_own_gets_signed_webhooks() {
    let mut svc = Services::start(Vec::new()).await;
    let url = format!("{}/hook/push", svc.base);
    let server = TestServer::start_with(|c| {
        base(c);
        c.push.webhook_url = Some(url);
        c.push.webhook_secret = Some("hook-secret".into());
    })
    .await;
    let api = server.api();
    let mut w = watcher(&server, &["alice"]).await;
    register(&server, &mut w, "alice", "ios", json!("dev-token-1")).await;
    action(&api, "FLLW", "bob", "alice").await;
    let seen = svc.next().await;
    assert_eq!(seen.path, "/hook/push");
    let expected =
        switchboard::auth::sign(&switchboard::apps::Secret::new("hook-secret"), &seen.body);
    assert_eq!(seen.header("x-switchboard-signature"), expected);
    let v = seen.json();
    assert_eq!(
        (v["app_id"].as_str(), v["user_id"].as_str()),
        (Some(APP_ID), Some("alice"))
    );
    assert_eq!(v["device"], json!({"token":"dev-token-1"}));
    assert_eq!(v["notification"]["body"], "bob started following you");
    assert!(
        v["ttl"].as_u64().is_some_and(|t| (590..=600).contains(&t)),
        "{v}"
    );
    server.stop().await;
}

fn redis_url() -> String {
    std::env::var("SWITCHBOARD_TEST_REDIS_URL")
        .expect("SWITCHBOARD_TEST_REDIS_URL must point at a Redis (scripts/test.sh starts one)")
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
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
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
    register(b, &mut w, "zed", "web", zed.subscription()).await;
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
    for n in nodes {
        n.stop().await;
    }
}
