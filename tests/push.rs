//! Push providers end to end: devices register over the bus, events are published through
//! the signed API, and local push services (a browser push service, FCM, APNs over h2c, a
//! push webhook) receive, check and record what the server sends. See `push_decisions.rs`
//! for the decision tree; `push_support/flow.rs` explains how "no push" is observed.

#[path = "push_support/mod.rs"]
mod push_support;
mod support;

use push_support::flow::*;
use push_support::*;
use serde_json::{json, Value};
use support::*;

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
    // Valid keys, but the endpoint is not a known push service: the server would POST there.
    let stranger = Browser::new("https://intranet.example/admin".into());
    c.send(json!({"type":"register_push","platform":"web","token":stranger.subscription()}))
        .await;
    let err = c.expect_error("E-WS-INVALID").await;
    assert!(
        err["message"].as_str().unwrap().contains("push service"),
        "{err}"
    );
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
        c.push.react_group_secs = 1;
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
    // Tokens are URL- and log-safe or refused.
    c.send(json!({"type":"register_push","platform":"android","token":"../x y"}))
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
    assert!(
        m["android"].get("collapse_key").is_none(),
        "comments never collapse"
    );
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

    // A token FCM calls invalid, or another project's, is gone too; a refused message is
    // not the device's fault and keeps its registration.
    let mut ids = Vec::new();
    for token in ["invalid-bob", "mismatch-bob", "badarg-bob"] {
        ids.push(register(&server, &mut w, "bob", "android", json!(token)).await);
    }
    dm(&api, "alice", "bob", 600).await;
    let mut tried = Vec::new();
    for _ in 0..3 {
        tried.push(svc.next().await.json()["message"]["token"].clone());
    }
    tried.sort_by_key(|t| t.to_string());
    assert_eq!(
        tried,
        [
            json!("badarg-bob"),
            json!("invalid-bob"),
            json!("mismatch-bob")
        ]
    );
    dm(&api, "bob", "alice", 600).await; // marker: the removals are done (concurrency 1)
    assert_eq!(svc.next().await.json()["message"]["token"], "tok-alice");
    let left = registrations(&api, "bob").await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(
        left[0]["id"],
        ids[2].as_str(),
        "badarg-bob is kept: {left:?}"
    );

    // A reaction group collapses on the device: pending ones and the one on screen.
    action(&api, "REACT", "bob", "alice").await;
    let android = svc.next().await.json()["message"]["android"].clone();
    assert_eq!(
        (&android["collapse_key"], &android["notification"]["tag"]),
        (&json!("reactions"), &json!("reactions"))
    );
    assert!(svc.pending().is_none());
    server.stop().await;
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
        c.push.react_group_secs = 1;
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
    assert!(seen.headers.get("apns-collapse-id").is_none());
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
    action(&api, "REACT", "bob", "alice").await;
    let seen = svc.next().await;
    assert_eq!(seen.header("apns-collapse-id"), "reactions");
    assert_eq!(seen.header("apns-priority"), "5");
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
        c.push.react_group_secs = 1;
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
    assert_eq!(v["notification"]["collapse_key"], Value::Null);
    assert!(
        v["ttl"].as_u64().is_some_and(|t| (590..=600).contains(&t)),
        "{v}"
    );
    action(&api, "REACT", "carol", "alice").await;
    let v = svc.next().await.json();
    assert_eq!(v["notification"]["collapse_key"], "reactions", "{v}");
    server.stop().await;
}

#[tokio::test]
async fn a_device_unregisters_itself_over_the_bus() {
    let svc = Services::start(Vec::new()).await;
    let vapid = Vapid::new();
    let server = TestServer::start_with(|c| web(c, &vapid)).await;
    let api = server.api();
    let browser = Browser::new(format!("{}/push/ivy-1", svc.base));
    let mut c = server.bus("ivy").await;
    c.send(json!({"type":"register_push","platform":"web","token":browser.subscription()}))
        .await;
    let id = c.recv_type("push_registered").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(registrations(&api, "ivy").await.len(), 1);
    // Another user cannot remove it; its owner can, once.
    let mut other = server.bus("mallory").await;
    other.send(json!({"type":"unregister_push","id":id})).await;
    assert_eq!(other.recv_type("push_unregistered").await["removed"], false);
    assert_eq!(registrations(&api, "ivy").await.len(), 1);
    c.send(json!({"type":"unregister_push","id":id})).await;
    assert_eq!(c.recv_type("push_unregistered").await["removed"], true);
    assert!(registrations(&api, "ivy").await.is_empty());
    c.send(json!({"type":"unregister_push","id":"nope"})).await;
    c.expect_error("E-WS-INVALID").await;
    c.ping().await;
    server.stop().await;
}
