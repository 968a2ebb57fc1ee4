//! The signed HTTP API (Pusher's REST API) over a real server.

mod support;

use serde_json::{json, Value};
use support::*;

const EVENTS: &str = "/apps/app-id/events";

fn event_body() -> String {
    json!({"name":"e","channel":"c","data":"x"}).to_string()
}

/// Asserts a failed call answered `status` with a JSON body `{"error": "<message>"}`.
fn assert_error((got, body): (u16, Value), status: u16) {
    assert_eq!(got, status, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|m| !m.is_empty()),
        "expected {{\"error\": ...}}, got {body}"
    );
    // soketi's clients read the status from the body too.
    assert_eq!(body["code"], status, "{body}");
}

// ---------------------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_correctly_signed_request_is_accepted() {
    let server = TestServer::start().await;
    let (status, body) = server
        .api()
        .request("POST", EVENTS, &[], &event_body())
        .await;
    assert_eq!((status, body), (200, json!({})));
}

#[tokio::test]
async fn wrong_signature_is_401() {
    let server = TestServer::start().await;
    let mut api = server.api();
    api.secret = "not-the-secret".into();
    assert_error(api.request("POST", EVENTS, &[], &event_body()).await, 401);
    assert_error(api.get("/channels", &[]).await, 401);
}

#[tokio::test]
async fn tampered_parameters_are_401() {
    let server = TestServer::start().await;
    let api = server.api();
    let body = event_body();
    let q = api.signed_query("POST", EVENTS, &[], &body, now());
    // A parameter added after signing.
    assert_error(
        api.raw("POST", &format!("{EVENTS}?{q}&info=x"), &body)
            .await,
        401,
    );
    // The signature of another path.
    let q = api.signed_query("POST", "/apps/app-id/batch_events", &[], &body, now());
    assert_error(api.raw("POST", &format!("{EVENTS}?{q}"), &body).await, 401);
    // The signature of another method.
    let q = api.signed_query("GET", EVENTS, &[], &body, now());
    assert_error(api.raw("POST", &format!("{EVENTS}?{q}"), &body).await, 401);
}

#[tokio::test]
async fn wrong_auth_key_is_401() {
    let server = TestServer::start().await;
    let mut api = server.api();
    api.key = "not-the-key".into();
    assert_error(api.request("POST", EVENTS, &[], &event_body()).await, 401);
}

#[tokio::test]
async fn stale_or_future_timestamp_is_401() {
    let server = TestServer::start().await;
    let api = server.api();
    let body = event_body();
    // A few seconds past the 600 s window: the server reads its clock a moment later.
    for ts in [now() - 605, now() + 605, 0] {
        let q = api.signed_query("POST", EVENTS, &[], &body, ts);
        assert_error(api.raw("POST", &format!("{EVENTS}?{q}"), &body).await, 401);
    }
    // Within the window is fine.
    let q = api.signed_query("POST", EVENTS, &[], &body, now() - 500);
    assert_eq!(
        api.raw("POST", &format!("{EVENTS}?{q}"), &body).await.0,
        200
    );
}

#[tokio::test]
async fn body_md5_mismatch_is_401() {
    let server = TestServer::start().await;
    let api = server.api();
    let signed_body = event_body();
    let sent_body = json!({"name":"e","channel":"other","data":"x"}).to_string();
    let q = api.signed_query("POST", EVENTS, &[], &signed_body, now());
    assert_error(
        api.raw("POST", &format!("{EVENTS}?{q}"), &sent_body).await,
        401,
    );
    // A body with no body_md5 at all.
    let q = api.signed_query("POST", EVENTS, &[], "", now());
    assert_error(
        api.raw("POST", &format!("{EVENTS}?{q}"), &sent_body).await,
        401,
    );
}

#[tokio::test]
async fn missing_auth_params_are_401() {
    let server = TestServer::start().await;
    let api = server.api();
    let body = event_body();
    assert_error(api.raw("POST", EVENTS, &body).await, 401);
    assert_error(api.raw("GET", "/apps/app-id/channels", "").await, 401);
    let q = api.signed_query("POST", EVENTS, &[], &body, now());
    for drop in ["auth_signature", "auth_key", "auth_timestamp", "body_md5"] {
        let kept: Vec<&str> = q
            .split('&')
            .filter(|kv| !kv.starts_with(&format!("{drop}=")))
            .collect();
        let path = format!("{EVENTS}?{}", kept.join("&"));
        assert_error(api.raw("POST", &path, &body).await, 401);
    }
}

#[tokio::test]
async fn unknown_app_id_is_404() {
    let server = TestServer::start().await;
    let mut api = server.api();
    api.app_id = "no-such-app".into();
    assert_error(
        api.trigger(json!({"name":"e","channel":"c","data":"x"}))
            .await,
        404,
    );
    assert_error(api.get("/channels", &[]).await, 404);
}

#[tokio::test]
async fn disabled_app_is_403() {
    let server = TestServer::start_with(|c| c.app.enabled = false).await;
    assert_error(
        server
            .api()
            .trigger(json!({"name":"e","channel":"c","data":"x"}))
            .await,
        403,
    );
}

// ---------------------------------------------------------------------------------------
// Trigger validation
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn event_data_over_10_kb_is_413() {
    let server = TestServer::start().await;
    let api = server.api();
    let mut c = server.pusher().await;
    c.subscribe("c").await;
    let limit = 10 * 1024;
    assert_error(
        api.trigger(json!({"name":"e","channel":"c","data":"x".repeat(limit + 1)}))
            .await,
        413,
    );
    c.ping().await; // nothing delivered
    let (status, _) = api
        .trigger(json!({"name":"e","channel":"c","data":"x".repeat(limit)}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(c.recv().await["data"].as_str().map(str::len), Some(limit));
}

#[tokio::test]
async fn body_over_the_server_limit_is_413() {
    let server = TestServer::start_with(|c| c.server.max_body_bytes = 1024).await;
    assert_error(
        server
            .api()
            .trigger(json!({"name":"e","channel":"c","data":"x".repeat(2000)}))
            .await,
        413,
    );
}

#[tokio::test]
async fn more_than_100_channels_is_400() {
    let server = TestServer::start().await;
    let api = server.api();
    let names = |n: usize| (0..n).map(|i| format!("ch-{i}")).collect::<Vec<_>>();
    assert_error(
        api.trigger(json!({"name":"e","channels":names(101),"data":"x"}))
            .await,
        400,
    );
    assert_error(
        api.trigger(json!({"name":"e","channels":[],"data":"x"}))
            .await,
        400,
    );
    let (status, _) = api
        .trigger(json!({"name":"e","channels":names(100),"data":"x"}))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn invalid_names_are_400() {
    let server = TestServer::start().await;
    let api = server.api();
    for ch in [
        "bad channel",
        "",
        "ünïcode",
        "#server-to-user-",
        &"a".repeat(201),
    ] {
        assert_error(
            api.trigger(json!({"name":"e","channel":ch,"data":"x"}))
                .await,
            400,
        );
    }
    // Event names are limited by length only (Laravel sends `App\Events\X`).
    let long_name = "e".repeat(201);
    for name in [
        "",
        long_name.as_str(),
        "pusher:reserved",
        "pusher_internal:x",
    ] {
        assert_error(
            api.trigger(json!({"name":name,"channel":"c","data":"x"}))
                .await,
            400,
        );
    }
    assert_error(api.trigger(json!({"channel":"c","data":"x"})).await, 400);
    assert_error(api.trigger(json!({"name":"e","data":"x"})).await, 400);
    assert_error(api.request("POST", EVENTS, &[], "{not json").await, 400);
}

#[tokio::test]
async fn batch_of_11_is_400_and_nothing_is_sent() {
    let server = TestServer::start().await;
    let mut c = server.pusher().await;
    c.subscribe("c").await;
    let batch: Vec<Value> = (0..11)
        .map(|i| json!({"name":"e","channel":"c","data":i.to_string()}))
        .collect();
    let body = json!({ "batch": batch }).to_string();
    assert_error(server.api().post("/batch_events", &body).await, 400);
    c.ping().await;
}

#[tokio::test]
async fn batch_with_an_invalid_event_sends_nothing() {
    let server = TestServer::start().await;
    let mut c = server.pusher().await;
    c.subscribe("c").await;
    let body = json!({"batch":[
        {"name":"ok","channel":"c","data":"1"},
        {"name":"bad","channel":"no spaces","data":"2"},
    ]})
    .to_string();
    assert_error(server.api().post("/batch_events", &body).await, 400);
    c.ping().await;
}

#[tokio::test]
async fn batch_of_2_is_delivered_in_order() {
    let server = TestServer::start().await;
    let (mut a, mut b) = (server.pusher().await, server.pusher().await);
    a.subscribe("c1").await;
    a.subscribe("c2").await;
    b.subscribe("c2").await;
    let body = json!({"batch":[
        {"name":"first","channel":"c1","data":"1"},
        {"name":"second","channel":"c2","data":{"n":2}},
    ]})
    .to_string();
    let (status, v) = server.api().post("/batch_events", &body).await;
    assert_eq!((status, v), (200, json!({})));
    let ev = a.recv().await;
    assert_eq!(
        (&ev["event"], &ev["channel"], &ev["data"]),
        (&json!("first"), &json!("c1"), &json!("1"))
    );
    let ev = a.recv().await;
    assert_eq!(
        (&ev["event"], &ev["channel"], &ev["data"]),
        (&json!("second"), &json!("c2"), &json!("{\"n\":2}"))
    );
    assert_eq!(b.recv().await["event"], "second");
    a.ping().await;
    b.ping().await;
}

#[tokio::test]
async fn socket_id_excludes_that_socket_only() {
    let server = TestServer::start().await;
    let (mut a, mut b) = (server.pusher().await, server.pusher().await);
    a.subscribe("c").await;
    b.subscribe("c").await;
    let (status, _) = server
        .api()
        .trigger(json!({"name":"e","channel":"c","data":"x","socket_id":a.socket_id}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(b.recv().await["event"], "e");
    a.ping().await;
    b.ping().await;
}

#[tokio::test]
async fn invalid_socket_id_is_400() {
    let server = TestServer::start().await;
    let api = server.api();
    let mut c = server.pusher().await;
    c.subscribe("c").await;
    for id in ["abc", "1.", ".1", "1.2.3", "1-2", ""] {
        assert_error(
            api.trigger(json!({"name":"e","channel":"c","data":"x","socket_id":id}))
                .await,
            400,
        );
    }
    c.ping().await;
}

// ---------------------------------------------------------------------------------------
// Channel queries
// ---------------------------------------------------------------------------------------

/// Subscribes sockets for a known channel layout: `presence-a` with u1 (two sockets) and u2,
/// `presence-b` with u3, `public-x` and `private-y` with one socket each.
async fn occupy(server: &TestServer) -> Vec<PusherClient> {
    let mut out = Vec::new();
    for (ch, user) in [
        ("presence-a", Some("u1")),
        ("presence-a", Some("u1")),
        ("presence-a", Some("u2")),
        ("presence-b", Some("u3")),
        ("public-x", None),
        ("private-y", None),
    ] {
        let mut c = server.pusher().await;
        match (ch, user) {
            (ch, Some(u)) => {
                c.subscribe_presence(ch, &format!(r#"{{"user_id":"{u}"}}"#))
                    .await;
            }
            (ch, None) if ch.starts_with("private-") => {
                c.subscribe_private(ch).await;
            }
            (ch, None) => {
                c.subscribe(ch).await;
            }
        }
        out.push(c);
    }
    // Drop the member_added frames the layout caused, so later silence checks hold.
    for c in &mut out {
        c.send(json!({"event":"pusher:ping","data":{}})).await;
        while c.recv().await["event"] != "pusher:pong" {}
    }
    out
}

#[tokio::test]
async fn trigger_info_returns_counts() {
    let server = TestServer::start().await;
    let _clients = occupy(&server).await;
    let (status, v) = server
        .api()
        .trigger(json!({
            "name":"e","channels":["presence-a","presence-b"],"data":"x",
            "info":"subscription_count,user_count"
        }))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v,
        json!({"channels":{
            "presence-a":{"subscription_count":3,"user_count":2},
            "presence-b":{"subscription_count":1,"user_count":1},
        }})
    );
    let (status, v) = server
        .api()
        .trigger(json!({"name":"e","channel":"public-x","data":"x","info":"subscription_count"}))
        .await;
    assert_eq!(
        (status, v),
        (
            200,
            json!({"channels":{"public-x":{"subscription_count":1}}})
        )
    );
}

#[tokio::test]
async fn trigger_info_user_count_on_a_non_presence_channel_is_400_and_not_sent() {
    let server = TestServer::start().await;
    let mut clients = occupy(&server).await;
    assert_error(
        server
            .api()
            .trigger(json!({"name":"e","channels":["presence-a","public-x"],"data":"x","info":"user_count"}))
            .await,
        400,
    );
    let body = json!({"batch":[
        {"name":"e","channel":"presence-a","data":"x","info":"user_count"},
        {"name":"e","channel":"public-x","data":"x","info":"user_count"},
    ]})
    .to_string();
    assert_error(server.api().post("/batch_events", &body).await, 400);
    // A refused call published nothing.
    for c in &mut clients {
        c.ping().await;
    }
}

#[tokio::test]
async fn list_channels_with_prefix_and_user_count() {
    let server = TestServer::start().await;
    let api = server.api();
    let _clients = occupy(&server).await;

    let (status, v) = api.get("/channels", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        v,
        json!({"channels":{"presence-a":{},"presence-b":{},"private-y":{},"public-x":{}}})
    );
    let (status, v) = api
        .get("/channels", &[("filter_by_prefix", "private-")])
        .await;
    assert_eq!((status, v), (200, json!({"channels":{"private-y":{}}})));
    let (status, v) = api
        .get(
            "/channels",
            &[("filter_by_prefix", "presence-"), ("info", "user_count")],
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v,
        json!({"channels":{"presence-a":{"user_count":2},"presence-b":{"user_count":1}}})
    );
    assert_error(api.get("/channels", &[("info", "user_count")]).await, 400);
    assert_error(
        api.get(
            "/channels",
            &[("filter_by_prefix", "public-"), ("info", "user_count")],
        )
        .await,
        400,
    );
}

#[tokio::test]
async fn channel_info() {
    let server = TestServer::start().await;
    let api = server.api();
    let _clients = occupy(&server).await;

    let (status, v) = api
        .get(
            "/channels/presence-a",
            &[("info", "subscription_count,user_count")],
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v,
        json!({"occupied":true,"subscription_count":3,"user_count":2})
    );
    let (status, v) = api
        .get("/channels/public-x", &[("info", "subscription_count")])
        .await;
    assert_eq!(
        (status, v),
        (200, json!({"occupied":true,"subscription_count":1}))
    );
    let (status, v) = api.get("/channels/private-y", &[]).await;
    assert_eq!((status, v), (200, json!({"occupied":true})));
    let (status, v) = api
        .get("/channels/nobody-here", &[("info", "subscription_count")])
        .await;
    assert_eq!(
        (status, v),
        (200, json!({"occupied":false,"subscription_count":0}))
    );
    assert_error(
        api.get("/channels/public-x", &[("info", "user_count")])
            .await,
        400,
    );
    assert_error(api.get("/channels/bad%20name", &[]).await, 400);
}

#[tokio::test]
async fn channel_users_for_presence_only() {
    let server = TestServer::start().await;
    let api = server.api();
    let _clients = occupy(&server).await;

    let (status, v) = api.get("/channels/presence-a/users", &[]).await;
    assert_eq!(
        (status, v),
        (200, json!({"users":[{"id":"u1"},{"id":"u2"}]}))
    );
    let (status, v) = api.get("/channels/presence-empty/users", &[]).await;
    assert_eq!((status, v), (200, json!({"users":[]})));
    assert_error(api.get("/channels/public-x/users", &[]).await, 400);
    assert_error(api.get("/channels/private-y/users", &[]).await, 400);
}

// ---------------------------------------------------------------------------------------
// Health, metrics, routing
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn up_is_200() {
    let server = TestServer::start().await;
    let (status, v) = server.api().raw("GET", "/up", "").await;
    assert_eq!((status, v), (200, json!({"status":"ok"})));
}

/// `GET path` on a fresh connection: status and body text.
async fn probe(server: &TestServer, path: &str) -> (u16, String) {
    let res = reqwest::Client::new()
        .get(format!("http://{}{path}", server.addr))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test]
async fn soketi_probes_answer_while_running_and_while_draining() {
    let mut server = TestServer::start_with(|c| c.server.shutdown_delay_ms = 1500).await;
    for path in ["/", "/ready", "/accept-traffic"] {
        assert_eq!(probe(&server, path).await, (200, "OK".to_owned()), "{path}");
    }
    let mut client = server.pusher().await;
    server.begin_stop();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, _) = probe(&server, "/ready").await;
        if status == 503 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/ready never said draining"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(probe(&server, "/accept-traffic").await.0, 503);
    let (status, body) = probe(&server, "/up").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("draining"), "{body}");
    // Connections stay open through the delay; then they are closed with 4200.
    client.ping().await;
    assert_eq!(client.expect_close().await, 4200);
    server.stop().await;
}

#[tokio::test]
async fn accept_traffic_is_503_at_the_connection_limit() {
    let server = TestServer::start_with(|c| c.server.max_connections = 1).await;
    assert_eq!(probe(&server, "/accept-traffic").await.0, 200);
    let c = server.pusher().await;
    let (status, body) = probe(&server, "/accept-traffic").await;
    assert_eq!(status, 503);
    assert!(body.contains("max_connections: 1"), "{body}");
    // Liveness and readiness are not about capacity.
    assert_eq!(probe(&server, "/ready").await.0, 200);
    assert_eq!(probe(&server, "/").await.0, 200);
    c.close().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while probe(&server, "/accept-traffic").await.0 != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot was never given back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn metrics_listener_serves_prometheus_text() {
    let server = TestServer::start_full(|_| {}, true).await;
    let mut c = server.pusher().await;
    c.ping().await;
    let url = format!("http://{}/metrics", server.metrics_addr.unwrap());
    let res = reqwest::get(&url).await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let text = res.text().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("switchboard_connections_total{")
                && l.contains("protocol=\"pusher\"")),
        "no switchboard_connections_total in:\n{text}"
    );
    assert!(
        text.contains("# TYPE switchboard_connections_total counter"),
        "{text}"
    );
    // Metrics are not on the public listener.
    let (status, _) = server.api().raw("GET", "/metrics", "").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn unknown_route_is_404_json() {
    let server = TestServer::start().await;
    let api = server.api();
    assert_error(api.raw("GET", "/nope", "").await, 404);
    assert_error(api.raw("POST", "/apps/app-id/nope", "{}").await, 404);
    assert_error(api.get("/no/such/thing", &[]).await, 404);
}

#[tokio::test]
async fn terminate_connections_refuses_user_ids_that_are_not_ids() {
    let server = TestServer::start().await;
    let api = server.api();
    // Percent-encoded in the path: `../..`, a NUL, a newline.
    for bad in ["..%2F..", "a%00b", "a%0Ab"] {
        let path = format!("/users/{bad}/terminate_connections");
        let answer = api.post(&path, "{}").await;
        assert!(
            answer.1["error"].as_str().unwrap_or("").contains("user id"),
            "{answer:?}"
        );
        assert_error(answer, 400);
    }
    // Positive control: a plain id is accepted.
    let (status, body) = api.post("/users/bob/terminate_connections", "{}").await;
    assert_eq!(status, 200, "{body}");
}

/// Signs a `pusher:signin` with another app's credentials than the default one's.
async fn signin_as(c: &mut PusherClient, key: &str, secret: &str, user_data: &str) {
    let msg = format!("{}::user::{user_data}", c.socket_id);
    let sig = switchboard::auth::sign(&switchboard::apps::Secret::new(secret), msg.as_bytes());
    c.send(json!({"event":"pusher:signin","data":{"auth":format!("{key}:{sig}"),"user_data":user_data}}))
        .await;
    c.expect("pusher:signin_success").await;
}

/// Pusher's Python SDK calls `POST /users/{id}/terminate_connections` with no
/// `/apps/{id}` before it: the app is the one whose `auth_key` signed the request.
#[tokio::test]
async fn terminate_connections_without_the_app_in_the_path_uses_the_signing_key() {
    let server = TestServer::start_with(|c| {
        c.apps.push(switchboard::config::AppConfig {
            id: "2".into(),
            key: "second-key".into(),
            secret: "second-secret".into(),
            ..Default::default()
        });
    })
    .await;
    let path = "/users/bob/terminate_connections";
    // bob is signed in on both apps.
    let mut on_default = server.pusher().await;
    on_default.signin(r#"{"id":"bob"}"#).await;
    let mut on_second = PusherClient::connect(&server.ws_url("second-key")).await;
    signin_as(
        &mut on_second,
        "second-key",
        "second-secret",
        r#"{"id":"bob"}"#,
    )
    .await;

    let mut second = server.api();
    (second.app_id, second.key, second.secret) =
        ("2".into(), "second-key".into(), "second-secret".into());
    let (status, body) = second.request("POST", path, &[], "{}").await;
    assert_eq!((status, body), (200, json!({})));
    assert_eq!(on_second.expect_close().await, 4009);
    // The other app's bob is not touched.
    on_default.ping().await;

    // The default app's key terminates the default app's bob.
    let (status, body) = server.api().request("POST", path, &[], "{}").await;
    assert_eq!((status, body), (200, json!({})));
    assert_eq!(on_default.expect_close().await, 4009);
}

#[tokio::test]
async fn terminate_connections_without_the_app_in_the_path_is_401_unless_signed() {
    let server = TestServer::start().await;
    let path = "/users/bob/terminate_connections";
    let mut c = server.pusher().await;
    c.signin(r#"{"id":"bob"}"#).await;
    // An auth_key no app has.
    let mut unknown = server.api();
    unknown.key = "no-such-key".into();
    assert_error(unknown.request("POST", path, &[], "{}").await, 401);
    // A known key with another secret.
    let mut forged = server.api();
    forged.secret = "not-the-secret".into();
    assert_error(forged.request("POST", path, &[], "{}").await, 401);
    // No signature at all, and a signature of another path.
    let api = server.api();
    assert_error(api.raw("POST", path, "{}").await, 401);
    let q = api.signed_query(
        "POST",
        "/users/alice/terminate_connections",
        &[],
        "{}",
        now(),
    );
    assert_error(api.raw("POST", &format!("{path}?{q}"), "{}").await, 401);
    // Nothing was terminated.
    c.ping().await;
}
