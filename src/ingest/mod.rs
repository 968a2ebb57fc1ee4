//! PostgreSQL ingest: rows that applications insert into `switchboard.outbox` become events
//! for the right channels and users, through the one publish path (`Broker::publish`).
//!
//! # Design
//!
//! - **Schema.** Switchboard migrates its own schema `switchboard` (see `schema`): the outbox
//!   table, a partial index over the unprocessed rows, and an `AFTER INSERT` statement trigger
//!   that sends `NOTIFY switchboard_outbox`. The notification is only a wake-up: it carries
//!   nothing, so a lost one costs latency (up to `database.poll_interval_ms`), never a row.
//! - **Cursor.** The durable cursor is the rows themselves: a row is pending while its
//!   `processed_at` is NULL, and the reader takes the pending rows in id order. A high-water
//!   mark (`id > last`) would skip a row whose id was taken before, but committed after, a
//!   higher one; "every pending row" cannot. Rows are delivered in id order among the rows
//!   visible at each read, which is commit order at batch granularity.
//! - **Exactly once.** A row is marked (`processed_at`, and `error` for refused rows) after
//!   `Broker::publish` accepted it, batch by batch. The ids published but not yet marked are
//!   kept in memory and marked first on the next connection, so losing PostgreSQL (the
//!   listener or the query connection, or a restart) never re-delivers a row, and a graceful
//!   stop finishes its batch first. A process killed between publish and mark re-delivers at
//!   most that batch (at-least-once), and so does a takeover while the old holder was cut
//!   off from PostgreSQL with marks pending.
//! - **One ingester.** Every node runs the tasks; only the holder of a session advisory lock
//!   (`pg_try_advisory_lock(LOCK_KEY)`, on the query connection) reads the outbox. The others
//!   retry every `database.lock_retry_ms`; PostgreSQL frees the lock when the holder's session
//!   ends, so a dead node is replaced within that period (plus TCP keepalive detection).
//! - **Connections.** One dedicated LISTEN connection (`listener`, whose `Connection` is
//!   polled for notifications) and one query connection (`worker`); both reconnect with
//!   backoff (100 ms doubling to 5 s), and every (re)connect of the listener triggers a read.
//! - **Retention.** The lock holder deletes rows processed more than `database.retention_secs`
//!   ago, every `database.cleanup_interval_secs`, 1000 rows per statement and for at most a
//!   second per pass, so ingest never waits long behind it.
//! - **PgBouncer.** Transaction pooling breaks LISTEN and session locks. After each LISTEN,
//!   a NOTIFY is sent from another session; if it does not arrive within 5 s an error says
//!   so. The worker also notices when the backend serving its session changes (its pid),
//!   and when named prepared statements vanish, and logs the same explanation.
//!
//! Bad rows (unknown app, invalid channel, payload too large, ...) are logged, counted in
//! `switchboard_ingest_rows_rejected_total{reason}`, marked with the reason in `error`, and
//! never block the rows behind them.

mod listener;
mod retention;
mod rows;
mod schema;
mod worker;

use crate::pg::config as pg_config;
pub(crate) use crate::pg::describe;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use tokio_util::task::TaskTracker;

use crate::apps::AppStore;
use crate::config::DatabaseConfig;
use crate::publish::Publisher;

/// The channel the outbox trigger notifies.
pub const NOTIFY_CHANNEL: &str = "switchboard_outbox";
/// The session advisory lock held by the one ingesting node.
pub const LOCK_KEY: i64 = i64::from_be_bytes(*b"sbingest");
/// `application_name` of the LISTEN connection.
pub const LISTEN_APP_NAME: &str = "switchboard-ingest-listen";
/// `application_name` of the query connection (lock, reads, marks, retention).
pub const QUERY_APP_NAME: &str = "switchboard-ingest";

/// The log line for a connection that goes through a transaction-pooling proxy.
const PGBOUNCER: &str = "PostgreSQL ingest does not work through PgBouncer (or another pooler) \
    in transaction or statement mode: it needs LISTEN/NOTIFY and a session advisory lock. \
    Point database.url at PostgreSQL itself or at a session-mode pool";

/// `database.url` could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid database.url: {0}")]
pub struct BadUrl(String);

/// What ingest uses: its settings, the apps, the publish entry and the task handles.
pub struct Ingest {
    /// `[database]`.
    pub config: DatabaseConfig,
    /// The largest `max_event_bytes` of any app (rows above it cannot be valid).
    pub max_event_bytes: usize,
    /// Rows name their app by id.
    pub apps: Arc<dyn AppStore>,
    /// Where rows are published.
    pub publisher: Publisher,
    /// Runs the listener, the worker and their helpers.
    pub tracker: TaskTracker,
    /// Stops them.
    pub stop: CancellationToken,
}

/// Starts the listener and the worker when `database.url` is set; they stop with
/// `deps.stop`. Connecting happens in the background, with retries.
pub fn spawn(deps: Ingest) -> Result<(), BadUrl> {
    let Some(url) = deps.config.url.as_deref() else {
        return Ok(());
    };
    let base: tokio_postgres::Config = url.parse().map_err(|e| BadUrl(describe(&e)))?;
    let wake = Arc::new(Notify::new());
    let poll = Duration::from_millis(deps.config.poll_interval_ms);
    deps.tracker.spawn(listener::run(
        pg_config(&base, LISTEN_APP_NAME),
        wake.clone(),
        deps.tracker.clone(),
        deps.stop.clone(),
        poll,
    ));
    let tracker = deps.tracker.clone();
    tracker.spawn(worker::run(pg_config(&base, QUERY_APP_NAME), wake, deps));
    Ok(())
}

/// Reconnect delays: 100 ms doubling to 5 s.
struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);

    fn new() -> Self {
        Self(Self::FIRST)
    }
    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
        d
    }
    fn reset(&mut self) {
        self.0 = Self::FIRST;
    }
}

/// Sleeps `d`; `true` when `stop` fired first.
async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}
