//! The live console: one page served from the binary, and the stream it reads
//! (`text/event-stream`): per-app stats every second and the event log of one app (and
//! optionally one channel) as this node delivers it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::{Admin, AdminError};
use crate::ids::AppId;
use crate::tap::{Counts, Watch};

/// The page: plain HTML, CSS and JavaScript, no build step.
const PAGE: &str = include_str!("../console.html");
/// Consoles streaming at once, per node.
const MAX_STREAMS: usize = 16;
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /console`.
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        PAGE,
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct Filter {
    app: Option<String>,
    channel: Option<String>,
}

struct Stream {
    admin: Arc<Admin>,
    watch: Watch,
    filter: Filter,
    stats: tokio::time::Interval,
    keep_alive: tokio::time::Interval,
    last: HashMap<AppId, Counts>,
}

fn sse(event: &str, data: &impl serde::Serialize) -> Bytes {
    let json = serde_json::to_string(data).expect("console data serializes");
    Bytes::from(format!("event: {event}\ndata: {json}\n\n"))
}

impl Stream {
    fn stats(&mut self) -> Bytes {
        let now = self.admin.hub.tap().counts();
        let apps: Vec<serde_json::Value> = self
            .admin
            .apps
            .list()
            .iter()
            .map(|s| {
                let id = &s.app.id;
                let (cur, prev) = (now.get(id).copied().unwrap_or_default(), self.last.get(id));
                let prev = prev.copied().unwrap_or(cur);
                serde_json::json!({
                    "id": id.as_str(),
                    "connections": self.admin.hub.app_connections(id),
                    "published_per_second": cur.events - prev.events,
                    "delivered_per_second": cur.deliveries - prev.deliveries,
                })
            })
            .collect();
        self.last = now;
        sse(
            "stats",
            &serde_json::json!({ "time_ms": crate::clock::now_ms(), "apps": apps }),
        )
    }

    /// The next chunk; `None` ends the stream (the console fell behind: it reconnects).
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            tokio::select! {
                _ = self.stats.tick() => return Some(self.stats()),
                _ = self.keep_alive.tick() => return Some(Bytes::from_static(b": keep-alive\n\n")),
                e = self.watch.rx.recv() => match e {
                    Ok(entry) => {
                        let app = self.filter.app.as_deref();
                        let channel = self.filter.channel.as_deref();
                        if app.is_some_and(|a| a == entry.app.as_str())
                            && channel.is_none_or(|c| c == entry.channel)
                        {
                            return Some(sse("log", &*entry));
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        tracing::debug!("console stream fell behind; dropped");
                        return None;
                    }
                    Err(RecvError::Closed) => return None,
                },
            }
        }
    }
}

/// `GET /admin/stream?app=&channel=`.
pub async fn stream(
    State(admin): State<Arc<Admin>>,
    Query(mut filter): Query<Filter>,
) -> Result<Response, AdminError> {
    if admin.hub.tap().watchers() >= MAX_STREAMS {
        return Err(AdminError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("At most {MAX_STREAMS} console streams at once"),
        ));
    }
    filter.channel = filter.channel.filter(|c| !c.is_empty());
    let watch = admin.hub.tap().watch();
    let mut s = Stream {
        admin,
        watch,
        filter,
        stats: tokio::time::interval(Duration::from_secs(1)),
        keep_alive: tokio::time::interval(KEEP_ALIVE),
        last: HashMap::new(),
    };
    s.keep_alive.reset();
    let body = futures_util::stream::unfold(s, |mut s| async move {
        let chunk = s.next().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), s))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}
