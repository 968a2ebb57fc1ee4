//! Benchmark clients: connect (optionally from a chosen loopback source address), subscribe,
//! and count the `LG|seq|send_ns|...` payloads they receive.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use crate::stats::{marker_fields, markers, Count, Seen};
use crate::{Common, Proto};

/// A connected benchmark client.
pub type Ws = WebSocketStream<TcpStream>;

/// Nanoseconds since the process's first call: one clock for send and receive times.
pub fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

pub fn hmac_hex(secret: &str, msg: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    m.update(msg.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

async fn tcp(c: &Common, idx: usize) -> Result<TcpStream, String> {
    let addr: SocketAddr = tokio::net::lookup_host((c.host.as_str(), c.port))
        .await
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| e.to_string())?;
    if !c.source_ips.is_empty() {
        let ip = c.source_ips[idx % c.source_ips.len()];
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| format!("bind {ip}: {e}"))?;
    }
    let stream = socket.connect(addr).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(stream)
}

/// The client's read buffer. tungstenite zero-fills the whole buffer before every read, so
/// its 128 KiB default made half of the load generator's CPU a `memset` (measured with `perf`
/// on 1000 subscribers × 100 ev/s), CPU the server under test did not get on a two-core box.
/// 8 KiB still takes ~30 frames of a fan-out per read.
const READ_BUFFER: usize = 8 * 1024;

/// Connects client `idx` to `url` (on the node's host and port).
pub async fn connect(c: &Common, idx: usize, url: String) -> Result<Ws, String> {
    let stream = tcp(c, idx).await?;
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER);
    tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

async fn next_text(ws: &mut Ws) -> Result<String, String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Err(_) => return Err("timed out waiting for a frame".into()),
            Ok(None) => return Err("connection closed".into()),
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(Some(Ok(Message::Text(t)))) => return Ok(t.to_string()),
            Ok(Some(Ok(Message::Close(f)))) => return Err(format!("closed: {f:?}")),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

async fn wait_for(ws: &mut Ws, needle: &str) -> Result<String, String> {
    loop {
        let t = next_text(ws).await?;
        if t.contains(needle) {
            return Ok(t);
        }
        if t.contains("error") {
            return Err(format!("server said: {t}"));
        }
    }
}

/// Connects client `idx` and subscribes it to `channel`; returns it with its socket id.
pub async fn open(c: &Common, idx: usize, channel: &str) -> Result<(Ws, String), String> {
    match c.protocol {
        Proto::Pusher => {
            let url = format!(
                "ws://{}:{}/app/{}?protocol=7&client=switchboard-bench&version=1.0&flash=false",
                c.host, c.port, c.key
            );
            let mut ws = connect(c, idx, url).await?;
            let hello = wait_for(&mut ws, "connection_established").await?;
            let socket_id = hello
                .split("socket_id\\\":\\\"")
                .nth(1)
                .and_then(|r| r.split('\\').next())
                .ok_or("no socket_id")?
                .to_owned();
            subscribe_pusher(&mut ws, c, &socket_id, channel, None).await?;
            Ok((ws, socket_id))
        }
        Proto::Bus => {
            let token = bus_token(c, idx, channel);
            let url = format!("ws://{}:{}/ws/bus?token={token}", c.host, c.port);
            let mut ws = connect(c, idx, url).await?;
            wait_for(&mut ws, "\"welcome\"").await?;
            let sub = serde_json::json!({"type":"subscribe","rooms":[channel]});
            ws.send(Message::text(sub.to_string()))
                .await
                .map_err(|e| e.to_string())?;
            wait_for(&mut ws, "\"subscribed\"").await?;
            Ok((ws, String::new()))
        }
    }
}

/// Sends `pusher:subscribe` (signed for private and presence channels) and waits for success.
pub async fn subscribe_pusher(
    ws: &mut Ws,
    c: &Common,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> Result<(), String> {
    let mut data = serde_json::json!({ "channel": channel });
    if channel.starts_with("private-") || channel.starts_with("presence-") {
        let msg = match channel_data {
            Some(d) => format!("{socket_id}:{channel}:{d}"),
            None => format!("{socket_id}:{channel}"),
        };
        data["auth"] = format!("{}:{}", c.key, hmac_hex(&c.secret, &msg)).into();
        if let Some(d) = channel_data {
            data["channel_data"] = d.into();
        }
    }
    let sub = serde_json::json!({"event":"pusher:subscribe","data":data});
    ws.send(Message::text(sub.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    wait_for(ws, "subscription_succeeded").await.map(|_| ())
}

/// A bus token for user `bench-{idx}` allowed into `room`, valid for an hour.
pub fn bus_token(c: &Common, idx: usize, room: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 3600;
    let claims = serde_json::json!({
        "iss": c.key, "sub": format!("bench-{idx}"), "exp": exp, "channels": [room],
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(c.secret.as_bytes()),
    )
    .expect("HS256 signing")
}

/// What one receiver saw.
pub struct Received {
    pub seen: Seen,
    pub latencies_us: Vec<u32>,
}

impl Received {
    /// A payload: its number (as the receiver's bitmap counts it), its latency from
    /// `sent_ns`, and one more in `count`.
    pub fn record(&mut self, seq: u64, sent_ns: u64, count: &Count) {
        let lat = now_ns().saturating_sub(sent_ns) / 1000;
        self.latencies_us.push(lat.min(u64::from(u32::MAX)) as u32);
        self.seen.mark(seq);
        count.add();
    }
}

/// Reads frames until `stop`, recording payload sequence numbers (divided by `stride`, so
/// a receiver of every `stride`-th event keeps a dense bitmap) and latencies. Answers
/// `pusher:ping`. `count` is this receiver's slot of the payloads counted.
pub async fn receive(mut ws: Ws, stride: u64, stop: CancellationToken, count: Count) -> Received {
    let mut r = Received {
        seen: Seen::default(),
        latencies_us: Vec::new(),
    };
    // Made once: a fresh wait on the token per frame registered and dropped a waiter each time.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let msg = tokio::select! {
            biased;
            _ = &mut stopped => break,
            m = ws.next() => m,
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            Some(Ok(_)) => continue,
        };
        let first = markers(&text).next().map(marker_fields);
        if let Some(fields) = first {
            if let Some((seq, sent)) = fields {
                r.record(seq / stride, sent, &count);
            }
        } else if text.contains("pusher:ping") {
            let _ = ws
                .send(Message::text(r#"{"event":"pusher:pong","data":{}}"#))
                .await;
        }
    }
    let _ = ws.close(None).await;
    r
}
