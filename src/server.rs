//! Wiring: builds the components, serves HTTP and WebSocket, and shuts down in order. The
//! only place that knows every component.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::TcpListener;

use crate::apps::{App, StaticAppStore};
use crate::broker::MemoryBroker;
use crate::config::Config;
use crate::context::Context;
use crate::hub::Hub;
use crate::presence::MemoryPresence;
use crate::status::MemoryStatus;
use crate::{http, metrics};

/// Builds the shared state for `config`.
pub fn context(config: Config) -> Arc<Context> {
    let hub = Hub::new();
    let apps = StaticAppStore::new(config.all_apps().map(App::from_config));
    let broker = Arc::new(MemoryBroker::new(hub.clone()));
    Arc::new(Context::new(
        config,
        hub.clone(),
        broker,
        Arc::new(MemoryPresence::new(hub.clone())),
        Arc::new(MemoryStatus::default()),
        Arc::new(apps),
    ))
}

/// Serves until `shutdown` completes, then drains: `/up` answers 503, new connections are
/// refused, every connection is closed with "reconnect now" (Pusher 4200), and the call
/// returns once all connections ended or `server.shutdown_grace` passed.
///
/// `metrics` is the listener for `/metrics`, if any.
pub async fn run(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let ctx = context(config);
    if let Some(ml) = metrics_listener {
        let handle = metrics::install();
        let routes =
            Router::new().route("/metrics", get(move || std::future::ready(handle.render())));
        let token = ctx.shutdown.clone();
        ctx.tracker.spawn(async move {
            let stop = token.cancelled_owned();
            if let Err(e) = axum::serve(ml, routes).with_graceful_shutdown(stop).await {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
    }
    let listener = listener.tap_io(|tcp| {
        // Small frames must not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
    });
    let signal_ctx = ctx.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: draining connections");
        signal_ctx.start_draining();
        signal_ctx.shutdown.cancel();
    };
    axum::serve(listener, http::router(ctx.clone()))
        .with_graceful_shutdown(signal)
        .await?;
    ctx.shutdown.cancel();
    ctx.tracker.close();
    let grace = Duration::from_secs(ctx.config.server.shutdown_grace);
    if tokio::time::timeout(grace, ctx.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = ctx.tracker.len(),
            "shutdown grace period over; tasks still running are abandoned"
        );
    }
    tracing::info!("stopped");
    Ok(())
}
