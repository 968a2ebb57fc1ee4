//! Apps kept as data: the [`AppRecords`] seam and its stores, PostgreSQL (`database.url`),
//! Redis (a cluster without PostgreSQL) and the embedded store (one node). A record is an
//! app's settings ([`AppConfig`], the keys of a `[[apps]]` table) as JSON, so every setting
//! the file has can be stored without a column per setting.
//!
//! Each store also carries the change notices between nodes: a write announces the app's id
//! and every node's [`super::sync`] task re-reads that record.

mod embedded;
mod postgres;
mod redis;

use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

pub use self::embedded::EmbeddedRecords;
pub use self::postgres::PostgresRecords;
pub use self::redis::RedisRecords;
use super::AppStoreError;
use crate::config::AppConfig;

/// Why a write was not made.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Another app has this id or key.
    #[error("{0}")]
    Conflict(String),
    /// No stored app has this id.
    #[error("no such app")]
    NotFound,
    /// The app comes from the configuration file, which the API does not change.
    #[error("app {0:?} comes from the configuration file and is read-only")]
    ReadOnly(String),
    /// The store could not be reached.
    #[error(transparent)]
    Unavailable(#[from] AppStoreError),
}

/// What a change notice says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// This app changed (or was deleted).
    App(String),
    /// Anything may have changed (the notice link was down): read every record.
    All,
}

/// Where stored apps live.
#[async_trait]
pub trait AppRecords: Send + Sync + 'static {
    /// The store's name, for logs.
    fn name(&self) -> &'static str;
    /// Every stored app.
    async fn all(&self) -> Result<Vec<AppConfig>, AppStoreError>;
    /// The stored app with this id.
    async fn get(&self, id: &str) -> Result<Option<AppConfig>, AppStoreError>;
    /// Stores a new app: [`WriteError::Conflict`] when its id or key is taken.
    async fn create(&self, app: &AppConfig) -> Result<(), WriteError>;
    /// Replaces a stored app (same id): `NotFound`, or `Conflict` when its new key is taken.
    async fn replace(&self, app: &AppConfig) -> Result<(), WriteError>;
    /// Deletes a stored app: `NotFound` when there is none.
    async fn delete(&self, id: &str) -> Result<(), WriteError>;
    /// Tells every node that `id` changed (a store whose writes notify by themselves does
    /// nothing).
    async fn announce(&self, id: &str);
    /// Sends the notices of every node's writes into `tx` until `stop`, reconnecting after
    /// failures; after each (re)connection it sends [`Notice::All`], since notices sent while
    /// it was away are lost.
    async fn watch(&self, tx: tokio::sync::mpsc::Sender<Notice>, stop: CancellationToken);
}

/// Runs `link` (a notice link's life, returning why it ended) again and again until `stop`,
/// 100 ms apart doubling to 5 s; a link that lasted a while starts the backoff over.
async fn relink<F>(what: &str, stop: &CancellationToken, mut link: impl FnMut() -> F)
where
    F: std::future::Future<Output = String>,
{
    const FIRST: Duration = Duration::from_millis(100);
    let mut delay = FIRST;
    loop {
        let started = tokio::time::Instant::now();
        let error = tokio::select! {
            _ = stop.cancelled() => return,
            e = link() => e,
        };
        tracing::warn!(error = %error, "apps: {what} lost; reconnecting");
        if started.elapsed() > Duration::from_secs(30) {
            delay = FIRST;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// A record from its JSON; `None` (logged) for one this version cannot read.
fn decode(id: &str, json: &str) -> Option<AppConfig> {
    match serde_json::from_str::<AppConfig>(json) {
        Ok(app) => Some(app),
        Err(e) => {
            tracing::error!(app = id, error = %e, "stored app cannot be read; skipped");
            None
        }
    }
}

fn encode(app: &AppConfig) -> String {
    serde_json::to_string(app).expect("an app's settings serialize")
}

fn conflict(app: &AppConfig) -> WriteError {
    WriteError::Conflict(format!(
        "an app with id {:?} or key {:?} exists",
        app.id, app.key
    ))
}
