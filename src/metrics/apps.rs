//! The series kept per app: connections (by protocol and transport) and messages, on
//! handles made once when the app is loaded.

use std::collections::HashMap;

use metrics::{counter, gauge, Counter, Gauge, Label, SharedString};

use super::{check, PROTOCOLS, TRANSPORTS};
use crate::ids::AppId;

/// One app's connection and message series, made once when the app is loaded (after
/// [`install`](super::install)), so a connection or a message counts on a handle instead of building a
/// labelled key (and an app id string) each time. Also registers them at zero: the
/// connection series with every transport, for each protocol.
#[derive(Clone, Debug)]
pub struct AppMetrics([PerProtocol; 2]);

#[derive(Clone, Debug)]
struct PerProtocol {
    /// Indexed like [`TRANSPORTS`].
    connections: [Connections; 3],
    messages_in: Counter,
}

#[derive(Clone, Debug)]
struct Connections {
    open: Gauge,
    opened: Counter,
}

impl AppMetrics {
    /// The series of app `app`.
    pub fn new(app: &AppId) -> Self {
        let app = SharedString::from(app.shared());
        Self(PROTOCOLS.map(|p| {
            // `protocol`, `app` as before; `transport` last, so the series keep their prefix.
            let labels = |t: &'static str| {
                [
                    Label::new("protocol", p),
                    Label::new("app", app.clone()),
                    Label::new("transport", t),
                ]
            };
            PerProtocol {
                connections: TRANSPORTS.map(|t| Connections {
                    open: gauge!("switchboard_connections", labels(t).iter()),
                    opened: counter!("switchboard_connections_total", labels(t).iter()),
                }),
                messages_in: counter!("switchboard_messages_in_total", "protocol" => p, "app" => app.clone()),
            }
        }))
    }

    fn of(&self, protocol: &'static str) -> &PerProtocol {
        check("switchboard_messages_in_total", protocol);
        &self.0[usize::from(protocol == PROTOCOLS[1])]
    }

    fn connections(&self, protocol: &'static str, transport: &'static str) -> &Connections {
        check("switchboard_connections", protocol);
        check("switchboard_connections", transport);
        let t = TRANSPORTS.iter().position(|t| *t == transport).unwrap_or(0);
        &self.of(protocol).connections[t]
    }
}

/// `switchboard_messages_out_total` of each app, for the hub's deliveries.
#[derive(Default)]
pub struct MessagesOut(HashMap<AppId, Counter>);

impl MessagesOut {
    /// The series of each of `apps` (registered at zero).
    pub fn new<'a>(apps: impl IntoIterator<Item = &'a AppId>) -> Self {
        let counter = |a: &AppId| counter!("switchboard_messages_out_total", "app" => a.shared());
        Self(apps.into_iter().map(|a| (a.clone(), counter(a))).collect())
    }

    /// `n` frames of an event of `app` were queued to connections.
    pub fn add(&self, app: &AppId, n: usize) {
        if n == 0 {
            return;
        }
        match self.0.get(app) {
            Some(c) => c.increment(n as u64),
            // Not an app of this node's configuration: an event from another node.
            None => counter!("switchboard_messages_out_total", "app" => app.shared())
                .increment(n as u64),
        }
    }
}

/// A connection of `app` was accepted (`protocol`: `pusher` | `bus`; `transport`: `ws` |
/// `sse` | `xhr`).
pub fn connection_opened(app: &AppMetrics, protocol: &'static str, transport: &'static str) {
    let m = app.connections(protocol, transport);
    m.opened.increment(1);
    m.open.increment(1.0);
}

/// A connection of `app` ended.
pub fn connection_closed(app: &AppMetrics, protocol: &'static str, transport: &'static str) {
    app.connections(protocol, transport).open.decrement(1.0);
}

/// A message was received from a client of `app`.
pub fn message_in(app: &AppMetrics, protocol: &'static str) {
    app.of(protocol).messages_in.increment(1);
}
