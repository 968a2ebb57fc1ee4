//! Test support: real servers on 127.0.0.1:0 and real WebSocket/HTTP clients.
#![allow(dead_code, unused_imports)]

pub mod bus;
pub mod hooks;
pub mod pg;
pub mod raw;
pub mod topology;

pub use bus::*;
pub use pg::*;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use md5::{Digest, Md5};
use serde_json::{json, Value};
use switchboard::apps::Secret;
use switchboard::auth;
use switchboard::config::Config;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The test Redis: `SWITCHBOARD_TEST_REDIS_URL` (scripts/test.sh starts one and exports it).
pub fn redis_url() -> String {
    std::env::var("SWITCHBOARD_TEST_REDIS_URL").unwrap_or_else(|_| {
        panic!(
            "SWITCHBOARD_TEST_REDIS_URL is not set: the cluster tests need a real Redis \
             (scripts/test.sh starts one; by hand: redis-server --port 6379 & \
             export SWITCHBOARD_TEST_REDIS_URL=redis://127.0.0.1:6379)"
        )
    })
}

/// A command connection to the Redis at `url`, for what a test checks in Redis itself.
pub async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

/// The cluster's Redis as the server sees it (a Redis Cluster too), connected: its
/// connections are routed as the server routes its own, its names are the server's.
pub async fn redis_as_server(
    url: &str,
    prefix: &str,
) -> std::sync::Arc<switchboard::redis_base::Redis> {
    use switchboard::redis_base::{Redis, Topology};
    let redis = Redis::open(
        Topology::Detect(url.to_owned()),
        prefix,
        "test".into(),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let tracker = tokio_util::task::TaskTracker::new();
    redis.spawn_connector(&tracker, tokio_util::sync::CancellationToken::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while redis.conn().is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "cannot connect to {url}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis
}

/// A command connection and the server's name for `parts` under `prefix`, in the home shard
/// (the cluster-wide keys, and the node leases).
pub async fn redis_key(
    url: &str,
    prefix: &str,
    parts: &[&str],
) -> (switchboard::redis_base::Conn, String) {
    let redis = redis_as_server(url, prefix).await;
    (redis.conn().unwrap(), redis.key(parts))
}

/// The pub/sub channel of `app`'s `channel`, as the server names it, and a connection
/// routed to its shard.
pub async fn redis_channel_topic(
    url: &str,
    prefix: &str,
    app: &str,
    channel: &str,
) -> (switchboard::redis_base::Conn, String) {
    let redis = redis_as_server(url, prefix).await;
    let shard = redis.channel_shard(app, channel);
    (
        redis.conn_at(shard).unwrap(),
        redis.key_at(shard, &["c", app, channel]),
    )
}

/// `parts` in every shard (a count kept per shard: the offline total), with a connection
/// routed to each.
pub async fn redis_key_in_every_shard(
    url: &str,
    prefix: &str,
    parts: &[&str],
) -> Vec<(switchboard::redis_base::Conn, String)> {
    let redis = redis_as_server(url, prefix).await;
    redis
        .shards()
        .map(|s| (redis.conn_at(s).unwrap(), redis.key_at(s, parts)))
        .collect()
}

pub const KEY: &str = "app-key";
pub const SECRET: &str = "app-secret";
pub const APP_ID: &str = "app-id";
/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(5);

/// A running server; stopped (and awaited) by [`TestServer::stop`].
pub struct TestServer {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    /// Starts a server with the default config, adjusted by `f`.
    pub async fn start_with(f: impl FnOnce(&mut Config)) -> Self {
        Self::start_full(f, false).await
    }

    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_full(f: impl FnOnce(&mut Config), metrics: bool) -> Self {
        let mut config = Config::load(None, Vec::<(String, String)>::new()).unwrap();
        config.server.shutdown_grace = 2;
        config.data.dir = temp_dir("data");
        f(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ml = if metrics {
            Some(TcpListener::bind("127.0.0.1:0").await.unwrap())
        } else {
            None
        };
        let metrics_addr = ml.as_ref().map(|l| l.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(switchboard::server::run(listener, ml, config, async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            metrics_addr,
            stop: Some(tx),
            task,
        }
    }

    /// Signals shutdown without waiting for it (see [`Self::stop`]).
    pub fn begin_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Signals shutdown and waits for `run` to return.
    pub async fn stop(mut self) {
        self.begin_stop();
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("server stops within 10 s")
            .unwrap()
            .unwrap();
    }

    pub fn ws_url(&self, key: &str) -> String {
        format!(
            "ws://{}/app/{key}?protocol=7&client=test&version=1.0",
            self.addr
        )
    }

    pub async fn pusher(&self) -> PusherClient {
        PusherClient::connect(&self.ws_url(KEY)).await
    }

    pub fn api(&self) -> Api {
        Api {
            base: format!("http://{}", self.addr),
            app_id: APP_ID.into(),
            key: KEY.into(),
            secret: SECRET.into(),
            http: reqwest::Client::new(),
        }
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A raw Pusher protocol client.
pub struct PusherClient {
    pub ws: Ws,
    pub socket_id: String,
}

impl PusherClient {
    /// Connects and waits for `connection_established`.
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut c = Self {
            ws,
            socket_id: String::new(),
        };
        let hello = c.recv().await;
        assert_eq!(hello["event"], "pusher:connection_established", "{hello}");
        let data: Value = serde_json::from_str(hello["data"].as_str().unwrap()).unwrap();
        c.socket_id = data["socket_id"].as_str().unwrap().to_owned();
        c
    }

    /// Connects without waiting for anything.
    pub async fn connect_raw(url: &str) -> Ws {
        tokio_tungstenite::connect_async(url).await.unwrap().0
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, s: &str) {
        self.ws.send(Message::text(s)).await.unwrap();
    }

    /// The next JSON frame (pings from the server included); panics after [`WAIT`].
    pub async fn recv(&mut self) -> Value {
        recv_json(&mut self.ws).await
    }

    /// Skips frames until one with `event == name` arrives.
    pub async fn expect(&mut self, name: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let v = tokio::time::timeout_at(deadline, recv_json(&mut self.ws))
                .await
                .unwrap_or_else(|_| panic!("no {name} within {WAIT:?}"));
            if v["event"] == name {
                return v;
            }
        }
    }

    /// Asserts no frame arrives within `d` (except those `allow` accepts).
    pub async fn expect_silence(&mut self, d: Duration) {
        match tokio::time::timeout(d, self.ws.next()).await {
            Err(_) => {}
            Ok(m) => panic!("expected silence, got {m:?}"),
        }
    }

    /// Waits for the server's close frame and returns its code.
    pub async fn expect_close(&mut self) -> u16 {
        expect_close(&mut self.ws).await
    }

    pub async fn subscribe(&mut self, channel: &str) -> Value {
        self.send(json!({"event":"pusher:subscribe","data":{"channel":channel}}))
            .await;
        self.expect_subscribed(channel).await
    }

    pub async fn subscribe_private(&mut self, channel: &str) -> Value {
        let auth = channel_auth(&self.socket_id, channel, None);
        self.send(json!({"event":"pusher:subscribe","data":{"channel":channel,"auth":auth}}))
            .await;
        self.expect_subscribed(channel).await
    }

    pub async fn subscribe_presence(&mut self, channel: &str, channel_data: &str) -> Value {
        let auth = channel_auth(&self.socket_id, channel, Some(channel_data));
        self.send(json!({"event":"pusher:subscribe","data":{"channel":channel,"auth":auth,"channel_data":channel_data}}))
            .await;
        self.expect_subscribed(channel).await
    }

    async fn expect_subscribed(&mut self, channel: &str) -> Value {
        let v = self.expect("pusher_internal:subscription_succeeded").await;
        assert_eq!(v["channel"], channel);
        v
    }

    pub async fn signin(&mut self, user_data: &str) -> Value {
        let auth = user_auth(&self.socket_id, user_data);
        self.send(json!({"event":"pusher:signin","data":{"auth":auth,"user_data":user_data}}))
            .await;
        self.expect("pusher:signin_success").await
    }

    /// Sends `pusher:ping` and asserts that the very next frame is `pusher:pong`: proves the
    /// connection is open and that nothing was queued for it before the ping was handled.
    pub async fn ping(&mut self) {
        self.send(json!({"event":"pusher:ping","data":{}})).await;
        let v = self.recv().await;
        assert_eq!(
            v["event"], "pusher:pong",
            "expected pusher:pong next, got {v}"
        );
    }

    /// Asserts the next frame is `pusher:error` with `code`; returns it.
    pub async fn expect_error(&mut self, code: u16) -> Value {
        let v = self.recv().await;
        assert_eq!(
            v["event"], "pusher:error",
            "expected pusher:error next, got {v}"
        );
        assert_eq!(v["data"]["code"], code, "{v}");
        v
    }

    /// Asserts the next frame is `pusher:subscription_error` for `channel`; returns its status.
    pub async fn expect_subscription_error(&mut self, channel: &str) -> u64 {
        self.expect_subscription_error_data(channel).await["status"]
            .as_u64()
            .expect("numeric status")
    }

    /// As [`Self::expect_subscription_error`]; returns its `data` (`{type, error, status}`).
    pub async fn expect_subscription_error_data(&mut self, channel: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["event"], "pusher:subscription_error", "{v}");
        assert_eq!(v["channel"], channel, "{v}");
        assert!(v["data"]["error"].is_string(), "{v}");
        v["data"].clone()
    }

    pub async fn send_binary(&mut self, b: &[u8]) {
        self.ws.send(Message::binary(b.to_vec())).await.unwrap();
    }

    /// Sends `pusher:subscribe` with the given fields, without waiting for an answer.
    pub async fn send_subscribe(
        &mut self,
        channel: &str,
        auth: Option<&str>,
        channel_data: Option<&str>,
    ) {
        let mut data = json!({ "channel": channel });
        if let Some(a) = auth {
            data["auth"] = json!(a);
        }
        if let Some(d) = channel_data {
            data["channel_data"] = json!(d);
        }
        self.send(json!({"event":"pusher:subscribe","data":data}))
            .await;
    }

    pub async fn unsubscribe(&mut self, channel: &str) {
        self.send(json!({"event":"pusher:unsubscribe","data":{"channel":channel}}))
            .await;
    }

    pub async fn client_event(&mut self, event: &str, channel: &str, data: Value) {
        self.send(json!({"event":event,"channel":channel,"data":data}))
            .await;
    }

    /// Closes the socket from the client side (a close frame, then drop).
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Waits until the connection ends: `Some(code)` for a close frame, `None` when the
    /// stream ends or fails without one. Skips any frames before that.
    pub async fn expect_end(&mut self) -> Option<u16> {
        expect_end(&mut self.ws, WAIT).await
    }
}

/// Waits up to `d` for the connection to end; see [`PusherClient::expect_end`].
pub async fn expect_end(ws: &mut Ws, d: Duration) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + d;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("connection still open after {d:?}"),
            Ok(Some(Ok(Message::Close(Some(f))))) => return Some(u16::from(f.code)),
            Ok(Some(Ok(Message::Close(None)))) => return Some(u16::from(CloseCode::Status)),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Ok(None) => return None,
        }
    }
}

/// `"<key>:<sig>"` for `pusher:signin`.
pub fn user_auth(socket_id: &str, user_data: &str) -> String {
    let msg = format!("{socket_id}::user::{user_data}");
    format!("{KEY}:{}", auth::sign(&Secret::new(SECRET), msg.as_bytes()))
}

/// The `data` of a frame whose `data` is a JSON-encoded string, decoded.
pub fn data_of(v: &Value) -> Value {
    let s = v["data"]
        .as_str()
        .unwrap_or_else(|| panic!("data is not a string in {v}"));
    serde_json::from_str(s).unwrap_or_else(|e| panic!("data of {v} is not JSON: {e}"))
}

/// Whether `s` matches `^\d+\.\d+$`.
pub fn is_socket_id(s: &str) -> bool {
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit());
    s.split_once('.')
        .is_some_and(|(a, b)| digits(a) && digits(b))
}

pub async fn recv_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame within the wait")
            .expect("stream open")
            .expect("no socket error");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

pub async fn expect_close(ws: &mut Ws) -> u16 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("no close within {WAIT:?}"),
            Ok(Some(Ok(Message::Close(Some(f))))) => return u16::from(f.code),
            Ok(Some(Ok(Message::Close(None)))) => return u16::from(CloseCode::Status),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => panic!("socket error before close: {e}"),
            Ok(None) => panic!("stream ended without a close frame"),
        }
    }
}

/// `"<key>:<sig>"` for a private or presence channel.
pub fn channel_auth(socket_id: &str, channel: &str, data: Option<&str>) -> String {
    let msg = match data {
        Some(d) => format!("{socket_id}:{channel}:{d}"),
        None => format!("{socket_id}:{channel}"),
    };
    format!("{KEY}:{}", auth::sign(&Secret::new(SECRET), msg.as_bytes()))
}

/// A client of the signed HTTP API.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub app_id: String,
    pub key: String,
    pub secret: String,
    pub http: reqwest::Client,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl Api {
    /// The signed query string for a request, as Pusher's SDKs build it.
    pub fn signed_query(
        &self,
        method: &str,
        path: &str,
        params: &[(&str, &str)],
        body: &str,
        ts: u64,
    ) -> String {
        let mut p: Vec<(String, String)> = vec![
            ("auth_key".into(), self.key.clone()),
            ("auth_timestamp".into(), ts.to_string()),
            ("auth_version".into(), "1.0".into()),
        ];
        if !body.is_empty() {
            p.push(("body_md5".into(), hex::encode(Md5::digest(body.as_bytes()))));
        }
        p.extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let to_sign = auth::api_string_to_sign(method, path, &p);
        let sig = auth::sign(&Secret::new(&self.secret), to_sign.as_bytes());
        let mut q: Vec<String> = p.iter().map(|(k, v)| format!("{k}={v}")).collect();
        q.push(format!("auth_signature={sig}"));
        q.join("&")
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        params: &[(&str, &str)],
        body: &str,
    ) -> (u16, Value) {
        let q = self.signed_query(method, path, params, body, now());
        self.raw(method, &format!("{path}?{q}"), body).await
    }

    pub async fn raw(&self, method: &str, path_and_query: &str, body: &str) -> (u16, Value) {
        let url = format!("{}{path_and_query}", self.base);
        let req = match method {
            "POST" => self
                .http
                .post(url)
                .header("content-type", "application/json")
                .body(body.to_owned()),
            _ => self.http.get(url),
        };
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    pub async fn trigger(&self, body: Value) -> (u16, Value) {
        let path = format!("/apps/{}/events", self.app_id);
        self.request("POST", &path, &[], &body.to_string()).await
    }

    pub async fn get(&self, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let path = format!("/apps/{}{path}", self.app_id);
        self.request("GET", &path, params, "").await
    }

    /// A signed POST to `/apps/{id}{path}`.
    pub async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let path = format!("/apps/{}{path}", self.app_id);
        self.request("POST", &path, &[], body).await
    }

    /// The channel's `subscription_count` from `GET /channels/{name}`.
    pub async fn subscription_count(&self, channel: &str) -> u64 {
        let (status, v) = self
            .get(
                &format!("/channels/{channel}"),
                &[("info", "subscription_count")],
            )
            .await;
        assert_eq!(status, 200, "{v}");
        v["subscription_count"]
            .as_u64()
            .expect("subscription_count")
    }

    /// Polls until the channel has `n` subscribers; panics after [`WAIT`].
    pub async fn wait_subscription_count(&self, channel: &str, n: u64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = self.subscription_count(channel).await;
            if got == n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{channel} has {got} subscribers, expected {n} within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A loopback port that was free a moment ago, for a server process a test starts.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct loopback ports, each free when picked, for processes a test starts.
///
/// They come from below the kernel's ephemeral range. A port from `bind(127.0.0.1:0)` is in
/// that range, and once the test releases it, any outgoing connection on the box (a replica's
/// link to its primary, a cluster bus link, a client) may take it as its source port before the
/// process binds it: CI saw a sentinel group's Redis fail with "Address already in use" that
/// way. Below the range, no socket gets a port without asking for it by number. A cursor per
/// process keeps one test binary's picks apart; the bind probe skips what another process holds.
pub fn free_ports(n: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CURSOR: AtomicU32 = AtomicU32::new(u32::MAX);
    let ephemeral_low = u32::from(ephemeral_low());
    let (base, span) = (10_000, ephemeral_low.saturating_sub(10_000));
    if span < 1000 {
        // An unusual range leaves no room below it: fall back to the kernel's pick.
        let held: Vec<_> = (0..n)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        return held
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
    }
    // Processes start their cursors apart, so two test binaries at once rarely probe alike.
    let start = std::process::id().wrapping_mul(2_654_435_761) % span;
    let _ = CURSOR.compare_exchange(u32::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
    let mut ports = Vec::with_capacity(n);
    for _ in 0..span {
        if ports.len() == n {
            break;
        }
        let port = (base + CURSOR.fetch_add(1, Ordering::Relaxed) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    assert_eq!(
        ports.len(),
        n,
        "no {n} free loopback ports below {ephemeral_low}"
    );
    ports
}

/// The first port of the kernel's ephemeral range (where `bind(:0)` and outgoing
/// connections take their ports).
pub fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// A fresh directory under the system temp dir, unique to this process and call.
pub fn temp_dir(what: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "switchboard-test-{}-{what}-{n}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
