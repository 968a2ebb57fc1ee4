//! What an event means for a push: its type (eligible or not), its text and deep link, and
//! whether a user's preferences allow it. Pure functions; the worker does the waiting.
//!
//! Mapping of events to push types:
//! - `action` events: `action_type` as it is (`MSG`, `CONN`, `FSHR`, `CMNT`, `FLLW`, `REACT`);
//! - direct `message` events: `MSG`;
//! - `notification` events by `notification_type`: `message`/`direct_message` → `MSG`,
//!   `connection_request` → `CONN`, `file_share` → `FSHR`, `comment` → `CMNT`, `follow` →
//!   `FLLW`, `reaction` → `REACT`; any other type is not eligible.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::{Event, EventKind};

/// An eligible push type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A direct message.
    Msg,
    /// A connection request.
    Conn,
    /// A file share.
    Fshr,
    /// A comment on the user's content.
    Cmnt,
    /// A follow.
    Fllw,
    /// A reaction: grouped, never pushed one by one.
    React,
}

impl Kind {
    /// Every kind, for validating preferences.
    pub const ALL: [Kind; 6] = [
        Kind::Msg,
        Kind::Conn,
        Kind::Fshr,
        Kind::Cmnt,
        Kind::Fllw,
        Kind::React,
    ];

    /// The action type code.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Msg => "MSG",
            Kind::Conn => "CONN",
            Kind::Fshr => "FSHR",
            Kind::Cmnt => "CMNT",
            Kind::Fllw => "FLLW",
            Kind::React => "REACT",
        }
    }

    /// A person is waiting on it (a message, a connection request): sent with high
    /// urgency/priority by the providers that have one.
    pub fn is_urgent(self) -> bool {
        matches!(self, Kind::Msg | Kind::Conn)
    }

    /// Parses an action type code.
    pub fn parse(s: &str) -> Option<Self> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The notification's title (the seed's "push notification" column).
    pub fn title(self) -> &'static str {
        match self {
            Kind::Msg => "Direct message",
            Kind::Conn => "Connection request",
            Kind::Fshr => "File share",
            Kind::Cmnt => "Comment",
            Kind::Fllw => "Follow",
            Kind::React => "Reaction",
        }
    }
}

/// The text of a push: the seed's table, `others` counting the other reactors of a group.
pub fn text(kind: Kind, sender: &str, others: usize) -> String {
    match kind {
        Kind::Msg => format!("{sender} sent you a message"),
        Kind::Conn => format!("{sender} wants to connect"),
        Kind::Fshr => format!("{sender} shared a file with you"),
        Kind::Cmnt => format!("{sender} commented on your post"),
        Kind::Fllw => format!("{sender} started following you"),
        Kind::React => match others {
            0 => format!("{sender} reacted to your post"),
            1 => format!("{sender} and 1 other reacted to your post"),
            n => format!("{sender} and {n} others reacted to your post"),
        },
    }
}

/// What a push says, before it is addressed to devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The push type.
    pub kind: Kind,
    /// Who caused it (user id), shown in the text.
    pub sender: Arc<str>,
    /// Where the client should take the user.
    pub link: String,
}

/// The push an event leads to, or `None` when its type is not eligible.
pub fn candidate(event: &Event, link_base: &str) -> Option<Candidate> {
    let (kind, sender, path) = match &event.kind {
        EventKind::DirectMessage {
            message_id,
            sender,
            conversation_id,
            ..
        } => {
            let path = match conversation_id {
                Some(c) => format!("/conversations/{}", segment(c)),
                None => format!("/messages/{}", segment(message_id)),
            };
            (Kind::Msg, sender.clone(), path)
        }
        EventKind::Action {
            action_type,
            action_id,
            issuer,
            ..
        } => {
            let kind = Kind::parse(action_type)?;
            let path = match kind {
                Kind::Conn | Kind::Fllw => format!("/users/{}", segment(issuer)),
                _ => format!("/actions/{}", segment(action_id)),
            };
            (kind, issuer.clone(), path)
        }
        EventKind::Notification {
            notification_type,
            from,
            message,
            action_url,
        } => {
            let kind = match &**notification_type {
                "message" | "direct_message" => Kind::Msg,
                "connection_request" => Kind::Conn,
                "file_share" => Kind::Fshr,
                "comment" => Kind::Cmnt,
                "follow" => Kind::Fllw,
                "reaction" => Kind::React,
                _ => return None,
            };
            // Without a sender the notification's own text stands in for the name.
            let sender = from.clone().unwrap_or_else(|| message.clone());
            let link = action_url.as_deref().unwrap_or("/notifications");
            if link.contains("://") {
                return Some(Candidate {
                    kind,
                    sender,
                    link: link.to_owned(),
                });
            }
            (kind, sender, link.to_owned())
        }
        _ => return None,
    };
    Some(Candidate {
        kind,
        sender,
        link: format!("{link_base}{path}"),
    })
}

/// Percent-encodes a path segment (everything but RFC 3986 unreserved characters).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A user's notification preferences: `{"enabled": true, "types": {"REACT": false}}`. Types
/// not listed are allowed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prefs {
    /// Push at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Per type (`MSG`, `CONN`, `FSHR`, `CMNT`, `FLLW`, `REACT`).
    #[serde(default)]
    pub types: BTreeMap<String, bool>,
}

fn yes() -> bool {
    true
}

impl Default for Prefs {
    fn default() -> Self {
        Self {
            enabled: true,
            types: BTreeMap::new(),
        }
    }
}

impl Prefs {
    /// Whether a push of `kind` is allowed.
    pub fn allows(&self, kind: Kind) -> bool {
        self.enabled && self.types.get(kind.as_str()).copied().unwrap_or(true)
    }

    /// Checks that every type named is a push type.
    pub fn validate(&self) -> Result<(), String> {
        match self.types.keys().find(|t| Kind::parse(t).is_none()) {
            Some(t) => Err(format!(
                "unknown type {t:?}; the types are MSG, CONN, FSHR, CMNT, FLLW, REACT"
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Meta, Target};
    use crate::ids::{AppId, UserId};

    fn event(kind: EventKind) -> Event {
        Event {
            app: AppId::new("a"),
            target: Target::User(UserId::new("alice")),
            kind,
            exclude: None,
            meta: Meta::default(),
        }
    }

    fn action(t: &str) -> Event {
        event(EventKind::Action {
            action_type: t.into(),
            action_id: "a 1".into(),
            issuer: "bob".into(),
            content: "null".into(),
            source: "local".into(),
        })
    }

    #[test]
    fn eligibility_and_text_follow_the_seed() {
        let c = candidate(&action("CMNT"), "https://x").unwrap();
        assert_eq!(c.kind, Kind::Cmnt);
        assert_eq!(c.link, "https://x/actions/a%201");
        assert_eq!(text(c.kind, &c.sender, 0), "bob commented on your post");
        assert_eq!(candidate(&action("CONN"), "").unwrap().link, "/users/bob");
        assert!(candidate(&action("POST"), "").is_none());
        assert!(candidate(&action("REPOST"), "").is_none());
        assert_eq!(
            text(Kind::React, "bob", 2),
            "bob and 2 others reacted to your post"
        );
        assert_eq!(text(Kind::Fllw, "bob", 0), "bob started following you");
        let dm = event(EventKind::DirectMessage {
            message_id: "m1".into(),
            sender: "carol".into(),
            preview: "hi".into(),
            conversation_id: Some("c9".into()),
        });
        let c = candidate(&dm, "").unwrap();
        assert_eq!((c.kind, c.link.as_str()), (Kind::Msg, "/conversations/c9"));
        let n = |t: &str| {
            event(EventKind::Notification {
                notification_type: t.into(),
                from: Some("dave".into()),
                message: "m".into(),
                action_url: Some("/requests/7".into()),
            })
        };
        let c = candidate(&n("connection_request"), "").unwrap();
        assert_eq!((c.kind, c.link.as_str()), (Kind::Conn, "/requests/7"));
        assert!(candidate(&n("order_status"), "").is_none());
    }

    #[test]
    fn preferences_allow_by_type() {
        let p: Prefs = serde_json::from_str(r#"{"types":{"REACT":false}}"#).unwrap();
        assert!(p.allows(Kind::Msg) && !p.allows(Kind::React));
        let off: Prefs = serde_json::from_str(r#"{"enabled":false}"#).unwrap();
        assert!(!off.allows(Kind::Msg));
        let bad: Prefs = serde_json::from_str(r#"{"types":{"POST":true}}"#).unwrap();
        assert!(bad.validate().is_err());
    }
}
