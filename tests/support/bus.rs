//! Bus protocol (/ws/bus) helpers.
#![allow(unused_imports)]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use switchboard::auth;
use switchboard::config::Config;
use tokio_tungstenite::tungstenite::Message;

use super::*;

// ============================================================================================
// Bus protocol (/ws/bus) helpers. Used by tests/bus_protocol.rs; kept apart from the Pusher
// helpers above.
// ============================================================================================

/// The default app (`app-id` / `app-key` / `app-secret`), for minting bus tokens.
pub fn bus_app() -> switchboard::apps::App {
    switchboard::apps::App::from_config(&switchboard::config::AppConfig::default())
}

/// Claims for `user` on the default app, valid for an hour, no watchlist, no rooms.
pub fn bus_claims(user: &str) -> auth::BusClaims {
    auth::BusClaims {
        iss: KEY.into(),
        sub: user.into(),
        exp: now() + 3600,
        watchlist: Vec::new(),
        channels: Vec::new(),
    }
}

/// A token for `claims`, signed with the default app's secret.
pub fn bus_token(claims: &auth::BusClaims) -> String {
    auth::mint_bus_token(&bus_app(), claims)
}

impl TestServer {
    /// `ws://.../ws/bus?token=...`.
    pub fn bus_url(&self, token: &str) -> String {
        format!("ws://{}/ws/bus?token={token}", self.addr)
    }

    /// A bus client for `user` with default claims, after its `welcome`.
    pub async fn bus(&self, user: &str) -> BusClient {
        self.bus_with(&bus_claims(user)).await
    }

    /// A bus client with these claims, after its `welcome`.
    pub async fn bus_with(&self, claims: &auth::BusClaims) -> BusClient {
        BusClient::connect(&self.bus_url(&bus_token(claims))).await
    }
}

/// A raw bus protocol client. Every frame it receives is checked for `type` and `timestamp`.
pub struct BusClient {
    pub ws: Ws,
    pub session_id: String,
    pub user: String,
}

impl BusClient {
    /// Connects and asserts that the first frame is `welcome`.
    pub async fn connect(url: &str) -> Self {
        let ws = Self::connect_raw(url).await;
        Self::welcomed(ws).await
    }

    /// Takes a connected socket and asserts that its first frame is `welcome`.
    pub async fn welcomed(ws: Ws) -> Self {
        let mut c = Self {
            ws,
            session_id: String::new(),
            user: String::new(),
        };
        let hello = c.recv().await;
        assert_eq!(
            hello["type"], "welcome",
            "first frame must be welcome: {hello}"
        );
        c.session_id = hello["session_id"].as_str().expect("session_id").to_owned();
        c.user = hello["user"].as_str().expect("user").to_owned();
        c
    }

    /// Connects without reading anything.
    pub async fn connect_raw(url: &str) -> Ws {
        tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("bus connect failed: {e}"))
            .0
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, s: &str) {
        self.ws.send(Message::text(s)).await.unwrap();
    }

    /// The next JSON frame; asserts the bus envelope (`type` string, numeric `timestamp`
    /// within a minute of now). Panics after [`WAIT`].
    pub async fn recv(&mut self) -> Value {
        let v = recv_json(&mut self.ws).await;
        assert_bus_envelope(&v);
        v
    }

    /// The next frame, which must be of `kind`.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["type"], kind, "expected {kind} next, got {v}");
        v
    }

    /// Skips frames until one of type `kind` arrives; panics after [`WAIT`].
    pub async fn expect(&mut self, kind: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let v = tokio::time::timeout_at(deadline, self.recv())
                .await
                .unwrap_or_else(|_| panic!("no {kind} within {WAIT:?}"));
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// Asserts the next frame is an `error` with `code`; returns it.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let v = self.recv_type("error").await;
        assert_eq!(v["code"], code, "{v}");
        assert!(v["message"].is_string(), "{v}");
        v
    }

    /// Sends `ping` and asserts that the very next frame is `pong`: the connection is open,
    /// and nothing was queued for it before the ping was handled.
    pub async fn ping(&mut self) {
        self.send(json!({"type":"ping"})).await;
        self.recv_type("pong").await;
    }

    /// Sends `subscribe` and returns the `subscribed` answer (which must come next).
    pub async fn subscribe(&mut self, events: &[&str], rooms: &[&str]) -> Value {
        self.send(json!({"type":"subscribe","events":events,"rooms":rooms}))
            .await;
        self.recv_type("subscribed").await
    }

    /// Sends `unsubscribe` and returns the `subscribed` answer (which must come next).
    pub async fn unsubscribe(&mut self, events: &[&str], rooms: &[&str]) -> Value {
        self.send(json!({"type":"unsubscribe","events":events,"rooms":rooms}))
            .await;
        self.recv_type("subscribed").await
    }

    /// Asserts nothing (but WebSocket pings) arrives within `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(m) => panic!("expected silence, got {m:?}"),
            }
        }
    }

    /// Waits for the server's close frame (skipping frames before it) and returns its code.
    pub async fn expect_close(&mut self) -> u16 {
        expect_close(&mut self.ws).await
    }

    /// Closes from the client side and waits (bounded) for the server to finish the close.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(WAIT, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// Asserts `v` is a bus server message: a `type` string and a Unix-seconds `timestamp`.
pub fn assert_bus_envelope(v: &Value) {
    assert!(v["type"].is_string(), "bus message without type: {v}");
    let ts = v["timestamp"]
        .as_u64()
        .unwrap_or_else(|| panic!("bus message without numeric timestamp: {v}"));
    assert!(ts.abs_diff(now()) <= 60, "timestamp {ts} is not now: {v}");
}

impl Api {
    /// `POST /bus/notifications` to `user` (type `t`, text `msg`), with `extra` fields such as
    /// `priority` or `ttl`; asserts it is accepted.
    pub async fn notify(&self, user: &str, msg: &str, extra: Value) {
        let mut body = json!({"to":[user],"notification_type":"t","message":msg});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let (status, v) = self.bus_call("POST", "/bus/notifications", &body).await;
        assert_eq!(status, 200, "{v}");
    }

    /// A signed request with a JSON body to `/apps/{id}{path}` (`POST`, `PUT` or `GET`).
    pub async fn bus_call(&self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        let path = format!("/apps/{}{path}", self.app_id);
        let body = if method == "GET" {
            String::new()
        } else {
            body.to_string()
        };
        let q = self.signed_query(method, &path, &[], &body, now());
        let url = format!("{}{path}?{q}", self.base);
        let req = match method {
            "POST" => self.http.post(url),
            "PUT" => self.http.put(url),
            "GET" => self.http.get(url),
            other => panic!("unsupported method {other}"),
        };
        let res = req
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }
}
