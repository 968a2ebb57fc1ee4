//! The LISTEN connection: turns the outbox trigger's NOTIFYs into wake-ups of the worker.
//!
//! Its `Connection` is driven by its own task, which polls `poll_message` for
//! notifications; the session loop owns the `Client` (so dropping it ends both), checks
//! the connection with a query every 30 s, and runs the PgBouncer probe after each LISTEN.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{AsyncMessage, Config, Connection, NoTls, Socket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{describe, sleep_or_stop, Backoff, NOTIFY_CHANNEL, PGBOUNCER};
use crate::metrics;

/// How long a NOTIFY from another session may take to arrive.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an idle LISTEN connection is checked.
const HEALTH_EVERY: Duration = Duration::from_secs(30);

/// What the connection task reports to the session loop.
enum Msg {
    /// A notification with a non-empty payload (probes).
    Payload(String),
    /// The connection ended.
    Closed(Option<tokio_postgres::Error>),
}

/// Listens until `stop`, reconnecting with backoff.
pub(super) async fn run(
    cfg: Config,
    wake: Arc<Notify>,
    tracker: TaskTracker,
    stop: CancellationToken,
    poll: Duration,
) {
    let mut backoff = Backoff::new();
    let mut reconnecting = false;
    loop {
        let started = Instant::now();
        let error = tokio::select! {
            _ = stop.cancelled() => return,
            e = session(&cfg, &wake, &tracker, reconnecting, poll) => e,
        };
        tracing::warn!(error = %error, "ingest: LISTEN connection lost; reconnecting");
        reconnecting = true;
        if started.elapsed() > HEALTH_EVERY {
            backoff.reset();
        }
        if sleep_or_stop(backoff.next(), &stop).await {
            return;
        }
    }
}

/// One connection's life; returns why it ended.
async fn session(
    cfg: &Config,
    wake: &Arc<Notify>,
    tracker: &TaskTracker,
    reconnect: bool,
    poll: Duration,
) -> String {
    let (client, conn) = match cfg.connect(NoTls).await {
        Ok(c) => c,
        Err(e) => return describe(&e),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    tracker.spawn(drive(conn, wake.clone(), tx));
    if let Err(e) = client
        .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
        .await
    {
        return describe(&e);
    }
    if reconnect {
        metrics::ingest_listener_reconnect();
        tracing::info!("ingest: LISTEN connection re-established");
    }
    // Rows inserted while nobody listened notified nobody: read now.
    wake.notify_one();
    let nonce = format!("probe:{}", rand::random::<u64>());
    let mut probe_deadline = match send_probe(cfg, &nonce, tracker).await {
        Ok(()) => Some(Instant::now() + PROBE_TIMEOUT),
        Err(e) => {
            tracing::warn!(error = %describe(&e), "ingest: could not send the NOTIFY probe");
            None
        }
    };
    let mut health = tokio::time::interval_at(Instant::now() + HEALTH_EVERY, HEALTH_EVERY);
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Msg::Payload(p)) if p == nonce => {
                    probe_deadline = None;
                    metrics::ingest_notify_ok(true);
                }
                Some(Msg::Payload(_)) => {}
                Some(Msg::Closed(e)) => {
                    return e.map_or_else(|| "connection closed".into(), |e| describe(&e))
                }
                None => return "connection task ended".into(),
            },
            _ = sleep_until_some(probe_deadline), if probe_deadline.is_some() => {
                probe_deadline = None;
                metrics::ingest_notify_ok(false);
                tracing::error!(
                    "ingest: a NOTIFY sent from another session did not reach the LISTEN \
                     connection within {PROBE_TIMEOUT:?}. {PGBOUNCER}. Until then rows are \
                     read only every {poll:?} (database.poll_interval_ms)"
                );
            }
            _ = health.tick() => {
                match tokio::time::timeout(Duration::from_secs(10), client.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return describe(&e),
                    Err(_) => return "health check timed out".into(),
                }
            }
        }
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Polls the connection: every notification wakes the worker; payloads (probes) and the
/// end of the connection go to the session loop.
async fn drive(
    mut conn: Connection<Socket, NoTlsStream>,
    wake: Arc<Notify>,
    tx: mpsc::UnboundedSender<Msg>,
) {
    loop {
        match poll_fn(|cx| conn.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(n))) => {
                wake.notify_one();
                if !n.payload().is_empty() && tx.send(Msg::Payload(n.payload().into())).is_err() {
                    return;
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                let _ = tx.send(Msg::Closed(Some(e)));
                return;
            }
            None => {
                let _ = tx.send(Msg::Closed(None));
                return;
            }
        }
    }
}

/// Sends `nonce` on the notify channel from a short-lived session of its own.
async fn send_probe(
    cfg: &Config,
    nonce: &str,
    tracker: &TaskTracker,
) -> Result<(), tokio_postgres::Error> {
    let mut cfg = cfg.clone();
    cfg.application_name("switchboard-ingest-probe");
    let (client, conn) = cfg.connect(NoTls).await?;
    tracker.spawn(async move {
        let _ = conn.await;
    });
    client
        .execute("SELECT pg_notify($1, $2)", &[&NOTIFY_CHANNEL, &nonce])
        .await?;
    Ok(())
}
