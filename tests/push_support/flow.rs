//! The flow every push test shares: server configuration, registering a device over the bus
//! and waiting until its user is offline, publishing, and signed API calls.
//!
//! Every test runs the server with `push.concurrency = 1`: a push starts only after the one
//! before it finished (retries and registration removal included), and the worker decides
//! events in publish order. So when a later "marker" push arrives, every earlier event has
//! been decided and any push it caused has already arrived: "no push" is an observation, not
//! a sleep.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use p256::pkcs8::EncodePrivateKey;
use serde_json::{json, Value};
use switchboard::config::Config;

use super::{Browser, Seen, Vapid};
use crate::support::*;

pub const SUBJECT: &str = "mailto:ops@example.com";

pub fn base(c: &mut Config) {
    c.push.concurrency = 1;
    c.push.backoff_initial_ms = 20;
    c.push.webpush_allow_http = true;
    c.push.webpush_hosts = vec!["127.0.0.1".into()];
    c.bus.presence_throttle_ms = 10;
}

pub fn web(c: &mut Config, vapid: &Vapid) {
    base(c);
    c.push.vapid_private_key = Some(vapid.private_b64.clone());
    c.push.vapid_subject = SUBJECT.into();
}

/// A bus client watching `users`' presence, to know when they are offline.
pub async fn watcher(server: &TestServer, users: &[&str]) -> BusClient {
    let mut claims = bus_claims("watcher");
    claims.watchlist = users.iter().map(|u| u.to_string()).collect();
    let mut w = server.bus_with(&claims).await;
    w.subscribe(&["presence"], &[]).await;
    w
}

pub async fn wait_status(w: &mut BusClient, user: &str, status: &str) {
    loop {
        let v = w.expect("presence").await;
        if v["user"] == user && v["status"] == status {
            return;
        }
    }
}

/// Registers a device for `user` over the bus, disconnects, and waits until the cluster
/// sees the user offline. Returns the registration id.
pub async fn register(
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
pub async fn dm(api: &Api, from: &str, to: &str, ttl: u32) {
    let body = json!({"message_id":"m1","sender":from,"participants":[to],
                      "content":"hello there","conversation_id":"c1","ttl":ttl});
    let (status, v) = api.bus_call("POST", "/bus/messages", &body).await;
    assert_eq!(status, 200, "{v}");
}

/// An action of `kind` by `issuer`, for `to` (as `to`, or `parent_owner` for CMNT/REACT).
pub async fn action(api: &Api, kind: &str, issuer: &str, to: &str) {
    let mut body = json!({"action_type":kind,"action_id":"a-1","issuer":issuer,
                          "content":{"text":"x"},"to":[to],"ttl":600});
    if kind == "CMNT" || kind == "REACT" {
        body["parent_owner"] = json!(to);
    }
    let (status, v) = api.bus_call("POST", "/bus/actions", &body).await;
    assert_eq!(status, 200, "{v}");
}

/// A signed request with any method to `/apps/app-id{path}`.
pub async fn call(api: &Api, method: &str, path: &str, body: &str) -> (u16, Value) {
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

pub async fn registrations(api: &Api, user: &str) -> Vec<Value> {
    let (status, v) = call(api, "GET", &format!("/users/{user}/push"), "").await;
    assert_eq!(status, 200, "{v}");
    v["registrations"].as_array().unwrap().clone()
}

/// The decrypted JSON payload of a Web Push request to `browser`.
pub fn payload(browser: &Browser, seen: &Seen) -> Value {
    assert_eq!(
        seen.path,
        path_of(&browser.endpoint),
        "pushed to the wrong device"
    );
    serde_json::from_slice(&browser.decrypt(&seen.body)).unwrap()
}

pub fn path_of(url: &str) -> String {
    let after = url.split_once("://").unwrap().1;
    after[after.find('/').unwrap()..].to_owned()
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn write_temp(name: &str, text: &str) -> String {
    let dir = temp_dir("push-keys");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// A PKCS#8 PEM for a P-256 key (what Apple's `.p8` files are).
pub fn p8(secret: &p256::SecretKey) -> String {
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
