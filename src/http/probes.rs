//! Health probes: Switchboard's `/up`, and soketi's `/`, `/ready` and `/accept-traffic`,
//! which its Helm charts and Kubernetes manifests probe.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::Api;

/// The probe paths: exempt from the per-address limit, so a load balancer's probes from
/// one address keep working.
pub fn is_probe(path: &str) -> bool {
    matches!(path, "/up" | "/" | "/ready" | "/accept-traffic")
}

/// `GET /up`: 200 while accepting traffic, 503 while draining. In cluster mode the body
/// also says whether Redis is reachable (`"redis": "up" | "down"`); a node without Redis
/// still serves its connections, so it stays 200.
pub async fn up(State(ctx): State<Arc<Api>>) -> Response {
    let mut body = serde_json::json!({"status": "ok"});
    if let Some(redis) = ctx.redis.as_ref() {
        body["redis"] = if redis.is_up() { "up" } else { "down" }.into();
    }
    if ctx.health.is_draining() {
        body["status"] = "draining".into();
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    } else {
        Json(body).into_response()
    }
}

/// `GET /`: the process answers (liveness).
pub async fn root() -> &'static str {
    "OK"
}

/// `GET /ready`: 200 while accepting traffic, 503 while draining (readiness).
pub async fn ready(State(ctx): State<Arc<Api>>) -> Response {
    if ctx.health.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "Draining").into_response()
    } else {
        "OK".into_response()
    }
}

/// `GET /accept-traffic`: 200 unless the node is draining, has `server.max_connections`
/// connections, or holds `server.accept_traffic_memory_percent` of the memory it may use;
/// then 503 with the reason, so a load balancer sends new clients elsewhere.
pub async fn accept_traffic(State(ctx): State<Arc<Api>>) -> Response {
    let max = ctx.server.max_connections;
    let why = if ctx.health.is_draining() {
        Some("Draining".to_owned())
    } else if max > 0 && ctx.hub.connections() >= max {
        Some(format!(
            "Over the connection limit (max_connections: {max})"
        ))
    } else {
        memory_percent()
            .filter(|p| {
                let limit = ctx.server.accept_traffic_memory_percent;
                limit > 0 && *p >= f64::from(limit)
            })
            .map(|p| format!("Over the memory threshold ({p:.0}% used)"))
    };
    match why {
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
        None => "OK".into_response(),
    }
}

/// This process's resident memory as a share of what it may use: the cgroup's limit when
/// there is one, else the machine's memory. `None` where `/proc` cannot tell (not Linux).
fn memory_percent() -> Option<f64> {
    let rss = kib_field(
        &std::fs::read_to_string("/proc/self/status").ok()?,
        "VmRSS:",
    )?;
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok());
    let total = match cgroup {
        Some(limit) => limit,
        None => kib_field(&std::fs::read_to_string("/proc/meminfo").ok()?, "MemTotal:")?,
    };
    (total > 0.0).then(|| rss / total * 100.0)
}

/// A `Name:   1234 kB` line of a `/proc` file, in bytes.
fn kib_field(text: &str, name: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: f64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024.0)
}
