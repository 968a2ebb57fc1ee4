//! Every metric the server exports, in one place. Labels are bounded sets (never channel
//! names or client-supplied values; `app` only for an app of the configuration, once it was
//! looked up), so the series count stays fixed.
//!
//! [`SERIES`] is the catalogue: each series' type, help text and label values.
//! [`register_all`] describes them all and registers each at zero, so a fresh node exposes
//! every series (an alert on `rate(...)` or `absent(...)` works from the first scrape).

use metrics::Label;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge};

mod apps;
mod exporter;
pub use apps::{connection_closed, connection_opened, message_in, AppMetrics, MessagesOut};
pub use exporter::{install, Exporter};

/// The `protocol` label's values, in [`AppMetrics`]' order.
const PROTOCOLS: [&str; 2] = ["pusher", "bus"];
/// The `transport` label's values (`session::transport::Transport::NAME`), in
/// [`AppMetrics`]' order: WebSocket, Server-Sent Events (the bus), pusher-js's HTTP
/// transports (`xhr_streaming`, `xhr_polling`).
const TRANSPORTS: [&str; 3] = ["ws", "sse", "xhr"];
const PUSH_PROVIDERS: &[&str] = &["webpush", "fcm", "apns", "webhook"];
const OUTCOMES: &[&str] = &["ok", "failed"];

#[rustfmt::skip]
enum Kind { Counter, Gauge, Histogram }

/// When a series is registered at zero: at start with every combination of its label
/// values (`Redis`, `Ingest`: only on a node that has it, as a 0 elsewhere would read as
/// "down"); with each app (`PerApp`: [`AppMetrics`], [`MessagesOut`]); or once it has a
/// value (`Later`: its labels are no fixed set, or a 0 would be a false signal).
#[rustfmt::skip]
enum Start { Always, PerApp, Redis, Ingest, Later }

type Labels = &'static [(&'static str, &'static [&'static str])];

/// One series of the catalogue: its type, name, registration, label values and help text.
struct Series {
    kind: Kind,
    name: &'static str,
    start: Start,
    labels: Labels,
    help: &'static str,
}

#[rustfmt::skip]
const fn s(kind: Kind, name: &'static str, start: Start, labels: Labels, help: &'static str) -> Series {
    Series { kind, name, start, labels, help }
}

use Kind::{Counter as C, Gauge as G, Histogram as H};
use Start::{Always, Ingest, Later, PerApp, Redis};

/// Every series this module exports (the process series come from `metrics-process`).
#[rustfmt::skip]
const SERIES: &[Series] = &[
    s(G, "switchboard_build_info", Later, &[("version", &[env!("CARGO_PKG_VERSION")])],
        "Always 1; the version label is the running build's version."),
    s(C, "switchboard_connections_total", PerApp, &[("protocol", &PROTOCOLS), ("transport", &TRANSPORTS)],
        "Connections accepted (handshake answered), by protocol, app id and transport."),
    s(G, "switchboard_connections", PerApp, &[("protocol", &PROTOCOLS), ("transport", &TRANSPORTS)],
        "Open connections, by protocol, app id and transport."),
    s(C, "switchboard_messages_in_total", PerApp, &[("protocol", &PROTOCOLS)],
        "Text messages received from clients, by protocol and app id."),
    s(C, "switchboard_messages_out_total", PerApp, &[],
        "Frames queued to connections by the fan-out (one per recipient), by app id."),
    s(C, "switchboard_connections_refused_total", Always, &[("limit", &["node", "app", "user", "ip"])],
        "Connections refused by a limit: node, app (quota), user, ip (per-address sockets)."),
    s(C, "switchboard_accept_errors_total", Always, &[],
        "Failed TCP accepts (typically out of file descriptors); the listener backs off."),
    s(G, "switchboard_subscriptions", Always, &[],
        "Channel (Pusher) and room (bus) subscriptions held by this node's connections."),
    s(C, "switchboard_events_published_total", Always, &[("source", &["api", "client", "internal", "ingest", "console"])],
        "Events that entered the broker, by source."),
    s(C, "switchboard_idempotent_repeats_total", Always, &[],
        "Publishes skipped because their idempotency key was already published."),
    s(C, "switchboard_slow_consumer_closes_total", Always, &[],
        "Connections closed because their outbound queue overflowed (close 4100)."),
    s(C, "switchboard_outbox_over_budget_total", Always, &[("scope", &["connection", "node"])],
        "Connections closed because their queued bytes crossed the connection's or the node's byte budget."),
    s(C, "switchboard_low_priority_dropped_total", Always, &[],
        "Low-priority frames dropped because their connection's queue was nearly full."),
    s(C, "switchboard_client_errors_total", Always,
        &[("reason", &["body_timeout", "subscription", "subscription_limit", "client_event", "client_event_rate",
            "signin", "binary", "malformed", "bad_field", "unknown_event", "bus_invalid", "bus_permission",
            "bus_rate", "admin_token"])],
        "Client messages and requests refused, by reason."),
    s(C, "switchboard_admin_changes_total", Always, &[("action", &["create", "update", "delete"])], "Apps changed through the admin API."),
    s(G, "switchboard_apps", Always, &[("source", &["config", "store"])], "Apps served, from the file or the app store."),
    s(C, "switchboard_http_requests_total", Later, &[], "HTTP API calls, by route template and status code."),
    s(H, "switchboard_http_request_seconds", Later, &[], "HTTP API call duration in seconds, by route template."),
    s(C, "switchboard_node_envelopes_dropped_total", Always, &[("reason", &["unknown_version", "malformed"])],
        "Envelopes from other nodes dropped unread, by reason."),
    s(G, "switchboard_redis_up", Redis, &[], "1 while this node's Redis link is up, else 0 (cluster mode)."),
    s(C, "switchboard_cluster_messages_received_total", Redis, &[],
        "Messages this node received from the cluster's Redis pub/sub (events and control messages): with interest routing, only for topics it has members of."),
    s(C, "switchboard_nodes_reaped_total", Always, &[], "Dead nodes reaped (their presence removed) by this node."),
    s(C, "switchboard_lease_lost_total", Always, &[],
        "Times this node found its lease gone and asked its clients to reconnect."),
    s(C, "switchboard_webhook_events_dropped_total", Always, &[("reason", &["queue_full"])],
        "Webhook events dropped before sending, by reason."),
    s(C, "switchboard_webhook_events_total", Always, &[], "Webhook events handed to a request."),
    s(C, "switchboard_webhook_requests_total", Always, &[("outcome", OUTCOMES)],
        "Webhook requests finished, by outcome (after retries)."),
    s(C, "switchboard_webhook_events_sent_total", Always, &[("outcome", OUTCOMES)],
        "Webhook events in finished requests, by the request's outcome."),
    s(C, "switchboard_webhook_retries_total", Always, &[], "Webhook requests retried."),
    s(C, "switchboard_ingest_rows_total", Always, &[], "PostgreSQL outbox rows published by the ingest."),
    s(C, "switchboard_ingest_rows_rejected_total", Always,
        &[("reason", &["unknown_app", "app_disabled", "invalid_target", "invalid_channel", "invalid_user",
            "invalid_event", "too_large", "invalid_data", "invalid_envelope", "offline_queue_full"])],
        "Outbox rows refused and marked with their error, by reason."),
    s(G, "switchboard_ingest_lag_seconds", Ingest, &[],
        "Age in seconds of the oldest outbox row at the last read (0 when drained)."),
    s(C, "switchboard_ingest_listener_reconnects_total", Always, &[],
        "Times the ingest's LISTEN connection was re-established after a failure."),
    s(G, "switchboard_ingest_leader", Ingest, &[],
        "1 while this node holds the ingest lock (is the node that ingests), else 0."),
    s(G, "switchboard_ingest_notify_ok", Later, &[],
        "1 if a NOTIFY reached the LISTEN connection, 0 if not (a transaction-pooling proxy)."),
    s(C, "switchboard_ingest_rows_deleted_total", Always, &[],
        "Processed outbox rows deleted by the retention pass."),
    s(C, "switchboard_store_busy_total", Always, &[],
        "Writes to the embedded store refused because its queue was full."),
    s(C, "switchboard_offline_events_total", Always, &[("what", &["queued", "refused", "delivered", "expired"])],
        "Offline queue events: queued, refused (queues full), delivered, expired."),
    s(C, "switchboard_offline_dropped_total", Always, &[("priority", &["low", "normal", "high"])],
        "Events evicted from a full offline queue, by priority."),
    s(C, "switchboard_push_decisions_total", Always,
        &[("outcome", &["online", "ineligible", "expired", "preference_off", "grouped", "no_device", "throttled",
            "scheduled", "store_error"])],
        "Push decisions for offered user events, by outcome."),
    s(C, "switchboard_push_dropped_total", Always, &[("reason", &["queue_full", "groups_full", "shutdown"])],
        "Events dropped before a push decision, by reason."),
    s(C, "switchboard_push_registrations_total", Always, &[("platform", &["web", "android", "ios"])],
        "Devices registered for push, by platform."),
    s(C, "switchboard_push_sends_total", Always,
        &[("provider", PUSH_PROVIDERS), ("outcome", &["ok", "gone", "rejected", "failed", "expired", "duplicate"])],
        "Pushes to one device finished, by provider and outcome."),
    s(C, "switchboard_push_retries_total", Always, &[("provider", PUSH_PROVIDERS)],
        "Pushes retried after a transient failure, by provider."),
];

/// Describes every series (`# HELP`, `# TYPE`) and registers at zero those of
/// [`Start::Always`], and of [`Start::Redis`] / [`Start::Ingest`] when the node has them;
/// sets `switchboard_build_info`. Nothing already counted is reset (a process may start
/// several servers, as the tests do).
pub fn register_all(redis: bool, ingest: bool) {
    metrics_process::Collector::default().describe();
    for s in SERIES {
        match s.kind {
            Kind::Counter => describe_counter!(s.name, s.help),
            Kind::Gauge => describe_gauge!(s.name, s.help),
            Kind::Histogram => describe_histogram!(s.name, s.help),
        }
        let now = match s.start {
            Start::Always => true,
            Start::Redis => redis,
            Start::Ingest => ingest,
            Start::PerApp | Start::Later => false,
        };
        if now {
            for labels in combinations(s.labels) {
                // Making the handle registers the series; incrementing by 0 keeps its value.
                match s.kind {
                    Kind::Counter => counter!(s.name, labels).increment(0),
                    Kind::Gauge => gauge!(s.name, labels).increment(0.0),
                    Kind::Histogram => {}
                }
            }
        }
    }
    gauge!("switchboard_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// Every combination of one value per label.
fn combinations(labels: Labels) -> Vec<Vec<Label>> {
    let mut sets = vec![Vec::new()];
    for (key, values) in labels {
        let with =
            |set: &Vec<Label>, v: &&'static str| [&set[..], &[Label::new(*key, *v)]].concat();
        sets = sets
            .iter()
            .flat_map(|set| values.iter().map(|v| with(set, v)))
            .collect();
    }
    sets
}

/// Adds `n` to a series with one label, checked against the catalogue.
macro_rules! count {
    ($name:literal, $key:literal => $value:expr, $n:expr) => {{
        check($name, $value);
        counter!($name, $key => $value).increment($n);
    }};
}

/// Debug builds check that a label value is one the catalogue registers, so call sites and
/// [`SERIES`] cannot drift apart.
fn check(name: &str, value: &str) {
    debug_assert!(
        SERIES
            .iter()
            .any(|s| s.name == name && s.labels.iter().any(|(_, vs)| vs.contains(&value))),
        "{name}: label value {value:?} is not in metrics::SERIES"
    );
}

/// A connection was closed because its queued bytes crossed a budget (`scope`); it is also
/// counted as a slow-consumer close.
pub fn outbox_over_budget(scope: &'static str) {
    count!("switchboard_outbox_over_budget_total", "scope" => scope, 1);
}

/// A publish was skipped: its idempotency key was already published.
pub fn idempotent_repeat() {
    counter!("switchboard_idempotent_repeats_total").increment(1);
}

/// An app was changed through the admin API (`action`: `create` | `update` | `delete`).
pub fn admin_change(action: &'static str) {
    count!("switchboard_admin_changes_total", "action" => action, 1);
}

/// How many apps this node serves from the file and from the store.
pub fn apps_served(config: usize, store: usize) {
    for (source, n) in [("config", config), ("store", store)] {
        gauge!("switchboard_apps", "source" => source).set(n as f64);
    }
}

/// `accept` failed (typically: out of file descriptors); the listener backs off.
pub fn accept_error() {
    counter!("switchboard_accept_errors_total").increment(1);
}

/// A connection was refused by a limit (`limit`: `node` | `app` | `user` | `ip`).
pub fn connection_refused(limit: &'static str) {
    count!("switchboard_connections_refused_total", "limit" => limit, 1);
}

/// Subscriptions went up or down.
pub fn subscriptions(delta: f64) {
    gauge!("switchboard_subscriptions").increment(delta);
}

/// An event entered the broker (`source`: `api` | `client` | `internal` | `ingest`).
pub fn published(source: &'static str) {
    count!("switchboard_events_published_total", "source" => source, 1);
}

/// A connection was closed because its outbound queue overflowed.
pub fn slow_consumer_closed() {
    counter!("switchboard_slow_consumer_closes_total").increment(1);
}

/// A client message was refused (`reason`: see [`SERIES`]).
pub fn client_error(reason: &'static str) {
    count!("switchboard_client_errors_total", "reason" => reason, 1);
}

/// An envelope from another node was dropped (`reason`: `unknown_version` | `malformed`).
pub fn envelope_dropped(reason: &'static str) {
    count!("switchboard_node_envelopes_dropped_total", "reason" => reason, 1);
}

/// An HTTP API call finished (`endpoint`: route template, a fixed set; `status`: HTTP status).
pub fn http_request(endpoint: String, status: u16, took: std::time::Duration) {
    counter!("switchboard_http_requests_total", "endpoint" => endpoint.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!("switchboard_http_request_seconds", "endpoint" => endpoint)
        .record(took.as_secs_f64());
}

/// Whether this node's Redis link is up (cluster mode).
pub fn redis_up(up: bool) {
    gauge!("switchboard_redis_up").set(if up { 1.0 } else { 0.0 });
}

/// The series name of [`cluster_message`], rendered per node ([`Exporter::own`]).
pub const CLUSTER_MESSAGES: &str = "switchboard_cluster_messages_received_total";

/// A message arrived from the cluster's pub/sub; `node` is this node's own count.
pub fn cluster_message(node: &std::sync::atomic::AtomicU64) {
    node.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    counter!(CLUSTER_MESSAGES).increment(1);
}

/// A dead node was reaped (its presence removed).
pub fn node_reaped() {
    counter!("switchboard_nodes_reaped_total").increment(1);
}

/// A webhook event was dropped before sending (`reason`: `queue_full`).
pub fn webhook_dropped(reason: &'static str) {
    count!("switchboard_webhook_events_dropped_total", "reason" => reason, 1);
}

/// Webhook events were handed to a request.
pub fn webhook_queued(n: usize) {
    counter!("switchboard_webhook_events_total").increment(n as u64);
}

/// A webhook request ended (`outcome`: `ok` | `failed`) carrying `n` events.
pub fn webhook_sent(outcome: &'static str, n: usize) {
    count!("switchboard_webhook_requests_total", "outcome" => outcome, 1);
    count!("switchboard_webhook_events_sent_total", "outcome" => outcome, n as u64);
}

/// A webhook request is retried.
pub fn webhook_retry() {
    counter!("switchboard_webhook_retries_total").increment(1);
}

/// Outbox rows published by the PostgreSQL ingest.
pub fn ingest_rows(n: usize) {
    if n > 0 {
        counter!("switchboard_ingest_rows_total").increment(n as u64);
    }
}

/// An outbox row was refused and marked with its error (`reason`: see [`SERIES`]).
pub fn ingest_rejected(reason: &'static str) {
    count!("switchboard_ingest_rows_rejected_total", "reason" => reason, 1);
}

/// Seconds between the oldest row of the last read and its read (0 when the outbox is
/// drained): how far the ingest is behind.
pub fn ingest_lag(secs: f64) {
    gauge!("switchboard_ingest_lag_seconds").set(secs.max(0.0));
}

/// The LISTEN connection of the ingest was (re)established after a failure.
pub fn ingest_listener_reconnect() {
    counter!("switchboard_ingest_listener_reconnects_total").increment(1);
}

/// Whether this node holds the ingest lock (is the one node that ingests).
pub fn ingest_leader(leader: bool) {
    gauge!("switchboard_ingest_leader").set(if leader { 1.0 } else { 0.0 });
}

/// Whether a NOTIFY sent from another session reached the LISTEN connection (0 behind a
/// transaction-pooling proxy such as PgBouncer in transaction mode).
pub fn ingest_notify_ok(ok: bool) {
    gauge!("switchboard_ingest_notify_ok").set(if ok { 1.0 } else { 0.0 });
}

/// Processed rows deleted by the retention pass.
pub fn ingest_deleted(n: u64) {
    if n > 0 {
        counter!("switchboard_ingest_rows_deleted_total").increment(n);
    }
}

/// This node found its lease gone and asked its clients to reconnect.
pub fn lease_lost() {
    counter!("switchboard_lease_lost_total").increment(1);
}

/// A `low` priority frame was dropped because its connection's queue was nearly full.
pub fn low_priority_dropped() {
    counter!("switchboard_low_priority_dropped_total").increment(1);
}

/// A write to the embedded store was refused because its queue was full.
pub fn store_busy() {
    counter!("switchboard_store_busy_total").increment(1);
}

/// Offline queue activity: `what` is `queued`, `refused`, `delivered` or `expired`.
pub fn offline(what: &'static str, n: u64) {
    count!("switchboard_offline_events_total", "what" => what, n);
}

/// An event was dropped from a full offline queue (`rank`: 0 low, 1 normal, 2 high).
pub fn offline_dropped(rank: u8) {
    let priority = match rank {
        0 => "low",
        1 => "normal",
        _ => "high",
    };
    count!("switchboard_offline_dropped_total", "priority" => priority, 1);
}

/// A push decision for an offered user event (`outcome`: see [`SERIES`]).
pub fn push_decision(outcome: &'static str) {
    count!("switchboard_push_decisions_total", "outcome" => outcome, 1);
}

/// Events dropped before a push decision (`reason`: `queue_full`, `groups_full`).
pub fn push_dropped(reason: &'static str) {
    push_dropped_n(reason, 1);
}

/// `n` events dropped before a push decision (`reason`: also `shutdown`).
pub fn push_dropped_n(reason: &'static str, n: u64) {
    count!("switchboard_push_dropped_total", "reason" => reason, n);
}

/// A device was registered for push (`platform`: `web`, `android`, `ios`).
pub fn push_registered(platform: &'static str) {
    count!("switchboard_push_registrations_total", "platform" => platform, 1);
}

/// A push to one device ended (`provider`, `outcome`: see [`SERIES`]).
pub fn push_sent(provider: &'static str, outcome: &'static str) {
    check("switchboard_push_sends_total", provider);
    check("switchboard_push_sends_total", outcome);
    counter!("switchboard_push_sends_total", "provider" => provider, "outcome" => outcome)
        .increment(1);
}

/// A push is retried after a transient failure.
pub fn push_retry(provider: &'static str) {
    count!("switchboard_push_retries_total", "provider" => provider, 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every series name this file counts on is in the catalogue, once: a series added
    /// without its help text fails here, not on an operator's dashboard.
    #[test]
    fn the_catalogue_lists_every_series_once() {
        let code = include_str!("mod.rs");
        let code = code.split("#[cfg(test)]").next().unwrap();
        let after_catalogue = &code[code.find("\n];\n").unwrap()..];
        let used: std::collections::BTreeSet<&str> = after_catalogue
            .match_indices("\"switchboard_")
            .map(|(i, _)| {
                let rest = &after_catalogue[i + 1..];
                &rest[..rest.find('"').unwrap()]
            })
            .collect();
        let listed: Vec<&str> = SERIES.iter().map(|s| s.name).collect();
        for name in &used {
            assert!(listed.contains(name), "{name} is not in SERIES");
        }
        let unique: std::collections::BTreeSet<&str> = listed.iter().copied().collect();
        assert_eq!(unique.len(), listed.len(), "a series is listed twice");
        assert!(SERIES
            .iter()
            .all(|s| !s.help.is_empty() && s.help.ends_with('.')));
    }

    #[test]
    fn combinations_take_one_value_of_each_label() {
        let sends = SERIES
            .iter()
            .find(|s| s.name == "switchboard_push_sends_total")
            .unwrap();
        let all = combinations(sends.labels);
        assert_eq!(all.len(), 4 * 6);
        assert!(all.iter().all(|l| l.len() == 2));
        assert_eq!(combinations(&[]), vec![Vec::<Label>::new()]);
    }

    #[test]
    #[should_panic(expected = "not in metrics::SERIES")]
    fn an_unlisted_label_value_is_caught_in_debug_builds() {
        client_error("no_such_reason");
    }
}
