//! Server messages of the pusher protocol, encoded.

use std::sync::OnceLock;

use super::*;

static PING: OnceLock<Frame> = OnceLock::new();
static PONG: OnceLock<Frame> = OnceLock::new();
static DELTA_ENABLED: OnceLock<Frame> = OnceLock::new();

/// A constant message, framed once per process and shared from then on (heartbeats go to
/// every connection).
fn constant(cell: &'static OnceLock<Frame>, text: &str) -> Frame {
    cell.get_or_init(|| Frame::new(text)).clone()
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
    constant(&PING, r#"{"event":"pusher:ping","data":{}}"#)
}

/// `pusher:pong`.
pub fn pong() -> Frame {
    constant(&PONG, r#"{"event":"pusher:pong","data":{}}"#)
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
/// `limit`: the subscription was authorized but a limit refused it (`LimitReached`, as
/// soketi sends it), else `AuthError`.
pub fn subscription_error(channel: &str, limit: bool, status: u16, message: &str) -> Frame {
    let mut s = String::from(r#"{"event":"pusher:subscription_error","channel":"#);
    push_json_str(&mut s, channel);
    let ty = if limit { "LimitReached" } else { "AuthError" };
    s.push_str(&format!(r#","data":{{"type":"{ty}","error":"#));
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
    constant(
        &DELTA_ENABLED,
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
            let (name, body) = crate::protocol::bus::user_event_body(&event.kind)?;
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
