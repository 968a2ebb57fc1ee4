//! The query connection: migrations, the ingest lock, and the read → publish → mark loop.
//!
//! Marks are collected in memory while a batch is published and written with one UPDATE
//! per batch; if that fails they stay in memory and are written first on the next
//! connection, before anything is read (see the module doc on exactly-once).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

use super::rows::{to_event, OutboxRow};
use super::schema::{MARK, READ, TRY_LOCK};
use super::{describe, retention, sleep_or_stop, Backoff, Ingest, LOCK_KEY, PGBOUNCER};
use crate::broker::BrokerError;
use crate::metrics;
use crate::publish::PublishError;

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    /// Statements of one session ran on different backends.
    #[error("the backend serving this session changed (pid {0} then {1})")]
    Pooled(i32, i32),
}

/// Rows handled but not yet marked in the database.
#[derive(Default)]
struct Marks {
    ids: Vec<i64>,
    errors: Vec<Option<String>>,
}

/// What the loop does after a round.
enum Next {
    /// The batch was full: read again at once.
    More,
    /// The outbox is drained: wait for a wake-up or the poll interval.
    Idle,
    /// Publishing failed: wait a poll interval, then retry the same rows.
    Retry,
}

struct Worker {
    cfg: Config,
    wake: Arc<Notify>,
    deps: Ingest,
    marks: Marks,
    migrated: bool,
    next_cleanup: Instant,
    /// Bytes of `data` above which a row is not read (it is too large for every app).
    max_data: i32,
}

/// Runs until `deps.stop`.
pub(super) async fn run(cfg: Config, wake: Arc<Notify>, deps: Ingest) {
    // The worst JSON escape (`\u0001`) is 6 bytes for 1; no row above this can be valid.
    let max_data = deps.max_event_bytes.saturating_mul(6).saturating_add(1024);
    let mut w = Worker {
        cfg,
        wake,
        marks: Marks::default(),
        migrated: false,
        next_cleanup: Instant::now(),
        max_data: i32::try_from(max_data).unwrap_or(i32::MAX),
        deps,
    };
    let stop = w.deps.stop.clone();
    let mut backoff = Backoff::new();
    loop {
        match w.session(&mut backoff).await {
            Ok(()) => break,
            Err(e) => {
                metrics::ingest_leader(false);
                let pooled = matches!(&e, Failure::Pooled(..))
                    || matches!(&e, Failure::Db(d) if d.code() == Some(&SqlState::INVALID_SQL_STATEMENT_NAME));
                if pooled {
                    tracing::error!(error = %describe(&e), "ingest: {PGBOUNCER}");
                } else {
                    tracing::warn!(error = %describe(&e), "ingest: database connection failed; reconnecting");
                }
            }
        }
        if sleep_or_stop(backoff.next(), &stop).await {
            break;
        }
    }
    metrics::ingest_leader(false);
    if !w.marks.ids.is_empty() {
        tracing::warn!(
            rows = w.marks.ids.len(),
            "ingest: stopped with published rows not marked; they will be delivered again"
        );
    }
}

impl Worker {
    /// One connection's life: `Ok` on shutdown, `Err` when the connection failed.
    async fn session(&mut self, backoff: &mut Backoff) -> Result<(), Failure> {
        let stop = self.deps.stop.clone();
        let (mut client, conn) = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            c = self.cfg.connect(NoTls) => c?,
        };
        self.deps.tracker.spawn(async move {
            let _ = conn.await;
        });
        if !self.migrated {
            crate::pg::migrate(&mut client).await?;
            self.migrated = true;
        }
        let read = client.prepare(READ).await?;
        let mark = client.prepare(MARK).await?;
        self.flush(&client, &mark).await?;
        backoff.reset();
        let lock_retry = Duration::from_millis(self.deps.config.lock_retry_ms);
        let mut standby_logged = false;
        let pid = loop {
            let row = client.query_one(TRY_LOCK, &[&LOCK_KEY]).await?;
            if row.get::<_, bool>(0) {
                break row.get::<_, i32>(1);
            }
            metrics::ingest_leader(false);
            if !standby_logged {
                tracing::info!("ingest: another node holds the ingest lock; standing by");
                standby_logged = true;
            }
            if sleep_or_stop(lock_retry, &stop).await {
                return Ok(());
            }
        };
        metrics::ingest_leader(true);
        tracing::info!("ingest: this node holds the ingest lock and reads the outbox");
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let next = self.round(&client, &read, &mark, pid).await?;
            if self.cleanup_due() {
                self.cleanup(&client).await?;
            }
            let wait = match next {
                Next::More => continue,
                Next::Idle => self.wake_or_poll(),
                Next::Retry => {
                    let poll = Duration::from_millis(self.deps.config.poll_interval_ms);
                    Box::pin(tokio::time::sleep(poll))
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = wait => {}
            }
        }
    }

    /// Reads one batch, publishes it in order and marks it.
    async fn round(
        &mut self,
        client: &Client,
        read: &Statement,
        mark: &Statement,
        pid: i32,
    ) -> Result<Next, Failure> {
        let batch = self.deps.config.batch_size;
        let rows = client
            .query(read, &[&(batch as i64), &self.max_data])
            .await?;
        metrics::ingest_lag(rows.first().map_or(0.0, |r| r.get(7)));
        if let Some(other) = rows.iter().map(|r| r.get::<_, i32>(8)).find(|p| *p != pid) {
            return Err(Failure::Pooled(pid, other));
        }
        let mut next = if rows.len() >= batch {
            Next::More
        } else {
            Next::Idle
        };
        let mut published = 0;
        for r in &rows {
            let row = outbox_row(r);
            let event = match self.deps.apps.by_id(&row.app_id).await {
                Ok(Some(app)) => to_event(&app, &row),
                Ok(None) => Err(super::rows::Reject::UnknownApp(row.app_id.clone())),
                Err(e) => {
                    tracing::warn!(error = %e, "ingest: app store unavailable; retrying");
                    next = Next::Retry;
                    break;
                }
            };
            match event {
                Ok(mut event) => {
                    event.meta.origin = crate::event::Origin::Ingest;
                    metrics::published("ingest");
                    // The row's id is its idempotency key: a row published again (the
                    // process died before its mark, or another node took the lock over)
                    // is not delivered twice within the window.
                    let key = format!("outbox:{}", row.id);
                    let error = match self.deps.publisher.publish_once(event, Some(&key)).await {
                        Ok(_) => None,
                        // Published, but not queued for its absent user. Retrying would
                        // publish it again and stall every row behind it until the queues
                        // drain; the row keeps the error instead (and the user's next drain
                        // reports it as dropped).
                        Err(PublishError::Broker(e @ BrokerError::QueueFull(_))) => {
                            tracing::warn!(error = %e, id = row.id, "ingest: outbox row not queued");
                            metrics::ingest_rejected("offline_queue_full");
                            Some(format!("offline_queue_full: {e}"))
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, id = row.id, "ingest: publish failed; retrying");
                            next = Next::Retry;
                            break;
                        }
                    };
                    published += 1;
                    self.marks.ids.push(row.id);
                    self.marks.errors.push(error);
                }
                Err(reject) => {
                    tracing::warn!(
                        id = row.id,
                        app = %row.app_id,
                        reason = reject.reason(),
                        error = %reject,
                        "ingest: outbox row refused"
                    );
                    metrics::ingest_rejected(reject.reason());
                    self.marks.ids.push(row.id);
                    self.marks.errors.push(Some(reject.to_string()));
                }
            }
        }
        metrics::ingest_rows(published);
        self.flush(client, mark).await?;
        Ok(next)
    }

    /// Writes the pending marks; they are kept if that fails.
    async fn flush(&mut self, client: &Client, mark: &Statement) -> Result<(), Failure> {
        if self.marks.ids.is_empty() {
            return Ok(());
        }
        client
            .execute(mark, &[&self.marks.ids, &self.marks.errors])
            .await?;
        self.marks = Marks::default();
        Ok(())
    }

    fn cleanup_due(&self) -> bool {
        self.deps.config.retention_secs > 0 && Instant::now() >= self.next_cleanup
    }

    async fn cleanup(&mut self, client: &Client) -> Result<(), Failure> {
        let db = &self.deps.config;
        let more = retention::pass(client, Duration::from_secs(db.retention_secs)).await?;
        self.next_cleanup = if more {
            Instant::now()
        } else {
            Instant::now() + Duration::from_secs(db.cleanup_interval_secs)
        };
        Ok(())
    }

    /// Resolves on a NOTIFY, after the poll interval, or when a cleanup is due.
    fn wake_or_poll(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let wake = self.wake.clone();
        let poll = Duration::from_millis(self.deps.config.poll_interval_ms);
        let mut until = Instant::now() + poll;
        if self.deps.config.retention_secs > 0 {
            until = until.min(self.next_cleanup);
        }
        Box::pin(async move {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        })
    }
}

fn outbox_row(r: &Row) -> OutboxRow {
    OutboxRow {
        id: r.get(0),
        app_id: r.get(1),
        channel: r.get(2),
        user_id: r.get(3),
        event: r.get(4),
        data: r.get(5),
        data_len: r.get::<_, Option<i32>>(6).map_or(0, i64::from),
        priority: r.get(9),
        ttl: r.get(10),
    }
}
