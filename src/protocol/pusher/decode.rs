//! Client messages of the pusher protocol, decoded.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::ids::UserId;

/// A decoded client message.
#[derive(Debug, PartialEq)]
pub enum Command {
    /// `pusher:ping`.
    Ping,
    /// `pusher:pong`.
    Pong,
    /// `pusher:subscribe`.
    Subscribe {
        /// Channel name, not yet validated.
        channel: String,
        /// `"<key>:<signature>"` for private and presence channels.
        auth: Option<String>,
        /// Presence member data: the exact string the app signed.
        channel_data: Option<String>,
        /// Tag filter (an extension; see `crate::filter`).
        filter: Option<serde_json::Value>,
    },
    /// `pusher:unsubscribe`.
    Unsubscribe {
        /// Channel name.
        channel: String,
    },
    /// `pusher:signin`.
    Signin {
        /// `"<key>:<signature>"` over `socket_id::user::user_data`.
        auth: String,
        /// JSON text with at least a string `id`.
        user_data: String,
    },
    /// `pusher:enable_delta_compression` (an extension).
    EnableDelta,
    /// `pusher:delta_sync_error` (an extension): the client lost track of a channel's
    /// deltas; send the next events in full.
    DeltaSyncError {
        /// The channel.
        channel: String,
    },
    /// A `client-` event.
    ClientEvent {
        /// Event name (starts with `client-`).
        event: String,
        /// Channel name.
        channel: String,
        /// Payload as JSON text.
        data: String,
    },
}

/// Why a client message could not be decoded. The connection stays open.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    /// Not JSON, or not an object with a string `event`.
    #[error("invalid message: {0}")]
    Malformed(String),
    /// A required field is missing or has the wrong type.
    #[error("invalid {event}: {detail}")]
    BadField {
        /// The event being decoded.
        event: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// An event name this server does not accept from clients.
    #[error("unsupported event: {0}")]
    UnknownEvent(String),
}

#[derive(Deserialize)]
struct Incoming<'a> {
    event: String,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    channel: Option<String>,
}

#[derive(Deserialize)]
struct SubscribeData {
    channel: String,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    channel_data: Option<String>,
    #[serde(default)]
    filter: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ChannelOnly {
    channel: String,
}

#[derive(Deserialize)]
struct SigninData {
    auth: String,
    user_data: String,
}

/// Parses `data` as `T`, accepting it either as an object or as a JSON-encoded string of one
/// (some clients double-encode).
fn parse_data<T: for<'de> Deserialize<'de>>(
    event: &'static str,
    data: Option<&RawValue>,
) -> Result<T, DecodeError> {
    let bad = |detail: String| DecodeError::BadField { event, detail };
    let raw = data.ok_or_else(|| bad("missing data".into()))?.get();
    match serde_json::from_str::<T>(raw) {
        Ok(v) => Ok(v),
        Err(first) => match serde_json::from_str::<String>(raw) {
            Ok(inner) => serde_json::from_str(&inner).map_err(|e| bad(e.to_string())),
            Err(_) => Err(bad(first.to_string())),
        },
    }
}

/// Decodes one text frame from a client.
pub fn decode(text: &str) -> Result<Command, DecodeError> {
    let msg: Incoming<'_> =
        serde_json::from_str(text).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    match msg.event.as_str() {
        "pusher:ping" => Ok(Command::Ping),
        "pusher:pong" => Ok(Command::Pong),
        "pusher:subscribe" => {
            let d: SubscribeData = parse_data("pusher:subscribe", msg.data)?;
            Ok(Command::Subscribe {
                channel: d.channel,
                auth: d.auth,
                channel_data: d.channel_data,
                filter: d.filter,
            })
        }
        "pusher:unsubscribe" => {
            let d: ChannelOnly = parse_data("pusher:unsubscribe", msg.data)?;
            Ok(Command::Unsubscribe { channel: d.channel })
        }
        "pusher:enable_delta_compression" => Ok(Command::EnableDelta),
        "pusher:delta_sync_error" => {
            let d: ChannelOnly = parse_data("pusher:delta_sync_error", msg.data)?;
            Ok(Command::DeltaSyncError { channel: d.channel })
        }
        "pusher:signin" => {
            let d: SigninData = parse_data("pusher:signin", msg.data)?;
            Ok(Command::Signin {
                auth: d.auth,
                user_data: d.user_data,
            })
        }
        e if e.starts_with("client-") => {
            let channel = msg.channel.ok_or_else(|| DecodeError::BadField {
                event: "client event",
                detail: "missing channel".into(),
            })?;
            Ok(Command::ClientEvent {
                event: msg.event.clone(),
                channel,
                data: msg
                    .data
                    .map_or_else(|| "null".to_owned(), |d| d.get().to_owned()),
            })
        }
        _ => Err(DecodeError::UnknownEvent(msg.event)),
    }
}

/// `channel_data` of a presence subscription.
#[derive(Deserialize)]
pub struct ChannelData<'a> {
    /// The member's user id (a string, or a number as Laravel sends it).
    pub user_id: serde_json::Value,
    /// `user_info`, as JSON text.
    #[serde(borrow, default)]
    pub user_info: Option<&'a RawValue>,
}

/// `user_data` of `pusher:signin`.
#[derive(Deserialize)]
pub struct UserData {
    /// The user's id.
    pub id: serde_json::Value,
    /// Users whose online status the user sees.
    #[serde(default)]
    pub watchlist: Vec<serde_json::Value>,
}

/// A user id from JSON: strings as they are, numbers as their decimal text (Laravel sends
/// integers).
pub fn user_id_of(v: &serde_json::Value) -> Option<UserId> {
    let s = match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return None,
    };
    UserId::parse(&s).ok()
}
