//! WebSocket (RFC 6455) as a [`Transport`]: the two halves of an upgraded socket.
//!
//! The write side sends frames exactly as the hub framed them ([`Frame::wire`]: header and
//! payload, shared by every recipient) with vectored writes, a batch per system call, and
//! keeps at most a few slots between batches. On plain TCP the socket is also given to the
//! hub ([`Transport::direct`]): a fan-out writes whole frames to it while this side is idle,
//! and hands back the tail of one the socket did not take ([`FrameSink::rest`]). The read side parses frame headers with tungstenite's
//! codec, takes a read buffer only while a message is incomplete, and enforces the rules a
//! server must (masking, reserved bits, control frames, fragmentation, UTF-8, size), each
//! violation ending the connection with its close code.

use std::collections::VecDeque;
use std::io::{self, Cursor, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

use super::transport::{FrameSink, FrameSource, Gone, Inbound, Transport};
use crate::frame::{self, Frame};
use crate::hub::Direct;

/// Largest read of one system call; the chunk lives on the stack only while reading.
const READ_CHUNK: usize = 16 * 1024;
/// Frames per vectored write.
const MAX_IOV: usize = 64;
/// Frame slots the sink keeps between batches; a larger buffer is given back.
const KEEP: usize = 8;

/// An upgraded connection: its two halves, the bytes the HTTP layer read past the request,
/// and whatever must live as long as the socket (its per-address slot).
pub struct WebSocket<R, W> {
    /// The reading half.
    pub read: R,
    /// The writing half.
    pub write: W,
    /// Bytes already read after the upgrade request.
    pub pre: Bytes,
    /// Kept with the reading half until the connection ends.
    pub guard: Box<dyn Send>,
    /// The socket itself, when fan-outs may write frames to it (plain TCP).
    pub direct: Option<Arc<dyn Direct>>,
    /// Limits of both halves.
    pub limits: Limits,
}

/// The sizes a WebSocket connection works within.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest message (and frame) accepted from the client.
    pub max_message: usize,
    /// Bytes read per system call (at most 16 KiB).
    pub read_size: usize,
    /// Bytes queued before a batch is written without waiting for more.
    pub write_size: usize,
}

impl<R, W> Transport for WebSocket<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    const NAME: &'static str = "ws";
    type Sink = WsSink<W>;
    type Source = WsSource<R>;

    fn direct(&self) -> Option<Arc<dyn Direct>> {
        self.direct.clone()
    }

    fn split(self) -> (WsSink<W>, WsSource<R>) {
        let sink = WsSink {
            io: self.write,
            batch: VecDeque::new(),
            batch_bytes: 0,
            write_size: self.limits.write_size.max(1),
            closed: false,
        };
        let source = WsSource {
            io: self.read,
            buf: self.pre.to_vec(),
            partial: None,
            max_message: self.limits.max_message,
            read_size: self.limits.read_size.clamp(64, READ_CHUNK),
            _guard: self.guard,
        };
        (sink, source)
    }
}

/// The writing half.
pub struct WsSink<W> {
    io: W,
    /// Frames fed and not yet written (shared bytes, no copy); the front one is cut to what
    /// is left of it, so a write that was given up (a kill) resumes where it stopped and the
    /// close that follows never cuts a frame.
    batch: VecDeque<Bytes>,
    batch_bytes: usize,
    write_size: usize,
    /// A close frame went out: nothing more may follow it.
    closed: bool,
}

impl<W: AsyncWrite + Unpin + Send + 'static> WsSink<W> {
    fn queue(&mut self, wire: Bytes) {
        self.batch_bytes += wire.len();
        self.batch.push_back(wire);
    }

    /// Writes the batch with as few system calls as the socket allows.
    async fn write_batch(&mut self) -> io::Result<()> {
        while !self.batch.is_empty() {
            let n = std::future::poll_fn(|cx| {
                let mut iov = [IoSlice::new(&[]); MAX_IOV];
                let count = self.batch.len().min(MAX_IOV);
                for (slot, b) in iov.iter_mut().zip(&self.batch) {
                    *slot = IoSlice::new(b);
                }
                Pin::new(&mut self.io).poll_write_vectored(cx, &iov[..count])
            })
            .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.batch_bytes -= n;
            let mut left = n;
            while let Some(front) = self.batch.front_mut() {
                if left < front.len() {
                    front.advance(left);
                    break;
                }
                left -= front.len();
                self.batch.pop_front();
            }
        }
        if self.batch.capacity() > KEEP {
            self.batch = VecDeque::new();
        }
        std::future::poll_fn(|cx| Pin::new(&mut self.io).poll_flush(cx)).await
    }
}

impl<W: AsyncWrite + Unpin + Send + 'static> FrameSink for WsSink<W> {
    fn feed(&mut self, frame: Frame) {
        self.queue(frame.wire().clone());
    }

    fn ping(&mut self) {
        self.queue(Bytes::from_static(&[0x89, 0x00]));
    }

    fn rest(&mut self, bytes: Bytes) {
        self.queue(bytes);
    }

    fn pong(&mut self, payload: Bytes) {
        let mut wire = Vec::with_capacity(2 + payload.len());
        frame::header(&mut wire, 0x8A, payload.len());
        wire.extend_from_slice(&payload);
        self.queue(Bytes::from(wire));
    }

    fn full(&self) -> bool {
        self.batch_bytes >= self.write_size || self.batch.len() >= MAX_IOV
    }

    async fn flush(&mut self) -> Result<(), Gone> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.write_batch().await.map_err(|_| Gone)
    }

    async fn close(&mut self, code: u16, reason: &str, wait: Duration) {
        if self.closed {
            return;
        }
        self.closed = true;
        // A close frame's payload is at most 125 bytes: the code and a reason cut to fit.
        let mut cut = reason.len().min(123);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut wire = Vec::with_capacity(4 + cut);
        frame::header(&mut wire, 0x88, 2 + cut);
        wire.extend_from_slice(&code.to_be_bytes());
        wire.extend_from_slice(&reason.as_bytes()[..cut]);
        self.queue(Bytes::from(wire));
        let send = async {
            self.write_batch().await?;
            std::future::poll_fn(|cx| Pin::new(&mut self.io).poll_shutdown(cx)).await
        };
        let _ = tokio::time::timeout(wait, send).await;
    }
}

/// The reading half.
pub struct WsSource<R> {
    io: R,
    /// Bytes read but not yet parsed: empty (and unallocated) between messages.
    buf: Vec<u8>,
    /// A fragmented message being assembled: whether it is text, and its bytes so far.
    partial: Option<(bool, Vec<u8>)>,
    max_message: usize,
    read_size: usize,
    _guard: Box<dyn Send>,
}

/// What one complete frame was.
enum Parsed {
    /// A frame that completes nothing yet (a fragment), or a pong.
    Nothing,
    /// Something for the session.
    Inbound(Inbound),
}

const PROTOCOL_ERROR: (u16, &str) = (1002, "Protocol error");

impl<R: AsyncRead + Unpin + Send + 'static> WsSource<R> {
    /// Parses one frame from the front of `buf`; `Ok(None)` when it is not complete yet.
    fn parse(&mut self) -> Result<Option<Parsed>, (u16, &'static str)> {
        let mut cursor = Cursor::new(&self.buf[..]);
        let (head, len) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(None),
            Err(_) => return Err(PROTOCOL_ERROR),
        };
        let start = cursor.position() as usize;
        let Some(mask) = head.mask else {
            return Err(PROTOCOL_ERROR); // clients must mask (RFC 6455, 5.1)
        };
        if head.rsv1 || head.rsv2 || head.rsv3 || len >= 1 << 63 {
            return Err(PROTOCOL_ERROR);
        }
        let control = matches!(head.opcode, OpCode::Control(_));
        if control && (!head.is_final || len > 125) {
            return Err(PROTOCOL_ERROR);
        }
        let so_far = self.partial.as_ref().map_or(0, |(_, d)| d.len()) as u64;
        if !control && len + so_far > self.max_message as u64 {
            return Err((1009, "Message too big"));
        }
        let end = start + len as usize;
        if self.buf.len() < end {
            self.buf.reserve(end - self.buf.len());
            return Ok(None);
        }
        // The common case, a read holding exactly one frame, reuses the read's buffer for
        // the payload (and leaves none behind).
        let mut payload = if end == self.buf.len() {
            let mut all = std::mem::take(&mut self.buf);
            all.drain(..start);
            all
        } else {
            let rest = self.buf[start..end].to_vec();
            self.buf.drain(..end);
            rest
        };
        for (b, m) in payload.iter_mut().zip(mask.iter().cycle()) {
            *b ^= m;
        }
        let message = |text: bool, data: Vec<u8>| -> Result<Parsed, (u16, &'static str)> {
            if !text {
                return Ok(Parsed::Inbound(Inbound::Binary));
            }
            match String::from_utf8(data) {
                Ok(s) => Ok(Parsed::Inbound(Inbound::Text(s))),
                Err(_) => Err((1007, "Invalid UTF-8 in a text message")),
            }
        };
        match head.opcode {
            OpCode::Control(Control::Ping) => {
                Ok(Some(Parsed::Inbound(Inbound::Ping(Bytes::from(payload)))))
            }
            OpCode::Control(Control::Pong) => Ok(Some(Parsed::Inbound(Inbound::Control))),
            OpCode::Control(Control::Close) => close_of(&payload).map(Some),
            OpCode::Data(Data::Continue) => {
                let Some((text, mut data)) = self.partial.take() else {
                    return Err(PROTOCOL_ERROR);
                };
                data.extend_from_slice(&payload);
                if head.is_final {
                    return message(text, data).map(Some);
                }
                self.partial = Some((text, data));
                Ok(Some(Parsed::Nothing))
            }
            OpCode::Data(d @ (Data::Text | Data::Binary)) => {
                if self.partial.is_some() {
                    return Err(PROTOCOL_ERROR);
                }
                let text = d == Data::Text;
                if head.is_final {
                    return message(text, payload).map(Some);
                }
                self.partial = Some((text, payload));
                Ok(Some(Parsed::Nothing))
            }
            _ => Err(PROTOCOL_ERROR),
        }
    }

    /// Reads what the socket has into `buf`; `Ok(0)` at the end of the stream.
    async fn read_more(&mut self) -> io::Result<usize> {
        let read_size = self.read_size;
        std::future::poll_fn(|cx| {
            let mut chunk = [0u8; READ_CHUNK];
            let mut rb = ReadBuf::new(&mut chunk[..read_size]);
            std::task::ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
            self.buf.extend_from_slice(rb.filled());
            std::task::Poll::Ready(Ok(rb.filled().len()))
        })
        .await
    }
}

/// The client's close: echoed with its code (RFC 6455, 5.5.1); a malformed one is a
/// protocol error.
fn close_of(payload: &[u8]) -> Result<Parsed, (u16, &'static str)> {
    let code = match payload {
        [] => return Ok(Parsed::Inbound(Inbound::End(Some((1000, ""))))),
        [_] => return Err(PROTOCOL_ERROR),
        [a, b, reason @ ..] => {
            if std::str::from_utf8(reason).is_err() {
                return Err((1007, "Invalid UTF-8 in a close reason"));
            }
            u16::from_be_bytes([*a, *b])
        }
    };
    // The codes a peer may send (RFC 6455, 7.4): 1000-1003, 1007-1014 and 3000-4999.
    let allowed = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
    if !allowed {
        return Err(PROTOCOL_ERROR);
    }
    Ok(Parsed::Inbound(Inbound::End(Some((code, "")))))
}

impl<R: AsyncRead + Unpin + Send + 'static> FrameSource for WsSource<R> {
    async fn next(&mut self) -> Inbound {
        loop {
            match self.parse() {
                Ok(Some(Parsed::Inbound(inbound))) => return inbound,
                Ok(Some(Parsed::Nothing)) => continue,
                Ok(None) => {}
                Err(close) => return Inbound::End(Some(close)),
            }
            match self.read_more().await {
                Ok(0) | Err(_) => return Inbound::End(None),
                Ok(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMITS: Limits = Limits {
        max_message: 1024,
        read_size: 4096,
        write_size: 8192,
    };

    fn pair() -> (WsSink<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(64);
        let (_, dummy) = tokio::io::duplex(1);
        let ws = WebSocket {
            read: dummy,
            write: ours,
            pre: Bytes::new(),
            guard: Box::new(()),
            direct: None,
            limits: LIMITS,
        };
        (ws.split().0, theirs)
    }

    /// A client frame: masked, as RFC 6455 requires.
    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut out = vec![first, 0x80 | payload.len() as u8];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        out
    }

    #[tokio::test]
    async fn the_sink_writes_the_shared_frames_and_a_close_never_cuts_one() {
        let (mut sink, mut client) = pair();
        let a = Frame::new(&"a".repeat(300));
        let b = Frame::new("b");
        sink.feed(a.clone());
        sink.feed(b.clone());
        // The client reads nothing: the write stops inside the first frame and is given up.
        let stalled = tokio::time::timeout(Duration::from_millis(50), sink.flush()).await;
        assert!(stalled.is_err(), "the duplex buffer holds only 64 bytes");
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all
        });
        sink.close(4100, "slow", Duration::from_secs(5)).await;
        drop(sink);
        let all = reader.await.unwrap();
        let mut want = a.wire().to_vec();
        want.extend_from_slice(b.wire());
        want.extend_from_slice(&[0x88, 6, 0x10, 0x04, b's', b'l', b'o', b'w']);
        assert_eq!(all, want);
    }

    #[tokio::test]
    async fn the_source_assembles_fragments_and_answers_pings() {
        let (mut client, ours) = tokio::io::duplex(4096);
        let ws = WebSocket {
            read: ours,
            write: tokio::io::sink(),
            pre: Bytes::from(masked(0x89, b"hb")),
            guard: Box::new(()),
            direct: None,
            limits: LIMITS,
        };
        let (_, mut source) = ws.split();
        let mut bytes = masked(0x01, b"hel");
        bytes.extend(masked(0x8A, b"")); // a pong between fragments is allowed
        bytes.extend(masked(0x80, "lo é".as_bytes()));
        // Delivered one byte at a time: every header and payload arrives split.
        tokio::spawn(async move {
            for b in bytes {
                client.write_all(&[b]).await.unwrap();
            }
            client
                .write_all(&masked(0x88, &3001u16.to_be_bytes()))
                .await
                .unwrap();
        });
        assert!(matches!(source.next().await, Inbound::Ping(p) if &p[..] == b"hb"));
        assert!(matches!(source.next().await, Inbound::Control));
        assert!(matches!(source.next().await, Inbound::Text(t) if t == "hello é"));
        assert!(matches!(
            source.next().await,
            Inbound::End(Some((3001, "")))
        ));
        assert!(
            source.buf.capacity() == 0,
            "no read buffer kept between messages"
        );
    }
}
