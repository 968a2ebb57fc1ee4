//! Every metric the server exports, in one place. Labels are bounded sets (never channel
//! names or client-supplied values), so the series count stays fixed.

use std::sync::OnceLock;

use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}

/// A connection was accepted (`protocol`: `pusher` | `bus`).
pub fn connection_opened(protocol: &'static str) {
    counter!("switchboard_connections_total", "protocol" => protocol).increment(1);
    gauge!("switchboard_connections", "protocol" => protocol).increment(1.0);
}

/// A connection ended.
pub fn connection_closed(protocol: &'static str) {
    gauge!("switchboard_connections", "protocol" => protocol).decrement(1.0);
}

/// A connection was closed because its queued bytes crossed a budget (`scope`:
/// `connection` | `node`); it is also counted as a slow-consumer close.
pub fn outbox_over_budget(scope: &'static str) {
    counter!("switchboard_outbox_over_budget_total", "scope" => scope).increment(1);
}

/// A publish was skipped: its idempotency key was already published.
pub fn idempotent_repeat() {
    counter!("switchboard_idempotent_repeats_total").increment(1);
}

/// `accept` failed (typically: out of file descriptors); the listener backs off.
pub fn accept_error() {
    counter!("switchboard_accept_errors_total").increment(1);
}

/// A connection was refused by a limit (`limit`: `node` | `app` | `user` | `ip`).
pub fn connection_refused(limit: &'static str) {
    counter!("switchboard_connections_refused_total", "limit" => limit).increment(1);
}

/// Subscriptions went up or down.
pub fn subscriptions(delta: f64) {
    gauge!("switchboard_subscriptions").increment(delta);
}

/// A message was received from a client.
pub fn message_in(protocol: &'static str) {
    counter!("switchboard_messages_in_total", "protocol" => protocol).increment(1);
}

/// `n` frames were queued to connections.
pub fn delivered(n: usize) {
    if n > 0 {
        counter!("switchboard_messages_out_total").increment(n as u64);
    }
}

/// An event entered the broker (`source`: `api` | `client` | `internal` | `ingest`).
pub fn published(source: &'static str) {
    counter!("switchboard_events_published_total", "source" => source).increment(1);
}

/// A connection was closed because its outbound queue overflowed.
pub fn slow_consumer_closed() {
    counter!("switchboard_slow_consumer_closes_total").increment(1);
}

/// A client message was refused (`reason`: a fixed, code-defined string).
pub fn client_error(reason: &'static str) {
    counter!("switchboard_client_errors_total", "reason" => reason).increment(1);
}

/// An envelope from another node was dropped (`reason`: `unknown_version` | `malformed`).
pub fn envelope_dropped(reason: &'static str) {
    counter!("switchboard_node_envelopes_dropped_total", "reason" => reason).increment(1);
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

/// A dead node was reaped (its presence removed).
pub fn node_reaped() {
    counter!("switchboard_nodes_reaped_total").increment(1);
}

/// A webhook event was dropped before sending (`reason`: `queue_full`).
pub fn webhook_dropped(reason: &'static str) {
    counter!("switchboard_webhook_events_dropped_total", "reason" => reason).increment(1);
}

/// Webhook events were handed to a request.
pub fn webhook_queued(n: usize) {
    counter!("switchboard_webhook_events_total").increment(n as u64);
}

/// A webhook request ended (`outcome`: `ok` | `failed`) carrying `n` events.
pub fn webhook_sent(outcome: &'static str, n: usize) {
    counter!("switchboard_webhook_requests_total", "outcome" => outcome).increment(1);
    counter!("switchboard_webhook_events_sent_total", "outcome" => outcome).increment(n as u64);
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

/// An outbox row was refused and marked with its error (`reason`: a fixed, code-defined
/// string such as `unknown_app`, `invalid_channel`, `too_large`).
pub fn ingest_rejected(reason: &'static str) {
    counter!("switchboard_ingest_rows_rejected_total", "reason" => reason).increment(1);
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
    counter!("switchboard_offline_events_total", "what" => what).increment(n);
}

/// An event was dropped from a full offline queue (`rank`: 0 low, 1 normal, 2 high).
pub fn offline_dropped(rank: u8) {
    let priority = match rank {
        0 => "low",
        1 => "normal",
        _ => "high",
    };
    counter!("switchboard_offline_dropped_total", "priority" => priority).increment(1);
}

/// A push decision for an offered user event (`outcome`: `online`, `ineligible`,
/// `expired`, `preference_off`, `grouped`, `no_device`, `throttled`, `scheduled`,
/// `store_error`).
pub fn push_decision(outcome: &'static str) {
    counter!("switchboard_push_decisions_total", "outcome" => outcome).increment(1);
}

/// Events dropped before a push decision (`reason`: `queue_full`, `groups_full`).
pub fn push_dropped(reason: &'static str) {
    push_dropped_n(reason, 1);
}

/// `n` events dropped before a push decision (`reason`: also `shutdown`).
pub fn push_dropped_n(reason: &'static str, n: u64) {
    counter!("switchboard_push_dropped_total", "reason" => reason).increment(n);
}

/// A device was registered for push (`platform`: `web`, `android`, `ios`).
pub fn push_registered(platform: &'static str) {
    counter!("switchboard_push_registrations_total", "platform" => platform).increment(1);
}

/// A push to one device ended (`provider`: `webpush`, `fcm`, `apns`, `webhook`; `outcome`:
/// `ok`, `gone`, `rejected`, `failed`, `expired`, `duplicate`).
pub fn push_sent(provider: &'static str, outcome: &'static str) {
    counter!("switchboard_push_sends_total", "provider" => provider, "outcome" => outcome)
        .increment(1);
}

/// A push is retried after a transient failure.
pub fn push_retry(provider: &'static str) {
    counter!("switchboard_push_retries_total", "provider" => provider).increment(1);
}
