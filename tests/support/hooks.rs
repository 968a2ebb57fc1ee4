//! A webhook receiver on loopback that records every request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use tokio::sync::mpsc;

use super::WAIT;

/// One received webhook request.
pub struct Hook {
    pub body: Value,
    pub key: String,
    pub signature: String,
    pub raw: Bytes,
}

pub struct Receiver {
    pub url: String,
    rx: mpsc::UnboundedReceiver<Hook>,
}

#[derive(Clone)]
struct RecvState {
    tx: mpsc::UnboundedSender<Hook>,
    /// Answer 500 to this many requests first.
    fail_first: Arc<AtomicUsize>,
}

async fn hook(State(st): State<RecvState>, headers: HeaderMap, raw: Bytes) -> StatusCode {
    if st
        .fail_first
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let _ = st.tx.send(Hook {
        body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
        key: h("x-pusher-key"),
        signature: h("x-pusher-signature"),
        raw,
    });
    StatusCode::OK
}

pub async fn receiver(fail_first: usize) -> Receiver {
    let (tx, rx) = mpsc::unbounded_channel();
    let st = RecvState {
        tx,
        fail_first: Arc::new(AtomicUsize::new(fail_first)),
    };
    let app = Router::new().route("/hook", post(hook)).with_state(st);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver { url, rx }
}

impl Receiver {
    /// The next request within `d`.
    pub async fn next(&mut self, d: Duration) -> Option<Hook> {
        tokio::time::timeout(d, self.rx.recv()).await.ok().flatten()
    }

    /// Events of requests until one named `name` arrives (panics after the wait).
    pub async fn expect(&mut self, name: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let h = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no {name} webhook"))
                .unwrap();
            if let Some(e) = h.body["events"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == name)
            {
                return e.clone();
            }
        }
    }

    /// Names of all events received within `d`.
    pub async fn names_within(&mut self, d: Duration) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(h) = self.next(d).await {
            for e in h.body["events"].as_array().unwrap() {
                out.push(e["name"].as_str().unwrap().to_owned());
            }
        }
        out
    }
}
