//! A bus connection (`/ws/bus`) over the session core: welcome, event-type and room
//! subscriptions, presence, typing, token expiry, idleness and rate limits.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;
use wildmatch::WildMatch;

mod catch_up;
mod presence;

use super::transport::Transport;
use super::Protocol;
use crate::apps::App;
use crate::auth::BusClaims;

use crate::frame::{CloseReason, Frame};
use crate::hub::{Out, Outbox, Recipient};
use crate::ids::{ChannelKind, ChannelName, SocketId, UserId};
use crate::metrics;
use crate::protocol::bus::{self as wire, close, code, interest, Command, Since};
use crate::session::Admitted;
use crate::session::Deps;
use crate::status::Change;

/// Longest `activity` and `conversation_id` accepted.
const MAX_FIELD_LEN: usize = 200;
/// Typing throttle entries kept per connection (oldest evicted).
const MAX_TYPING_TARGETS: usize = 64;

/// What the upgrade established: a verified token and a counted connection.
pub struct Handshake {
    /// The token's app.
    pub app: Arc<App>,
    /// The verified claims.
    pub claims: BusClaims,
    /// The connection's slot under the node and app limits.
    pub admission: Admitted,
    /// The connection's id (the `welcome`'s `session_id`), given by the transport: the SSE
    /// transport routes the client's POSTs by it.
    pub id: SocketId,
    /// Where the first subscribe without `since` resumes from (SSE's `Last-Event-ID`).
    pub resume: Option<Box<Since>>,
}

struct Session {
    ctx: Arc<Deps>,
    app: Arc<App>,
    id: SocketId,
    user: UserId,
    outbox: Outbox,
    interests: u8,
    rooms: HashSet<ChannelName>,
    allowed_rooms: Vec<WildMatch>,
    watching: Vec<UserId>,
    idle: bool,
    /// Client silence (no message but heartbeats) after which the user shows as away.
    idle_after: Duration,
    /// When the connection goes idle unless the client says something.
    idle_at: Instant,
    /// When the token expires (`E-WS-AUTH`, close 4001).
    expiry: Instant,
    /// A subscribe was handled (until then live user events are held).
    started: bool,
    /// The offline queue was drained on this connection.
    drained: bool,
    limiter: DefaultDirectRateLimiter,
    typing: HashMap<(UserId, Arc<str>), Instant>,
    resume: Option<Box<Since>>,
    _admission: Admitted,
}

/// Runs a bus connection over `transport` to its end.
pub fn run(
    transport: impl Transport,
    ctx: Arc<Deps>,
    hs: Handshake,
) -> impl std::future::Future<Output = ()> {
    super::run::<Session, _>(transport, ctx, hs)
}

/// Registers the user's connection and sends `welcome`, or queues the refusal of a user
/// over the per-user limit.
async fn open(ctx: &Arc<Deps>, hs: Handshake, outbox: &Outbox) -> Option<Session> {
    let id = hs.id;
    let user = UserId::new(hs.claims.sub.as_str());
    let limit = ctx.bus.max_connections_per_user;
    // Registered (holding user events until the first subscribe) before counted as
    // connected: a user event published meanwhile is then queued, or held here, or both.
    outbox.set_interests(interest::USER);
    outbox.hold();
    let recipient = Recipient {
        encoder: &wire::ENCODER,
        outbox: outbox.clone(),
        filter: None,
        delta: None,
    };
    ctx.hub.add_user(&hs.app.id, &user, id, recipient);
    // Heard from every node before counted as connected (see broker::routes).
    ctx.hub.settled().await;
    let admitted = ctx
        .status
        .apply(&hs.app.id, &user, Change::Connected { bus: true, limit })
        .await;
    if !admitted {
        ctx.hub.remove_user(&hs.app.id, &user, id);
        metrics::connection_refused("user");
        outbox.push(wire::error(
            code::PERMISSION,
            &format!("At most {limit} connections per user"),
        ));
        outbox.push_close(close::PERMISSION, "Too many connections for this user");
        return None;
    }
    outbox.push(wire::welcome(&id.to_string(), user.as_str()));
    let bus = &ctx.bus;
    let quota =
        Quota::per_minute(NonZeroU32::new(bus.messages_per_minute).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(bus.message_burst).unwrap_or(NonZeroU32::MIN));
    let idle_after = Duration::from_secs(bus.idle_timeout);
    let mut s = Session {
        ctx: ctx.clone(),
        id,
        user,
        outbox: outbox.clone(),
        interests: 0,
        rooms: HashSet::new(),
        allowed_rooms: hs
            .claims
            .channels
            .iter()
            .map(|p| WildMatch::new(p))
            .collect(),
        watching: Vec::new(),
        idle: false,
        idle_after,
        idle_at: Instant::now() + idle_after,
        expiry: instant_of(hs.claims.exp),
        started: false,
        drained: false,
        limiter: RateLimiter::direct(quota),
        typing: HashMap::new(),
        resume: hs.resume,
        app: hs.app,
        _admission: hs.admission,
    };
    s.watch(&hs.claims.watchlist);
    Some(s)
}

impl Protocol for Session {
    const NAME: &'static str = "bus";
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

    /// A WebSocket-level ping: browsers answer it themselves.
    fn heartbeat(&self) -> Out {
        Out::Ping
    }

    fn pong_timeout(&self) -> (u16, &'static str) {
        (close::PONG_TIMEOUT, "Ping not answered in time")
    }

    fn deadline(&self) -> Option<Instant> {
        Some(if self.idle {
            self.expiry
        } else {
            self.expiry.min(self.idle_at)
        })
    }

    async fn on_deadline(&mut self) -> bool {
        let now = Instant::now();
        if now >= self.expiry {
            self.outbox.push(wire::error(code::AUTH, "Token expired"));
            self.outbox.push_close(close::AUTH, "Token expired");
            return false;
        }
        if !self.idle && now >= self.idle_at {
            self.idle = true;
            let change = Change::Idle(true);
            self.ctx
                .status
                .apply(&self.app.id, &self.user, change)
                .await;
        }
        true
    }

    async fn on_text(&mut self, text: &str) {
        metrics::message_in(&self.app.metrics, Self::NAME);
        // Heartbeats are not user activity: a tab left open goes idle.
        if self.handle_text(text).await {
            self.idle_at = Instant::now() + self.idle_after;
            if self.idle {
                self.idle = false;
                let change = Change::Idle(false);
                self.ctx
                    .status
                    .apply(&self.app.id, &self.user, change)
                    .await;
            }
        }
    }

    fn on_binary(&mut self) {
        self.invalid("Binary frames are not supported");
    }

    async fn close(&mut self) {
        self.leave().await;
    }
}

/// When `exp` (Unix seconds) falls, as a tokio instant. An `exp` too far ahead for the
/// monotonic clock (a signed token may say `u64::MAX`) is capped at a century away.
fn instant_of(exp: u64) -> Instant {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let start = Instant::now();
    let century = Duration::from_secs(100 * 365 * 86_400);
    let left = Duration::from_secs(exp.saturating_sub(now)).min(century);
    start + left
}

impl Session {
    fn send(&self, f: Frame) {
        self.outbox.push(f);
    }

    fn invalid(&self, msg: &str) {
        metrics::client_error("bus_invalid");
        self.send(wire::error(code::INVALID, msg));
    }

    fn denied(&self, msg: &str) {
        metrics::client_error("bus_permission");
        self.send(wire::error(code::PERMISSION, msg));
    }

    fn recipient(&self) -> Recipient {
        Recipient {
            encoder: &wire::ENCODER,
            outbox: self.outbox.clone(),
            filter: None,
            delta: None,
        }
    }

    /// Handles one message; returns whether it counts as user activity.
    async fn handle_text(&mut self, text: &str) -> bool {
        if self.limiter.check().is_err() {
            metrics::client_error("bus_rate");
            self.send(wire::error(
                code::RATE,
                "Rate limit exceeded; message dropped",
            ));
            return false;
        }
        let cmd = match wire::decode(text) {
            Ok(c) => c,
            Err(e) => {
                self.invalid(&e);
                return false;
            }
        };
        match cmd {
            Command::Ping => {
                self.send(wire::pong());
                return false;
            }
            Command::Subscribe {
                events,
                rooms,
                since,
            } => self.subscribe(&events, &rooms, since).await,
            Command::Unsubscribe { events, rooms } => self.unsubscribe(&events, &rooms),
            Command::Presence { status, activity } => self.declare(status, activity).await,
            Command::Typing {
                recipient,
                conversation_id,
            } => self.typing(recipient, conversation_id).await,
            Command::RegisterPush {
                platform,
                token,
                subscription,
            } => {
                let (app, push) = (&self.app.id, &self.ctx.push);
                match push
                    .register_wire(app, &self.user, &platform, token, subscription)
                    .await
                {
                    Ok((id, p)) => self.send(wire::push_registered(id.as_str(), p.as_str())),
                    Err(e) => self.invalid(&e.to_string()),
                }
            }
            Command::UnregisterPush { id } => self.unregister_push(&id).await,
            Command::Ack { id, ids } => self.ack(id.into_iter().chain(ids).collect()).await,
        }
        true
    }

    fn event_bits(&self, events: &[String]) -> Option<u8> {
        let mut bits = 0;
        for e in events {
            match interest::of(e) {
                Some(b) => bits |= b,
                None => {
                    self.invalid(&format!("unknown event type {e:?}"));
                    return None;
                }
            }
        }
        Some(bits)
    }

    fn subscribed(&self, heads: &[(String, Arc<str>)]) {
        let mut rooms: Vec<&str> = self.rooms.iter().map(|r| r.as_str()).collect();
        rooms.sort_unstable();
        self.send(wire::subscribed(
            &interest::names(self.interests),
            rooms,
            heads,
        ));
    }

    async fn subscribe(&mut self, events: &[String], rooms: &[String], since: Option<Since>) {
        let Some(bits) = self.event_bits(events) else {
            return;
        };
        let first = !self.started;
        let since = match (since, first) {
            (None, true) => self.resume.take().map(|s| *s),
            (since, _) => since,
        };
        self.started = true;
        let user_bits = bits & interest::USER != 0;
        let drain = user_bits && !self.drained && self.ctx.offline.enabled;
        // Live events wait while missed or queued ones are sent (see `catch_up`); before
        // the first subscribe they are already held.
        let catch_up = first || since.is_some() || drain;
        if catch_up && !first {
            self.outbox.hold();
        }
        let user_stream = format!("u:{}", self.user);
        let mut streams = Vec::new();
        let mut fresh = Vec::new();
        if user_bits {
            if since.is_some() || drain {
                streams.push(user_stream.clone());
            }
            if self.interests & interest::USER == 0 {
                fresh.push(user_stream);
            }
        }
        let newly_presence =
            bits & interest::PRESENCE != 0 && self.interests & interest::PRESENCE == 0;
        self.interests |= bits;
        self.outbox.set_interests(self.interests);
        for room in rooms {
            let Ok(ch) = ChannelName::parse(room) else {
                self.invalid(&format!("invalid room name {room:?}"));
                continue;
            };
            if ch.kind() == ChannelKind::ServerToUser
                || !self.allowed_rooms.iter().any(|p| p.matches(room))
            {
                self.denied(&format!("room {room:?} is not allowed by the token"));
                continue;
            }
            if self.rooms.contains(&ch) {
                continue;
            }
            if self.rooms.len() >= self.ctx.bus.max_rooms_per_connection {
                self.denied("too many rooms on this connection");
                break;
            }
            let local = self
                .ctx
                .hub
                .subscribe(&self.app.id, &ch, self.id, self.recipient());
            self.ctx.webhooks.subscribed(&self.app, &ch, local);
            metrics::subscriptions(1.0);
            if since.is_some() {
                streams.push(format!("c:{ch}"));
            }
            fresh.push(format!("c:{ch}"));
            self.rooms.insert(ch);
        }
        let heads = self.heads(&fresh).await;
        if let Some(counts) = &self.ctx.counts {
            // The rooms' counts are in Redis before the answer (see the Pusher session).
            counts.fence().await;
        }
        self.ctx.hub.settled().await;
        self.subscribed(&heads);
        if newly_presence {
            self.presence_snapshot().await;
        }
        if catch_up {
            self.catch_up(&streams, since.as_ref(), drain).await;
        }
    }

    fn unsubscribe(&mut self, events: &[String], rooms: &[String]) {
        let Some(bits) = self.event_bits(events) else {
            return;
        };
        self.interests &= !bits;
        self.outbox.set_interests(self.interests);
        for room in rooms {
            if let Ok(ch) = ChannelName::parse(room) {
                if self.rooms.remove(&ch) {
                    let local = self.ctx.hub.unsubscribe(&self.app.id, &ch, self.id);
                    self.ctx.webhooks.unsubscribed(&self.app, &ch, local);
                    metrics::subscriptions(-1.0);
                }
            }
        }
        self.subscribed(&[]);
    }

    /// Leaves every room, watch and the user registry; the user may go offline.
    async fn leave(&mut self) {
        let app = self.app.id.clone();
        for ch in self.rooms.drain() {
            let local = self.ctx.hub.unsubscribe(&app, &ch, self.id);
            self.ctx.webhooks.unsubscribed(&self.app, &ch, local);
            metrics::subscriptions(-1.0);
        }
        for w in &self.watching {
            self.ctx.hub.unwatch(&app, w, self.id);
        }
        self.ctx.hub.remove_user(&app, &self.user, self.id);
        let change = Change::Disconnected {
            bus: true,
            was_idle: self.idle,
        };
        self.ctx.status.apply(&app, &self.user, change).await;
    }
}
