//! Pusher Channels protocol v7: decoding client messages, encoding server messages.
//!
//! Quirks pinned by the tests below: `data` is a JSON-encoded *string* in
//! `connection_established`, `subscription_succeeded`, `member_added/removed` and channel
//! events, but an *object* in `pusher:error`, `pusher:signin_success` and client requests.

mod decode;
mod encode;

pub use decode::*;
pub use encode::*;

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
        CloseReason::AppDisabled => (code::APP_DISABLED, "Application disabled"),
        CloseReason::AppDeleted => (code::APP_NOT_FOUND, "Application does not exist"),
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
