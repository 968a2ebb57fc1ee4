//! The neutral session: what every connection has, whatever its protocol or transport. A
//! bounded outbox and the writer that drains it into the transport, polled in the same task
//! as the reader (one task per connection, no second allocation); the reader loop
//! with the heartbeat (after `activity_timeout` of silence a ping, then a close if no answer
//! comes within `pong_timeout`) and the protocol's own deadlines; the close with its code.
//! A protocol is a [`Protocol`]: it handles what the client sends and says what its
//! heartbeat and its close codes are.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::transport::{FrameSink, FrameSource, Inbound, Transport};
use super::Deps;
use crate::apps::App;
use crate::cluster::{Admit, Counts, Slot};
use crate::frame::{CloseReason, Frame};
use crate::hub::{Admission, ConnectionInfo, Hub, Out, Outbox, Receiver, Refusal};
use crate::ids::SocketId;
use crate::metrics;

/// Frames written per flush: queued frames are coalesced into one socket write.
const MAX_BATCH: usize = 64;
/// Batch slots the writer keeps between batches; a larger buffer is given back.
const KEEP_BATCH: usize = 8;
/// How long a close frame may take to go out before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the close frame of a slow consumer waits for the client to read again: it goes
/// after what the socket already holds, so the client sees it (4100: back off) once it
/// catches up, instead of a bare TCP close.
const SLOW_CLOSE_WAIT: Duration = Duration::from_secs(30);
/// How long the writer may take to send what is queued after the reader ended.
const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// A wire protocol over the session core.
pub(crate) trait Protocol: Send {
    /// The protocol's label in metrics.
    const NAME: &'static str;

    /// What the upgrade established for a connection of this protocol.
    type Handshake: Send + 'static;

    /// The connection's app (its metrics are labelled with it).
    fn app(&self) -> &App;

    /// The connection's socket (Pusher) or session (bus) id.
    fn socket_id(&self) -> SocketId;

    /// Checks `hs` and answers the client (queued on `outbox`): the session, or `None` after
    /// queueing the refusal (an error and a close).
    fn open(
        deps: &Arc<Deps>,
        hs: Self::Handshake,
        outbox: &Outbox,
    ) -> impl Future<Output = Option<Self>> + Send
    where
        Self: Sized;

    /// The close code (and reason) of each reason the server ends a connection.
    fn close_code(reason: CloseReason) -> (u16, &'static str);

    /// What to send after `activity_timeout` of client silence.
    fn heartbeat(&self) -> Out;

    /// The close of a connection that did not answer the heartbeat in time.
    fn pong_timeout(&self) -> (u16, &'static str);

    /// The protocol's next deadline (the bus: token expiry, idleness), if any.
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// The deadline passed. `false` ends the connection (the protocol queued its close).
    fn on_deadline(&mut self) -> impl Future<Output = bool> + Send {
        std::future::ready(true)
    }

    /// A text message from the client.
    fn on_text(&mut self, text: &str) -> impl Future<Output = ()> + Send;

    /// A binary message from the client.
    fn on_binary(&mut self);

    /// The connection ended, whatever the reason: undo what it registered.
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

/// A connection counted against its limits; dropping it gives the slots back.
pub struct Admitted {
    _local: Admission,
    _cluster: Option<Slot>,
}

/// Counts a new connection of `app` against the node's and the app's limits (every
/// protocol, every transport); a refusal is counted by the limit that refused it. On a
/// cluster (`counts`) an app quota is then checked against every node atomically, so two
/// nodes cannot both take its last slot.
pub async fn admit(
    hub: &Hub,
    counts: Option<&Counts>,
    app: &App,
    node_limit: usize,
) -> Result<Admitted, Refusal> {
    let limit = app.limits.max_connections;
    let refused = |r: Refusal| {
        metrics::connection_refused(match r {
            Refusal::NodeFull => "node",
            Refusal::AppQuota => "app",
        });
        r
    };
    let Some(counts) = counts.filter(|_| limit > 0) else {
        let local = hub.admit(&app.id, limit, node_limit).map_err(refused)?;
        return Ok(Admitted {
            _local: local,
            _cluster: None,
        });
    };
    // The cluster decides the quota; the synced counts only when Redis cannot answer.
    let local = hub.admit(&app.id, 0, node_limit).map_err(refused)?;
    let cluster = match counts.quota.admit(&app.id, limit).await {
        Admit::Counted(slot) => Some(slot),
        Admit::Uncounted
            if hub.app_connections(&app.id) + hub.remote_connections(&app.id) > limit =>
        {
            return Err(refused(Refusal::AppQuota))
        }
        Admit::Uncounted => None,
        Admit::Refused => return Err(refused(Refusal::AppQuota)),
    };
    Ok(Admitted {
        _local: local,
        _cluster: cluster,
    })
}

/// Runs a connection of protocol `P` over `transport` to its end: the protocol answers the
/// handshake, then [`serve`] runs beside the writer that drains the outbox into the
/// transport, both in this task. Once the session ends (having queued its close, or its
/// refusal), the writer sends what is queued, at most for [`DRAIN_WAIT`].
///
/// Built from combinators rather than an `async` body of its own: an async body stores the
/// futures it awaits beside the arguments they came from, and this is what every idle
/// connection keeps.
pub(crate) fn run<P: Protocol + 'static, T: Transport>(
    transport: T,
    deps: Arc<Deps>,
    hs: P::Handshake,
) -> impl Future<Output = ()> {
    use futures_util::FutureExt as _;
    let direct = transport.direct();
    let (sink, mut source) = transport.split();
    let token = deps.shutdown.child_token();
    let (outbox, rx) = deps.hub.outbox(deps.server.outbox_capacity, token);
    if let Some(socket) = direct {
        outbox.attach(socket);
    }
    let writer = write_loop(sink, rx, outbox.clone(), P::close_code);
    let session = async move {
        // Refused: the refusal (error + close) is queued; the writer sends it and stops.
        if let Some(mut proto) = Box::pin(P::open(&deps, hs, &outbox)).await {
            let info = ConnectionInfo {
                socket_id: proto.socket_id(),
                protocol: P::NAME,
                transport: T::NAME,
                connected_at_ms: crate::clock::now_ms(),
            };
            let _listed = deps.hub.list(&proto.app().id, info, &outbox);
            serve(&mut proto, &mut source, T::NAME, &outbox, &deps).await;
        }
        // The writer cancels the token when it ends; past the wait the token ends it (the
        // close still goes out after what the socket took, within its own wait).
        let token = outbox.token();
        tokio::select! {
            _ = token.cancelled() => {}
            _ = tokio::time::sleep(DRAIN_WAIT) => token.cancel(),
        }
    };
    futures_util::future::join(writer, session).map(|_| ())
}

/// Runs `proto` on the messages of `source` (of the transport named `transport`) until the
/// connection ends; then undoes its state and queues the close (with the code a violation
/// earned, else 1000). The caller drops `proto` right after, before the writer runs again.
async fn serve<P: Protocol>(
    proto: &mut P,
    source: &mut impl FrameSource,
    transport: &'static str,
    outbox: &Outbox,
    deps: &Deps,
) {
    metrics::connection_opened(&proto.app().metrics, P::NAME, transport);
    let timing = (deps.server.activity_timeout(), deps.server.pong_timeout());
    let violation = drive(proto, source, outbox, timing).await;
    // Boxed here and below: what runs only now and then must not size the future that
    // every idle connection keeps (a future is as large as its largest state).
    Box::pin(proto.close()).await;
    metrics::connection_closed(&proto.app().metrics, P::NAME, transport);
    let (code, reason) = violation.unwrap_or((1000, ""));
    // Ends the writer after what is queued; a no-op when a close is already queued.
    outbox.push_close(code, reason);
}

/// Reads client messages until the client leaves, the connection is killed, a deadline
/// ends it, or the client fails to answer the heartbeat. Any message is activity.
async fn drive<P: Protocol>(
    proto: &mut P,
    source: &mut impl FrameSource,
    outbox: &Outbox,
    (activity, pong_wait): (Duration, Duration),
) -> Option<(u16, &'static str)> {
    let token = outbox.token().clone();
    // One timer for the heartbeat and the protocol's deadline, whichever comes first.
    let mut beat_at = Instant::now() + activity;
    let timer = tokio::time::sleep_until(beat_at);
    tokio::pin!(timer);
    let mut pinged = false;
    loop {
        let deadline = proto.deadline();
        let wake = deadline.map_or(beat_at, |d| d.min(beat_at));
        if timer.deadline() != wake {
            timer.as_mut().reset(wake);
        }
        tokio::select! {
            _ = token.cancelled() => return None,
            _ = &mut timer => {
                let now = Instant::now();
                if deadline.is_some_and(|d| d <= now) && !Box::pin(proto.on_deadline()).await {
                    return None;
                }
                if beat_at <= now {
                    if pinged {
                        let (code, reason) = proto.pong_timeout();
                        outbox.push_close(code, reason);
                        return None;
                    }
                    outbox.push_out(proto.heartbeat());
                    pinged = true;
                    beat_at = now + pong_wait;
                }
            }
            msg = source.next() => {
                pinged = false;
                beat_at = Instant::now() + activity;
                match msg {
                    Inbound::Text(text) => Box::pin(proto.on_text(&text)).await,
                    Inbound::Binary => proto.on_binary(),
                    Inbound::Control => {}
                    Inbound::Ping(payload) => {
                        outbox.push_out(Out::Pong(payload));
                    }
                    Inbound::End(violation) => return violation,
                }
            }
        }
    }
}

/// Queues `frames` paced by the outbox (never overflowing it) and waits until they were
/// written to the socket. `false` when the connection ended first.
pub(crate) async fn send_page(outbox: &Outbox, frames: Vec<Frame>) -> bool {
    for f in frames {
        if !outbox.send_paced(Out::Frame(f)).await {
            return false;
        }
    }
    outbox.written().await
}

/// Writes queued frames until the queue ends, a close is queued, the transport fails or
/// the connection's token is cancelled (then a close with the kill reason's code is sent).
/// Cancels the token on exit, so the reader stops too.
async fn write_loop(
    mut sink: impl FrameSink,
    mut rx: Receiver,
    outbox: Outbox,
    close_code: fn(CloseReason) -> (u16, &'static str),
) {
    let token = outbox.token().clone();
    let mut batch: Vec<Out> = Vec::new();
    loop {
        tokio::select! {
            biased;
            _ = token.cancelled() => {
                // What is still queued is dropped; the close follows what the socket took,
                // a frame a fan-out began writing included.
                if let Some(Out::Rest(tail)) = rx.close() {
                    sink.rest(tail);
                }
                let reason = outbox.close_reason().unwrap_or(CloseReason::Shutdown);
                let wait = if reason == CloseReason::SlowConsumer { SLOW_CLOSE_WAIT } else { CLOSE_TIMEOUT };
                let (code, text) = close_code(reason);
                Box::pin(sink.close(code, text, wait)).await;
                break;
            }
            n = rx.take(&mut batch, MAX_BATCH) => {
                if n == 0 {
                    break;
                }
                // One release for the batch: two atomic updates a frame saved.
                outbox.taken(batch.iter().map(Out::charged).sum());
                let done = tokio::select! {
                    biased;
                    // A stuck client must not keep the writer alive past a kill.
                    _ = token.cancelled() => continue,
                    done = write_batch(&mut sink, &mut batch) => done,
                };
                if done {
                    break;
                }
                if batch.capacity() > KEEP_BATCH {
                    batch = Vec::new();
                }
            }
        }
    }
    token.cancel();
}

/// Writes a batch with one flush (more when the transport's buffer fills). Returns `true`
/// when the connection is finished.
async fn write_batch(sink: &mut impl FrameSink, batch: &mut Vec<Out>) -> bool {
    for out in batch.drain(..) {
        match out {
            Out::Frame(f) => sink.feed(f),
            Out::Ping => sink.ping(),
            Out::Pong(payload) => sink.pong(payload),
            Out::Rest(bytes) => sink.rest(bytes),
            Out::Written(done) => {
                if sink.flush().await.is_err() {
                    return true;
                }
                // Only what reached the socket counts as written.
                let _ = done.send(());
                continue;
            }
            Out::Close(code, reason) => {
                Box::pin(sink.close(code, reason, CLOSE_TIMEOUT)).await;
                return true;
            }
        }
        if sink.full() && sink.flush().await.is_err() {
            return true;
        }
    }
    sink.flush().await.is_err()
}
