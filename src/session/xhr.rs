//! pusher-js's HTTP transports (`xhr_streaming`, `xhr_polling`) as a [`Transport`], for
//! clients whose network breaks WebSocket upgrades. The wire is SockJS's framing, as
//! pusher-js reads it: lines of `o` (open), `a[...]` (messages, each a JSON string), `h`
//! (heartbeat) and `c[code,"reason"]` (close). The client's messages arrive by POST.
//!
//! Frames wait in a bounded queue between the session and whichever HTTP response is
//! attached: a long-lived stream, or one poll after another. A session with nothing attached
//! for [`DETACHED_GRACE`] has lost its client and ends (a disconnect, as a WebSocket's).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::transport::{FrameSink, FrameSource, Gone, Inbound, Transport};
use crate::frame::Frame;

/// Chunks queued for the client before a flush waits for it to read (or poll).
pub const CHUNKS: usize = 16;
/// Client messages waiting for the session; past it a send is answered 429.
pub const INBOUND: usize = 64;
/// How long a session lives with no stream or poll attached (SockJS's disconnect delay):
/// a client that left is counted out (presence, webhooks) this long after its last request.
pub const DETACHED_GRACE: Duration = Duration::from_secs(5);

/// What the HTTP side and the session share: the queue's receiving end while no response
/// holds it, and when it was given back.
#[derive(Default)]
pub struct Attach {
    slot: Mutex<Slot>,
    changed: Notify,
}

#[derive(Default)]
struct Slot {
    rx: Option<mpsc::Receiver<Bytes>>,
    detached_at: Option<Instant>,
    /// Raised to ask the response holding the queue to give it back (a newer one came).
    taken: Option<Arc<Notify>>,
    ended: bool,
    ended_at: Option<Instant>,
}

impl Attach {
    /// Takes the queue for a response; `None` while another one holds it (that one is asked
    /// to give it back) or once the session ended.
    pub fn take(&self) -> Option<(mpsc::Receiver<Bytes>, Arc<Notify>)> {
        let mut slot = self.slot.lock().expect("xhr lock poisoned");
        // After the session ended the queue still holds its last lines (the close).
        match slot.rx.take() {
            Some(rx) => {
                let yield_now = Arc::new(Notify::new());
                slot.taken = Some(yield_now.clone());
                slot.detached_at = None;
                drop(slot);
                self.changed.notify_one();
                Some((rx, yield_now))
            }
            None if slot.ended => None,
            None => {
                if let Some(holder) = &slot.taken {
                    holder.notify_one();
                }
                None
            }
        }
    }

    /// Gives the queue back when a response is done with it.
    pub fn give_back(&self, rx: mpsc::Receiver<Bytes>) {
        let mut slot = self.slot.lock().expect("xhr lock poisoned");
        slot.rx = Some(rx);
        slot.taken = None;
        slot.detached_at = Some(Instant::now());
        drop(slot);
        self.changed.notify_one();
    }

    /// Whether the session ended.
    pub fn ended(&self) -> bool {
        self.slot.lock().expect("xhr lock poisoned").ended
    }

    /// Waits (at most `within`) until the queue is back in the slot, and takes it.
    pub async fn take_within(
        &self,
        within: Duration,
    ) -> Option<(mpsc::Receiver<Bytes>, Arc<Notify>)> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(t) = self.take() {
                return Some(t);
            }
            if self.slot.lock().expect("xhr lock poisoned").ended {
                return None;
            }
            let wait = tokio::time::sleep(Duration::from_millis(20));
            if tokio::time::timeout_at(deadline, wait).await.is_err() {
                return None;
            }
        }
    }

    fn end(&self) {
        let mut slot = self.slot.lock().expect("xhr lock poisoned");
        slot.ended = true;
        slot.ended_at = Some(Instant::now());
    }

    /// Whether the session ended more than `ago` ago (its last lines were never fetched).
    pub fn ended_before(&self, ago: Duration) -> bool {
        let slot = self.slot.lock().expect("xhr lock poisoned");
        slot.ended_at.is_some_and(|at| at.elapsed() > ago)
    }
}

/// A session's two directions.
pub struct Xhr {
    /// Chunks for the client.
    pub out: mpsc::Sender<Bytes>,
    /// Shared with the HTTP side.
    pub attach: Arc<Attach>,
    /// The client's messages, from its `xhr_send` POSTs.
    pub inbound: mpsc::Receiver<String>,
}

impl Transport for Xhr {
    const NAME: &'static str = "xhr";
    type Sink = XhrSink;
    type Source = XhrSource;

    fn split(self) -> (XhrSink, XhrSource) {
        let sink = XhrSink {
            out: Some(self.out),
            batch: BytesMut::new(),
            count: 0,
            heartbeat: false,
        };
        let source = XhrSource {
            attach: self.attach,
            inbound: self.inbound,
        };
        (sink, source)
    }
}

/// The writing side: frames fed before a flush go out as one `a[...]` line.
pub struct XhrSink {
    out: Option<mpsc::Sender<Bytes>>,
    batch: BytesMut,
    count: usize,
    heartbeat: bool,
}

impl XhrSink {
    fn line(&mut self) -> Option<Bytes> {
        let mut line = BytesMut::new();
        if self.count > 0 {
            line.put_u8(b'a');
            line.put_u8(b'[');
            line.put_slice(&self.batch);
            line.put_slice(b"]\n");
            self.batch.clear();
            self.count = 0;
        }
        if std::mem::take(&mut self.heartbeat) {
            line.put_slice(b"h\n");
        }
        (!line.is_empty()).then(|| line.freeze())
    }
}

impl FrameSink for XhrSink {
    fn feed(&mut self, frame: Frame) {
        if self.count > 0 {
            self.batch.put_u8(b',');
        }
        // Each message is a JSON string holding the frame's JSON text.
        let text = String::from_utf8_lossy(frame.payload());
        let quoted = serde_json::to_string(&*text).expect("a string serializes");
        self.batch.put_slice(quoted.as_bytes());
        self.count += 1;
    }

    fn ping(&mut self) {
        self.heartbeat = true;
    }

    fn pong(&mut self, _: Bytes) {}

    fn full(&self) -> bool {
        self.batch.len() >= 16 * 1024
    }

    async fn flush(&mut self) -> Result<(), Gone> {
        let Some(line) = self.line() else {
            return Ok(());
        };
        let out = self.out.as_ref().ok_or(Gone)?;
        out.send(line).await.map_err(|_| Gone)
    }

    async fn close(&mut self, code: u16, reason: &str, wait: Duration) {
        let Some(out) = self.out.take() else {
            return;
        };
        let mut chunk = BytesMut::new();
        if let Some(line) = self.line() {
            chunk.put_slice(&line);
        }
        let close = serde_json::json!([code, reason]).to_string();
        chunk.put_u8(b'c');
        chunk.put_slice(close.as_bytes());
        chunk.put_u8(b'\n');
        // As a WebSocket's close waits for the socket to take its frame: the close has gone
        // out once a response took every line (a polling client between two polls fetches
        // it on its next one), so the session (and a node draining for it) waits so long.
        let sent = async {
            out.send(chunk.freeze()).await.ok()?;
            while out.capacity() < out.max_capacity() && !out.is_closed() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Some(())
        };
        let _ = tokio::time::timeout(wait, sent).await;
    }
}

/// The client's messages, and the end of a session whose client stopped coming back.
pub struct XhrSource {
    attach: Arc<Attach>,
    inbound: mpsc::Receiver<String>,
}

impl Drop for XhrSource {
    fn drop(&mut self) {
        self.attach.end();
    }
}

impl FrameSource for XhrSource {
    async fn next(&mut self) -> Inbound {
        loop {
            let detached = self
                .attach
                .slot
                .lock()
                .expect("xhr lock poisoned")
                .detached_at;
            let gone_at = detached.map(|at| at + DETACHED_GRACE);
            tokio::select! {
                msg = self.inbound.recv() => return match msg {
                    // An empty send (`[]`): the client's heartbeat.
                    Some(text) if text.is_empty() => Inbound::Control,
                    Some(text) => Inbound::Text(text),
                    None => Inbound::End(None),
                },
                _ = self.attach.changed.notified() => {}
                _ = sleep_until(gone_at) => return Inbound::End(None),
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
