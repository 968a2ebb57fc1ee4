//! Writing through: a fan-out writes a connection's frames to its socket itself, once it
//! holds no lock of the hub's, instead of waking the connection's writer (a task switch and
//! a poll per connection per event). Only while the writer is idle, under the queue's lock
//! ([`Queue::write_idle`](super::super::queue::Queue::write_idle)), so there is one writer at
//! a time and the queue's order is the socket's order; what the socket does not take stays
//! in front, for the writer (woken) to finish.

use std::io::IoSlice;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::super::queue::Wrote;
use super::{Out, Outbox};

/// Frames written through per system call.
const MAX_WRITE: usize = 64;
/// Connections written through before a long fan-out lets other tasks run.
const TURN: usize = 64;

/// Connections a fan-out queued a first item for. Once the fan-out holds no lock,
/// [`Writes::finish`] writes their frames to each socket from here (a connection whose
/// writer is idle needs no wake-up: a task switch per connection per event saved), or wakes
/// the writers of those it cannot write to (TLS, HTTP streaming, a full socket).
#[derive(Default)]
pub struct Writes {
    listed: Vec<Outbox>,
}

impl Drop for Writes {
    /// A list dropped unfinished would leave its writers asleep with frames queued.
    fn drop(&mut self) {
        self.finish();
    }
}

impl Writes {
    /// Lists a connection given a first item (see [`Outbox::push_deferred`]).
    pub(super) fn add(&mut self, outbox: Outbox) {
        self.listed.push(outbox);
    }

    /// Writes through, or wakes, every connection listed; the list is left empty.
    pub fn finish(&mut self) {
        self.turn(self.listed.len());
    }

    /// [`Self::finish`], [`TURN`] connections at a time with a yield between: a fan-out to
    /// many connections (~5 µs a write on loopback) must not keep its worker from the tasks
    /// queued behind it, HTTP publishes among them, the whole node's on a one-core machine.
    pub async fn finish_in_turns(&mut self) {
        while self.turn(TURN) {
            tokio::task::yield_now().await;
        }
    }

    /// Writes through, or wakes, the first `n` connections listed; whether any are left.
    fn turn(&mut self, n: usize) -> bool {
        let n = n.min(self.listed.len());
        for outbox in self.listed.drain(..n) {
            outbox.write_through();
        }
        !self.listed.is_empty()
    }
}

/// The bytes of an item a write through can send (a frame, or the tail of one begun
/// before), with what it is charged.
fn wire(out: &Out) -> Option<(&Bytes, usize)> {
    match out {
        Out::Frame(f) => Some((f.wire(), out.charged())),
        Out::Rest(tail) => Some((tail, out.charged())),
        _ => None,
    }
}

impl Outbox {
    /// Writes the leading frames to the socket without waiting, when the writer is idle;
    /// what the socket did not take stays in front, for the writer (woken) to finish.
    fn write_through(&self) {
        if self.0.reason.load(Ordering::Acquire) != 0 {
            return; // killed: its writer is ending, woken by the token
        }
        static NONE: Bytes = Bytes::new();
        let released = self.0.queue.write_idle(|socket, front| {
            let mut wires = [(&NONE, 0); MAX_WRITE];
            let mut n = 0;
            for (slot, w) in wires.iter_mut().zip(front.map_while(wire)) {
                *slot = w;
                n += 1;
            }
            let mut iov = [IoSlice::new(&[]); MAX_WRITE];
            for (slot, (bytes, _)) in iov.iter_mut().zip(&wires[..n]) {
                *slot = IoSlice::new(bytes);
            }
            // An error other than a full socket is the writer's to meet (and end on): the
            // queue keeps everything and wakes it.
            let mut left = socket.try_write_vectored(&iov[..n]).unwrap_or(0);
            let (mut whole, mut released, mut tail) = (0, 0, None);
            for &(bytes, charged) in &wires[..n] {
                if left < bytes.len() {
                    if left > 0 {
                        // Begun: it leaves the budget like a frame the writer took.
                        released += charged;
                        tail = Some(Out::Rest(bytes.slice(left..)));
                    }
                    break;
                }
                released += charged;
                left -= bytes.len();
                whole += 1;
            }
            (Wrote { whole, tail }, released)
        });
        // One release per write, not per frame: two atomic updates saved for each.
        if let Some(released) = released.filter(|&r| r > 0) {
            self.taken(released);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::frame::Frame;
    use crate::hub::QueueBudget;

    /// A connected loopback pair, the server's send buffer small: (server side, client side).
    async fn sockets() -> (Arc<tokio::net::TcpStream>, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        socket2::SockRef::from(&server)
            .set_send_buffer_size(64 * 1024)
            .unwrap();
        (Arc::new(server), client)
    }

    async fn read_exactly(client: &mut tokio::net::TcpStream, n: usize) -> Vec<u8> {
        use tokio::io::AsyncReadExt as _;
        let mut got = vec![0; n];
        tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut got))
            .await
            .expect("the bytes arrive")
            .unwrap();
        got
    }

    #[tokio::test]
    async fn a_fan_out_writes_to_an_idle_socket_itself_and_the_writer_finishes_a_full_one() {
        let budget = Arc::new(QueueBudget::new(1 << 24, 1 << 24));
        let (outbox, mut rx) = Outbox::new(16, CancellationToken::new(), budget.clone());
        let (server, mut client) = sockets().await;
        outbox.attach(server.clone());
        let (a, b) = (Frame::new("a"), Frame::new("b"));
        let mut writes = Writes::default();
        assert!(outbox.push_deferred(a.clone(), &mut writes));
        assert!(outbox.push_deferred(b.clone(), &mut writes));
        writes.finish();
        assert!(
            rx.try_recv().is_none(),
            "written through: nothing left for the writer"
        );
        let want = [a.wire().to_vec(), b.wire().to_vec()].concat();
        assert_eq!(read_exactly(&mut client, want.len()).await, want);
        assert_eq!(budget.used(), 0);

        // The client reads nothing: a large frame fills the socket, its tail goes back in
        // front, and the frame after it waits behind.
        let big = Frame::new(&"x".repeat(4 << 20));
        let mut writes = Writes::default();
        assert!(outbox.push_deferred(big.clone(), &mut writes));
        assert!(outbox.push_deferred(b.clone(), &mut writes));
        writes.finish();
        let mut rest = Vec::new();
        while let Some(out) = rx.try_recv() {
            rest.push(out);
        }
        let [Out::Rest(tail), Out::Frame(after)] = &rest[..] else {
            panic!("expected the big frame's tail, then b");
        };
        assert!(
            !tail.is_empty() && tail.len() < big.wire().len(),
            "cut inside the frame"
        );
        assert_eq!(after.wire(), b.wire());
        assert_eq!(
            budget.used(),
            b.len(),
            "only the frame not begun is still charged"
        );
        // The writer's part: what it was given back, in order.
        let sent = big.wire().len() - tail.len();
        let writer = {
            let (tail, after) = (tail.clone(), after.wire().clone());
            tokio::spawn(async move {
                for bytes in [tail, after] {
                    let mut at = 0;
                    while at < bytes.len() {
                        server.writable().await.unwrap();
                        match server.try_write(&bytes[at..]) {
                            Ok(n) => at += n,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            })
        };
        let want = [big.wire().to_vec(), b.wire().to_vec()].concat();
        let got = read_exactly(&mut client, want.len()).await;
        assert!(
            got == want,
            "every byte once, in order ({sent} written through)"
        );
        writer.await.unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_long_fan_out_lets_other_tasks_run_between_turns() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        /// Stands in for a socket that takes everything, counting the writes.
        struct Counting(Arc<AtomicUsize>);
        impl crate::hub::Direct for Counting {
            fn try_write_vectored(&self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
                self.0.fetch_add(1, SeqCst);
                Ok(bufs.iter().map(|b| b.len()).sum())
            }
        }
        let written = Arc::new(AtomicUsize::new(0));
        let mut writes = Writes::default();
        let mut keep = Vec::new();
        for _ in 0..3 * TURN {
            let budget = Arc::new(QueueBudget::unlimited());
            let (outbox, rx) = Outbox::new(4, CancellationToken::new(), budget);
            outbox.attach(Arc::new(Counting(written.clone())));
            assert!(outbox.push_deferred(Frame::new("x"), &mut writes));
            keep.push((outbox, rx));
        }
        // Ready before the fan-out starts; on this one thread it runs only when that yields.
        let seen = tokio::spawn({
            let written = written.clone();
            async move { written.load(SeqCst) }
        });
        writes.finish_in_turns().await;
        assert_eq!(
            written.load(SeqCst),
            3 * TURN,
            "every connection written once"
        );
        assert_eq!(
            seen.await.unwrap(),
            TURN,
            "the other task ran after the first turn"
        );
        for (_, mut rx) in keep {
            assert!(rx.try_recv().is_none(), "nothing left for the writers");
        }
    }
}
