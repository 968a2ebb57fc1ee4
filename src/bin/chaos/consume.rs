//! The consumers: Pusher subscribers and bus clients that record every event they receive,
//! reconnect after any disconnection (bus clients resume with `since`, one id per stream),
//! and can be cut (socket dropped with a TCP reset) or paused (stop reading) by a fault.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use crate::api::Api;
use crate::ledger::{now_ms, parse_token, Seen};

type Ws = WebSocketStream<TcpStream>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Proto {
    Pusher,
    Bus,
}

/// What the faults do to a consumer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    /// On node 1, which no fault kills; never cut or paused.
    Throughout,
    /// On a node that gets killed.
    NodeKill,
    /// Its socket gets cut.
    Cut,
    /// It stops reading for a while (small receive buffer, so the server sees it).
    Slow,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Throughout => "throughout",
            Role::NodeKill => "node-kill",
            Role::Cut => "consumer-cut",
            Role::Slow => "slow-consumer",
        }
    }
}

/// One consumer and everything it saw.
pub struct Rx {
    /// Also the bus user id.
    pub name: String,
    pub proto: Proto,
    /// Index into the node list.
    pub node: usize,
    pub role: Role,
    /// The channels (Pusher) or rooms (bus) it subscribes to.
    pub channels: Vec<String>,
    /// The streams it receives (indexes).
    pub streams: Vec<usize>,
    seen: Mutex<Vec<Seen>>,
    max: Vec<AtomicU64>,
    sessions: Mutex<Vec<Session>>,
    closes: Mutex<BTreeMap<String, u64>>,
    /// Bus `replay` headers with `complete: false`.
    pub incomplete: AtomicU64,
    /// Events of a stream it did not subscribe to, or unreadable tokens.
    pub unexpected: AtomicU64,
    pub connected: AtomicBool,
    cut: watch::Sender<u64>,
    pause: watch::Sender<bool>,
}

/// One connection, from its subscription to its end (ms).
#[derive(Clone, Copy, Debug)]
pub struct Session {
    pub start: u64,
    /// `u64::MAX` while open.
    pub end: u64,
    /// It ended with the server's slow-consumer close (4100), which drops what was queued.
    pub slow_close: bool,
}

/// Where consumers connect.
pub struct Net {
    pub api: Arc<Api>,
    /// How long a cut consumer waits before reconnecting.
    pub cut_hold: Duration,
}

impl Rx {
    pub fn new(
        (name, proto, node, role): (&str, Proto, usize, Role),
        channels: Vec<String>,
        streams: Vec<usize>,
    ) -> Self {
        let n = streams.iter().max().map_or(0, |m| m + 1);
        Self {
            name: name.into(),
            proto,
            node,
            role,
            channels,
            streams,
            seen: Mutex::new(vec![Seen::default(); n]),
            max: (0..n).map(|_| AtomicU64::new(0)).collect(),
            sessions: Mutex::default(),
            closes: Mutex::default(),
            incomplete: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            cut: watch::Sender::new(0),
            pause: watch::Sender::new(false),
        }
    }

    fn record(&self, text: &str) {
        match parse_token(text) {
            Some((stream, seq)) if self.streams.contains(&stream) => {
                self.seen.lock().expect("seen lock")[stream].mark(seq);
                self.max[stream].fetch_max(seq + 1, Ordering::AcqRel);
            }
            _ => {
                self.unexpected.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The highest sequence number of `stream` received.
    pub fn max_seen(&self, stream: usize) -> Option<u64> {
        let m = self.max.get(stream)?.load(Ordering::Acquire);
        m.checked_sub(1)
    }

    pub fn seen_of(&self, stream: usize) -> Seen {
        self.seen.lock().expect("seen lock")[stream].clone()
    }

    pub fn sessions(&self) -> Vec<Session> {
        self.sessions.lock().expect("sessions lock").clone()
    }

    pub fn closes(&self) -> BTreeMap<String, u64> {
        self.closes.lock().expect("closes lock").clone()
    }

    /// Drops the socket without a close handshake; the consumer reconnects after `cut_hold`.
    pub fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    pub fn pause(&self, paused: bool) {
        self.pause.send_replace(paused);
    }

    fn opened(&self) {
        let mut s = self.sessions.lock().expect("sessions lock");
        if s.len() < 10_000 {
            s.push(Session {
                start: now_ms(),
                end: u64::MAX,
                slow_close: false,
            });
        }
        self.connected.store(true, Ordering::Release);
    }

    fn ended(&self, why: &str) {
        if self.connected.swap(false, Ordering::AcqRel) {
            if let Some(last) = self.sessions.lock().expect("sessions lock").last_mut() {
                last.end = now_ms();
                last.slow_close = why == "close 4100";
            }
        }
        let mut closes = self.closes.lock().expect("closes lock");
        let key = if closes.len() < 32 || closes.contains_key(why) {
            why
        } else {
            "other"
        };
        *closes.entry(key.to_owned()).or_default() += 1;
    }
}

/// Runs a consumer until `stop`, reconnecting after every disconnection: with backoff from
/// 200 ms doubling to 500 ms (reset by a session of 5 s or more); after a cut, after
/// `cut_hold`.
pub async fn run(rx: Arc<Rx>, net: Arc<Net>, stop: CancellationToken) {
    let mut resume: BTreeMap<String, String> = BTreeMap::new();
    let mut delay = Duration::from_millis(100);
    while !stop.is_cancelled() {
        let began = now_ms();
        let why = session(&rx, &net, &mut resume, &stop).await;
        rx.ended(&why);
        if now_ms() - began > 5_000 {
            delay = Duration::from_millis(100);
        }
        let wait = if why == "cut" {
            net.cut_hold
        } else {
            delay = (delay * 2).min(Duration::from_millis(500));
            delay
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

fn ws_error(e: &WsError) -> String {
    match e {
        WsError::Io(io) => format!("io {:?}", io.kind()),
        WsError::Http(r) => format!("http {}", r.status().as_u16()),
        WsError::ConnectionClosed | WsError::AlreadyClosed => "closed".into(),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => "reset".into(),
        WsError::Protocol(_) => "protocol".into(),
        _ => "ws error".into(),
    }
}

async fn connect(rx: &Rx, net: &Net) -> Result<Ws, String> {
    let addr: SocketAddr = net.api.nodes[rx.node].parse().map_err(|_| "bad address")?;
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket {:?}", e.kind()))?;
    if rx.role == Role::Slow {
        // Set before connecting, so the window it advertises stays small.
        let _ = socket.set_recv_buffer_size(4096);
    }
    let tcp = tokio::time::timeout(Duration::from_secs(2), socket.connect(addr))
        .await
        .map_err(|_| "connect timeout".to_owned())?
        .map_err(|e| format!("connect {:?}", e.kind()))?;
    let _ = tcp.set_nodelay(true);
    let url = match rx.proto {
        Proto::Pusher => format!(
            "ws://{addr}/app/{}?protocol=7&client=chaos&version=1.0",
            net.api.key()
        ),
        Proto::Bus => format!("ws://{addr}/ws/bus?token={}", net.api.bus_token(&rx.name)),
    };
    let hs = tokio_tungstenite::client_async(url, tcp);
    let (ws, _) = tokio::time::timeout(Duration::from_secs(5), hs)
        .await
        .map_err(|_| "handshake timeout".to_owned())?
        .map_err(|e| format!("handshake {}", ws_error(&e)))?;
    Ok(ws)
}

/// What a frame was, beyond what [`handle`] recorded.
enum Got {
    Nothing,
    Established,
    Subscribed,
    Reply(Message),
}

/// Records an event frame; answers pings; notes `subscribed` heads and incomplete replays.
fn handle(rx: &Rx, text: &str, resume: &mut BTreeMap<String, String>) -> Got {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return Got::Nothing;
    };
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    match rx.proto {
        Proto::Pusher => match s("event") {
            Some("pusher:connection_established") => Got::Established,
            Some("pusher_internal:subscription_succeeded") => Got::Subscribed,
            Some("pusher:ping") => Got::Reply(Message::text(
                json!({"event": "pusher:pong", "data": {}}).to_string(),
            )),
            Some("e") => {
                rx.record(s("data").unwrap_or(""));
                Got::Nothing
            }
            _ => Got::Nothing,
        },
        Proto::Bus => {
            let (label, token) = match s("type") {
                Some("event") => (s("room").map(|r| format!("room:{r}")), s("data")),
                Some("notification") => (Some("user".to_owned()), s("message")),
                Some("replay") => {
                    if v.get("complete") == Some(&Value::Bool(false)) {
                        rx.incomplete.fetch_add(1, Ordering::Relaxed);
                    }
                    return Got::Nothing;
                }
                Some("subscribed") => {
                    if let Some(heads) = v.get("heads").and_then(Value::as_object) {
                        for (label, id) in heads {
                            if let Some(id) = id.as_str() {
                                resume.entry(label.clone()).or_insert_with(|| id.into());
                            }
                        }
                    }
                    return Got::Subscribed;
                }
                Some("welcome") => return Got::Established,
                _ => return Got::Nothing,
            };
            rx.record(token.unwrap_or(""));
            if let (Some(label), Some(id)) = (label, s("id")) {
                resume.insert(label, id.to_owned());
            }
            Got::Nothing
        }
    }
}

/// Reads frames (recording events) until `want` of the `wanted` kind arrived, within 5 s.
async fn expect(
    ws: &mut Ws,
    rx: &Rx,
    resume: &mut BTreeMap<String, String>,
    subscribed: bool,
    want: usize,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut got = 0;
    while got < want {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| "subscribe timeout".to_owned())?;
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(f))) => {
                return Err(format!("close {}", f.map_or(1005, |f| u16::from(f.code))))
            }
            Some(Err(e)) => return Err(ws_error(&e)),
            None => return Err("eof".into()),
            Some(Ok(_)) => continue,
        };
        match handle(rx, &text, resume) {
            Got::Established if !subscribed => got += 1,
            Got::Subscribed if subscribed => got += 1,
            Got::Reply(m) => ws.send(m).await.map_err(|e| ws_error(&e))?,
            _ => {}
        }
    }
    Ok(())
}

async fn subscribe(
    ws: &mut Ws,
    rx: &Rx,
    resume: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    expect(ws, rx, resume, false, 1).await?;
    let send = |v: Value| Message::text(v.to_string());
    match rx.proto {
        Proto::Pusher => {
            for ch in &rx.channels {
                let sub = json!({"event": "pusher:subscribe", "data": {"channel": ch}});
                ws.send(send(sub)).await.map_err(|e| ws_error(&e))?;
            }
            expect(ws, rx, resume, true, rx.channels.len()).await
        }
        Proto::Bus => {
            let mut sub = json!({"type": "subscribe", "events": ["notification"],
                                 "rooms": rx.channels});
            if !resume.is_empty() {
                sub["since"] = json!(resume);
            }
            ws.send(send(sub)).await.map_err(|e| ws_error(&e))?;
            expect(ws, rx, resume, true, 1).await?;
            // A stream with no head yet is empty: resume it from its beginning.
            let labels = rx.channels.iter().map(|c| format!("room:{c}"));
            for label in labels.chain(["user".to_owned()]) {
                resume.entry(label).or_insert_with(|| "0-0".into());
            }
            Ok(())
        }
    }
}

/// One connection: connect, subscribe, read until it ends. Returns why it ended.
async fn session(
    rx: &Rx,
    net: &Net,
    resume: &mut BTreeMap<String, String>,
    stop: &CancellationToken,
) -> String {
    let mut cut = rx.cut.subscribe();
    let mut pause = rx.pause.subscribe();
    let mut ws = match connect(rx, net).await {
        Ok(ws) => ws,
        Err(e) => return e,
    };
    if let Err(e) = subscribe(&mut ws, rx, resume).await {
        return e;
    }
    rx.opened();
    loop {
        if *pause.borrow_and_update() {
            tokio::select! {
                _ = stop.cancelled() => return "stop".into(),
                _ = cut.changed() => break,
                _ = pause.changed() => continue,
            }
        }
        let msg = tokio::select! {
            _ = stop.cancelled() => {
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                return "stop".into();
            }
            _ = cut.changed() => break,
            _ = pause.changed() => continue,
            m = ws.next() => m,
        };
        match msg {
            None => return "eof".into(),
            Some(Err(e)) => return ws_error(&e),
            Some(Ok(Message::Close(f))) => {
                return format!("close {}", f.map_or(1005, |f| u16::from(f.code)))
            }
            Some(Ok(Message::Text(t))) => {
                if let Got::Reply(m) = handle(rx, &t, resume) {
                    if let Err(e) = ws.send(m).await {
                        return ws_error(&e);
                    }
                }
            }
            Some(Ok(_)) => {}
        }
    }
    // Cut: a reset instead of a close handshake, as when a network path dies.
    let _ = ws.get_ref().set_zero_linger();
    drop(ws);
    "cut".into()
}
