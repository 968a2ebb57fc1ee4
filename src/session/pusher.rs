//! A Pusher protocol v7 connection: handshake, heartbeat, and the reader loop that turns
//! client messages into hub, presence and broker calls.

mod channels;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use futures_util::StreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

use super::write_loop;
use crate::apps::App;
use crate::frame::Frame;
use crate::hub::{Admission, DeltaSeen, Outbox, Recipient, Refusal};
use crate::ids::{ChannelName, SocketId, UserId};
use crate::metrics;
use crate::protocol::pusher::{self as wire, code, Command, DecodeError};
use crate::session::Deps;

/// Protocol versions accepted in `?protocol=`.
const PROTOCOLS: std::ops::RangeInclusive<u8> = 5..=7;

/// What the upgrade request said about the app and protocol.
pub struct Handshake {
    /// The app of `/app/{key}`, if it exists.
    pub app: Option<Arc<App>>,
    /// `?protocol=`, if given and numeric.
    pub protocol: Option<Result<u8, ()>>,
}

/// A signed-in user (`pusher:signin`).
struct SignedIn {
    id: UserId,
    watchlist: Vec<UserId>,
}

/// One connection's protocol state. Owned by its reader task; the hub only holds its
/// [`Outbox`].
pub(crate) struct Session {
    ctx: Arc<Deps>,
    app: Arc<App>,
    id: SocketId,
    outbox: Outbox,
    /// Subscribed channels; for presence channels, the member's user id.
    channels: HashMap<ChannelName, Option<UserId>>,
    user: Option<SignedIn>,
    client_events: Option<DefaultDirectRateLimiter>,
    /// Delta compression state, once the client opted in.
    delta: Option<DeltaSeen>,
    _admission: Admission,
}

/// Runs a Pusher connection to its end.
pub async fn run(socket: WebSocket, ctx: Arc<Deps>, hs: Handshake) {
    let token = ctx.shutdown.child_token();
    let (outbox, rx) = ctx.hub.outbox(ctx.server.outbox_capacity, token.clone());
    let (sink, mut stream) = socket.split();
    let writer = ctx
        .tracker
        .spawn(write_loop(sink, rx, outbox.clone(), wire::close_code));

    let Some(session) = open(&ctx, hs, &outbox) else {
        // The refusal (error + close) is queued; the writer sends it and stops.
        drop(outbox);
        let _ = writer.await;
        return;
    };
    metrics::connection_opened("pusher");
    let mut session = session;
    let violation = read_loop(&mut session, &mut stream).await;
    session.close().await;
    metrics::connection_closed("pusher");
    drop(session);
    // Ends the writer after what is queued; a no-op when a close is already queued.
    let (code, reason) = violation.unwrap_or((1000, ""));
    outbox.push_close(code, reason);
    // Let the writer flush what is queued (a close, typically), but not forever.
    if tokio::time::timeout(std::time::Duration::from_secs(5), writer)
        .await
        .is_err()
    {
        token.cancel();
    }
}

/// Checks app, protocol and limits; sends `connection_established` or the refusal.
fn open(ctx: &Arc<Deps>, hs: Handshake, outbox: &Outbox) -> Option<Session> {
    let refuse = |c: u16, msg: &'static str| {
        outbox.push(wire::error(Some(c), msg));
        outbox.push_close(c, msg);
        None
    };
    let Some(app) = hs.app else {
        return refuse(code::APP_NOT_FOUND, "App key not found");
    };
    if !app.enabled {
        return refuse(code::APP_DISABLED, "App is disabled");
    }
    match hs.protocol {
        None => return refuse(code::NO_PROTOCOL, "No protocol version supplied"),
        Some(Ok(p)) if PROTOCOLS.contains(&p) => {}
        Some(_) => return refuse(code::UNSUPPORTED_PROTOCOL, "Unsupported protocol version"),
    }
    let admission = match ctx.hub.admit(
        &app.id,
        app.limits.max_connections,
        ctx.server.max_connections,
    ) {
        Ok(a) => a,
        Err(Refusal::NodeFull) => {
            metrics::connection_refused("node");
            return refuse(code::OVER_CAPACITY, "Server over capacity");
        }
        Err(Refusal::AppQuota) => {
            metrics::connection_refused("app");
            return refuse(code::OVER_QUOTA, "App over connection quota");
        }
    };
    let id = SocketId::next(ctx.node);
    outbox.push(wire::connection_established(
        id,
        ctx.server.activity_timeout,
    ));
    let client_events = NonZeroU32::new(app.limits.client_events_per_second)
        .map(|n| RateLimiter::direct(Quota::per_second(n)));
    Some(Session {
        ctx: ctx.clone(),
        app,
        id,
        outbox: outbox.clone(),
        channels: HashMap::new(),
        user: None,
        client_events,
        delta: None,
        _admission: admission,
    })
}

/// Reads client messages until the client leaves, the connection is killed, or the client
/// fails to answer a ping.
async fn read_loop(
    s: &mut Session,
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
) -> Option<(u16, &'static str)> {
    let activity = s.ctx.server.activity_timeout();
    let pong_wait = s.ctx.server.pong_timeout();
    let token = s.outbox.token().clone();
    let idle = tokio::time::sleep(activity);
    tokio::pin!(idle);
    let mut pinged = false;
    loop {
        tokio::select! {
            _ = token.cancelled() => return None,
            _ = &mut idle => {
                if pinged {
                    s.outbox.push_close(code::PONG_TIMEOUT, "Pong reply not received in time");
                    return None;
                }
                s.outbox.push(wire::ping());
                pinged = true;
                idle.as_mut().reset(Instant::now() + pong_wait);
            }
            msg = stream.next() => {
                // Any message counts as activity, pongs and protocol-level pings included.
                pinged = false;
                idle.as_mut().reset(Instant::now() + activity);
                match msg {
                    Some(Ok(Message::Text(text))) => {
                        metrics::message_in("pusher");
                        s.handle_text(&text).await;
                    }
                    Some(Ok(Message::Binary(_))) => {
                        s.reject("binary", "Binary frames are not supported");
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Err(e)) => return super::violation_close(e),
                    Some(Ok(Message::Close(_))) | None => return None,
                }
            }
        }
    }
}

impl Session {
    fn send(&self, frame: Frame) {
        self.outbox.push(frame);
    }

    fn recipient(&self) -> Recipient {
        Recipient {
            encoder: &wire::ENCODER,
            outbox: self.outbox.clone(),
            filter: None,
            delta: self.delta.clone(),
        }
    }

    /// Answers bad input with `pusher:error` 4300; the connection stays open.
    fn reject(&self, reason: &'static str, message: &str) {
        metrics::client_error(reason);
        self.send(wire::error(Some(code::INVALID_MESSAGE), message));
    }

    async fn handle_text(&mut self, text: &str) {
        match wire::decode(text) {
            Ok(Command::Ping) => self.send(wire::pong()),
            Ok(Command::EnableDelta) => {
                // Applies to channels subscribed from now on.
                self.delta.get_or_insert_with(Default::default);
                self.send(wire::delta_enabled());
            }
            Ok(Command::DeltaSyncError { channel }) => {
                if let Some(seen) = &self.delta {
                    seen.lock()
                        .expect("delta lock poisoned")
                        .retain(|(ch, _), _| ch.as_str() != channel);
                }
            }
            Ok(Command::Pong) => {}
            Ok(Command::Subscribe {
                channel,
                auth,
                channel_data,
                filter,
            }) => self.subscribe(&channel, auth, channel_data, filter).await,
            Ok(Command::Unsubscribe { channel }) => {
                if let Ok(ch) = ChannelName::parse(&channel) {
                    self.unsubscribe(&ch).await;
                }
            }
            Ok(Command::Signin { auth, user_data }) => self.signin(&auth, &user_data).await,
            Ok(Command::ClientEvent {
                event,
                channel,
                data,
            }) => self.client_event(&event, &channel, data).await,
            Err(e @ DecodeError::Malformed(_)) => self.reject("malformed", &e.to_string()),
            Err(e @ DecodeError::BadField { .. }) => self.reject("bad_field", &e.to_string()),
            Err(e @ DecodeError::UnknownEvent(_)) => self.reject("unknown_event", &e.to_string()),
        }
    }

    /// Leaves every channel and the user registry. Runs once, when the connection ends.
    async fn close(&mut self) {
        let channels: Vec<ChannelName> = self.channels.keys().cloned().collect();
        for ch in channels {
            self.unsubscribe(&ch).await;
        }
        self.signout().await;
    }
}
