//! What publishers send, validated once for every way in: the signed HTTP API, the bus API
//! and rows of the PostgreSQL outbox. Each caller maps [`InputError`] to its own answer
//! (an HTTP status, or the row's `error` column).

use std::sync::Arc;

use serde::Deserialize;

use crate::event::{json_string, EventKind, Priority};
use crate::ids::{self, ChannelName, UserId};

/// Characters of a direct message's content kept in its preview.
pub const PREVIEW_CHARS: usize = 100;
/// Longest action type.
const MAX_ACTION_TYPE: usize = 32;

/// Why publisher input is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// The body is not the JSON the call takes.
    #[error("Invalid JSON body: {0}")]
    Body(String),
    /// Not a valid event name.
    #[error("Invalid event name {0}")]
    EventName(String),
    /// Not a valid channel name.
    #[error("Invalid channel name {0}")]
    Channel(String),
    /// Not a valid user id.
    #[error("Invalid user id {0}")]
    User(String),
    /// Over the app's `max_event_bytes`.
    #[error("Event data is {size} bytes; the limit is {limit}")]
    TooLarge {
        /// Bytes.
        size: usize,
        /// The app's limit.
        limit: usize,
    },
    /// A field of the event is missing or wrong.
    #[error("{0}")]
    Data(String),
}

/// At most 64 characters of `s`, for error messages.
pub fn excerpt(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Parses a JSON request body.
pub fn json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, InputError> {
    serde_json::from_slice(body).map_err(|e| InputError::Body(e.to_string()))
}

/// An application event name: Pusher's rules, and not in the `pusher:` namespaces.
pub fn event_name(name: &str) -> Result<(), InputError> {
    ids::check_event_name(name)
        .map_err(|e| InputError::EventName(format!("{:?}: {e}", excerpt(name))))?;
    if name.starts_with("pusher:") || name.starts_with("pusher_internal:") {
        return Err(InputError::EventName(format!(
            "{:?}: names starting with pusher: are reserved",
            excerpt(name)
        )));
    }
    Ok(())
}

/// A channel name.
pub fn channel(name: &str) -> Result<ChannelName, InputError> {
    ChannelName::parse(name).map_err(|e| InputError::Channel(format!("{:?}: {e}", excerpt(name))))
}

/// A user id.
pub fn user(id: &str) -> Result<UserId, InputError> {
    UserId::parse(id).map_err(|e| InputError::User(format!("{:?}: {e}", excerpt(id))))
}

/// Pusher's `data`, from its JSON text: a JSON string passes through as sent; any other
/// JSON value is sent as the string of its JSON text. Bounded by `limit` bytes of data.
pub fn pusher_data(raw: &str, limit: usize) -> Result<Arc<str>, InputError> {
    let (data, len) = if raw.starts_with('"') {
        let s: String = serde_json::from_str(raw).map_err(|e| InputError::Data(e.to_string()))?;
        (Arc::<str>::from(raw), s.len())
    } else {
        (json_string(raw), raw.len())
    };
    if len > limit {
        return Err(InputError::TooLarge { size: len, limit });
    }
    Ok(data)
}

/// An application event `name` with Pusher `data` (its JSON text), as one channel or user
/// event.
pub fn pusher_message(name: &str, raw_data: &str, limit: usize) -> Result<EventKind, InputError> {
    event_name(name)?;
    Ok(EventKind::Message {
        name: name.into(),
        data: pusher_data(raw_data, limit)?,
        user_id: None,
        tags: None,
    })
}

/// The envelope's priority from its name (`None`: normal).
pub fn priority(name: Option<&str>) -> Result<Priority, InputError> {
    match name {
        None | Some("normal") => Ok(Priority::Normal),
        Some("low") => Ok(Priority::Low),
        Some("high") => Ok(Priority::High),
        Some(_) => Err(InputError::Data(
            "priority must be low, normal or high".into(),
        )),
    }
}

/// A bus notification.
pub fn notification(
    notification_type: String,
    from: Option<String>,
    message: String,
    action_url: Option<String>,
) -> EventKind {
    EventKind::Notification {
        notification_type: notification_type.into(),
        from: from.map(Into::into),
        message: message.into(),
        action_url: action_url.map(Into::into),
    }
}

/// A bus direct-message notification: the first [`PREVIEW_CHARS`] characters of `content`.
pub fn direct_message(
    message_id: String,
    sender: String,
    content: &str,
    conversation_id: Option<String>,
) -> EventKind {
    let preview: String = content.chars().take(PREVIEW_CHARS).collect();
    EventKind::DirectMessage {
        message_id: message_id.into(),
        sender: sender.into(),
        preview: preview.into(),
        conversation_id: conversation_id.map(Into::into),
    }
}

/// A bus action; `source` is `local` (the default) or `federated`; `content` is JSON text.
pub fn action(
    action_type: &str,
    action_id: String,
    issuer: String,
    content: Option<&str>,
    source: Option<&str>,
) -> Result<EventKind, InputError> {
    let source = source.unwrap_or("local");
    if source != "local" && source != "federated" {
        return Err(InputError::Data(format!(
            "source must be local or federated, not {:?}",
            excerpt(source)
        )));
    }
    if action_type.is_empty() || action_type.len() > MAX_ACTION_TYPE {
        return Err(InputError::Data("Invalid action_type".into()));
    }
    Ok(EventKind::Action {
        action_type: action_type.into(),
        action_id: action_id.into(),
        issuer: issuer.into(),
        content: content.unwrap_or("null").into(),
        source: source.into(),
    })
}

/// A bus event's size (its JSON) within the app's `max_event_bytes`.
pub fn bus_size(kind: &EventKind, limit: usize) -> Result<(), InputError> {
    let size = serde_json::to_string(kind).map_or(0, |s| s.len());
    if size > limit {
        return Err(InputError::TooLarge { size, limit });
    }
    Ok(())
}
