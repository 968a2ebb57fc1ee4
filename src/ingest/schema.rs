//! Every SQL statement the ingest runs (the tables are made by [`crate::pg`]'s migrations).

/// The oldest unprocessed rows, in id order: `$1` rows at most. Text columns are cut one
/// past any valid length and `data` above `$2` bytes is left out (NULL), so a hostile row
/// cannot blow up memory; both still fail validation. Also returns the row's age by the
/// database's clock and the serving backend's pid (see `worker` on PgBouncer).
pub(super) const READ: &str = "
SELECT id, left(app_id, 256), left(channel, 256), left(user_id, 256), left(event, 256),
       CASE WHEN octet_length(data::text) <= $2 THEN data::text END,
       octet_length(data::text),
       EXTRACT(EPOCH FROM clock_timestamp() - created_at)::float8,
       pg_backend_pid(), left(priority, 16), ttl
  FROM switchboard.outbox
 WHERE processed_at IS NULL
 ORDER BY id
 LIMIT $1";

/// Marks rows processed, each with its error (NULL = published). Idempotent.
pub(super) const MARK: &str = "
UPDATE switchboard.outbox o
   SET processed_at = now(), error = m.error
  FROM unnest($1::int8[], $2::text[]) AS m(id, error)
 WHERE o.id = m.id AND o.processed_at IS NULL";

/// Tries the session-level ingest lock; also returns the backend's pid.
pub(super) const TRY_LOCK: &str = "SELECT pg_try_advisory_lock($1), pg_backend_pid()";

/// Deletes up to `$2` rows processed more than `$1` seconds ago.
pub(super) const DELETE_OLD: &str = "
WITH old AS (
    SELECT id FROM switchboard.outbox
     WHERE processed_at < now() - make_interval(secs => $1)
     LIMIT $2
)
DELETE FROM switchboard.outbox o USING old WHERE o.id = old.id";
