//! Wiring: builds the components, serves HTTP and WebSocket, and shuts down in order. The
//! only place that knows every component.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::apps::{App, StaticAppStore};
use crate::broker::{MemoryBroker, RedisBroker};
use crate::cluster;
use crate::config::Config;
use crate::context::Context;
use crate::hub::{Hub, QueueBudget};
use crate::idempotency::{Idempotency, MemoryKeys, RedisKeys};
use crate::offline::{EmbeddedInbox, RedisInbox};
use crate::presence::users::{MemoryStatus, RedisStatus};
use crate::presence::{MemoryPresence, RedisPresence};
use crate::push::store::{EmbeddedPushStore, RedisPushStore};
use crate::push::Push;
use crate::redis_base::Redis;
use crate::store::Store;
use crate::webhooks::Webhooks;
use crate::{http, ingest, metrics};

/// Builds the shared state for `config`: in memory, or shared through Redis when
/// `redis.url` is set (then the Redis tasks are started too).
pub fn context(config: Config) -> std::io::Result<Arc<Context>> {
    let node = rand::random::<u32>() % 1_000_000_000;
    let server = &config.server;
    let hub = Hub::with_budget(QueueBudget::new(
        server.outbox_max_bytes,
        server.outbox_total_bytes,
    ));
    let apps = Arc::new(StaticAppStore::new(config.all_apps().map(App::from_config)));
    let store = Store::open(&config.data.dir, config.data.write_queue)?;
    let config_push = config.push.clone();
    let idem = config.idempotency.clone();
    let idem_window = Duration::from_secs(idem.window_secs);
    let Some(url) = config.redis.url.clone() else {
        let status = Arc::new(MemoryStatus::default());
        let inbox = Arc::new(EmbeddedInbox::new(store.clone(), config.offline.clone()));
        let broker = Arc::new(MemoryBroker::new(
            hub.clone(),
            status.clone(),
            config.offline.enabled.then(|| inbox.clone()),
            (
                Duration::from_secs(config.server.cache_ttl_secs),
                config.server.cache_max_channels,
            ),
            config.history.clone(),
            store.clone(),
        ));
        let ctx = Arc::new(Context::new(
            node,
            config,
            hub.clone(),
            broker,
            Arc::new(MemoryPresence::new(hub)),
            status,
            apps,
            store.clone(),
            inbox.clone(),
            push(&config_push, Arc::new(EmbeddedPushStore::new(store)))?,
            Idempotency::new(Arc::new(MemoryKeys::new(idem.max_keys)), idem_window),
        ));
        inbox.spawn_sweeper(&ctx.tracker, ctx.shutdown.clone());
        return Ok(ctx);
    };
    let lease = Duration::from_secs(config.redis.lease_secs);
    let redis = Redis::new(&url, &config.redis.prefix, node.to_string(), lease)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let cache_ttl = Duration::from_secs(config.server.cache_ttl_secs);
    let broker = Arc::new(RedisBroker::new(
        redis.clone(),
        cache_ttl,
        config.history.clone(),
        config.offline.clone(),
    ));
    let ctx = Arc::new(Context::new(
        node,
        config,
        hub.clone(),
        broker.clone(),
        Arc::new(RedisPresence::new(redis.clone(), hub.clone())),
        Arc::new(RedisStatus::new(redis.clone())),
        apps,
        store,
        Arc::new(RedisInbox::new(redis.clone())),
        push(&config_push, Arc::new(RedisPushStore::new(redis.clone())))?,
        Idempotency::new(Arc::new(RedisKeys::new(redis.clone())), idem_window),
    ));
    redis.spawn_connector(&ctx.tracker, ctx.shutdown.clone());
    broker.spawn_subscriber(hub, &ctx.tracker, ctx.shutdown.clone());
    cluster::spawn_reaper(redis.clone(), ctx.clone());
    cluster::spawn_sync(redis.clone(), ctx.clone());
    *ctx.redis.lock().expect("redis slot") = Some(redis);
    Ok(ctx)
}

/// The push component over `store`; a bad provider key is fatal at start-up.
fn push(
    config: &crate::config::PushConfig,
    store: Arc<dyn crate::push::store::PushStore>,
) -> std::io::Result<Push> {
    Push::new(config, store).map_err(std::io::Error::other)
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
    let ctx = context(config)?;
    ingest::spawn(&ctx).map_err(|e| std::io::Error::other(e.to_string()))?;
    if let Some(rx) = ctx.webhook_queue.lock().expect("webhook slot").take() {
        Webhooks::start(&ctx, rx);
    }
    Push::start(&ctx);
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
    let redis = ctx.redis.lock().expect("redis slot").clone();
    if let Some(redis) = redis {
        // Serve once this node counts in the cluster: before its lease is in Redis, the other
        // nodes ignore its connections (its users would look offline, be queued for, pushed).
        let wait = redis.lease.max(Duration::from_secs(2));
        if !redis.wait_leased(wait).await {
            tracing::warn!("no lease in Redis yet (is Redis down?); serving anyway");
        }
    }
    let signal_ctx = ctx.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown => tracing::info!("shutting down: draining connections"),
            _ = signal_ctx.shutdown.cancelled() => {}
        }
        signal_ctx.start_draining();
        signal_ctx.shutdown.cancel();
    });
    let server = &ctx.config.server;
    let limits = http::DoorLimits {
        header_timeout: Duration::from_millis(server.header_timeout_ms),
        max_header_bytes: server.max_header_bytes,
        max_connections_per_ip: server.max_connections_per_ip,
    };
    let grace = Duration::from_secs(server.shutdown_grace);
    http::serve(
        listener,
        http::router(ctx.clone()),
        limits,
        ctx.shutdown.clone(),
        grace,
    )
    .await?;
    ctx.shutdown.cancel();
    ctx.tracker.close();
    let redis = ctx.redis.lock().expect("redis slot").take();
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
    if let Some(redis) = redis {
        cluster::resign(&redis).await;
    }
    ctx.broker.close().await;
    ctx.store.close().await;
    tracing::info!("stopped");
    Ok(())
}
