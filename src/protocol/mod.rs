//! Wire formats. Every type that appears on a socket lives here and nowhere else; the rest
//! of the server speaks [`Event`](crate::event::Event) and the commands decoded here.

pub mod bus;
pub mod node;
pub mod pusher;

pub use crate::frame::{CloseReason, Frame};

/// Appends `s` to `buf` as a JSON string literal.
pub(crate) fn push_json_str(buf: &mut String, s: &str) {
    // serde_json's escaping is the reference; writing into a String through it cannot fail.
    buf.push_str(&serde_json::to_string(s).expect("strings serialize"));
}
