//! The native bus protocol: JSON messages `{"type": ..., ..., "timestamp": <unix seconds>}`.
//!
//! Client → server: `subscribe`, `unsubscribe`, `presence`, `typing`, `ping`,
//! `register_push`.
//! Server → client: `welcome`, `subscribed`, `pong`, `error`, `presence`, `typing`,
//! `push_registered`, `push_unregistered`,
//! `message`, `notification`, `action`, and `event` for room events.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::{push_json_str, CloseReason, Frame};
use crate::event::{Event, EventKind, Priority, Status, Target};

/// Error codes of `error` messages.
pub mod code {
    /// Authentication failed or the token expired.
    pub const AUTH: &str = "E-WS-AUTH";
    /// Malformed message, unknown type, wrong field types.
    pub const INVALID: &str = "E-WS-INVALID";
    /// Too many messages.
    pub const RATE: &str = "E-WS-RATE";
    /// Not allowed: a room outside the token's `channels`, too many connections.
    pub const PERMISSION: &str = "E-WS-PERMISSION";
    /// A backing store is down (an extension: the request may be retried).
    pub const UNAVAILABLE: &str = "E-WS-UNAVAILABLE";
}

/// Close codes of the bus. Same ranges as Pusher: 40xx do not reconnect unchanged, 41xx
/// reconnect with backoff, 42xx reconnect now.
pub mod close {
    /// The token expired or was refused: get a new token before reconnecting.
    pub const AUTH: u16 = 4001;
    /// Too many connections for this user.
    pub const PERMISSION: u16 = 4003;
    /// The app terminated the user's connections.
    pub const TERMINATED: u16 = 4009;
    /// The client reads too slowly.
    pub const SLOW_CONSUMER: u16 = 4100;
    /// The server is shutting down: reconnect now.
    pub const RECONNECT: u16 = 4200;
    /// The client did not answer the server's ping.
    pub const PONG_TIMEOUT: u16 = 4201;
}

/// The close code and reason for a neutral close reason.
pub fn close_code(reason: CloseReason) -> (u16, &'static str) {
    match reason {
        CloseReason::Shutdown => (close::RECONNECT, "Server shutting down"),
        CloseReason::SlowConsumer => (close::SLOW_CONSUMER, "Client too slow"),
        CloseReason::Terminated => (close::TERMINATED, "Connection terminated by the app"),
    }
}

/// Event types a client subscribes to, as bits of an interest mask.
pub mod interest {
    /// `action`
    pub const ACTION: u8 = 1;
    /// `presence`
    pub const PRESENCE: u8 = 2;
    /// `typing`
    pub const TYPING: u8 = 4;
    /// `notification`
    pub const NOTIFICATION: u8 = 8;
    /// `message`
    pub const MESSAGE: u8 = 16;
    /// Every type.
    pub const ALL: u8 = 31;
    /// The user's own events (kept in the user's stream and offline queue).
    pub const USER: u8 = ACTION | NOTIFICATION | MESSAGE;

    /// The bit of an event type name.
    pub fn of(name: &str) -> Option<u8> {
        Some(match name {
            "action" => ACTION,
            "presence" => PRESENCE,
            "typing" => TYPING,
            "notification" => NOTIFICATION,
            "message" => MESSAGE,
            _ => return None,
        })
    }

    /// The names of the bits set in `mask`.
    pub fn names(mask: u8) -> Vec<&'static str> {
        ["action", "presence", "typing", "notification", "message"]
            .into_iter()
            .filter(|n| of(n).is_some_and(|b| mask & b != 0))
            .collect()
    }
}

/// The interest bit an event needs, or `None` for room events (the room subscription is the
/// opt-in) and kinds the bus never receives.
pub fn required_interest(kind: &EventKind) -> Option<u8> {
    match kind {
        EventKind::Presence { .. } => Some(interest::PRESENCE),
        EventKind::Typing { .. } => Some(interest::TYPING),
        EventKind::Notification { .. } => Some(interest::NOTIFICATION),
        EventKind::DirectMessage { .. } => Some(interest::MESSAGE),
        EventKind::Action { .. } => Some(interest::ACTION),
        EventKind::Message { .. }
        | EventKind::MemberAdded { .. }
        | EventKind::MemberRemoved { .. }
        | EventKind::Terminate => None,
    }
}

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

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A frame from `"type"` and pre-encoded fields (`"k":v,...`), with the timestamp added.
fn message(kind: &str, fields: &str) -> Frame {
    let mut s = String::with_capacity(32 + fields.len());
    s.push_str(r#"{"type":""#);
    s.push_str(kind);
    s.push('"');
    if !fields.is_empty() {
        s.push(',');
        s.push_str(fields);
    }
    s.push_str(&format!(r#","timestamp":{}}}"#, now_secs()));
    Frame::from(s)
}

/// Appends `"key":<json string>` (with a leading comma when `buf` is not empty).
fn field_str(buf: &mut String, key: &str, value: &str) {
    if !buf.is_empty() {
        buf.push(',');
    }
    push_json_str(buf, key);
    buf.push(':');
    push_json_str(buf, value);
}

/// Appends `"key":<raw json>`.
fn field_raw(buf: &mut String, key: &str, raw: &str) {
    if !buf.is_empty() {
        buf.push(',');
    }
    push_json_str(buf, key);
    buf.push(':');
    buf.push_str(raw);
}

/// `welcome`, the first message of every connection.
pub fn welcome(session_id: &str, user: &str) -> Frame {
    let mut f = String::new();
    field_str(&mut f, "session_id", session_id);
    field_str(&mut f, "user", user);
    message("welcome", &f)
}

/// `pong`.
pub fn pong() -> Frame {
    message("pong", "")
}

/// `ping`, sent by the server when the client has been silent.
pub fn ping() -> Frame {
    message("ping", "")
}

/// `error` with one of the [`code`]s.
pub fn error(code: &str, msg: &str) -> Frame {
    let mut f = String::new();
    field_str(&mut f, "code", code);
    field_str(&mut f, "message", msg);
    message("error", &f)
}

/// `subscribed`: the connection's event types and rooms after a (un)subscribe, and the id
/// of the latest event of each stream just subscribed (`"room:{name}"`, `"user"`), so a
/// client can resume from there even before it receives an event.
pub fn subscribed<'a>(
    events: &[&str],
    rooms: impl IntoIterator<Item = &'a str>,
    heads: &[(String, std::sync::Arc<str>)],
) -> Frame {
    let list = |items: &mut dyn Iterator<Item = &str>| {
        let mut s = String::from("[");
        for (i, it) in items.enumerate() {
            if i > 0 {
                s.push(',');
            }
            push_json_str(&mut s, it);
        }
        s.push(']');
        s
    };
    let mut f = String::new();
    field_raw(&mut f, "events", &list(&mut events.iter().copied()));
    field_raw(&mut f, "rooms", &list(&mut rooms.into_iter()));
    let mut h = String::new();
    for (label, id) in heads {
        field_str(&mut h, label, id);
    }
    field_raw(&mut f, "heads", &format!("{{{h}}}"));
    message("subscribed", &f)
}

/// `push_registered`: the device's registration id (for `DELETE .../push/{id}`).
pub fn push_registered(id: &str, platform: &str) -> Frame {
    let mut f = String::new();
    field_str(&mut f, "id", id);
    field_str(&mut f, "platform", platform);
    message("push_registered", &f)
}

/// `push_unregistered`: whether the registration existed (it is gone either way).
pub fn push_unregistered(id: &str, removed: bool) -> Frame {
    let mut f = String::new();
    field_str(&mut f, "id", id);
    field_raw(&mut f, "removed", if removed { "true" } else { "false" });
    message("push_unregistered", &f)
}

/// `acked`: how many of the acknowledged ids were still queued.
pub fn acked(count: usize) -> Frame {
    message("acked", &format!(r#""count":{count}"#))
}

/// `replay`: what follows are the `count` events of `stream` after `since` (`null`: the
/// user's offline queue only); `complete` is `false` when history no longer reaches back
/// that far or `dropped` events were lost to the offline queue's limits (the client should
/// refetch).
pub fn replay(
    stream: &str,
    since: Option<&str>,
    count: usize,
    complete: bool,
    dropped: u64,
) -> Frame {
    let mut f = String::new();
    field_str(&mut f, "stream", stream);
    match since {
        Some(s) => field_str(&mut f, "since", s),
        None => field_raw(&mut f, "since", "null"),
    }
    field_raw(&mut f, "count", &count.to_string());
    field_raw(&mut f, "complete", if complete { "true" } else { "false" });
    field_raw(&mut f, "dropped", &dropped.to_string());
    message("replay", &f)
}

/// The fields of a user event (notification, message, action), without type and
/// timestamp; also the `data` of the same event on the Pusher wire.
pub(crate) fn user_event_fields(kind: &EventKind) -> Option<(&'static str, String)> {
    let mut f = String::new();
    let name = match kind {
        EventKind::Notification {
            notification_type,
            from,
            message,
            action_url,
        } => {
            field_str(&mut f, "notification_type", notification_type);
            if let Some(from) = from {
                field_str(&mut f, "from", from);
            }
            field_str(&mut f, "message", message);
            if let Some(url) = action_url {
                field_str(&mut f, "action_url", url);
            }
            "notification"
        }
        EventKind::DirectMessage {
            message_id,
            sender,
            preview,
            conversation_id,
        } => {
            field_str(&mut f, "message_id", message_id);
            field_str(&mut f, "sender", sender);
            field_str(&mut f, "preview", preview);
            if let Some(c) = conversation_id {
                field_str(&mut f, "conversation_id", c);
            }
            "message"
        }
        EventKind::Action {
            action_type,
            action_id,
            issuer,
            content,
            source,
        } => {
            field_str(&mut f, "action_type", action_type);
            field_str(&mut f, "action_id", action_id);
            field_str(&mut f, "issuer", issuer);
            field_raw(&mut f, "content", content);
            field_str(&mut f, "source", source);
            "action"
        }
        _ => return None,
    };
    Some((name, f))
}

/// The Pusher `data` for a bus user event: its fields as a JSON object.
pub(crate) fn user_event_body(kind: &EventKind) -> Option<(&'static str, String)> {
    user_event_fields(kind).map(|(name, f)| (name, format!("{{{f}}}")))
}

/// How long a typing indicator stays meaningful.
pub const TYPING_TTL_MS: u64 = 5_000;

/// Encodes an event for bus connections, or `None` when the bus has no frame for it.
pub fn encode_event(event: &Event) -> Option<Frame> {
    let mut f = String::new();
    let kind = match &event.kind {
        EventKind::Message { name, data, .. } => {
            let Target::Channel(room) = &event.target else {
                return None;
            };
            field_str(&mut f, "room", room.as_str());
            field_str(&mut f, "event", name);
            field_raw(&mut f, "data", data);
            "event"
        }
        EventKind::Presence {
            user_id,
            status,
            activity,
            ..
        } => {
            field_str(&mut f, "user", user_id.as_str());
            field_str(&mut f, "status", status.as_str());
            if let Some(a) = activity {
                field_str(&mut f, "activity", a);
            }
            "presence"
        }
        EventKind::Typing {
            user_id,
            conversation_id,
            sent_at_ms,
        } => {
            // An indicator that waited longer than its lifetime (a backlog) is not shown.
            if now_ms().saturating_sub(*sent_at_ms) > TYPING_TTL_MS {
                return None;
            }
            field_str(&mut f, "user", user_id.as_str());
            field_str(&mut f, "conversation_id", conversation_id);
            "typing"
        }
        k @ (EventKind::Notification { .. }
        | EventKind::DirectMessage { .. }
        | EventKind::Action { .. }) => {
            let (name, fields) = user_event_fields(k)?;
            f = fields;
            name
        }
        EventKind::MemberAdded { .. } | EventKind::MemberRemoved { .. } | EventKind::Terminate => {
            return None
        }
    };
    // Events kept in history carry their id (and a non-default priority): a client resumes
    // with the last id it saw.
    if let Some(id) = &event.meta.id {
        field_str(&mut f, "id", id);
    }
    if event.meta.priority != Priority::Normal {
        field_str(
            &mut f,
            "priority",
            if event.meta.priority == Priority::High {
                "high"
            } else {
                "low"
            },
        );
    }
    Some(message(kind, &f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{AppId, UserId};
    use serde_json::Value;

    fn parse(f: &Frame) -> Value {
        serde_json::from_str(f.as_str()).unwrap()
    }

    #[test]
    fn every_message_has_type_and_timestamp() {
        for f in [welcome("1.2", "alice"), pong(), error(code::AUTH, "x")] {
            let v = parse(&f);
            assert!(v["type"].is_string());
            assert!(v["timestamp"].as_u64().unwrap() > 1_700_000_000);
        }
        let v = parse(&welcome("1.2", "alice"));
        assert_eq!(v["session_id"], "1.2");
        assert_eq!(v["user"], "alice");
    }

    #[test]
    fn decodes_commands() {
        assert_eq!(decode(r#"{"type":"ping"}"#), Ok(Command::Ping));
        assert_eq!(
            decode(r#"{"type":"subscribe","events":["presence"]}"#),
            Ok(Command::Subscribe {
                events: vec!["presence".into()],
                rooms: vec![],
                since: None,
            })
        );
        assert_eq!(
            decode(r#"{"type":"presence","status":"busy","activity":"call"}"#),
            Ok(Command::Presence {
                status: Status::Busy,
                activity: Some("call".into())
            })
        );
        assert_eq!(
            decode(r#"{"type":"nope"}"#),
            Err("unknown message type".into())
        );
        assert!(decode(r#"{"type":"presence","status":"sleeping"}"#).is_err());
        assert!(decode(r#"{"type":"typing","recipient":1}"#).is_err());
        assert!(decode("not json").is_err());
        let web = decode(
            r#"{"type":"register_push","platform":"web","token":{"endpoint":"https://p/x","expirationTime":null,"keys":{"p256dh":"k","auth":"a"}}}"#,
        );
        assert!(matches!(
            web,
            Ok(Command::RegisterPush {
                token: Some(PushToken::Subscription(_)),
                ..
            })
        ));
        assert!(decode(r#"{"type":"register_push","platform":"ios","token":"ab12"}"#).is_ok());
        assert!(decode(r#"{"type":"register_push","token":"ab12"}"#).is_err());
    }

    #[test]
    fn bad_status_is_not_an_unknown_type() {
        // Found by tests/fuzz.rs: serde says "unknown variant" of a bad status too.
        let e = decode(r#"{"type":"presence","status":"sleeping"}"#).unwrap_err();
        assert!(
            e.starts_with("invalid message: unknown variant `sleeping`"),
            "{e}"
        );
        // Not JSON, though an unknown type comes first: invalid, not unknown.
        let e = decode(r#"{"type":","type":"presence"}"#).unwrap_err();
        assert!(e.starts_with("invalid message: "), "{e}");
        assert_eq!(decode(r#"["nope"]"#), Err("unknown message type".into()));
    }

    #[test]
    fn action_frame_matches_the_seed() {
        let e = Event {
            app: AppId::new("a"),
            target: Target::User(UserId::new("alice")),
            kind: EventKind::Action {
                action_type: "POST".into(),
                action_id: "a1~xyz".into(),
                issuer: "bob".into(),
                content: "\"hi\"".into(),
                source: "local".into(),
            },
            exclude: None,
            meta: Default::default(),
        };
        let v = parse(&encode_event(&e).unwrap());
        assert_eq!(v["type"], "action");
        assert_eq!(v["action_type"], "POST");
        assert_eq!(v["content"], "hi");
        assert_eq!(v["source"], "local");
    }

    #[test]
    fn stale_typing_is_not_encoded() {
        let mut e = Event {
            app: AppId::new("a"),
            target: Target::User(UserId::new("bob")),
            kind: EventKind::Typing {
                user_id: UserId::new("alice"),
                conversation_id: "c".into(),
                sent_at_ms: now_ms(),
            },
            exclude: None,
            meta: Default::default(),
        };
        assert!(encode_event(&e).is_some());
        if let EventKind::Typing { sent_at_ms, .. } = &mut e.kind {
            *sent_at_ms -= TYPING_TTL_MS + 1;
        }
        assert!(encode_event(&e).is_none());
    }
}
