//! The PostgreSQL base: connection settings every connection uses, the `switchboard`
//! schema's migrations, and error text. The ingest and the app store build on it.
//!
//! Migrations are numbered and recorded in `switchboard.schema_migrations`; every node runs
//! them before its first statement under a transaction-scoped advisory lock, so concurrent
//! starts apply each one exactly once.

use std::time::Duration;

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
    (
        3,
        r#"
CREATE TABLE switchboard.apps (
    id         text        PRIMARY KEY,
    key        text        NOT NULL UNIQUE,
    settings   jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE switchboard.apps IS
    'Apps managed through the admin API: settings holds the keys of a [[apps]] table. Every change is announced on NOTIFY switchboard_apps, so nodes reload it within a second.';
CREATE FUNCTION switchboard.apps_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('switchboard_apps', coalesce(NEW.id, OLD.id));
    RETURN NULL;
END
$$;
CREATE TRIGGER apps_notify AFTER INSERT OR UPDATE OR DELETE ON switchboard.apps
    FOR EACH ROW EXECUTE FUNCTION switchboard.apps_notify();
"#,
    ),
];

/// Creates the schema and applies the migrations this database has not seen.
pub async fn migrate(client: &mut Client) -> Result<(), tokio_postgres::Error> {
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
        tracing::info!(version, "postgres: applied schema migration");
    }
    tx.commit().await
}

/// `base` with our `application_name`, and timeouts unless the URL set its own: a dead
/// server or network is noticed within about 30 s even on an idle connection.
pub fn config(base: &tokio_postgres::Config, name: &str) -> tokio_postgres::Config {
    let mut c = base.clone();
    c.application_name(name);
    if c.get_connect_timeout().is_none() {
        c.connect_timeout(Duration::from_secs(5));
    }
    if c.get_tcp_user_timeout().is_none() {
        c.tcp_user_timeout(Duration::from_secs(30));
    }
    c.keepalives_idle(Duration::from_secs(15))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3);
    c
}

/// An error with its causes: tokio-postgres' `Display` leaves out the server's message.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
