//! One outbox row → one [`Event`], validated as the HTTP APIs validate it (by
//! `publish::input`), or the reason it is refused.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::apps::App;
use crate::event::{Event, EventKind, Meta, Target};
use crate::ids::{UserId, MAX_USER_ID_LEN};
use crate::publish::input::{self, InputError};

/// A row as read from `switchboard.outbox`.
#[derive(Debug, Clone)]
pub(super) struct OutboxRow {
    pub id: i64,
    pub app_id: String,
    pub channel: Option<String>,
    pub user_id: Option<String>,
    pub event: String,
    /// The JSON text of `data`; `None` when it was too large to read.
    pub data: Option<String>,
    /// Bytes of `data`'s JSON text.
    pub data_len: i64,
    /// Envelope: `low`, `normal` or `high` (`None`: normal).
    pub priority: Option<String>,
    /// Envelope: seconds (`None`: the defaults).
    pub ttl: Option<i32>,
}

/// Why a row is refused. The `Display` text is what the row's `error` column gets; it
/// starts with [`Reject::reason`], the metric label.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(super) enum Reject {
    /// No app with this id.
    #[error("unknown_app: no app with id {0:?}")]
    UnknownApp(String),
    /// The app is disabled.
    #[error("app_disabled: app {0:?} is disabled")]
    AppDisabled(String),
    /// Neither or both of `channel` and `user_id`.
    #[error("invalid_target: exactly one of channel and user_id must be set")]
    Target,
    /// `channel` is not a valid channel name.
    #[error("invalid_channel: {0}")]
    Channel(String),
    /// `user_id` is empty or too long.
    #[error("invalid_user: user_id must be 1 to {MAX_USER_ID_LEN} bytes without control characters or '/'")]
    User,
    /// `event` is not a valid event name.
    #[error("invalid_event: {0}")]
    Event(String),
    /// Over the app's `max_event_bytes`.
    #[error("too_large: event data is {size} bytes; the limit is {limit}")]
    TooLarge {
        /// Bytes.
        size: i64,
        /// The app's limit.
        limit: usize,
    },
    /// `data` lacks a field the event type needs, or has the wrong type.
    #[error("invalid_data: {0}")]
    Data(String),
    /// `priority` or `ttl` is not valid.
    #[error("invalid_envelope: {0}")]
    Envelope(&'static str),
}

impl From<InputError> for Reject {
    fn from(e: InputError) -> Self {
        match e {
            InputError::EventName(m) => Self::Event(m),
            InputError::Channel(m) => Self::Channel(m),
            InputError::User(_) => Self::User,
            InputError::TooLarge { size, limit } => Self::TooLarge {
                size: size as i64,
                limit,
            },
            InputError::Body(m) | InputError::Data(m) => Self::Data(m),
        }
    }
}

impl Reject {
    /// The metric label: a fixed set.
    pub(super) fn reason(&self) -> &'static str {
        match self {
            Self::UnknownApp(_) => "unknown_app",
            Self::AppDisabled(_) => "app_disabled",
            Self::Target => "invalid_target",
            Self::Channel(_) => "invalid_channel",
            Self::User => "invalid_user",
            Self::Event(_) => "invalid_event",
            Self::TooLarge { .. } => "too_large",
            Self::Data(_) => "invalid_data",
            Self::Envelope(_) => "invalid_envelope",
        }
    }
}

/// The event for `row` of `app` (already looked up by `row.app_id`).
pub(super) fn to_event(app: &App, row: &OutboxRow) -> Result<Event, Reject> {
    if !app.enabled {
        return Err(Reject::AppDisabled(row.app_id.clone()));
    }
    let limit = app.limits.max_event_bytes;
    let data = row.data.as_deref().ok_or(Reject::TooLarge {
        size: row.data_len,
        limit,
    })?;
    let (target, kind) = match (row.channel.as_deref(), row.user_id.as_deref()) {
        (Some(ch), None) => {
            let name = input::channel(ch)?;
            let kind = input::pusher_message(&row.event, data, limit)?;
            // `#server-to-user-{id}` is send-to-user, as in the HTTP API.
            let target = match name.server_to_user() {
                Some(user) => Target::User(UserId::new(user)),
                None => Target::Channel(name),
            };
            (target, kind)
        }
        (None, Some(user)) => {
            let user = input::user(user)?;
            let kind = match row.event.as_str() {
                "notification" | "message" | "action" => {
                    let kind = bus_kind(&row.event, data)?;
                    input::bus_size(&kind, limit)?;
                    kind
                }
                name => input::pusher_message(name, data, limit)?,
            };
            (Target::User(user), kind)
        }
        _ => return Err(Reject::Target),
    };
    Ok(Event {
        app: app.id.clone(),
        target,
        kind,
        exclude: None,
        meta: envelope(row)?,
    })
}

fn envelope(row: &OutboxRow) -> Result<Meta, Reject> {
    let priority = input::priority(row.priority.as_deref())
        .map_err(|_| Reject::Envelope("priority must be low, normal or high"))?;
    let ttl = match row.ttl {
        None => None,
        Some(t) if t > 0 => Some(t as u32),
        Some(_) => return Err(Reject::Envelope("ttl must be a positive number of seconds")),
    };
    Ok(Meta {
        priority,
        ttl,
        ..Meta::default()
    })
}

#[derive(Deserialize)]
struct Notification {
    notification_type: String,
    message: String,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    action_url: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    message_id: String,
    sender: String,
    content: String,
    #[serde(default)]
    conversation_id: Option<String>,
}

#[derive(Deserialize)]
struct Action<'a> {
    action_type: String,
    action_id: String,
    issuer: String,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(default)]
    source: Option<String>,
}

/// A bus user event (`notification`, `message`, `action`) from the fields of `data`, as
/// the bus API builds it from its request body.
fn bus_kind(event: &str, data: &str) -> Result<EventKind, Reject> {
    let bad = |e: serde_json::Error| Reject::Data(format!("{event}: {e}"));
    Ok(match event {
        "notification" => {
            let n: Notification = serde_json::from_str(data).map_err(bad)?;
            input::notification(n.notification_type, n.from, n.message, n.action_url)
        }
        "message" => {
            let m: Message = serde_json::from_str(data).map_err(bad)?;
            input::direct_message(m.message_id, m.sender, &m.content, m.conversation_id)
        }
        _ => {
            let a: Action<'_> = serde_json::from_str(data).map_err(bad)?;
            let content = a.content.map(|c| c.get());
            input::action(
                &a.action_type,
                a.action_id,
                a.issuer,
                content,
                a.source.as_deref(),
            )
            .map_err(|e| Reject::Data(format!("action: {e}")))?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AppConfig;
    use crate::event::Priority;
    use crate::ids::ChannelName;

    fn app() -> App {
        App::from_config(&AppConfig::default())
    }

    fn row(channel: Option<&str>, user: Option<&str>, event: &str, data: &str) -> OutboxRow {
        OutboxRow {
            id: 1,
            app_id: "app-id".into(),
            channel: channel.map(Into::into),
            user_id: user.map(Into::into),
            event: event.into(),
            data: Some(data.into()),
            data_len: data.len() as i64,
            priority: None,
            ttl: None,
        }
    }

    #[test]
    fn priority_and_ttl_columns_make_the_envelope() {
        let mut r = row(Some("orders"), None, "shipped", "{}");
        (r.priority, r.ttl) = (Some("high".into()), Some(60));
        let e = to_event(&app(), &r).unwrap();
        assert_eq!((e.meta.priority, e.meta.ttl), (Priority::High, Some(60)));
        (r.priority, r.ttl) = (Some("urgent".into()), None);
        assert_eq!(
            to_event(&app(), &r).unwrap_err().reason(),
            "invalid_envelope"
        );
        (r.priority, r.ttl) = (None, Some(0));
        assert_eq!(
            to_event(&app(), &r).unwrap_err().reason(),
            "invalid_envelope"
        );
    }

    #[test]
    fn channel_rows_carry_pusher_data() {
        let e = to_event(&app(), &row(Some("orders"), None, "shipped", r#"{"a":1}"#)).unwrap();
        assert_eq!(e.target, Target::Channel(ChannelName::new("orders")));
        let EventKind::Message { name, data, .. } = e.kind else {
            panic!("not a message")
        };
        assert_eq!((&*name, &*data), ("shipped", r#""{\"a\":1}""#));
        let e = to_event(&app(), &row(Some("c"), None, "e", r#""as is""#)).unwrap();
        assert!(matches!(e.kind, EventKind::Message { data, .. } if &*data == r#""as is""#));
    }

    #[test]
    fn server_to_user_channel_and_user_rows_target_the_user() {
        let e = to_event(&app(), &row(Some("#server-to-user-bob"), None, "x", "1")).unwrap();
        assert_eq!(e.target, Target::User(UserId::new("bob")));
        let e = to_event(&app(), &row(None, Some("bob"), "custom", "{}")).unwrap();
        assert_eq!(e.target, Target::User(UserId::new("bob")));
        assert!(matches!(e.kind, EventKind::Message { .. }));
    }

    #[test]
    fn bus_kinds_take_their_fields_from_data() {
        let n = r#"{"notification_type":"t","message":"m","from":"carol"}"#;
        let e = to_event(&app(), &row(None, Some("bob"), "notification", n)).unwrap();
        assert!(matches!(e.kind, EventKind::Notification { from: Some(f), .. } if &*f == "carol"));
        let long = "x".repeat(150);
        let m = format!(r#"{{"message_id":"m1","sender":"al","content":"{long}"}}"#);
        let e = to_event(&app(), &row(None, Some("bob"), "message", &m)).unwrap();
        assert!(matches!(e.kind, EventKind::DirectMessage { preview, .. } if preview.len() == 100));
        let a = r#"{"action_type":"POST","action_id":"a1","issuer":"al","content":{"k":[1]}}"#;
        let e = to_event(&app(), &row(None, Some("bob"), "action", a)).unwrap();
        assert!(matches!(e.kind, EventKind::Action { content, source, .. }
            if &*content == r#"{"k":[1]}"# && &*source == "local"));
    }

    #[test]
    fn bad_rows_have_reasons() {
        let reason = |r: OutboxRow| to_event(&app(), &r).unwrap_err().reason();
        assert_eq!(reason(row(None, None, "e", "{}")), "invalid_target");
        assert_eq!(
            reason(row(Some("a"), Some("b"), "e", "{}")),
            "invalid_target"
        );
        assert_eq!(
            reason(row(Some("bad name!"), None, "e", "{}")),
            "invalid_channel"
        );
        assert_eq!(reason(row(None, Some(""), "e", "{}")), "invalid_user");
        assert_eq!(reason(row(Some("c"), None, "", "{}")), "invalid_event");
        assert_eq!(
            reason(row(Some("c"), None, "pusher:x", "{}")),
            "invalid_event"
        );
        assert_eq!(
            reason(row(None, Some("u"), "notification", "{}")),
            "invalid_data"
        );
        let big = format!("\"{}\"", "x".repeat(10 * 1024 + 1));
        assert_eq!(reason(row(Some("c"), None, "e", &big)), "too_large");
        let mut unread = row(Some("c"), None, "e", "{}");
        unread.data = None;
        assert_eq!(reason(unread), "too_large");
        let mut off = app();
        off.enabled = false;
        let err = to_event(&off, &row(Some("c"), None, "e", "{}")).unwrap_err();
        assert_eq!(err.reason(), "app_disabled");
        assert!(err.to_string().starts_with("app_disabled: "));
    }
}
