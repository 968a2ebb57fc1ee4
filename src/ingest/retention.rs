//! Deletes processed rows older than `database.retention_secs`, in bounded chunks.

use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::Client;

use super::schema::DELETE_OLD;
use crate::metrics;

/// Rows per DELETE statement.
const CHUNK: i64 = 1_000;
/// Longest pass: the worker reads the outbox again after it.
const PASS: Duration = Duration::from_secs(1);

/// One pass. Returns `true` when it stopped with old rows left (run again soon).
pub(super) async fn pass(client: &Client, keep: Duration) -> Result<bool, tokio_postgres::Error> {
    let started = Instant::now();
    let mut total = 0;
    let more = loop {
        let n = client
            .execute(DELETE_OLD, &[&keep.as_secs_f64(), &CHUNK])
            .await?;
        total += n;
        if n < CHUNK as u64 {
            break false;
        }
        if started.elapsed() >= PASS {
            break true;
        }
    };
    metrics::ingest_deleted(total);
    if total > 0 {
        tracing::debug!(rows = total, more, "ingest: deleted processed outbox rows");
    }
    Ok(more)
}
