//! The inter-node envelope: what a node publishes on Redis pub/sub for every node (itself
//! included) to deliver.
//!
//! `v1\n{history id}\n{event json}`: a version line, the event's history id (empty when the
//! event keeps no history) and the event. The version lets a rolling upgrade change the
//! format: a node that receives a version it does not know drops the message (logged and
//! counted in `switchboard_node_envelopes_dropped_total{reason="unknown_version"}`) instead
//! of misreading it. Envelopes without a version line are the format of nodes released
//! before the version existed (`{id}\n{json}`, "v0") and are still read, so old and new
//! nodes can share a Redis during an upgrade.
//!
//! The id is not inside the JSON because Redis assigns it (`XADD`) in the same script that
//! publishes; the script writes [`HEADER`], the id and the encoded event.

use crate::event::Event;

/// The version this node writes.
pub const VERSION: u32 = 1;

/// The version line this node writes, newline included.
pub const HEADER: &str = "v1\n";

/// Why an envelope was dropped.
#[derive(Debug, PartialEq, Eq)]
pub enum EnvelopeError {
    /// A version this node does not read (a newer node's, or garbage after a `v`).
    UnknownVersion(String),
    /// The version is known but the contents are not.
    Malformed(String),
}

impl EnvelopeError {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnknownVersion(_) => "unknown_version",
            Self::Malformed(_) => "malformed",
        }
    }
}

impl std::fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownVersion(v) => write!(f, "unknown envelope version {v:?}"),
            Self::Malformed(e) => write!(f, "malformed envelope: {e}"),
        }
    }
}

/// Encodes an envelope as [`HEADER`] `{id}\n{json}`; the Redis script does the same.
pub fn encode(id: Option<&str>, event_json: &[u8]) -> Vec<u8> {
    let id = id.unwrap_or("");
    let mut out = Vec::with_capacity(HEADER.len() + id.len() + 1 + event_json.len());
    out.extend_from_slice(HEADER.as_bytes());
    out.extend_from_slice(id.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(event_json);
    out
}

/// Decodes an envelope of any version this node reads; the event carries its history id.
pub fn decode(raw: &[u8]) -> Result<Event, EnvelopeError> {
    let body = match raw.strip_prefix(b"v") {
        Some(rest) => {
            let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
            let version = &rest[..end.min(16)];
            if version != b"1" {
                return Err(EnvelopeError::UnknownVersion(
                    String::from_utf8_lossy(version).into_owned(),
                ));
            }
            rest.get(end + 1..).unwrap_or_default()
        }
        // v0: history ids are digits and '-', so a leading 'v' is never one.
        None => raw,
    };
    let split = body
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| EnvelopeError::Malformed("no id line".into()))?;
    let (id, json) = (&body[..split], &body[split + 1..]);
    let id = std::str::from_utf8(id).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    let mut event: Event =
        serde_json::from_slice(json).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    if !id.is_empty() {
        event.meta.id = Some(id.into());
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json() -> Vec<u8> {
        let ch = crate::ids::ChannelName::parse("c").unwrap();
        let e = Event::message(crate::ids::AppId::new("a"), ch, "e", "\"x\"".into());
        serde_json::to_vec(&e).unwrap()
    }

    #[test]
    fn versions_side_by_side() {
        let sample: Event = serde_json::from_slice(&json()).unwrap();
        let v1 = decode(&encode(Some("1-2"), &json())).unwrap();
        assert_eq!(v1.meta.id.as_deref(), Some("1-2"));
        assert_eq!(v1.app, sample.app);
        let mut v0 = b"3-4\n".to_vec();
        v0.extend(json());
        assert_eq!(decode(&v0).unwrap().meta.id.as_deref(), Some("3-4"));
        let no_id = decode(&encode(None, &json())).unwrap();
        assert_eq!(no_id.meta.id, None);
        let mut v2 = b"v2\n1-2\n".to_vec();
        v2.extend(json());
        assert_eq!(decode(&v2), Err(EnvelopeError::UnknownVersion("2".into())));
        assert!(matches!(
            decode(b"v1\n1-2\nnot json"),
            Err(EnvelopeError::Malformed(_))
        ));
        assert!(matches!(decode(b"v1"), Err(EnvelopeError::Malformed(_))));
    }
}
