//! The native bus protocol: JSON messages `{"type": ..., ..., "timestamp": <unix seconds>}`.
//!
//! Client → server: `subscribe`, `unsubscribe`, `presence`, `typing`, `ping`,
//! `register_push`.
//! Server → client: `welcome`, `subscribed`, `pong`, `error`, `presence`, `typing`,
//! `push_registered`, `push_unregistered`,
//! `message`, `notification`, `action`, and `event` for room events.

mod decode;
mod encode;

pub use decode::*;
pub use encode::*;

use super::{push_json_str, CloseReason, Frame};
use crate::event::{Event, EventKind, Priority, Status, Target};
use crate::frame::Encoder;

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
        CloseReason::AppDisabled => (close::PERMISSION, "App disabled"),
        CloseReason::AppDeleted => (close::AUTH, "App deleted"),
    }
}

/// Event types a client subscribes to, as bits of an interest mask.
pub mod interest {
    pub use crate::event::interest::*;

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

/// How the bus encodes events for the hub.
pub static ENCODER: Encoder = Encoder {
    slot: 1,
    encode: encode_event,
    delta: None,
};

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
                sent_at_ms: crate::clock::now_ms(),
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
