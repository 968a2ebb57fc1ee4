//! Stored apps in the embedded store (a node without Redis or PostgreSQL): one table of
//! id → JSON and one of key → id. One node, so a change needs no notice.

use async_trait::async_trait;
use redb::{ReadableTable, TableDefinition, TableError, WriteTransaction};
use tokio_util::sync::CancellationToken;

use super::{conflict, decode, encode, AppRecords, Notice, WriteError};
use crate::apps::AppStoreError;
use crate::config::AppConfig;
use crate::store::{Store, StoreError};

const APPS: TableDefinition<&str, &str> = TableDefinition::new("apps");
const KEYS: TableDefinition<&str, &str> = TableDefinition::new("app_keys");

/// Apps in the embedded store.
pub struct EmbeddedRecords(Store);

impl EmbeddedRecords {
    /// Apps kept in `store`.
    pub fn new(store: Store) -> Self {
        Self(store)
    }
}

/// What a write found, decided inside its transaction.
enum Outcome {
    Done,
    Conflict,
    NotFound,
}

fn finish(r: Result<Outcome, StoreError>, app: Option<&AppConfig>) -> Result<(), WriteError> {
    match r.map_err(AppStoreError::unavailable)? {
        Outcome::Done => Ok(()),
        Outcome::NotFound => Err(WriteError::NotFound),
        Outcome::Conflict => Err(app.map_or(WriteError::NotFound, conflict)),
    }
}

/// The stored record of `id` in a write transaction.
fn stored(txn: &WriteTransaction, id: &str) -> Result<Option<AppConfig>, StoreError> {
    let t = txn.open_table(APPS)?;
    let v = t.get(id)?;
    Ok(v.and_then(|v| decode(id, v.value())))
}

#[async_trait]
impl AppRecords for EmbeddedRecords {
    fn name(&self) -> &'static str {
        "embedded"
    }

    async fn all(&self) -> Result<Vec<AppConfig>, AppStoreError> {
        let r = self.0.read_after_writes(|txn| {
            let t = match txn.open_table(APPS) {
                Ok(t) => t,
                Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut out = Vec::new();
            for row in t.iter()? {
                let (id, json) = row?;
                out.extend(decode(id.value(), json.value()));
            }
            Ok(out)
        });
        r.await.map_err(AppStoreError::unavailable)
    }

    async fn get(&self, id: &str) -> Result<Option<AppConfig>, AppStoreError> {
        let id = id.to_owned();
        let r = self.0.read_after_writes(move |txn| {
            let t = match txn.open_table(APPS) {
                Ok(t) => t,
                Err(TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let v = t.get(id.as_str())?;
            Ok(v.and_then(|v| decode(&id, v.value())))
        });
        r.await.map_err(AppStoreError::unavailable)
    }

    async fn create(&self, app: &AppConfig) -> Result<(), WriteError> {
        let a = app.clone();
        let r = self.0.write(move |txn| {
            let mut keys = txn.open_table(KEYS)?;
            let mut apps = txn.open_table(APPS)?;
            if apps.get(a.id.as_str())?.is_some() || keys.get(a.key.as_str())?.is_some() {
                return Ok(Outcome::Conflict);
            }
            apps.insert(a.id.as_str(), encode(&a).as_str())?;
            keys.insert(a.key.as_str(), a.id.as_str())?;
            Ok(Outcome::Done)
        });
        finish(r.await, Some(app))
    }

    async fn replace(&self, app: &AppConfig) -> Result<(), WriteError> {
        let a = app.clone();
        let r = self.0.write(move |txn| {
            let Some(old) = stored(txn, &a.id)? else {
                return Ok(Outcome::NotFound);
            };
            let mut keys = txn.open_table(KEYS)?;
            if old.key != a.key {
                if keys.get(a.key.as_str())?.is_some() {
                    return Ok(Outcome::Conflict);
                }
                keys.remove(old.key.as_str())?;
                keys.insert(a.key.as_str(), a.id.as_str())?;
            }
            txn.open_table(APPS)?
                .insert(a.id.as_str(), encode(&a).as_str())?;
            Ok(Outcome::Done)
        });
        finish(r.await, Some(app))
    }

    async fn delete(&self, id: &str) -> Result<(), WriteError> {
        let id = id.to_owned();
        let r = self.0.write(move |txn| {
            let Some(old) = stored(txn, &id)? else {
                return Ok(Outcome::NotFound);
            };
            txn.open_table(KEYS)?.remove(old.key.as_str())?;
            txn.open_table(APPS)?.remove(id.as_str())?;
            Ok(Outcome::Done)
        });
        finish(r.await, None)
    }

    async fn announce(&self, _id: &str) {}

    async fn watch(&self, _tx: tokio::sync::mpsc::Sender<Notice>, stop: CancellationToken) {
        stop.cancelled().await;
    }
}
