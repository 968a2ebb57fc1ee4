//! Server messages of the bus protocol, encoded.

use super::*;

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
    s.push_str(&format!(r#","timestamp":{}}}"#, crate::clock::now_secs()));
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
            if crate::clock::now_ms().saturating_sub(*sent_at_ms) > TYPING_TTL_MS {
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
