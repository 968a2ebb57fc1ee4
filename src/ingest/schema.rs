//! The `switchboard` schema: migrations and every SQL statement the ingest runs.
//!
//! Migrations are numbered and recorded in `switchboard.schema_migrations`; every node runs
//! them at start under a transaction-scoped advisory lock, so concurrent starts apply each
//! one exactly once.

use tokio_postgres::Client;

/// Serializes migrations across nodes (`pg_advisory_xact_lock`).
const MIGRATION_LOCK: i64 = i64::from_be_bytes(*b"sbmigrat");

/// `(version, SQL)`, applied in order. Never edit one that has shipped: add another.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
CREATE TABLE switchboard.outbox (
    id           bigserial   PRIMARY KEY,
    app_id       text        NOT NULL,
    channel      text,
    user_id      text,
    event        text        NOT NULL,
    data         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz,
    error        text
);
COMMENT ON TABLE switchboard.outbox IS
    'Rows become Switchboard events: channel -> that channel''s subscribers, user_id -> that user''s sessions. Written by applications; processed_at/error are set by Switchboard.';
CREATE INDEX outbox_unprocessed ON switchboard.outbox (id) WHERE processed_at IS NULL;
CREATE INDEX outbox_processed_at ON switchboard.outbox (processed_at)
    WHERE processed_at IS NOT NULL;
CREATE FUNCTION switchboard.outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('switchboard_outbox', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON switchboard.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION switchboard.outbox_notify();
"#,
    ),
    (
        2,
        r#"
ALTER TABLE switchboard.outbox
    ADD COLUMN priority text,
    ADD COLUMN ttl integer;
COMMENT ON COLUMN switchboard.outbox.priority IS
    'Envelope priority: low, normal (NULL) or high.';
COMMENT ON COLUMN switchboard.outbox.ttl IS
    'Seconds the event stays worth delivering (history replay, offline queue); NULL = the defaults.';
"#,
    ),
];

/// Creates the schema and applies the migrations this database has not seen.
pub(super) async fn migrate(client: &mut Client) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "SET LOCAL client_min_messages = warning;
         CREATE SCHEMA IF NOT EXISTS switchboard;
         CREATE TABLE IF NOT EXISTS switchboard.schema_migrations (
             version    integer     PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );",
    )
    .await?;
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM switchboard.schema_migrations",
            &[],
        )
        .await?
        .get(0);
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO switchboard.schema_migrations (version) VALUES ($1)",
            &[version],
        )
        .await?;
        tracing::info!(version, "ingest: applied schema migration");
    }
    tx.commit().await
}

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
