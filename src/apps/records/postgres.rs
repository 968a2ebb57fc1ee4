//! Stored apps in PostgreSQL (`switchboard.apps`, made by [`crate::pg`]'s migrations). A
//! trigger announces every change, the admin API's and an operator's own SQL alike, on
//! `NOTIFY switchboard_apps`; each node LISTENs on a connection of its own.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt as _;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};
use tokio_util::sync::CancellationToken;

use super::{conflict, decode, encode, relink, AppRecords, Notice, WriteError};
use crate::apps::AppStoreError;
use crate::config::AppConfig;
use crate::pg::describe;

/// The channel of the `switchboard.apps` trigger.
const CHANNEL: &str = "switchboard_apps";
/// Longest a statement may take before the store counts as unreachable.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Apps in PostgreSQL.
pub struct PostgresRecords {
    config: Config,
    /// The command connection, made (and migrated) on first use and again after it closed.
    /// Cloned out of the lock before use: no statement runs under it.
    client: Mutex<Option<std::sync::Arc<Client>>>,
}

impl PostgresRecords {
    /// Apps in the database at `url` (not contacted until first use).
    pub fn new(url: &str) -> Result<Self, String> {
        let base: Config = url.parse().map_err(|e| describe(&e))?;
        Ok(Self {
            config: crate::pg::config(&base, "switchboard-apps"),
            client: Mutex::new(None),
        })
    }

    async fn client(&self) -> Result<std::sync::Arc<Client>, AppStoreError> {
        let current = self.client.lock().expect("apps pg lock poisoned").clone();
        if let Some(c) = current.filter(|c| !c.is_closed()) {
            return Ok(c);
        }
        let connect = async {
            let (mut client, conn) = self.config.connect(NoTls).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "apps: database connection ended");
                }
            });
            crate::pg::migrate(&mut client).await?;
            Ok::<_, tokio_postgres::Error>(client)
        };
        let client = tokio::time::timeout(STATEMENT_TIMEOUT, connect)
            .await
            .map_err(|_| AppStoreError::unavailable("connecting to the database timed out"))?
            .map_err(|e| AppStoreError::unavailable(describe(&e)))?;
        let client = std::sync::Arc::new(client);
        *self.client.lock().expect("apps pg lock poisoned") = Some(client.clone());
        Ok(client)
    }

    /// Runs `f` on the command connection within [`STATEMENT_TIMEOUT`].
    async fn run<T, F>(&self, f: impl FnOnce(std::sync::Arc<Client>) -> F) -> Result<T, WriteError>
    where
        F: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let client = self.client().await?;
        match tokio::time::timeout(STATEMENT_TIMEOUT, f(client)).await {
            Err(_) => Err(AppStoreError::unavailable("database statement timed out").into()),
            Ok(Err(e)) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                Err(WriteError::Conflict(String::new()))
            }
            Ok(Err(e)) => Err(AppStoreError::unavailable(describe(&e)).into()),
            Ok(Ok(v)) => Ok(v),
        }
    }
}

fn read_only(e: WriteError) -> AppStoreError {
    match e {
        WriteError::Unavailable(e) => e,
        other => AppStoreError::unavailable(other),
    }
}

/// A unique violation names no app: say which.
fn named(r: Result<u64, WriteError>, app: &AppConfig) -> Result<(), WriteError> {
    match r {
        Ok(0) => Err(WriteError::NotFound),
        Ok(_) => Ok(()),
        Err(WriteError::Conflict(_)) => Err(conflict(app)),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl AppRecords for PostgresRecords {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn all(&self) -> Result<Vec<AppConfig>, AppStoreError> {
        let sql = "SELECT id, settings::text FROM switchboard.apps ORDER BY id";
        let rows = self
            .run(|c| async move { c.query(sql, &[]).await })
            .await
            .map_err(read_only)?;
        Ok(rows
            .iter()
            .filter_map(|r| decode(r.get(0), r.get(1)))
            .collect())
    }

    async fn get(&self, id: &str) -> Result<Option<AppConfig>, AppStoreError> {
        let sql = "SELECT settings::text FROM switchboard.apps WHERE id = $1";
        let id = id.to_owned();
        let row = self
            .run(|c| async move { c.query_opt(sql, &[&id]).await.map(|r| (r, id)) })
            .await
            .map_err(read_only)?;
        Ok(row.0.and_then(|r| decode(&row.1, r.get(0))))
    }

    async fn create(&self, app: &AppConfig) -> Result<(), WriteError> {
        let sql =
            "INSERT INTO switchboard.apps (id, key, settings) VALUES ($1, $2, $3::text::jsonb)";
        let (id, key, json) = (app.id.clone(), app.key.clone(), encode(app));
        let r = self
            .run(|c| async move { c.execute(sql, &[&id, &key, &json]).await })
            .await;
        named(r, app)
    }

    async fn replace(&self, app: &AppConfig) -> Result<(), WriteError> {
        let sql = "UPDATE switchboard.apps SET key = $2, settings = $3::text::jsonb, \
                   updated_at = now() WHERE id = $1";
        let (id, key, json) = (app.id.clone(), app.key.clone(), encode(app));
        let r = self
            .run(|c| async move { c.execute(sql, &[&id, &key, &json]).await })
            .await;
        named(r, app)
    }

    async fn delete(&self, id: &str) -> Result<(), WriteError> {
        let sql = "DELETE FROM switchboard.apps WHERE id = $1";
        let id = id.to_owned();
        match self
            .run(|c| async move { c.execute(sql, &[&id]).await })
            .await
        {
            Ok(0) => Err(WriteError::NotFound),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The trigger notifies in the writing transaction.
    async fn announce(&self, _id: &str) {}

    async fn watch(&self, tx: tokio::sync::mpsc::Sender<Notice>, stop: CancellationToken) {
        relink("LISTEN connection", &stop, || listen(&self.config, &tx)).await;
    }
}

/// One LISTEN connection's life: forwards notices; returns why it ended.
async fn listen(config: &Config, tx: &tokio::sync::mpsc::Sender<Notice>) -> String {
    let (client, mut conn) = match config.connect(NoTls).await {
        Ok(c) => c,
        Err(e) => return describe(&e),
    };
    let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx)).boxed();
    let sql = format!("LISTEN {CHANNEL}");
    let subscribe = client.batch_execute(&sql);
    tokio::pin!(subscribe);
    let mut listening = false;
    loop {
        tokio::select! {
            r = &mut subscribe, if !listening => {
                if let Err(e) = r {
                    return describe(&e);
                }
                listening = true;
                if tx.send(Notice::All).await.is_err() {
                    return "stopped".into();
                }
            }
            m = messages.next() => match m {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.send(Notice::App(n.payload().to_owned())).await.is_err() {
                        return "stopped".into();
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return describe(&e),
                None => return "connection closed".into(),
            },
        }
    }
}
