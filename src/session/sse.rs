//! Server-Sent Events as a [`Transport`]: the bus for clients whose network breaks WebSocket
//! upgrades. Frames go out as `data:` lines of a `text/event-stream` response (with `id:` =
//! the event id where the frame has one); the client's messages come in by POST and reach
//! the session through a bounded queue. The session core above is the same as WebSocket's:
//! outbox bound, slow-consumer rule, heartbeat, close codes.
//!
//! The response body is a bounded queue of chunks: a client that stops reading fills it, the
//! flush waits, the outbox fills, and the slow-consumer rule closes the session, as on a
//! WebSocket. A stream the client cut ends the session at once (its body is dropped).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::transport::{FrameSink, FrameSource, Gone, Inbound, Transport};
use crate::frame::Frame;

/// Chunks the response body holds before a flush waits for the client to read.
pub const BODY_CHUNKS: usize = 8;
/// Client messages waiting for the session; past it a POST is answered 429.
pub const INBOUND: usize = 64;
/// A comment on an idle stream this often, so proxies do not cut it.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// An SSE session's two directions.
pub struct Sse {
    /// Chunks of the response body.
    pub body: mpsc::Sender<Bytes>,
    /// The client's messages, from its POSTs.
    pub inbound: mpsc::Receiver<String>,
    /// Cancelled when the response body is dropped (the client went away).
    pub cut: CancellationToken,
    /// Held until the session ends (its registration for POSTs).
    pub guard: Box<dyn Send>,
    /// Bytes gathered before a chunk is sent without waiting for more.
    pub write_size: usize,
}

/// Set by a flushed heartbeat: the stream took it, which is all SSE can say of a client.
#[derive(Default)]
struct Alive {
    flag: AtomicBool,
    notify: Notify,
}

impl Transport for Sse {
    const NAME: &'static str = "sse";
    type Sink = SseSink;
    type Source = SseSource;

    fn split(self) -> (SseSink, SseSource) {
        let alive = Arc::new(Alive::default());
        let sink = SseSink {
            body: Some(self.body),
            batch: BytesMut::new(),
            write_size: self.write_size.max(1),
            pinged: false,
            alive: alive.clone(),
        };
        let source = SseSource {
            inbound: self.inbound,
            cut: self.cut,
            alive,
            _guard: self.guard,
        };
        (sink, source)
    }
}

/// The stream's writing side.
pub struct SseSink {
    /// Dropped after the close: the response ends.
    body: Option<mpsc::Sender<Bytes>>,
    batch: BytesMut,
    write_size: usize,
    pinged: bool,
    alive: Arc<Alive>,
}

impl SseSink {
    fn event(&mut self, payload: &[u8]) {
        if let Some(id) = event_id(payload) {
            self.batch.put_slice(b"id: ");
            self.batch.put_slice(id.as_bytes());
            self.batch.put_u8(b'\n');
        }
        // JSON text has no raw line breaks: one frame is one `data:` line.
        self.batch.put_slice(b"data: ");
        self.batch.put_slice(payload);
        self.batch.put_slice(b"\n\n");
    }
}

/// The `id` of a frame that has one (the bus's envelopes). Most frames have no `"id":` at
/// all, and are not parsed.
fn event_id(payload: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct WithId<'a> {
        #[serde(borrow)]
        id: Option<std::borrow::Cow<'a, str>>,
    }
    if !payload.windows(5).any(|w| w == b"\"id\":") {
        return None;
    }
    let v: WithId<'_> = serde_json::from_slice(payload).ok()?;
    v.id.map(std::borrow::Cow::into_owned)
}

impl FrameSink for SseSink {
    fn feed(&mut self, frame: Frame) {
        self.event(frame.payload());
    }

    fn ping(&mut self) {
        self.batch.put_slice(b": ping\n\n");
        self.pinged = true;
    }

    fn pong(&mut self, _: Bytes) {}

    fn full(&self) -> bool {
        self.batch.len() >= self.write_size
    }

    async fn flush(&mut self) -> Result<(), Gone> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let body = self.body.as_ref().ok_or(Gone)?;
        let chunk = self.batch.split().freeze();
        body.send(chunk).await.map_err(|_| Gone)?;
        if std::mem::take(&mut self.pinged) {
            self.alive.flag.store(true, Ordering::Release);
            self.alive.notify.notify_one();
        }
        Ok(())
    }

    async fn close(&mut self, code: u16, reason: &str, wait: Duration) {
        if self.body.is_none() {
            return;
        }
        let close = serde_json::json!({"type": "close", "code": code, "reason": reason});
        self.batch.put_slice(b"event: close\ndata: ");
        self.batch.put_slice(close.to_string().as_bytes());
        self.batch.put_slice(b"\n\n");
        let _ = tokio::time::timeout(wait, self.flush()).await;
        self.body = None;
    }
}

/// The client's messages.
pub struct SseSource {
    inbound: mpsc::Receiver<String>,
    cut: CancellationToken,
    alive: Arc<Alive>,
    _guard: Box<dyn Send>,
}

impl FrameSource for SseSource {
    async fn next(&mut self) -> Inbound {
        if self.alive.flag.swap(false, Ordering::AcqRel) {
            return Inbound::Control;
        }
        tokio::select! {
            msg = self.inbound.recv() => match msg {
                Some(text) => Inbound::Text(text),
                None => Inbound::End(None),
            },
            _ = self.alive.notify.notified() => {
                self.alive.flag.store(false, Ordering::Release);
                Inbound::Control
            }
            _ = self.cut.cancelled() => Inbound::End(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_become_events_with_their_ids() {
        let (tx, _rx) = mpsc::channel(1);
        let (_itx, irx) = mpsc::channel(1);
        let sse = Sse {
            body: tx,
            inbound: irx,
            cut: CancellationToken::new(),
            guard: Box::new(()),
            write_size: 1024,
        };
        let (mut sink, _) = sse.split();
        sink.event(br#"{"type":"notification","id":"17-3","message":"hi"}"#);
        sink.event(br#"{"type":"pong","timestamp":1}"#);
        assert_eq!(
            &sink.batch[..],
            b"id: 17-3\ndata: {\"type\":\"notification\",\"id\":\"17-3\",\"message\":\"hi\"}\n\ndata: {\"type\":\"pong\",\"timestamp\":1}\n\n"
        );
    }
}
