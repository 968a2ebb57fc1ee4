//! Apps as data through the admin API, on real servers: the token at the door, apps created,
//! used with real connections and signed calls, changed, rotated, disabled and deleted
//! without a restart; on the embedded store, on Redis across two nodes, on PostgreSQL.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::pg::{fresh_database, metric};
use support::*;
use switchboard::config::Config;
use tokio::time::Instant;

const TOKEN: &str = "admin-token-for-tests";

/// A node with the admin API on (its metrics listener), adjusted by `f`.
async fn node(f: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start_full(
        |c| {
            c.admin.token = Some(TOKEN.into());
            f(c);
        },
        true,
    )
    .await
}

/// An admin API call with `token` (None: no Authorization header).
async fn call_as(
    s: &TestServer,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("http://{}{path}", s.metrics_addr.unwrap());
    let mut req = reqwest::Client::new().request(method.parse().unwrap(), url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = tokio::time::timeout(WAIT, req.send())
        .await
        .expect("admin call answered")
        .unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn call(s: &TestServer, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    call_as(s, Some(TOKEN), method, path, body).await
}

/// The signed API of an app made through the admin API.
fn api_of(s: &TestServer, id: &str, key: &str, secret: &str) -> Api {
    Api {
        app_id: id.into(),
        key: key.into(),
        secret: secret.into(),
        ..s.api()
    }
}

/// What a connection with `key` is told first: `Ok(socket id)` or `Err(close code)`.
async fn try_connect(s: &TestServer, key: &str) -> Result<PusherClient, u16> {
    let mut ws = PusherClient::connect_raw(&s.ws_url(key)).await;
    let first = recv_json(&mut ws).await;
    if first["event"] == "pusher:connection_established" {
        let data: Value = serde_json::from_str(first["data"].as_str().unwrap()).unwrap();
        let socket_id = data["socket_id"].as_str().unwrap().to_owned();
        return Ok(PusherClient { ws, socket_id });
    }
    assert_eq!(first["event"], "pusher:error", "{first}");
    Err(expect_close(&mut ws).await)
}

/// Polls until a connection with `key` is accepted on `s`; returns how long it took.
async fn until_accepted(s: &TestServer, key: &str, started: Instant) -> (PusherClient, Duration) {
    loop {
        if let Ok(c) = try_connect(s, key).await {
            return (c, started.elapsed());
        }
        assert!(
            started.elapsed() < WAIT,
            "{key} not accepted within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn new_app(id: &str) -> Value {
    json!({ "id": id, "key": format!("{id}-key"), "secret": format!("{id}-secret") })
}

#[tokio::test]
async fn the_admin_api_and_console_are_off_without_a_token() {
    let s = TestServer::start_full(|_| {}, true).await;
    let (status, _) = call(&s, "GET", "/admin/apps", None).await;
    assert_eq!(status, 404);
    let (status, _) = call(&s, "GET", "/console", None).await;
    assert_eq!(status, 404);
    // Positive control: the listener serves metrics.
    assert_eq!(call(&s, "GET", "/metrics", None).await.0, 200);
    s.stop().await;
}

#[tokio::test]
async fn a_wrong_or_missing_token_changes_nothing() {
    let s = node(|_| {}).await;
    for token in [None, Some("wrong"), Some("")] {
        let (status, body) =
            call_as(&s, token, "POST", "/admin/apps", Some(new_app("sneaky"))).await;
        assert_eq!(status, 401, "{token:?}: {body}");
        assert!(body["error"].is_string(), "{body}");
        assert_eq!(call_as(&s, token, "GET", "/admin/apps", None).await.0, 401);
    }
    let (status, body) = call(&s, "GET", "/admin/apps", None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = body["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["app-id"]);
    assert!(try_connect(&s, "sneaky-key").await.is_err());
    // The page itself is public (it asks for the token); its data is not.
    let page = reqwest::get(format!("http://{}/console", s.metrics_addr.unwrap()))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<html"));
    s.stop().await;
}

#[tokio::test]
async fn bad_settings_name_their_field_and_duplicates_conflict() {
    let s = node(|_| {}).await;
    let cases = [
        (json!({ "id": "a b" }), "id"),
        (json!({ "max_event_bytes": "big" }), "max_event_bytes"),
        (json!({ "max_event_bytes": 0 }), "max_event_bytes"),
        (json!({ "bogus": 1 }), "bogus"),
        (json!({ "webhooks": [{ "url": "ftp://x" }] }), "webhooks"),
    ];
    for (body, field) in cases {
        let (status, answer) = call(&s, "POST", "/admin/apps", Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["field"], field, "{body}: {answer}");
    }
    let (status, answer) = call(&s, "POST", "/admin/apps", Some(json!([1]))).await;
    assert_eq!(status, 400, "{answer}");
    // Positive control, then the same id, another app's key, the file's app's key.
    assert_eq!(
        call(&s, "POST", "/admin/apps", Some(new_app("dup")))
            .await
            .0,
        201
    );
    for body in [
        json!({ "id": "dup", "key": "other" }),
        json!({ "id": "other", "key": "dup-key" }),
        json!({ "id": "other", "key": "app-key" }),
        json!({ "id": "app-id", "key": "fresh" }),
    ] {
        let (status, answer) = call(&s, "POST", "/admin/apps", Some(body.clone())).await;
        assert_eq!(status, 409, "{body}: {answer}");
    }
    // The file's app is read-only.
    let (status, _) = call(
        &s,
        "PATCH",
        "/admin/apps/app-id",
        Some(json!({ "enabled": false })),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(call(&s, "DELETE", "/admin/apps/app-id", None).await.0, 403);
    assert!(try_connect(&s, KEY).await.is_ok());
    assert_eq!(call(&s, "GET", "/admin/apps/nope", None).await.0, 404);
    s.stop().await;
}

#[tokio::test]
async fn an_app_is_created_used_rotated_disabled_and_deleted_without_a_restart() {
    let data = temp_dir("admin-data");
    let dir = data.clone();
    let s = node(move |c| c.data.dir = dir).await;

    let series = "switchboard_admin_changes_total{action=\"update\"}";
    let updates_before = metric(&s, series).await;
    let (status, created) = call(&s, "POST", "/admin/apps", Some(new_app("t1"))).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["secret"], "t1-secret");
    assert_eq!(created["app"]["source"], "store");
    let (_, listed) = call(&s, "GET", "/admin/apps", None).await;
    assert!(!listed.to_string().contains("t1-secret"), "{listed}");
    assert!(listed.to_string().contains("\"t1-key\""), "{listed}");

    // It takes connections and signed calls at once.
    let mut c = try_connect(&s, "t1-key").await.expect("new app accepts");
    c.subscribe("room").await;
    let api = api_of(&s, "t1", "t1-key", "t1-secret");
    let trigger = json!({ "name": "hello", "channel": "room", "data": "{}" });
    assert_eq!(api.trigger(trigger.clone()).await.0, 200);
    assert_eq!(c.expect("hello").await["channel"], "room");
    let (_, conns) = call(&s, "GET", "/admin/apps/t1/connections", None).await;
    assert_eq!(conns["count"], 1, "{conns}");
    assert_eq!(conns["connections"][0]["socket_id"], c.socket_id.as_str());
    assert_eq!(conns["connections"][0]["transport"], "ws");
    let (_, channels) = call(&s, "GET", "/admin/apps/t1/channels", None).await;
    assert_eq!(channels["channels"][0]["name"], "room", "{channels}");

    // Rotation: both secrets sign during the grace period, then only the new one.
    let (status, rotated) = call(
        &s,
        "PATCH",
        "/admin/apps/t1",
        Some(json!({ "secret": "t1-new" })),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(rotated["app"]["has_previous_secret"], true);
    assert!(!rotated.to_string().contains("t1-new"), "{rotated}");
    let new_api = api_of(&s, "t1", "t1-key", "t1-new");
    assert_eq!(
        api.trigger(trigger.clone()).await.0,
        200,
        "old secret in grace"
    );
    assert_eq!(new_api.trigger(trigger.clone()).await.0, 200, "new secret");
    let end_grace = json!({ "previous_secret": null });
    assert_eq!(
        call(&s, "PATCH", "/admin/apps/t1", Some(end_grace)).await.0,
        200
    );
    assert_eq!(
        api.trigger(trigger.clone()).await.0,
        401,
        "old secret after grace"
    );
    assert_eq!(new_api.trigger(trigger.clone()).await.0, 200);
    // The open connection kept going through all of it, and checks channel auth against
    // the current secrets: the new one is accepted, the cleared one is not.
    c.expect("hello").await;
    let signed = |secret: &str, channel: &str| {
        let msg = format!("{}:{channel}", c.socket_id);
        let sig = switchboard::auth::sign(&switchboard::apps::Secret::new(secret), msg.as_bytes());
        format!("t1-key:{sig}")
    };
    let (new_auth, old_auth) = (
        signed("t1-new", "private-a"),
        signed("t1-secret", "private-b"),
    );
    c.send_subscribe("private-a", Some(&new_auth), None).await;
    c.expect("pusher_internal:subscription_succeeded").await;
    c.send_subscribe("private-b", Some(&old_auth), None).await;
    c.expect("pusher:subscription_error").await;

    // Disabled: the open connection is closed with 4003, new ones and calls refused.
    let (status, _) = call(
        &s,
        "PATCH",
        "/admin/apps/t1",
        Some(json!({ "enabled": false })),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(c.expect_close().await, 4003);
    assert_eq!(try_connect(&s, "t1-key").await.err(), Some(4003));
    assert_eq!(new_api.trigger(trigger.clone()).await.0, 403);

    // Enabled again, then deleted: closed with 4001, and the key is unknown.
    call(
        &s,
        "PATCH",
        "/admin/apps/t1",
        Some(json!({ "enabled": true })),
    )
    .await;
    let mut c = try_connect(&s, "t1-key").await.expect("enabled again");
    assert_eq!(call(&s, "DELETE", "/admin/apps/t1", None).await.0, 204);
    assert_eq!(c.expect_close().await, 4001);
    assert_eq!(try_connect(&s, "t1-key").await.err(), Some(4001));
    assert_eq!(new_api.trigger(trigger).await.0, 404);
    assert_eq!(call(&s, "DELETE", "/admin/apps/t1", None).await.0, 404);

    // The recorder is the process's: other tests running beside this one count too.
    let series = "switchboard_admin_changes_total{action=\"update\"}";
    assert!(metric(&s, series).await - updates_before >= 4.0);

    // Kept in the embedded store across a restart.
    assert_eq!(
        call(&s, "POST", "/admin/apps", Some(new_app("kept")))
            .await
            .0,
        201
    );
    s.stop().await;
    let s = node(move |c| c.data.dir = data).await;
    assert!(try_connect(&s, "kept-key").await.is_ok());
    s.stop().await;
}

#[tokio::test]
async fn an_app_made_on_one_node_works_on_the_other_within_a_second() {
    let prefix = format!(
        "sbtest-admin-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    );
    let on_redis = |c: &mut Config| {
        c.redis.url = Some(redis_url());
        c.redis.prefix = prefix.clone();
    };
    let a = node(on_redis).await;
    let b = node(on_redis).await;
    let started = Instant::now();
    let (status, created) = call(&a, "POST", "/admin/apps", Some(new_app("spread"))).await;
    assert_eq!(status, 201, "{created}");
    let (mut on_b, took) = until_accepted(&b, "spread-key", started).await;
    println!("app created on node A accepted a connection on node B after {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // A signed call on B with the new secret.
    let api = api_of(&b, "spread", "spread-key", "spread-secret");
    let ping = json!({ "name": "e", "channel": "c", "data": "{}" });
    assert_eq!(api.trigger(ping).await.0, 200);
    // Disabled on A: B closes its connection.
    let disable = json!({ "enabled": false });
    assert_eq!(
        call(&a, "PATCH", "/admin/apps/spread", Some(disable))
            .await
            .0,
        200
    );
    assert_eq!(on_b.expect_close().await, 4003);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn apps_in_postgresql_reach_every_node_and_survive_restarts() {
    let url = fresh_database().await;
    let (u1, u2) = (url.clone(), url.clone());
    let a = node(move |c| c.database.url = Some(u1)).await;
    let b = node(move |c| c.database.url = Some(u2)).await;
    let started = Instant::now();
    // The first write may wait for the migrations.
    let (status, created) = call(&a, "POST", "/admin/apps", Some(new_app("pg1"))).await;
    assert_eq!(status, 201, "{created}");
    let (_, took) = until_accepted(&b, "pg1-key", started).await;
    println!("app created on node A (PostgreSQL store) accepted on node B after {took:?}");
    // An operator's own SQL is announced too.
    let sql = support::pg::pg_connect(&url).await;
    sql.batch_execute(
        "UPDATE switchboard.apps SET settings = jsonb_set(settings, '{enabled}', 'false') \
         WHERE id = 'pg1'",
    )
    .await
    .unwrap();
    let deadline = Instant::now() + WAIT;
    while try_connect(&b, "pg1-key").await.is_ok() {
        assert!(Instant::now() < deadline, "SQL change not seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.stop().await;
    b.stop().await;
    let u3 = url.clone();
    let c = node(move |c| c.database.url = Some(u3)).await;
    let (_, got) = call(&c, "GET", "/admin/apps/pg1", None).await;
    assert_eq!(got["app"]["enabled"], false, "{got}");
    c.stop().await;
}

#[tokio::test]
async fn the_apps_command_manages_apps_on_a_running_server() {
    let s = node(|_| {}).await;
    let url = format!("http://{}", s.metrics_addr.unwrap());
    // `switchboard apps {args} --url {url}` with the token in the environment, off the runtime.
    let apps = |args: &[&str], token: &str| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"));
        cmd.arg("apps").args(args).args(["--url", &url]);
        cmd.env("SWITCHBOARD_ADMIN_TOKEN", token);
        tokio::task::spawn_blocking(move || {
            let out = cmd.output().unwrap();
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            (out.status.code(), text(&out.stdout), text(&out.stderr))
        })
    };
    let create = [
        "create",
        "--id",
        "cli",
        "--key",
        "cli-key",
        "--secret",
        "cli-secret",
    ];
    let (code, out, err) = apps(&create, TOKEN).await.unwrap();
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(try_connect(&s, "cli-key").await.is_ok());
    let (code, out, err) = apps(&["list", "--token", "wrong"], TOKEN).await.unwrap();
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("401"), "{err}");
    s.stop().await;
}
