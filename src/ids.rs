//! Identifier newtypes. Cheap to clone (`Arc<str>` inside), validated where they enter.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

macro_rules! str_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Wraps a string that the caller has already validated.
            pub fn new(s: impl Into<Arc<str>>) -> Self {
                Self(s.into())
            }
            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

str_id!(
    /// An application's id (the `{id}` of `/apps/{id}/...`).
    AppId
);
impl AppId {
    /// The id's shared string, for a metrics label without copying it.
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

str_id!(
    /// A user id: from presence `channel_data`, `pusher:signin` or a bus token's `sub`.
    UserId
);
str_id!(
    /// A channel (Pusher) or room (bus) name. Validated by [`ChannelName::parse`].
    ChannelName
);

/// Longest channel or event name accepted (the official SDKs validate 200).
pub const MAX_NAME_LEN: usize = 200;
/// Longest user id accepted (Pusher: 128).
pub const MAX_USER_ID_LEN: usize = 128;
/// Prefix of the channel that carries send-to-user events.
pub const SERVER_TO_USER_PREFIX: &str = "#server-to-user-";

/// Why a string is not a user id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a user id is 1 to {MAX_USER_ID_LEN} bytes without control characters or '/'")]
pub struct InvalidUserId;

impl UserId {
    /// Validates a user id wherever one arrives (sign-in, presence `channel_data`, a bus
    /// token's `sub`, watchlists, API paths and bodies, ingest rows): 1 to
    /// [`MAX_USER_ID_LEN`] bytes, no control characters (NUL included), no `/` (ids travel
    /// in URL paths and store keys, where `../..` must not mean anything).
    pub fn parse(s: &str) -> Result<Self, InvalidUserId> {
        let ok = !s.is_empty()
            && s.len() <= MAX_USER_ID_LEN
            && !s.chars().any(|c| c.is_control() || c == '/');
        ok.then(|| Self::new(s)).ok_or(InvalidUserId)
    }
}

/// What a channel name's prefix makes it. Prefixes are matched with their hyphen,
/// so `privatefoo` is public (Reverb's `startsWith('private')` bug).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelKind {
    /// No auth, no client events.
    Public,
    /// `private-`: HMAC auth of `socket_id:channel`.
    Private,
    /// `private-encrypted-`: private, payloads end-to-end encrypted by the clients.
    PrivateEncrypted,
    /// `presence-`: auth over `channel_data`, membership by user id.
    Presence,
    /// `#server-to-user-{id}`: only the signed-in user `{id}` may subscribe.
    ServerToUser,
}

impl ChannelKind {
    /// Whether subscribing needs an `auth` signature.
    pub fn needs_auth(self) -> bool {
        matches!(
            self,
            Self::Private | Self::PrivateEncrypted | Self::Presence
        )
    }
}

/// Why a name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    /// Empty name.
    #[error("name is empty")]
    Empty,
    /// Over [`MAX_NAME_LEN`] bytes.
    #[error("name is longer than {MAX_NAME_LEN} characters")]
    TooLong,
    /// A character outside `[A-Za-z0-9_\-=@,.;]`.
    #[error("name contains a character outside [A-Za-z0-9_-=@,.;]")]
    BadChar,
}

fn valid_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'=' | b'@' | b',' | b'.' | b';')
}

/// Checks an event or channel name against Pusher's rules.
pub fn check_name(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    if !s.bytes().all(valid_name_char) {
        return Err(NameError::BadChar);
    }
    Ok(())
}

/// Checks an event name: Pusher limits event names by length only (Laravel sends class
/// names such as `App\Events\OrderShipped`); the character rule is for channel names.
pub fn check_event_name(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    Ok(())
}

impl ChannelName {
    /// Validates a channel name: Pusher's character set and length, or the reserved
    /// `#server-to-user-{id}` form, whose `{id}` is also a user id (at most
    /// [`MAX_USER_ID_LEN`] bytes): the API and ingest send to that user.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if let Some(user) = s.strip_prefix(SERVER_TO_USER_PREFIX) {
            if user.is_empty() {
                return Err(NameError::Empty);
            }
            if s.len() > MAX_NAME_LEN || user.len() > MAX_USER_ID_LEN {
                return Err(NameError::TooLong);
            }
            if !user.bytes().all(valid_name_char) {
                return Err(NameError::BadChar);
            }
            return Ok(Self::new(s));
        }
        check_name(s)?;
        Ok(Self::new(s))
    }

    /// The channel's kind, from its prefix.
    pub fn kind(&self) -> ChannelKind {
        let s = self.as_str();
        if s.starts_with(SERVER_TO_USER_PREFIX) {
            ChannelKind::ServerToUser
        } else if s.starts_with("private-encrypted-") {
            ChannelKind::PrivateEncrypted
        } else if s.starts_with("private-") {
            ChannelKind::Private
        } else if s.starts_with("presence-") {
            ChannelKind::Presence
        } else {
            ChannelKind::Public
        }
    }

    /// Whether this is a cache channel (`cache-`, `private-cache-`,
    /// `private-encrypted-cache-`, `presence-cache-`): its last event is kept for new
    /// subscribers.
    pub fn is_cache(&self) -> bool {
        let s = self.as_str();
        [
            "cache-",
            "private-cache-",
            "private-encrypted-cache-",
            "presence-cache-",
        ]
        .iter()
        .any(|p| s.starts_with(p))
    }

    /// For `#server-to-user-{id}`, the user id.
    pub fn server_to_user(&self) -> Option<&str> {
        self.as_str().strip_prefix(SERVER_TO_USER_PREFIX)
    }
}

/// A connection's id, `"{node}.{seq}"`: the official server SDKs reject anything not
/// matching `^\d+\.\d+$`, so it must stay numeric.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId {
    node: u32,
    seq: u64,
}

impl SocketId {
    /// A fresh id for this process: a random node part and a process-wide counter, so ids
    /// are unique across nodes with overwhelming probability and never repeat on one node.
    pub fn next(node: u32) -> Self {
        static SEQ: AtomicU64 = AtomicU64::new(1);
        Self {
            node,
            seq: SEQ.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Parses `"{digits}.{digits}"`.
    pub fn parse(s: &str) -> Option<Self> {
        let (a, b) = s.split_once('.')?;
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit());
        if !digits(a) || !digits(b) {
            return None;
        }
        Some(Self {
            node: a.parse().ok()?,
            seq: b.parse().ok()?,
        })
    }
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.node, self.seq)
    }
}
impl serde::Serialize for SocketId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SocketId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).ok_or_else(|| serde::de::Error::custom("invalid socket id"))
    }
}

impl fmt::Debug for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SocketId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_kinds_match_prefix_with_hyphen() {
        let k = |s: &str| ChannelName::parse(s).unwrap().kind();
        assert_eq!(k("privatefoo"), ChannelKind::Public);
        assert_eq!(k("private-foo"), ChannelKind::Private);
        assert_eq!(k("private-encrypted-foo"), ChannelKind::PrivateEncrypted);
        assert_eq!(k("presence-foo"), ChannelKind::Presence);
        assert_eq!(k("#server-to-user-42"), ChannelKind::ServerToUser);
    }

    #[test]
    fn user_ids_are_validated() {
        for ok in [
            "1",
            "alice",
            "a@b.c",
            "ünïcode",
            "..",
            &"x".repeat(MAX_USER_ID_LEN),
        ] {
            assert!(UserId::parse(ok).is_ok(), "{ok:?}");
        }
        let long = "x".repeat(MAX_USER_ID_LEN + 1);
        for bad in [
            "",
            "../..",
            "a/b",
            "nul\0",
            "tab\t",
            "\u{7f}",
            long.as_str(),
        ] {
            assert_eq!(UserId::parse(bad), Err(InvalidUserId), "{bad:?}");
        }
    }

    #[test]
    fn names_are_validated() {
        assert_eq!(ChannelName::parse(""), Err(NameError::Empty));
        assert_eq!(ChannelName::parse("a b"), Err(NameError::BadChar));
        assert_eq!(ChannelName::parse("#other"), Err(NameError::BadChar));
        assert_eq!(
            ChannelName::parse(&"a".repeat(201)),
            Err(NameError::TooLong)
        );
        assert!(ChannelName::parse("a-Z_0=@,.;").is_ok());
    }

    #[test]
    fn server_to_user_ids_follow_the_user_id_rule() {
        // Found by tests/fuzz.rs: ids of 129 to 184 bytes were taken, and the API and
        // ingest published to them as users.
        let name = |n: usize| format!("{SERVER_TO_USER_PREFIX}{}", "a".repeat(n));
        assert!(ChannelName::parse(&name(MAX_USER_ID_LEN)).is_ok());
        assert_eq!(
            ChannelName::parse(&name(MAX_USER_ID_LEN + 1)),
            Err(NameError::TooLong)
        );
        assert_eq!(
            ChannelName::parse(&name(MAX_NAME_LEN - SERVER_TO_USER_PREFIX.len())),
            Err(NameError::TooLong)
        );
    }

    #[test]
    fn event_names_allow_class_names() {
        assert!(check_event_name("App\\Events\\OrderShipped").is_ok());
        assert_eq!(check_event_name(""), Err(NameError::Empty));
        assert_eq!(check_event_name(&"e".repeat(201)), Err(NameError::TooLong));
    }

    #[test]
    fn socket_ids_round_trip() {
        let id = SocketId::next(1234);
        assert_eq!(SocketId::parse(&id.to_string()), Some(id));
        assert_eq!(SocketId::parse("12.x"), None);
        assert_eq!(SocketId::parse("12."), None);
        assert_eq!(SocketId::parse("a.1"), None);
    }
}
