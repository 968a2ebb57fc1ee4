//! Pusher Channels protocol v7: decoding client messages, encoding server messages.
//!
//! Quirks pinned by the tests below: `data` is a JSON-encoded *string* in
//! `connection_established`, `subscription_succeeded`, `member_added/removed` and channel
//! events, but an *object* in `pusher:error`, `pusher:signin_success` and client requests.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{push_json_str, CloseReason, Frame};
use crate::event::{Event, EventKind, Status, Target};
use crate::frame::{DeltaEncoder, Encoder};
use crate::ids::{SocketId, SERVER_TO_USER_PREFIX};

/// Pusher error and close codes used by this server.
pub mod code {
    /// Application does not exist.
    pub const APP_NOT_FOUND: u16 = 4001;
    /// Application disabled.
    pub const APP_DISABLED: u16 = 4003;
    /// Application over connection quota.
    pub const OVER_QUOTA: u16 = 4004;
    /// Path not found.
    pub const PATH_NOT_FOUND: u16 = 4005;
    /// Unsupported protocol version.
    pub const UNSUPPORTED_PROTOCOL: u16 = 4007;
    /// No protocol version supplied.
    pub const NO_PROTOCOL: u16 = 4008;
    /// Connection is unauthorized (also: terminated by the app).
    pub const UNAUTHORIZED: u16 = 4009;
    /// Over capacity: node full, or the client reads too slowly.
    pub const OVER_CAPACITY: u16 = 4100;
    /// Generic reconnect-now: server shutting down.
    pub const RECONNECT: u16 = 4200;
    /// Pong reply not received in time.
    pub const PONG_TIMEOUT: u16 = 4201;
    /// Generic error that does not close the connection (bad message, unknown event).
    pub const INVALID_MESSAGE: u16 = 4300;
    /// Client event rejected due to rate limit. Sent as an error event, never as a close:
    /// pusher-js stops reconnecting on close codes >= 4300.
    pub const CLIENT_EVENT_RATE: u16 = 4301;
    /// Watchlist over 100 ids.
    pub const WATCHLIST_LIMIT: u16 = 4302;
}

/// The close code and reason for a neutral close reason.
pub fn close_code(reason: CloseReason) -> (u16, &'static str) {
    match reason {
        CloseReason::Shutdown => (code::RECONNECT, "Server shutting down"),
        CloseReason::SlowConsumer => (code::OVER_CAPACITY, "Client too slow"),
        CloseReason::Terminated => (code::UNAUTHORIZED, "Connection terminated by the app"),
    }
}

/// How Pusher encodes events for the hub, delta compression included.
pub static ENCODER: Encoder = Encoder {
    slot: 0,
    encode: encode_event,
    delta: Some(DeltaEncoder {
        sequenced: encode_event_with_sequence,
        delta: delta_frame,
    }),
};

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

fn frame(s: String) -> Frame {
    Frame::from(s)
}

/// `pusher:connection_established`, `data` double-encoded.
pub fn connection_established(socket: SocketId, activity_timeout_secs: u64) -> Frame {
    let data = format!(r#"{{"socket_id":"{socket}","activity_timeout":{activity_timeout_secs}}}"#);
    let mut s = String::from(r#"{"event":"pusher:connection_established","data":"#);
    push_json_str(&mut s, &data);
    s.push('}');
    frame(s)
}

/// `pusher:error` with a code (`None` → JSON `null`) and a message; `data` is an object.
pub fn error(code: Option<u16>, message: &str) -> Frame {
    let mut s = String::from(r#"{"event":"pusher:error","data":{"code":"#);
    match code {
        Some(c) => s.push_str(&c.to_string()),
        None => s.push_str("null"),
    }
    s.push_str(r#","message":"#);
    push_json_str(&mut s, message);
    s.push_str("}}");
    frame(s)
}

/// `pusher:ping` (server-initiated heartbeat).
pub fn ping() -> Frame {
    Frame::from_static(r#"{"event":"pusher:ping","data":{}}"#)
}

/// `pusher:pong`.
pub fn pong() -> Frame {
    Frame::from_static(r#"{"event":"pusher:pong","data":{}}"#)
}

/// One presence member for `subscription_succeeded`.
pub struct PresenceMember<'a> {
    /// User id.
    pub user_id: &'a str,
    /// `user_info` JSON text.
    pub user_info: &'a str,
}

/// `pusher_internal:subscription_succeeded`; for presence channels with the member list
/// (`ids`, `hash`, `count` of unique users, self included).
pub fn subscription_succeeded(channel: &str, presence: Option<&[PresenceMember<'_>]>) -> Frame {
    let data = match presence {
        None => "{}".to_owned(),
        Some(members) => {
            let mut ids = String::from("[");
            let mut hash = String::from("{");
            for (i, m) in members.iter().enumerate() {
                if i > 0 {
                    ids.push(',');
                    hash.push(',');
                }
                push_json_str(&mut ids, m.user_id);
                push_json_str(&mut hash, m.user_id);
                hash.push(':');
                hash.push_str(m.user_info);
            }
            ids.push(']');
            hash.push('}');
            format!(
                r#"{{"presence":{{"ids":{ids},"hash":{hash},"count":{}}}}}"#,
                members.len()
            )
        }
    };
    let mut s = String::from(r#"{"event":"pusher_internal:subscription_succeeded","channel":"#);
    push_json_str(&mut s, channel);
    s.push_str(r#","data":"#);
    push_json_str(&mut s, &data);
    s.push('}');
    frame(s)
}

/// `pusher:subscription_error` on the channel, shaped like pusher-js's own auth errors
/// (`{type, error, status}`) so `channel.bind('pusher:subscription_error')` sees it.
pub fn subscription_error(channel: &str, status: u16, message: &str) -> Frame {
    let mut s = String::from(r#"{"event":"pusher:subscription_error","channel":"#);
    push_json_str(&mut s, channel);
    s.push_str(r#","data":{"type":"AuthError","error":"#);
    push_json_str(&mut s, message);
    s.push_str(&format!(r#","status":{status}}}}}"#));
    frame(s)
}

/// `pusher:cache_miss`: a cache channel was subscribed with nothing cached.
pub fn cache_miss(channel: &str) -> Frame {
    let mut s = String::from(r#"{"event":"pusher:cache_miss","channel":"#);
    push_json_str(&mut s, channel);
    s.push('}');
    frame(s)
}

/// `pusher:signin_success`, echoing the signed `user_data` string.
pub fn signin_success(user_data: &str) -> Frame {
    let mut s = String::from(r#"{"event":"pusher:signin_success","data":{"user_data":"#);
    push_json_str(&mut s, user_data);
    s.push_str("}}");
    frame(s)
}

/// `pusher_internal:watchlist_events` with one `online` or `offline` event.
pub fn watchlist_event<'a>(online: bool, user_ids: impl IntoIterator<Item = &'a str>) -> Frame {
    let mut s =
        String::from(r#"{"event":"pusher_internal:watchlist_events","data":{"events":[{"name":""#);
    s.push_str(if online { "online" } else { "offline" });
    s.push_str(r#"","user_ids":["#);
    for (i, id) in user_ids.into_iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        push_json_str(&mut s, id);
    }
    s.push_str("]}]}}");
    frame(s)
}

/// A channel event for a delta-compression connection: the standard frame plus its
/// `sequence` (an extension; clients that did not opt in never see it).
pub fn encode_event_with_sequence(event: &Event, seq: u64) -> Option<Frame> {
    let f = encode_event(event)?;
    let s = f.as_str();
    Some(frame(format!("{},\"sequence\":{seq}}}", &s[..s.len() - 1])))
}

/// `pusher:delta`: `delta` (base64 fossil delta) turns the `data` of the event `event` with
/// sequence `base_seq` on this channel into the data of `target_seq`.
pub fn delta_frame(
    channel: &str,
    event: &str,
    delta: &str,
    base_seq: u64,
    target_seq: u64,
) -> Frame {
    let mut s = String::from(r#"{"event":"pusher:delta","channel":"#);
    push_json_str(&mut s, channel);
    s.push_str(r#","data":{"event":"#);
    push_json_str(&mut s, event);
    s.push_str(r#","delta":"#);
    push_json_str(&mut s, delta);
    s.push_str(&format!(
        r#","base_seq":{base_seq},"target_seq":{target_seq},"algorithm":"fossil"}}}}"#
    ));
    frame(s)
}

/// `pusher:delta_compression_enabled`, the answer to `pusher:enable_delta_compression`.
pub fn delta_enabled() -> Frame {
    Frame::from_static(
        r#"{"event":"pusher:delta_compression_enabled","data":{"algorithm":"fossil"}}"#,
    )
}

/// Encodes an event for Pusher connections, or `None` when Pusher has no frame for it.
pub fn encode_event(event: &Event) -> Option<Frame> {
    let channel = |s: &mut String| match &event.target {
        Target::Channel(c) => push_json_str(s, c.as_str()),
        Target::User(u) => push_json_str(s, &format!("{SERVER_TO_USER_PREFIX}{u}")),
        Target::Watchers(_) => s.push_str("null"),
    };
    let mut s = String::with_capacity(128);
    match &event.kind {
        EventKind::Message {
            name,
            data,
            user_id,
            ..
        } => {
            s.push_str(r#"{"event":"#);
            push_json_str(&mut s, name);
            s.push_str(r#","channel":"#);
            channel(&mut s);
            s.push_str(r#","data":"#);
            s.push_str(data);
            if let Some(u) = user_id {
                s.push_str(r#","user_id":"#);
                push_json_str(&mut s, u.as_str());
            }
            s.push('}');
        }
        EventKind::MemberAdded { user_id, user_info } => {
            s.push_str(r#"{"event":"pusher_internal:member_added","channel":"#);
            channel(&mut s);
            let mut data = String::from(r#"{"user_id":"#);
            push_json_str(&mut data, user_id.as_str());
            data.push_str(r#","user_info":"#);
            data.push_str(user_info);
            data.push('}');
            s.push_str(r#","data":"#);
            push_json_str(&mut s, &data);
            s.push('}');
        }
        EventKind::MemberRemoved { user_id } => {
            s.push_str(r#"{"event":"pusher_internal:member_removed","channel":"#);
            channel(&mut s);
            let mut data = String::from(r#"{"user_id":"#);
            push_json_str(&mut data, user_id.as_str());
            data.push('}');
            s.push_str(r#","data":"#);
            push_json_str(&mut s, &data);
            s.push('}');
        }
        EventKind::Presence {
            user_id,
            status,
            previous,
            ..
        } => {
            // Pusher's watchlist knows online and offline only; away and busy are online.
            let online = |s: &Status| *s != Status::Offline;
            if online(status) == online(previous) {
                return None;
            }
            return Some(watchlist_event(online(status), [user_id.as_str()]));
        }
        EventKind::Notification { .. }
        | EventKind::DirectMessage { .. }
        | EventKind::Action { .. } => {
            // Bus user events reach the same user's signed-in Pusher connections as a
            // user event named after the type, with the bus fields as data.
            let (name, body) = super::bus::user_event_body(&event.kind)?;
            s.push_str(r#"{"event":"#);
            push_json_str(&mut s, name);
            s.push_str(r#","channel":"#);
            channel(&mut s);
            s.push_str(r#","data":"#);
            push_json_str(&mut s, &body);
            s.push('}');
        }
        EventKind::Typing { .. } | EventKind::Terminate => return None,
    }
    Some(frame(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::json_string;
    use crate::ids::{AppId, ChannelName, UserId};

    #[test]
    fn connection_established_data_is_a_string() {
        let f = connection_established(SocketId::parse("123.456").unwrap(), 120);
        assert_eq!(
            f.as_str(),
            r#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"123.456\",\"activity_timeout\":120}"}"#
        );
    }

    #[test]
    fn error_data_is_an_object() {
        assert_eq!(
            error(Some(4001), "App \"x\" not found").as_str(),
            r#"{"event":"pusher:error","data":{"code":4001,"message":"App \"x\" not found"}}"#
        );
        assert_eq!(
            error(None, "m").as_str(),
            r#"{"event":"pusher:error","data":{"code":null,"message":"m"}}"#
        );
    }

    #[test]
    fn presence_subscription_succeeded() {
        let m = [PresenceMember {
            user_id: "1",
            user_info: r#"{"name":"a"}"#,
        }];
        assert_eq!(
            subscription_succeeded("presence-x", Some(&m)).as_str(),
            r#"{"event":"pusher_internal:subscription_succeeded","channel":"presence-x","data":"{\"presence\":{\"ids\":[\"1\"],\"hash\":{\"1\":{\"name\":\"a\"}},\"count\":1}}"}"#
        );
        assert_eq!(
            subscription_succeeded("c", None).as_str(),
            r#"{"event":"pusher_internal:subscription_succeeded","channel":"c","data":"{}"}"#
        );
    }

    #[test]
    fn api_event_data_passes_through() {
        let e = Event::message(
            AppId::new("a"),
            ChannelName::new("c"),
            "my-event",
            json_string(r#"{"x":1}"#),
        );
        assert_eq!(
            encode_event(&e).unwrap().as_str(),
            r#"{"event":"my-event","channel":"c","data":"{\"x\":1}"}"#
        );
    }

    #[test]
    fn client_event_on_presence_carries_user_id() {
        let e = Event {
            app: AppId::new("a"),
            target: Target::Channel(ChannelName::new("presence-c")),
            kind: EventKind::Message {
                name: "client-x".into(),
                data: r#"{"a":1}"#.into(),
                user_id: Some(UserId::new("7")),
                tags: None,
            },
            exclude: None,
            meta: Default::default(),
        };
        assert_eq!(
            encode_event(&e).unwrap().as_str(),
            r#"{"event":"client-x","channel":"presence-c","data":{"a":1},"user_id":"7"}"#
        );
    }

    #[test]
    fn member_events_double_encode() {
        let added = Event {
            app: AppId::new("a"),
            target: Target::Channel(ChannelName::new("presence-c")),
            kind: EventKind::MemberAdded {
                user_id: UserId::new("1"),
                user_info: "null".into(),
            },
            exclude: None,
            meta: Default::default(),
        };
        assert_eq!(
            encode_event(&added).unwrap().as_str(),
            r#"{"event":"pusher_internal:member_added","channel":"presence-c","data":"{\"user_id\":\"1\",\"user_info\":null}"}"#
        );
    }

    #[test]
    fn user_events_use_the_server_to_user_channel() {
        let e = Event {
            app: AppId::new("a"),
            target: Target::User(UserId::new("9")),
            kind: EventKind::Message {
                name: "hello".into(),
                data: "\"x\"".into(),
                user_id: None,
                tags: None,
            },
            exclude: None,
            meta: Default::default(),
        };
        assert_eq!(
            encode_event(&e).unwrap().as_str(),
            r##"{"event":"hello","channel":"#server-to-user-9","data":"x"}"##
        );
    }

    #[test]
    fn decodes_client_messages() {
        assert_eq!(
            decode(r#"{"event":"pusher:ping","data":{}}"#),
            Ok(Command::Ping)
        );
        assert_eq!(
            decode(
                r#"{"event":"pusher:subscribe","data":{"channel":"presence-a","auth":"k:s","channel_data":"{\"user_id\":1}"}}"#
            ),
            Ok(Command::Subscribe {
                channel: "presence-a".into(),
                auth: Some("k:s".into()),
                channel_data: Some(r#"{"user_id":1}"#.into()),
                filter: None,
            })
        );
        assert_eq!(
            decode(r#"{"event":"pusher:subscribe","data":"{\"channel\":\"a\"}"}"#),
            Ok(Command::Subscribe {
                channel: "a".into(),
                auth: None,
                channel_data: None,
                filter: None,
            })
        );
        assert_eq!(
            decode(r#"{"event":"client-x","channel":"private-a","data":{"k":[1]}}"#),
            Ok(Command::ClientEvent {
                event: "client-x".into(),
                channel: "private-a".into(),
                data: r#"{"k":[1]}"#.into()
            })
        );
        assert!(matches!(decode("nope"), Err(DecodeError::Malformed(_))));
        assert!(matches!(
            decode(r#"{"event":1}"#),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode(r#"{"event":"pusher:subscribe","data":{"channel":5}}"#),
            Err(DecodeError::BadField { .. })
        ));
        assert!(matches!(
            decode(r#"{"event":"hello"}"#),
            Err(DecodeError::UnknownEvent(_))
        ));
    }
}
