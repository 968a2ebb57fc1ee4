//! PostgreSQL helpers (tests/ingest.rs).
#![allow(unused_imports)]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use switchboard::auth;
use switchboard::config::Config;
use tokio_tungstenite::tungstenite::Message;

use super::*;

// ============================================================================================
// PostgreSQL helpers. Used by tests/ingest.rs; kept apart from the helpers above.
// ============================================================================================

/// The PostgreSQL the tests use (superuser, trust auth), from `scripts/services.sh`.
pub fn test_database_url() -> String {
    std::env::var("SWITCHBOARD_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "SWITCHBOARD_TEST_DATABASE_URL is not set: run scripts/test.sh, or \
             `source scripts/services.sh` first (it starts a throwaway PostgreSQL)"
        )
    })
}

/// `url` with its database name replaced by `db`.
pub fn database_url_for(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let host_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[host_start..].find('/') {
        Some(i) => &base[..host_start + i],
        None => base,
    };
    format!("{base}/{db}{query}")
}

/// A connected client; its connection runs on a spawned task.
pub async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Creates an empty database `sb_test_<random>` and returns its URL.
pub async fn fresh_database() -> String {
    let admin_url = test_database_url();
    let admin = pg_connect(&admin_url).await;
    let name = format!("sb_test_{:016x}", rand::random::<u64>());
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    database_url_for(&admin_url, &name)
}

/// Longest wait for one ingest event (a reconnect with backoff or a restart in between).
pub const PG_WAIT: Duration = Duration::from_secs(20);

/// A fresh database and a connection to it.
pub struct Db {
    pub url: String,
    pub sql: tokio_postgres::Client,
}

impl Db {
    pub async fn fresh() -> Self {
        let url = fresh_database().await;
        let sql = pg_connect(&url).await;
        Self { url, sql }
    }

    /// Waits (bounded) for Switchboard to create the outbox.
    pub async fn wait_schema(&self) {
        self.wait_for("SELECT to_regclass('switchboard.outbox') IS NOT NULL")
            .await;
    }

    /// Polls `query` (one boolean) until it is true; panics after [`PG_WAIT`].
    pub async fn wait_for(&self, query: &str) {
        let deadline = tokio::time::Instant::now() + PG_WAIT;
        while !self
            .sql
            .query_one(query, &[])
            .await
            .unwrap()
            .get::<_, bool>(0)
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not true within {PG_WAIT:?}: {query}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn count(&self, query: &str) -> i64 {
        self.sql.query_one(query, &[]).await.unwrap().get(0)
    }

    /// Inserts a channel row of the default app; returns its id.
    pub async fn channel_row(&self, channel: &str, event: &str, data: Value) -> i64 {
        let sql = "INSERT INTO switchboard.outbox (app_id, channel, event, data) \
                   VALUES ('app-id', $1, $2, $3::text::jsonb) RETURNING id";
        let data = data.to_string();
        let row = self.sql.query_one(sql, &[&channel, &event, &data]).await;
        row.unwrap().get(0)
    }

    /// Inserts a user row of the default app.
    pub async fn user_row(&self, user: &str, event: &str, data: Value) {
        let sql = "INSERT INTO switchboard.outbox (app_id, user_id, event, data) \
                   VALUES ('app-id', $1, $2, $3::text::jsonb)";
        let data = data.to_string();
        self.sql
            .execute(sql, &[&user, &event, &data])
            .await
            .unwrap();
    }

    /// Runs a statement (no parameters).
    pub async fn exec(&self, sql: &str) {
        self.sql.batch_execute(sql).await.unwrap();
    }

    /// Inserts `seq` events `{"n": i}` for every i of `range`, in one statement.
    pub async fn seq_rows(&self, channel: &str, range: std::ops::RangeInclusive<i32>) {
        let sql = "INSERT INTO switchboard.outbox (app_id, channel, event, data) \
                   SELECT 'app-id', $1, 'seq', jsonb_build_object('n', g) \
                   FROM generate_series($2::int, $3::int) g";
        let (a, b) = (*range.start(), *range.end());
        self.sql.execute(sql, &[&channel, &a, &b]).await.unwrap();
    }
}

/// The next application event (protocol frames skipped) on a Pusher socket, within `d`.
pub async fn pusher_event(c: &mut PusherClient, d: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + d;
    loop {
        let msg = tokio::time::timeout_at(deadline, c.ws.next())
            .await
            .unwrap_or_else(|_| panic!("no event within {d:?}"))
            .expect("socket open")
            .expect("no socket error");
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if !v["event"].as_str().unwrap_or("").starts_with("pusher") {
                return v;
            }
        }
    }
}

/// A counter or gauge from the server's `/metrics` (0 when absent).
pub async fn metric(s: &TestServer, series: &str) -> f64 {
    let url = format!("http://{}/metrics", s.metrics_addr.unwrap());
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Restarts the PostgreSQL server for real (`pg_ctl restart -m fast`), as its OS user.
pub fn restart_postgres(bindir: &str, datadir: &str) {
    pg_ctl(bindir, datadir, "restart", "");
}

/// Runs `pg_ctl {action}` (`stop`, `start`, `restart`; fast shutdown, waiting) on the test
/// PostgreSQL, as its OS user; `opts` are the server options of a `start` (see [`pg_dirs`]).
pub fn pg_ctl(bindir: &str, datadir: &str, action: &str, opts: &str) {
    let as_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .unwrap()
        .stdout
        == b"0\n";
    let pg_ctl = format!("{bindir}/pg_ctl");
    let mut args = vec![action, "-D", datadir, "-m", "fast", "-w", "-t", "60"];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    args.push("-l");
    let log = format!("{datadir}/restart.log");
    let mut cmd = if as_root {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--", &pg_ctl]);
        c
    } else {
        std::process::Command::new(&pg_ctl)
    };
    let status = cmd
        .args(args)
        .arg(&log)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "pg_ctl {action} failed; see {log}");
}

/// The running PostgreSQL's binaries, data directory and the options to start it again as
/// it runs now (a `pg_ctl start` does not reuse them), for [`pg_ctl`].
pub async fn pg_dirs(sql: &tokio_postgres::Client) -> (String, String, String) {
    let one = |q: String| async move {
        sql.query_one(q.as_str(), &[])
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    let setting = |name: &str| {
        one(format!(
            "SELECT setting FROM pg_settings WHERE name = '{name}'"
        ))
    };
    let datadir = setting("data_directory").await;
    let bindir = one("SELECT setting FROM pg_config WHERE name = 'BINDIR'".into()).await;
    let opts = format!(
        "-c listen_addresses={} -p {} -k {} -c max_connections={}",
        setting("listen_addresses").await,
        setting("port").await,
        setting("unix_socket_directories").await,
        setting("max_connections").await,
    );
    (bindir, datadir, opts)
}
