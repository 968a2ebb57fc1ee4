//! Wiring: builds the components, hands each the handles it uses, serves HTTP and
//! WebSocket, and shuts down in order. The only place that knows every component.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::apps::records::{EmbeddedRecords, PostgresRecords, RedisRecords};
use crate::apps::{self, AppRecords, AppStore, Registry};
use crate::broker::{Broker, MemoryBroker, RedisBroker};
use crate::cluster::{self, Reaper};
use crate::config::Config;
use crate::contacts::Contacts;
use crate::hub::{Hub, QueueBudget};
use crate::idempotency::{Idempotency, MemoryKeys, RedisKeys};
use crate::ids::AppId;
use crate::ingest::{self, Ingest};
use crate::offline::{EmbeddedInbox, Inbox, RedisInbox};
use crate::presence::users::{MemoryStatus, RedisStatus, StatusStore};
use crate::presence::{MemoryPresence, PresenceStore, RedisPresence};
use crate::publish::Publisher;
use crate::push::store::{EmbeddedPushStore, PushStore, RedisPushStore};
use crate::push::Push;
use crate::redis_base::{Redis, Topology};
use crate::session;
use crate::status::UserStatus;
use crate::store::Store;
use crate::tls::Tls;
use crate::webhooks::Webhooks;
use crate::{http, metrics};

/// The stores and transports of one node: in memory and the embedded store, or shared
/// through Redis when `[redis]` names one (a server, a Redis Cluster or Sentinels).
struct Backends {
    broker: Arc<dyn Broker>,
    presence: Arc<dyn PresenceStore>,
    status: Arc<dyn StatusStore>,
    inbox: Arc<dyn Inbox>,
    push_store: Arc<dyn PushStore>,
    idempotency: Idempotency,
    redis: Option<Arc<Redis>>,
    /// The embedded store, opened only by a node without Redis (a cluster's nodes keep
    /// nothing on disk).
    store: Option<Store>,
}

/// Builds the backends for `config`, starting the background tasks that belong to them
/// (the offline sweeper; the Redis connector and the cluster subscriber) on `tracker`.
async fn backends(
    config: &Config,
    node: u32,
    hub: &Hub,
    (tracker, stop): (&TaskTracker, &CancellationToken),
) -> std::io::Result<Backends> {
    let idem = &config.idempotency;
    let window = Duration::from_secs(idem.window_secs);
    let cache_ttl = Duration::from_secs(config.server.cache_ttl_secs);
    let topology = Topology::from_config(&config.redis).map_err(std::io::Error::other)?;
    let Some(topology) = topology else {
        let store = &Store::open(&config.data.dir, config.data.write_queue)?;
        let status = Arc::new(MemoryStatus::default());
        let inbox = Arc::new(EmbeddedInbox::new(store.clone(), config.offline.clone()));
        inbox.spawn_sweeper(tracker, stop.clone());
        let broker = MemoryBroker::new(
            hub.clone(),
            status.clone(),
            config.offline.enabled.then(|| inbox.clone()),
            (cache_ttl, config.server.cache_max_channels),
            config.history.clone(),
            store.clone(),
        );
        return Ok(Backends {
            broker: Arc::new(broker),
            presence: Arc::new(MemoryPresence::new(hub.clone())),
            status,
            inbox,
            push_store: Arc::new(EmbeddedPushStore::new(store.clone())),
            idempotency: Idempotency::new(Arc::new(MemoryKeys::new(idem.max_keys)), window),
            redis: None,
            store: Some(store.clone()),
        });
    };
    let lease = Duration::from_secs(config.redis.lease_secs);
    let redis = Redis::open(topology, &config.redis.prefix, node.to_string(), lease)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    redis.spawn_connector(tracker, stop.clone());
    let broker = RedisBroker::new(
        redis.clone(),
        cache_ttl,
        config.history.clone(),
        config.offline.clone(),
    );
    broker.spawn_subscriber(hub.clone(), tracker, stop.clone());
    Ok(Backends {
        broker: Arc::new(broker),
        presence: Arc::new(RedisPresence::new(redis.clone(), hub.clone())),
        status: Arc::new(RedisStatus::new(redis.clone())),
        inbox: Arc::new(RedisInbox::new(redis.clone())),
        push_store: Arc::new(RedisPushStore::new(redis.clone())),
        idempotency: Idempotency::new(Arc::new(RedisKeys::new(redis.clone())), window),
        redis: Some(redis),
        store: None,
    })
}

/// Where apps created through the admin API are kept: PostgreSQL when configured (the
/// database is the app's), else the cluster's Redis, else the embedded store.
fn app_records(config: &Config, b: &Backends) -> std::io::Result<Option<Arc<dyn AppRecords>>> {
    if let Some(url) = &config.database.url {
        let pg = PostgresRecords::new(url).map_err(std::io::Error::other)?;
        return Ok(Some(Arc::new(pg)));
    }
    if let Some(redis) = &b.redis {
        return Ok(Some(Arc::new(RedisRecords::new(redis.clone()))));
    }
    Ok(b.store
        .clone()
        .map(|s| Arc::new(EmbeddedRecords::new(s)) as Arc<dyn AppRecords>))
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
    let (tracker, stop) = (TaskTracker::new(), CancellationToken::new());
    let node = rand::random::<u32>() % 1_000_000_000;
    let server = &config.server;
    // Before any series handle is made (the apps' below): a handle made earlier counts
    // into nothing.
    let exporter = metrics_listener.is_some().then(|| {
        let exporter = metrics::install();
        metrics::register_all(config.redis.enabled(), config.database.url.is_some());
        exporter
    });
    let ids: Vec<AppId> = config
        .all_apps()
        .map(|a| AppId::new(a.id.as_str()))
        .collect();
    let budget = QueueBudget::new(server.outbox_max_bytes, server.outbox_total_bytes);
    let hub = Hub::with_budget(budget, metrics::MessagesOut::new(&ids));
    // A bad certificate pair is fatal before anything is opened.
    let tls = match config.server.tls.files() {
        Some((cert, key)) => {
            let tls = Tls::load(cert, key).map_err(std::io::Error::other)?;
            tls.spawn_reloader(&tracker, stop.clone());
            Some(tls)
        }
        None => None,
    };
    let b = backends(&config, node, &hub, (&tracker, &stop)).await?;
    let registry = Arc::new(Registry::new(
        config.all_apps().cloned(),
        app_records(&config, &b)?,
        hub.clone(),
    ));
    apps::sync::load(&registry, Duration::from_secs(3)).await;
    apps::sync::spawn(registry.clone(), &tracker, stop.clone());
    let apps: Arc<dyn AppStore> = registry.clone();

    // A bad provider key is fatal at start-up.
    let push = Push::new(&config.push, b.push_store).map_err(std::io::Error::other)?;
    push.spawn(&tracker, stop.clone());
    let publisher = Publisher::new(b.broker.clone(), push.clone(), b.idempotency);
    let throttle = Duration::from_millis(config.bus.presence_throttle_ms);
    let status = UserStatus::new(b.status, publisher.clone(), tracker.clone(), throttle);
    let webhooks = Webhooks::spawn(
        &config.webhooks,
        b.presence.clone(),
        &tracker,
        stop.clone(),
        hub.tap().clone(),
    );
    let max_event_bytes = config.all_apps().map(|a| a.max_event_bytes).max();
    ingest::spawn(Ingest {
        config: config.database.clone(),
        max_event_bytes: max_event_bytes.unwrap_or(0),
        apps: apps.clone(),
        publisher: publisher.clone(),
        tracker: tracker.clone(),
        stop: stop.clone(),
    })
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut counts = None;
    if let Some(redis) = &b.redis {
        let reaper = Reaper {
            publisher: publisher.clone(),
            status: status.clone(),
            webhooks: webhooks.clone(),
            apps: apps.clone(),
            hub: hub.clone(),
        };
        cluster::spawn_reaper(redis.clone(), reaper, &tracker, stop.clone());
        counts = Some(cluster::spawn_sync(
            redis.clone(),
            hub.clone(),
            &tracker,
            stop.clone(),
        ));
    }
    let contacts = Arc::new(Contacts::default());
    let sessions = Arc::new(session::Deps {
        server: config.server.clone(),
        bus: config.bus.clone(),
        offline: config.offline.clone(),
        node,
        hub: hub.clone(),
        publisher: publisher.clone(),
        streams: b.broker.clone(),
        presence: b.presence.clone(),
        status,
        contacts: contacts.clone(),
        webhooks,
        inbox: b.inbox,
        push: push.clone(),
        counts,
        shutdown: stop.clone(),
        tracker: tracker.clone(),
    });
    let health = http::Health::default();
    let api = Arc::new(http::Api {
        server: config.server.clone(),
        bus: config.bus.clone(),
        apps,
        publisher,
        presence: b.presence,
        contacts,
        push,
        hub,
        health: health.clone(),
        redis: b.redis.clone(),
        sessions,
        sse: Default::default(),
        xhr: Default::default(),
    });
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    let admin = config.admin.token.as_deref().map(|token| {
        let admin = http::Admin::new(
            token,
            registry.clone(),
            api.hub.clone(),
            api.presence.clone(),
            api.publisher.clone(),
            b.broker.clone(),
        );
        http::admin::router(Arc::new(admin))
    });
    // This node's own count of what the cluster sent it, whatever else shares the process.
    let exporter = match &b.redis {
        Some(r) => exporter.map(|e| e.own(metrics::CLUSTER_MESSAGES, r.received.clone())),
        None => exporter,
    };
    match (metrics_listener, exporter) {
        (Some(ml), Some(exporter)) => serve_metrics(ml, exporter, admin, &tracker, stop.clone()),
        _ if admin.is_some() => {
            tracing::warn!("admin.token is set but metrics are off: the admin API and console are served on the metrics listener")
        }
        _ => {}
    }
    if let Some(redis) = &b.redis {
        // Serve once this node counts in the cluster: before its lease is in Redis, the other
        // nodes ignore its connections (its users would look offline, be queued for, pushed).
        let wait = redis.lease.max(Duration::from_secs(2));
        if !redis.wait_leased(wait).await {
            tracing::warn!("no lease in Redis yet (is Redis down?); serving anyway");
        }
    }
    let signal = (health, stop.clone());
    let delay = Duration::from_millis(server.shutdown_delay_ms);
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown => {
                signal.0.start_draining();
                tracing::info!(delay = ?delay, "shutting down: draining connections");
                tokio::time::sleep(delay).await;
            }
            _ = signal.1.cancelled() => {}
        }
        signal.0.start_draining();
        signal.1.cancel();
    });
    let limits = http::DoorLimits {
        header_timeout: Duration::from_millis(server.header_timeout_ms),
        max_header_bytes: server.max_header_bytes,
        max_connections_per_ip: server.max_connections_per_ip,
        tls: tls.as_ref().map(Tls::acceptor),
    };
    let grace = Duration::from_secs(server.shutdown_grace);
    // The node has drained once every session (and background task) has ended.
    let drained = {
        let tracker = tracker.clone();
        async move {
            tracker.close();
            tracker.wait().await;
        }
    };
    let router = http::router(api);
    startup_summary(
        &config,
        &listener,
        metrics_addr,
        tls.is_some(),
        b.store.is_some(),
    );
    let closing = http::serve(listener, router, limits, stop.clone(), drained, grace).await?;
    stop.cancel();
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            remaining = tracker.len(),
            "shutdown grace period over; tasks still running are abandoned"
        );
    }
    if let Some(redis) = &b.redis {
        cluster::resign(redis).await;
    }
    b.broker.close().await;
    if let Some(store) = &b.store {
        store.close().await;
    }
    tracing::info!("stopped");
    closing.finish().await;
    Ok(())
}

/// One line that says what this node is: an operator reads the whole set-up from it.
fn startup_summary(
    config: &Config,
    listener: &TcpListener,
    metrics: Option<std::net::SocketAddr>,
    tls: bool,
    embedded: bool,
) {
    let on = |b: bool| if b { "on" } else { "off" };
    let apps: Vec<&str> = config.all_apps().map(|a| a.id.as_str()).collect();
    let webhooks: usize = config.all_apps().map(|a| a.webhooks.len()).sum();
    let addr = listener
        .local_addr()
        .map_or_else(|e| e.to_string(), |a| a.to_string());
    let admin = config.admin.token.is_some() && metrics.is_some();
    let metrics = metrics.map_or_else(|| "off".to_owned(), |a| a.to_string());
    let data_dir = if embedded {
        config.data.dir.display().to_string()
    } else {
        "unused (Redis)".to_owned()
    };
    tracing::info!(
        version = %env!("CARGO_PKG_VERSION"),
        addr = %addr,
        tls = %on(tls),
        metrics = %metrics,
        apps = %apps.join(","),
        data_dir = %data_dir,
        redis = %on(config.redis.enabled()),
        postgres = %on(config.database.url.is_some()),
        admin = %on(admin),
        webhooks,
        "switchboard listening"
    );
}

/// `/metrics` on its own listener, with the admin API and console when they are on, until
/// `stop`.
fn serve_metrics(
    listener: TcpListener,
    exporter: metrics::Exporter,
    admin: Option<Router>,
    tracker: &TaskTracker,
    stop: CancellationToken,
) {
    let routes = Router::new().route(
        "/metrics",
        get(move || std::future::ready(exporter.render())),
    );
    let routes = match admin {
        Some(admin) => routes.merge(admin),
        None => routes,
    };
    tracker.spawn(async move {
        let stop = stop.cancelled_owned();
        if let Err(e) = axum::serve(listener, routes)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "metrics listener failed");
        }
    });
}
