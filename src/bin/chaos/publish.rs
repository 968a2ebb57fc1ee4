//! The publishers. Each publishes its events one after the other (so "publisher order" is
//! well defined), at a fixed rate, and retries an event until it is acknowledged:
//!
//! - HTTP: a signed API call with an `idempotency_key`, through node `(seq + attempt) % 3`;
//!   retried on 503/408/409/429/5xx, timeouts and refused connections with the same key.
//! - Outbox: an INSERT into `switchboard.outbox`, acknowledged when it committed. After an
//!   error whose outcome is unknown the row is looked up on a new connection before it is
//!   inserted again (the outbox has no key of its own).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;
use tokio_postgres::{Client, NoTls};

use crate::api::{Api, Sent};
use crate::ledger::{token, Kind, Stream, AMBIGUOUS, GAVE_UP, REFUSED};

/// When to stop starting events, and when to stop retrying them.
#[derive(Clone, Copy)]
pub struct Window {
    pub stop: Instant,
    pub give_up: Instant,
}

fn backoff(attempt: u16) -> Duration {
    Duration::from_millis((50u64 << attempt.min(5)).min(1000))
}

/// Waits for the next slot of a `rate`-per-second schedule (no bursts after a stall).
struct Pace {
    every: Duration,
    next: Instant,
}

impl Pace {
    fn new(rate: u64) -> Self {
        Self {
            every: Duration::from_micros(1_000_000 / rate.max(1)),
            next: Instant::now(),
        }
    }

    async fn wait(&mut self) {
        tokio::time::sleep_until(self.next).await;
        self.next = (self.next + self.every).max(Instant::now());
    }
}

/// Publishes stream `idx` through the signed HTTP API.
pub async fn http(
    api: Arc<Api>,
    stream: Arc<Stream>,
    idx: usize,
    run: u64,
    users: Vec<String>,
    rate: u64,
    w: Window,
) {
    let mut pace = Pace::new(rate);
    let nodes = api.nodes.len();
    while Instant::now() < w.stop {
        pace.wait().await;
        let seq = stream.begin();
        let key = format!("{run}-{idx}-{seq}");
        let (path, body) = match &stream.kind {
            Kind::Http(channel) => (
                format!("/apps/{}/events", api.app_id()),
                json!({"name": "e", "channel": channel, "data": token(idx, seq, stream.pad),
                       "idempotency_key": key}),
            ),
            _ => (
                format!("/apps/{}/bus/notifications", api.app_id()),
                json!({"to": users, "notification_type": "chaos", "message": token(idx, seq, stream.pad),
                       "idempotency_key": key}),
            ),
        };
        let body = body.to_string();
        let (mut attempts, mut flags) = (0u16, 0u8);
        let acked = loop {
            let node = (seq as usize + attempts as usize) % nodes;
            attempts += 1;
            match api.post(node, &path, body.clone()).await {
                Sent::Ok => break true,
                Sent::Refused => {
                    flags |= REFUSED;
                    break false;
                }
                Sent::Retry { ambiguous } => {
                    if ambiguous {
                        flags |= AMBIGUOUS;
                    }
                }
            }
            if Instant::now() >= w.give_up {
                flags |= GAVE_UP;
                break false;
            }
            tokio::time::sleep(backoff(attempts)).await;
        };
        stream.finish(seq, acked, attempts, flags);
    }
}

async fn connect(url: &str) -> Option<Client> {
    let c = tokio::time::timeout(Duration::from_secs(3), tokio_postgres::connect(url, NoTls));
    let (client, conn) = c.await.ok()?.ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Some(client)
}

const INSERT_CHANNEL: &str = "INSERT INTO switchboard.outbox (app_id, channel, event, data) \
     VALUES ($1, $2, 'e', to_jsonb($3::text))";
const INSERT_USERS: &str = "INSERT INTO switchboard.outbox (app_id, user_id, event, data) \
     SELECT $1, u, 'notification', \
            jsonb_build_object('notification_type', 'chaos', 'message', $3::text) \
     FROM unnest($2::text[]) AS u";
const FIND_CHANNEL: &str =
    "SELECT count(*) FROM switchboard.outbox WHERE channel = $1 AND data = to_jsonb($2::text)";
const FIND_USERS: &str = "SELECT count(*) FROM switchboard.outbox \
     WHERE user_id IS NOT NULL AND data->>'message' = $1";

/// One attempt: `Ok` once the rows are committed (or, when `check_first`, found committed).
async fn attempt(
    c: &Client,
    app: &str,
    stream: &Stream,
    users: &[String],
    tok: &str,
    check_first: bool,
) -> Result<(), String> {
    let run = async {
        if check_first {
            let row = match stream.channel() {
                Some(ch) => c.query_one(FIND_CHANNEL, &[&ch, &tok]).await?,
                None => c.query_one(FIND_USERS, &[&tok]).await?,
            };
            if row.get::<_, i64>(0) > 0 {
                return Ok(());
            }
        }
        match stream.channel() {
            Some(ch) => c.execute(INSERT_CHANNEL, &[&app, &ch, &tok]).await?,
            None => c.execute(INSERT_USERS, &[&app, &users, &tok]).await?,
        };
        Ok::<(), tokio_postgres::Error>(())
    };
    match tokio::time::timeout(Duration::from_secs(5), run).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// Publishes stream `idx` by inserting outbox rows.
pub async fn outbox(
    url: String,
    app: String,
    stream: Arc<Stream>,
    idx: usize,
    users: Vec<String>,
    rate: u64,
    w: Window,
) {
    let mut pace = Pace::new(rate);
    let mut client: Option<Client> = None;
    while Instant::now() < w.stop {
        pace.wait().await;
        let seq = stream.begin();
        let tok = token(idx, seq, stream.pad);
        let (mut attempts, mut flags, mut unsure) = (0u16, 0u8, false);
        let acked = loop {
            attempts += 1;
            if client.is_none() {
                client = connect(&url).await;
            }
            if let Some(c) = &client {
                match attempt(c, &app, &stream, &users, &tok, unsure).await {
                    Ok(()) => break true,
                    Err(_) => {
                        // The statement may have committed before the error: look first.
                        client = None;
                        unsure = true;
                        flags |= AMBIGUOUS;
                    }
                }
            }
            if Instant::now() >= w.give_up {
                flags |= GAVE_UP;
                break false;
            }
            tokio::time::sleep(backoff(attempts)).await;
        };
        stream.finish(seq, acked, attempts, flags);
    }
}
