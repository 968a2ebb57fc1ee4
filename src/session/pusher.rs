//! A Pusher protocol v7 connection over the session core: the handshake's checks, and the
//! command handler that turns client messages into hub, presence and publish calls.

mod channels;
mod user;

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

use super::transport::Transport;
use super::Protocol;
use crate::apps::App;
use crate::frame::{CloseReason, Frame};
use crate::hub::{DeltaSeen, Out, Outbox, Recipient, Refusal};
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

/// The channels a connection subscribed (for presence channels, the member's user id),
/// sorted by name: most connections hold one or a few, and a sorted list of them is a
/// fraction of a hash map's smallest table (at most `max_channels_per_connection`).
#[derive(Default)]
struct Subscribed(Vec<(ChannelName, Option<UserId>)>);

impl Subscribed {
    fn find(&self, ch: &ChannelName) -> Result<usize, usize> {
        self.0.binary_search_by(|(c, _)| c.cmp(ch))
    }

    fn get(&self, ch: &ChannelName) -> Option<&Option<UserId>> {
        self.find(ch).ok().map(|i| &self.0[i].1)
    }

    fn insert(&mut self, ch: ChannelName, member: Option<UserId>) {
        match self.find(&ch) {
            Ok(i) => self.0[i].1 = member,
            Err(i) => self.0.insert(i, (ch, member)),
        }
    }

    fn remove(&mut self, ch: &ChannelName) -> Option<Option<UserId>> {
        let i = self.find(ch).ok()?;
        let (_, member) = self.0.remove(i);
        if self.0.is_empty() {
            self.0 = Vec::new();
        }
        Some(member)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn names(&self) -> impl Iterator<Item = &ChannelName> {
        self.0.iter().map(|(c, _)| c)
    }
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
    channels: Subscribed,
    user: Option<Box<SignedIn>>,
    /// The client-event rate limiter, made at the first client event (most connections never
    /// send one).
    client_events: Option<Box<DefaultDirectRateLimiter>>,
    /// Delta compression state, once the client opted in.
    delta: Option<DeltaSeen>,
    /// When the connection is closed unless it signed in (`require_signin_secs`).
    signin_by: Option<Instant>,
    _admission: super::Admitted,
}

/// Runs a Pusher connection over `transport` to its end.
pub fn run(
    transport: impl Transport,
    ctx: Arc<Deps>,
    hs: Handshake,
) -> impl std::future::Future<Output = ()> {
    super::run::<Session, _>(transport, ctx, hs)
}

impl Protocol for Session {
    const NAME: &'static str = "pusher";
    type Handshake = Handshake;

    fn app(&self) -> &App {
        &self.app
    }

    fn socket_id(&self) -> SocketId {
        self.id
    }

    fn open(
        deps: &Arc<Deps>,
        hs: Handshake,
        outbox: &Outbox,
    ) -> impl std::future::Future<Output = Option<Self>> + Send {
        open(deps, hs, outbox)
    }

    fn close_code(reason: CloseReason) -> (u16, &'static str) {
        wire::close_code(reason)
    }

    fn heartbeat(&self) -> Out {
        Out::Frame(wire::ping())
    }

    fn pong_timeout(&self) -> (u16, &'static str) {
        (code::PONG_TIMEOUT, "Pong reply not received in time")
    }

    fn deadline(&self) -> Option<Instant> {
        self.signin_by.filter(|_| self.user.is_none())
    }

    async fn on_deadline(&mut self) -> bool {
        if self.user.is_some() {
            return true;
        }
        const WHY: &str = "Connection not signed in within the app's require_signin_secs";
        self.outbox.push(wire::error(Some(code::UNAUTHORIZED), WHY));
        self.outbox.push_close(code::UNAUTHORIZED, WHY);
        false
    }

    async fn on_text(&mut self, text: &str) {
        metrics::message_in(&self.app.metrics, Self::NAME);
        self.handle_text(text).await;
    }

    fn on_binary(&mut self) {
        self.reject("binary", "Binary frames are not supported");
    }

    /// Leaves every channel and the user registry.
    async fn close(&mut self) {
        let channels: Vec<ChannelName> = self.channels.names().cloned().collect();
        for ch in channels {
            self.unsubscribe(&ch).await;
        }
        self.signout().await;
    }
}

/// Checks app, protocol and limits; sends `connection_established` or the refusal.
async fn open(ctx: &Arc<Deps>, hs: Handshake, outbox: &Outbox) -> Option<Session> {
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
    let counts = ctx.counts.as_deref();
    let admission = match super::admit(&ctx.hub, counts, &app, ctx.server.max_connections).await {
        Ok(a) => a,
        Err(Refusal::NodeFull) => return refuse(code::OVER_CAPACITY, "Server over capacity"),
        Err(Refusal::AppQuota) => return refuse(code::OVER_QUOTA, "App over connection quota"),
    };
    let id = SocketId::next(ctx.node);
    outbox.push(wire::connection_established(
        id,
        ctx.server.activity_timeout,
    ));
    let signin_by = app.require_signin.map(|d| Instant::now() + d);
    Some(Session {
        ctx: ctx.clone(),
        app,
        id,
        outbox: outbox.clone(),
        channels: Subscribed::default(),
        user: None,
        client_events: None,
        delta: None,
        signin_by,
        _admission: admission,
    })
}

impl Session {
    /// Whether one more client event fits in the app's `client_events_per_second`.
    fn client_event_allowed(&mut self) -> bool {
        let Some(rate) = NonZeroU32::new(self.app.limits.client_events_per_second) else {
            return true;
        };
        self.client_events
            .get_or_insert_with(|| Box::new(RateLimiter::direct(Quota::per_second(rate))))
            .check()
            .is_ok()
    }

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
}
