//! HTTP-streaming subscribers, for clients whose network breaks WebSocket: pusher-js's
//! `xhr_streaming` (one long POST response in SockJS framing, messages sent with
//! `xhr_send`) for the Pusher protocol, Server-Sent Events (`GET /ws/bus/sse`, messages
//! sent with `POST /ws/bus/send`) for the bus. They count payloads as the WebSocket
//! receivers do.

use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::conn::{bus_token, hmac_hex, now_ns, Received};
use crate::stats::{marker_fields, markers, Count, Seen};
use crate::{Common, Proto};

/// One subscriber's open stream and where its messages go.
pub struct Stream {
    res: reqwest::Response,
    buf: Vec<u8>,
    http: reqwest::Client,
    /// `xhr_send` (Pusher) or `/ws/bus/send?session=…&token=…` (bus).
    send_url: String,
}

impl Stream {
    /// The next complete line of the response (without its `\n`).
    async fn line(&mut self) -> Result<String, String> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Ok(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.res.chunk()).await;
            match chunk {
                Err(_) => return Err("timed out waiting for a line".into()),
                Ok(Err(e)) => return Err(e.to_string()),
                Ok(Ok(None)) => return Err("stream ended".into()),
                Ok(Ok(Some(b))) => self.buf.extend_from_slice(&b),
            }
        }
    }

    async fn wait_for(&mut self, needle: &str) -> Result<String, String> {
        loop {
            let l = self.line().await?;
            if l.contains(needle) {
                return Ok(l);
            }
            if l.starts_with('c') || l.contains("error") {
                return Err(format!("server said: {l}"));
            }
        }
    }

    /// Sends one client message (a JSON text).
    async fn send(&self, msg: &str, proto: Proto) -> Result<(), String> {
        let body = match proto {
            // SockJS: a JSON array of messages, each a JSON string.
            Proto::Pusher => json!([msg]).to_string(),
            Proto::Bus => msg.to_owned(),
        };
        let res = self
            .http
            .post(&self.send_url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        match res.status().as_u16() {
            200 | 204 => Ok(()),
            s => Err(format!("send answered {s}")),
        }
    }
}

/// Opens subscriber `idx` over HTTP streaming and subscribes it to `channel`.
pub async fn open(
    http: &reqwest::Client,
    c: &Common,
    idx: usize,
    channel: &str,
) -> Result<Stream, String> {
    let base = format!("http://{}:{}", c.host, c.port);
    match c.protocol {
        Proto::Pusher => {
            // pusher-js's ids: a server number and a random session string.
            let session = format!("b{idx}x{:08x}", now_ns() as u32);
            let path = format!("{base}/pusher/app/{}/{}/{session}", c.key, idx % 1000);
            let url =
                format!("{path}/xhr_streaming?protocol=7&client=switchboard-bench&version=1.0");
            let res = http.post(url).send().await.map_err(|e| e.to_string())?;
            let mut s = stream(res, http, format!("{path}/xhr_send"))?;
            let hello = s.wait_for("connection_established").await?;
            let socket_id = socket_id(&hello).ok_or("no socket_id")?;
            let mut data = json!({ "channel": channel });
            if channel.starts_with("private-") {
                let sig = hmac_hex(&c.secret, &format!("{socket_id}:{channel}"));
                data["auth"] = format!("{}:{sig}", c.key).into();
            }
            let sub = json!({"event": "pusher:subscribe", "data": data}).to_string();
            s.send(&sub, Proto::Pusher).await?;
            s.wait_for("subscription_succeeded").await?;
            Ok(s)
        }
        Proto::Bus => {
            let token = bus_token(c, idx, channel);
            let res = http
                .get(format!("{base}/ws/bus/sse?token={token}"))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let mut s = stream(res, http, String::new())?;
            let welcome = s.wait_for("\"welcome\"").await?;
            let session = welcome
                .strip_prefix("data:")
                .and_then(|d| serde_json::from_str::<Value>(d.trim()).ok())
                .and_then(|v| v["session_id"].as_str().map(str::to_owned))
                .ok_or("no session_id in welcome")?;
            s.send_url = format!("{base}/ws/bus/send?session={session}&token={token}");
            let sub = json!({"type": "subscribe", "rooms": [channel]}).to_string();
            s.send(&sub, Proto::Bus).await?;
            s.wait_for("\"subscribed\"").await?;
            Ok(s)
        }
    }
}

fn stream(
    res: reqwest::Response,
    http: &reqwest::Client,
    send_url: String,
) -> Result<Stream, String> {
    if !res.status().is_success() {
        return Err(format!("stream answered {}", res.status()));
    }
    Ok(Stream {
        res,
        buf: Vec::new(),
        http: http.clone(),
        send_url,
    })
}

/// The socket id in an `a[...]` line holding `pusher:connection_established`.
fn socket_id(line: &str) -> Option<String> {
    let messages: Vec<String> = serde_json::from_str(line.strip_prefix('a')?).ok()?;
    messages.iter().find_map(|m| {
        let v: Value = serde_json::from_str(m).ok()?;
        let data: Value = serde_json::from_str(v["data"].as_str()?).ok()?;
        data["socket_id"].as_str().map(str::to_owned)
    })
}

/// Reads lines until `stop`, recording every payload in them (an `a[...]` line may hold
/// several); answers `pusher:ping`. `count` is this receiver's slot of the payloads counted.
pub async fn receive(
    mut s: Stream,
    proto: Proto,
    stop: CancellationToken,
    count: Count,
) -> Received {
    let mut r = Received {
        seen: Seen::default(),
        latencies_us: Vec::new(),
    };
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let line = tokio::select! {
            biased;
            _ = &mut stopped => break,
            l = s.line() => match l {
                Ok(l) => l,
                Err(_) => break,
            },
        };
        let mut any = false;
        for (seq, sent) in markers(&line).filter_map(marker_fields) {
            r.record(seq, sent, &count);
            any = true;
        }
        if !any && proto == Proto::Pusher && line.contains("pusher:ping") {
            let _ = s.send(r#"{"event":"pusher:pong","data":{}}"#, proto).await;
        }
    }
    r
}
