//! Client messages of the bus protocol, decoded.

use super::*;
use serde::Deserialize;

/// A decoded client message.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Start receiving event types and/or room events.
    Subscribe {
        /// Event type names.
        #[serde(default)]
        events: Vec<String>,
        /// Room (channel) names, allowed by the token's `channels` patterns.
        #[serde(default)]
        rooms: Vec<String>,
        /// Resume after these event ids: replay what the named rooms (and, with user event
        /// types, the user's own stream) received since, then go live.
        #[serde(default)]
        since: Option<Since>,
    },
    /// Stop receiving event types and/or rooms.
    Unsubscribe {
        /// Event type names.
        #[serde(default)]
        events: Vec<String>,
        /// Room names.
        #[serde(default)]
        rooms: Vec<String>,
    },
    /// Declare a status.
    Presence {
        /// `online`, `away`, `busy` or `offline`.
        status: Status,
        /// Free-form activity.
        #[serde(default)]
        activity: Option<String>,
    },
    /// Tell `recipient` this user is typing.
    Typing {
        /// The recipient's user id.
        recipient: String,
        /// The conversation.
        conversation_id: String,
    },
    /// Heartbeat.
    Ping,
    /// Acknowledge user events by id (`id`, or several in `ids`): queued `high` events are
    /// then not delivered again.
    Ack {
        /// One id.
        #[serde(default)]
        id: Option<String>,
        /// Several ids.
        #[serde(default)]
        ids: Vec<String>,
    },
    /// Register this device for push notifications while the user is offline.
    RegisterPush {
        /// `web`, `android` or `ios`.
        platform: String,
        /// The FCM/APNs token; for `web`, the browser's subscription object (or its JSON).
        #[serde(default)]
        token: Option<PushToken>,
        /// The browser's subscription object (`PushSubscription.toJSON()`), for `web`.
        #[serde(default)]
        subscription: Option<PushSubscription>,
    },
    /// Forget one of this user's push registrations (the id `push_registered` gave).
    UnregisterPush {
        /// The registration id.
        id: String,
    },
}

/// A push token as clients send it: a string, or a Web Push subscription object.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PushToken {
    /// An FCM or APNs token (or the JSON text of a subscription).
    Text(String),
    /// A browser's subscription.
    Subscription(PushSubscription),
}

/// A browser's `PushSubscription.toJSON()`: `{endpoint, expirationTime, keys: {p256dh, auth}}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PushSubscription {
    /// The push service URL.
    pub endpoint: String,
    /// The browser's keys (base64url).
    pub keys: PushKeys,
}

/// The keys of a [`PushSubscription`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PushKeys {
    /// P-256 public key.
    pub p256dh: String,
    /// Authentication secret.
    pub auth: String,
}

/// Where to resume: one id for every stream of the message, or one per stream label
/// (`"room:{name}"`, `"user"`), since ids are ordered within a stream only.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Since {
    /// The same id for every stream.
    All(String),
    /// An id per stream label; streams not named are not replayed.
    PerStream(std::collections::BTreeMap<String, String>),
}

impl Since {
    /// The id to resume `label` from, if any.
    pub fn for_stream(&self, label: &str) -> Option<&str> {
        match self {
            Since::All(id) => Some(id),
            Since::PerStream(m) => m.get(label).map(String::as_str),
        }
    }
}

/// Decodes a client message; the error text is sent back with `E-WS-INVALID`.
pub fn decode(text: &str) -> Result<Command, String> {
    serde_json::from_str(text).map_err(|e| {
        if unknown_type(text) {
            "unknown message type".to_owned()
        } else {
            format!("invalid message: {e}")
        }
    })
}

/// Whether `text` is a JSON message whose `type` is no command. serde says "unknown
/// variant" of an unknown `status` as well, so the type is tried on its own.
fn unknown_type(text: &str) -> bool {
    #[derive(Deserialize)]
    struct Tagged {
        #[serde(rename = "type")]
        ty: String,
    }
    serde_json::from_str::<Tagged>(text).is_ok_and(|t| {
        serde_json::from_value::<Command>(serde_json::json!({ "type": t.ty }))
            .is_err_and(|e| e.to_string().starts_with("unknown variant"))
    })
}
