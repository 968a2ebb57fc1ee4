//! pusher-js's HTTP fallback transports: `POST /pusher/app/{key}/{server}/{session}/
//! xhr_streaming` (one long response) or `.../xhr` (one poll after another) receive, and
//! `.../xhr_send` sends. The first receive of a session id opens a Pusher session on the
//! same core as a WebSocket; the id is the client's (random), bound to the address of the
//! request that opened it, so another client cannot attach to it or send on it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::error::ApiError;
use super::Api;
use crate::session::pusher;
use crate::session::xhr::{Attach, Xhr, CHUNKS, INBOUND};

/// Longest wait of a poll with nothing to deliver (then a heartbeat line).
const POLL_WAIT: Duration = Duration::from_secs(25);
/// How long a new receive waits for the previous one to give the queue back.
const HANDOVER: Duration = Duration::from_secs(2);
/// Most messages in one send.
const MAX_MESSAGES: usize = 100;

/// The HTTP sessions of this node, by `{server}/{session}`. A session that ended stays until
/// its client fetched the last lines (its close), or for [`KEEP_ENDED`] at most: removing it
/// at once would let the client's next poll open a new session and never see the close.
#[derive(Default)]
pub struct XhrSessions(Mutex<Sessions>);

#[derive(Default)]
struct Sessions {
    by_id: HashMap<String, Arc<Entry>>,
    swept: Option<Instant>,
}

/// How long an ended session waits for its client to fetch its close.
const KEEP_ENDED: Duration = Duration::from_secs(30);

struct Entry {
    ip: IpAddr,
    attach: Arc<Attach>,
    inbound: mpsc::Sender<String>,
}

/// `{key}/{server}/{session}/{kind}` of a request.
type Route = (String, String, String, String);

/// Both receives and the send, dispatched on the last segment.
pub async fn request(
    Path((key, server, session, kind)): Path<Route>,
    Query(query): Query<HashMap<String, String>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(ctx): State<Arc<Api>>,
    body: Bytes,
) -> Response {
    let valid =
        |s: &str| !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric());
    if !valid(&server) || !valid(&session) {
        return ApiError::NotFound("No such session".into()).into_response();
    }
    let id = format!("{server}/{session}");
    match kind.as_str() {
        "xhr_streaming" => receive(ctx, id, key, query, peer.ip(), true).await,
        "xhr" => receive(ctx, id, key, query, peer.ip(), false).await,
        "xhr_send" => send(ctx, id, peer.ip(), body),
        _ => ApiError::NotFound("No such endpoint".into()).into_response(),
    }
}

fn entry(ctx: &Api, id: &str, ip: IpAddr) -> Option<Arc<Entry>> {
    let sessions = ctx.xhr.0.lock().expect("xhr lock poisoned");
    sessions.by_id.get(id).filter(|e| e.ip == ip).cloned()
}

async fn receive(
    ctx: Arc<Api>,
    id: String,
    key: String,
    query: HashMap<String, String>,
    ip: IpAddr,
    streaming: bool,
) -> Response {
    let existing = ctx
        .xhr
        .0
        .lock()
        .expect("xhr lock poisoned")
        .by_id
        .get(&id)
        .cloned();
    let Some(entry) = existing else {
        return open(ctx, id, key, query, ip, streaming).await;
    };
    if entry.ip != ip {
        // Someone else's session id: as if there were none, and nothing is created.
        return ApiError::NotFound("No such session".into()).into_response();
    }
    if entry.attach.ended() {
        // Its last lines (the close), once; then the session is forgotten.
        ctx.xhr
            .0
            .lock()
            .expect("xhr lock poisoned")
            .by_id
            .remove(&id);
        let mut out = Vec::new();
        if let Some((mut rx, _)) = entry.attach.take() {
            while let Ok(c) = rx.try_recv() {
                out.extend_from_slice(&c);
            }
        }
        if out.is_empty() {
            out.extend_from_slice(b"c[3000,\"Go away!\"]\n");
        }
        return lines(Bytes::from(out));
    }
    let Some((rx, yield_now)) = entry.attach.take_within(HANDOVER).await else {
        return lines(Bytes::from_static(
            b"c[2010,\"Another connection still open\"]\n",
        ));
    };
    if streaming {
        stream(entry.attach.clone(), rx, yield_now, None)
    } else {
        poll(entry.attach.clone(), rx, yield_now).await
    }
}

/// A new session: the Pusher protocol runs on it as on a WebSocket, refusals included
/// (unknown app, protocol version, quotas: an error and a close line).
async fn open(
    ctx: Arc<Api>,
    id: String,
    key: String,
    query: HashMap<String, String>,
    ip: IpAddr,
    streaming: bool,
) -> Response {
    let hs = match super::ws::handshake(&ctx, &key, &query).await {
        Ok(hs) => hs,
        Err(e) => return e.into_response(),
    };
    let (out, rx) = mpsc::channel::<Bytes>(CHUNKS);
    let (in_tx, in_rx) = mpsc::channel::<String>(INBOUND);
    let attach = Arc::new(Attach::default());
    {
        let mut sessions = ctx.xhr.0.lock().expect("xhr lock poisoned");
        // Ended sessions whose clients never came back, swept at most once a second.
        if sessions
            .swept
            .is_none_or(|t| t.elapsed() > Duration::from_secs(1))
        {
            sessions.swept = Some(Instant::now());
            sessions
                .by_id
                .retain(|_, e| !e.attach.ended_before(KEEP_ENDED));
        }
        if sessions.by_id.contains_key(&id) {
            return ApiError::Conflict("Session id in use".into()).into_response();
        }
        let entry = Entry {
            ip,
            attach: attach.clone(),
            inbound: in_tx,
        };
        sessions.by_id.insert(id, Arc::new(entry));
    }
    let transport = Xhr {
        out,
        attach: attach.clone(),
        inbound: in_rx,
    };
    let deps = ctx.sessions.clone();
    ctx.sessions.tracker.spawn(pusher::run(transport, deps, hs));
    let open = Bytes::from_static(b"o\n");
    if streaming {
        let yield_now = Arc::new(Notify::new());
        stream(attach, rx, yield_now, Some(open))
    } else {
        // The first poll says "open"; the session's frames wait for the next one.
        attach.give_back(rx);
        lines(open)
    }
}

/// The long response of `xhr_streaming`: every chunk as it comes, until the session ends or
/// a newer receive takes over; the queue goes back to the session when the response ends.
fn stream(
    attach: Arc<Attach>,
    rx: mpsc::Receiver<Bytes>,
    yield_now: Arc<Notify>,
    first: Option<Bytes>,
) -> Response {
    struct Held {
        attach: Arc<Attach>,
        rx: Option<mpsc::Receiver<Bytes>>,
    }
    impl Drop for Held {
        fn drop(&mut self) {
            if let Some(rx) = self.rx.take() {
                self.attach.give_back(rx);
            }
        }
    }
    let held = Held {
        attach,
        rx: Some(rx),
    };
    let body = futures_util::stream::unfold(
        (held, yield_now, first),
        |(mut held, yield_now, first)| async move {
            if let Some(first) = first {
                return Some((
                    Ok::<_, std::convert::Infallible>(first),
                    (held, yield_now, None),
                ));
            }
            let rx = held.rx.as_mut()?;
            tokio::select! {
                chunk = rx.recv() => chunk.map(|c| (Ok(c), (held, yield_now, None))),
                _ = yield_now.notified() => None,
            }
        },
    );
    let mut res = Response::new(Body::from_stream(body.boxed()));
    headers(&mut res);
    res
}

/// One poll: what is queued now, or what comes within [`POLL_WAIT`], or a heartbeat.
async fn poll(
    attach: Arc<Attach>,
    mut rx: mpsc::Receiver<Bytes>,
    yield_now: Arc<Notify>,
) -> Response {
    let mut out = Vec::new();
    tokio::select! {
        chunk = rx.recv() => match chunk {
            Some(c) => out.extend_from_slice(&c),
            // The session ended and said how (its close line came before).
            None => out.extend_from_slice(b"c[3000,\"Go away!\"]\n"),
        },
        _ = tokio::time::sleep(POLL_WAIT) => out.extend_from_slice(b"h\n"),
        _ = yield_now.notified() => out.extend_from_slice(b"c[2010,\"Another connection still open\"]\n"),
    }
    while let Ok(c) = rx.try_recv() {
        out.extend_from_slice(&c);
    }
    attach.give_back(rx);
    lines(Bytes::from(out))
}

/// `xhr_send`: a JSON array of messages (each a JSON string), in order; 204 once queued.
fn send(ctx: Arc<Api>, id: String, ip: IpAddr, body: Bytes) -> Response {
    let Some(entry) = entry(&ctx, &id, ip) else {
        return ApiError::NotFound("No such session".into()).into_response();
    };
    let messages: Vec<String> = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(_) => {
            return ApiError::BadRequest("Body must be a JSON array of strings".into())
                .into_response()
        }
    };
    if messages.len() > MAX_MESSAGES
        || messages
            .iter()
            .any(|m| m.len() > ctx.server.max_message_bytes)
    {
        return ApiError::PayloadTooLarge("Too many or too large messages".into()).into_response();
    }
    // `[]` is the client's heartbeat: an empty message tells the session it is alive.
    let messages = if messages.is_empty() {
        vec![String::new()]
    } else {
        messages
    };
    for m in messages {
        match entry.inbound.try_send(m) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return ApiError::TooManyRequests("Too many messages waiting".into())
                    .into_response()
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return ApiError::NotFound("No such session".into()).into_response()
            }
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

/// The CORS preflight a browser's pusher-js sends first (its requests carry
/// `Content-Type: application/json`, which is not a "simple" request).
pub async fn preflight() -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    cors(&mut res);
    res
}

/// Any page may use these endpoints: a session is bound to its address and the app key is
/// public, and no cookie is read (so `*` is safe).
pub(super) fn cors(res: &mut Response) {
    let h = res.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type, Authorization, Last-Event-ID"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
}

fn lines(body: Bytes) -> Response {
    let mut res = Response::new(Body::from(body));
    headers(&mut res);
    res
}

fn headers(res: &mut Response) {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/javascript; charset=UTF-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    // pusher-js in a browser calls from the page's origin.
    cors(res);
}
