//! The protocol-neutral event: what every publisher produces and the hub delivers.
//!
//! An [`Event`] says *who* receives it ([`Target`]) and *what* it is ([`EventKind`]). It never
//! carries a wire detail: the codecs in `protocol/` turn it into frames, once per wire format.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ids::{AppId, ChannelName, SocketId, UserId};

/// Who receives an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// Every subscriber of a channel (Pusher) or room (bus).
    Channel(ChannelName),
    /// Every connection of a user: Pusher sockets signed in as the user, and bus sessions.
    User(UserId),
    /// Every connection that watches the user (Pusher watchlist, bus presence audience).
    Watchers(UserId),
}

impl Target {
    /// The channel (`"c"`) or user (`"u"`) an event to this target is stored with (a user's
    /// watchers are the user's): a store keeps the event's keys beside its owner's.
    pub fn owner(&self) -> (&'static str, &str) {
        match self {
            Target::Channel(ch) => ("c", ch.as_str()),
            Target::User(u) | Target::Watchers(u) => ("u", u.as_str()),
        }
    }
}

/// What happened. Each kind carries only its own fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// An application event: from the HTTP API, a client event or an ingest source.
    Message {
        /// Event name, validated by the publisher's entry point.
        name: Arc<str>,
        /// The payload as JSON text, passed through byte for byte. For the HTTP API this is a
        /// JSON string literal, because Pusher's `data` is a string.
        data: Arc<str>,
        /// The sending user on presence-channel client events.
        user_id: Option<UserId>,
        /// Publisher tags, matched against subscribers' filters (an extension).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tags: Option<Arc<crate::filter::Tags>>,
    },
    /// A user's first connection joined a presence channel.
    MemberAdded {
        /// The member.
        user_id: UserId,
        /// `user_info` as JSON text (`null` when absent).
        user_info: Arc<str>,
    },
    /// A user's last connection left a presence channel.
    MemberRemoved {
        /// The member.
        user_id: UserId,
    },
    /// A user's presence changed (sent to their watchers). `online`/`offline` follow the
    /// user's first and last connection on either protocol; `away` and `busy` come from the
    /// bus (declared, or idle).
    Presence {
        /// The user whose presence changed.
        user_id: UserId,
        /// The new status.
        status: Status,
        /// The status watchers saw before this one.
        previous: Status,
        /// Free-form activity (`"browsing"`), bus only.
        activity: Option<Arc<str>>,
    },
    /// A typing indicator from `user_id` (sent to the recipient).
    Typing {
        /// Who is typing.
        user_id: UserId,
        /// The conversation.
        conversation_id: Arc<str>,
        /// When it was sent (ms since the epoch); stale indicators are not delivered.
        sent_at_ms: u64,
    },
    /// A notification for a user.
    Notification {
        /// e.g. `connection_request`.
        notification_type: Arc<str>,
        /// Who it is from.
        from: Option<Arc<str>>,
        /// Human-readable text.
        message: Arc<str>,
        /// Where the client should take the user.
        action_url: Option<Arc<str>>,
    },
    /// A direct message notification.
    DirectMessage {
        /// The message's id in the app.
        message_id: Arc<str>,
        /// Sender's user id.
        sender: Arc<str>,
        /// First ~100 characters of the content.
        preview: Arc<str>,
        /// The conversation, if any.
        conversation_id: Option<Arc<str>>,
    },
    /// An action (post, comment, reaction...).
    Action {
        /// `POST`, `REPOST`, `CMNT`, `REACT`, `MSG`, `CONN`, `FLLW`...
        action_type: Arc<str>,
        /// The action's id.
        action_id: Arc<str>,
        /// Who performed it.
        issuer: Arc<str>,
        /// Content as JSON text.
        content: Arc<str>,
        /// `local` or `federated`.
        source: Arc<str>,
    },
    /// Close every connection of the target user (`terminate_connections`).
    Terminate,
}

/// A user's presence status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Active and available.
    Online,
    /// Connected but inactive.
    Away,
    /// Do not disturb.
    Busy,
    /// Not connected, or explicitly invisible.
    Offline,
}

impl Status {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Away => "away",
            Self::Busy => "busy",
            Self::Offline => "offline",
        }
    }
}

/// One event on its way to subscribers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The application it belongs to.
    pub app: AppId,
    /// Who receives it.
    pub target: Target,
    /// What it is.
    pub kind: EventKind,
    /// A connection that must not receive it (the sender of a client event, or the
    /// `socket_id` given to the HTTP API).
    pub exclude: Option<SocketId>,
    /// Envelope: id and time (set by the broker for events kept in history), priority and
    /// ttl (from the publisher).
    #[serde(default)]
    pub meta: Meta,
}

/// How much an event matters when a connection falls behind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Dropped first when a connection's queue is nearly full (counted).
    Low,
    /// The default.
    #[default]
    Normal,
    /// Never dropped silently.
    High,
}

/// An event's envelope.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Server-assigned id, ordered within the event's stream (channel, or user for user
    /// events) and unique within it; set for events kept in history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Arc<str>>,
    /// When the broker accepted it (ms since the epoch); 0 when not recorded.
    #[serde(default)]
    pub ts_ms: u64,
    /// Publisher priority.
    #[serde(default)]
    pub priority: Priority,
    /// Seconds the event stays worth delivering (replay skips it afterwards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    /// Which publisher sent it, for the console's event log.
    #[serde(default, skip_serializing_if = "Origin::is_internal")]
    pub origin: Origin,
}

/// Which publisher sent an event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The server itself (presence, status, the reaper).
    #[default]
    Internal,
    /// The HTTP API (Pusher or bus).
    Api,
    /// A client event.
    Client,
    /// An ingest row.
    Ingest,
    /// The admin console's test event.
    Console,
}

impl Origin {
    /// Whether this is the default (left out of the inter-node envelope).
    pub fn is_internal(&self) -> bool {
        *self == Self::Internal
    }

    /// The console's label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Internal => "internal",
            Self::Api => "api",
            Self::Client => "client",
            Self::Ingest => "ingest",
            Self::Console => "console",
        }
    }
}

impl Meta {
    /// When the event stops being worth delivering (ms since the epoch): its own `ttl`, or
    /// `default_ttl_secs` when it has none.
    pub fn expires_at(&self, default_ttl_secs: u64) -> u64 {
        let ttl = self.ttl.map_or(default_ttl_secs, u64::from);
        self.ts_ms.saturating_add(ttl.saturating_mul(1000))
    }

    /// Whether the event's ttl has passed at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.ttl
            .is_some_and(|t| self.ts_ms > 0 && self.ts_ms + u64::from(t) * 1000 < now_ms)
    }
}

/// The history stream an event belongs to: `c:{channel}` for channel messages, `u:{user}` for
/// user events. Presence, typing and control events have none (they are never replayed).
pub fn stream_of(event: &Event) -> Option<String> {
    match (&event.target, &event.kind) {
        (Target::Channel(ch), EventKind::Message { .. }) => Some(format!("c:{ch}")),
        (
            Target::User(u),
            EventKind::Message { .. }
            | EventKind::Notification { .. }
            | EventKind::DirectMessage { .. }
            | EventKind::Action { .. },
        ) => Some(format!("u:{u}")),
        _ => None,
    }
}

impl Event {
    /// An application event to a channel.
    pub fn message(app: AppId, channel: ChannelName, name: &str, data: Arc<str>) -> Self {
        Self {
            app,
            target: Target::Channel(channel),
            kind: EventKind::Message {
                name: name.into(),
                data,
                user_id: None,
                tags: None,
            },
            exclude: None,
            meta: Default::default(),
        }
    }
}

/// Serializes a string as a JSON string literal: how a Pusher `data` string travels.
pub fn json_string(s: &str) -> Arc<str> {
    serde_json::to_string(s)
        .expect("a string always serializes")
        .into()
}

/// Kinds of events a connection opts in to, as bits (the bus subscribes by type name; a
/// Pusher connection wants all). Channel and room events need no opt-in: the subscription
/// is the opt-in.
pub mod interest {
    /// Actions.
    pub const ACTION: u8 = 1;
    /// Presence (status) announcements of watched users.
    pub const PRESENCE: u8 = 2;
    /// Typing indicators.
    pub const TYPING: u8 = 4;
    /// Notifications.
    pub const NOTIFICATION: u8 = 8;
    /// Direct messages.
    pub const MESSAGE: u8 = 16;
    /// Every kind.
    pub const ALL: u8 = 31;
    /// The user's own events (kept in the user's stream and offline queue).
    pub const USER: u8 = ACTION | NOTIFICATION | MESSAGE;
}

impl EventKind {
    /// The interest bit a connection needs to receive this kind, `None` for channel events
    /// (the subscription is the opt-in) and kinds every connection receives.
    pub fn interest(&self) -> Option<u8> {
        match self {
            Self::Presence { .. } => Some(interest::PRESENCE),
            Self::Typing { .. } => Some(interest::TYPING),
            Self::Notification { .. } => Some(interest::NOTIFICATION),
            Self::DirectMessage { .. } => Some(interest::MESSAGE),
            Self::Action { .. } => Some(interest::ACTION),
            Self::Message { .. }
            | Self::MemberAdded { .. }
            | Self::MemberRemoved { .. }
            | Self::Terminate => None,
        }
    }
}
