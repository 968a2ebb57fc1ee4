//! Signed, retried webhook requests.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::apps::App;
use crate::auth;
use crate::config::WebhooksConfig;
use crate::metrics;

/// POSTs `events` to `url`, retrying any failure or non-2xx answer with exponential backoff
/// until it succeeds or `retry_secs` have passed (then it is counted and logged), or until
/// `stop` is cancelled and one last attempt failed.
pub(crate) async fn deliver(
    http: reqwest::Client,
    app: Arc<App>,
    url: String,
    events: Vec<Value>,
    (config, tap): (WebhooksConfig, crate::tap::Tap),
    stop: tokio_util::sync::CancellationToken,
) {
    let time_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let body = serde_json::json!({ "time_ms": time_ms, "events": events }).to_string();
    let signature = auth::sign(&app.secret(), body.as_bytes());
    let started = Instant::now();
    let mut delay = Duration::from_millis(config.backoff_initial_ms);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let result = http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-pusher-key", &app.key)
            .header("x-pusher-signature", &signature)
            .timeout(Duration::from_millis(config.timeout_ms))
            .body(body.clone())
            .send()
            .await;
        if tap.active() {
            let names: Vec<&str> = events.iter().filter_map(|e| e["name"].as_str()).collect();
            let status = result.as_ref().map_or(0, |r| r.status().as_u16());
            tap.webhook(&app.id, &url, &names.join(","), status);
        }
        let failure = match result {
            Ok(r) if r.status().is_success() => {
                metrics::webhook_sent("ok", events.len());
                return;
            }
            Ok(r) => format!("HTTP {}", r.status()),
            Err(e) => e.to_string(),
        };
        let give_up = started.elapsed() + delay > Duration::from_secs(config.retry_secs)
            || stop.is_cancelled();
        if give_up {
            metrics::webhook_sent("failed", events.len());
            tracing::error!(%url, attempts, error = %failure, events = events.len(), "webhook given up");
            return;
        }
        metrics::webhook_retry();
        tracing::warn!(%url, attempts, error = %failure, retry_in_ms = delay.as_millis() as u64, "webhook failed; retrying");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => {}
        }
        delay = (delay * 2).min(Duration::from_millis(config.backoff_max_ms));
    }
}
