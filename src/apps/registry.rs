//! The apps this node serves, in memory: every lookup of the connect and publish paths
//! reads here, never the store. Apps from the file are fixed; stored apps change through
//! the admin API (this node's writes, applied at once) and change notices (other nodes').

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use super::records::{AppRecords, WriteError};
use super::{App, AppStore, AppStoreError};
use crate::config::AppConfig;
use crate::frame::CloseReason;
use crate::hub::Hub;
use crate::metrics;

/// Where an app comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The configuration file (read-only).
    Config,
    /// The app store (the admin API).
    Store,
}

/// What a write did, for the log and the metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A new app.
    Create,
    /// New settings of an app.
    Update,
    /// An app removed.
    Delete,
}

impl Change {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }
}

/// One app as served: the built app and the settings it came from.
#[derive(Clone)]
pub struct Served {
    /// The app the sessions and the API use.
    pub app: Arc<App>,
    /// Its settings.
    pub config: Arc<AppConfig>,
    /// Where they come from.
    pub source: Source,
}

#[derive(Default, Clone)]
struct Index {
    by_id: HashMap<String, Served>,
    by_key: HashMap<String, Served>,
}

/// The apps this node serves.
pub struct Registry {
    /// Swapped whole on a change; a lookup clones one `Arc` under the read lock.
    index: RwLock<Arc<Index>>,
    records: Option<Arc<dyn AppRecords>>,
    hub: Hub,
}

impl Registry {
    /// The apps of the file, and an empty set of stored ones until the first load from
    /// `records`. Connections of an app that is disabled or deleted are closed on `hub`.
    pub fn new(
        fixed: impl IntoIterator<Item = AppConfig>,
        records: Option<Arc<dyn AppRecords>>,
        hub: Hub,
    ) -> Self {
        let mut index = Index::default();
        for c in fixed {
            let served = Served {
                app: Arc::new(App::from_config(&c)),
                config: Arc::new(c),
                source: Source::Config,
            };
            index
                .by_key
                .insert(served.config.key.clone(), served.clone());
            index.by_id.insert(served.config.id.clone(), served);
        }
        let this = Self {
            index: RwLock::new(Arc::new(index)),
            records,
            hub,
        };
        this.count();
        this
    }

    /// The store behind the stored apps, if there is one.
    pub fn records(&self) -> Option<&Arc<dyn AppRecords>> {
        self.records.as_ref()
    }

    fn index(&self) -> Arc<Index> {
        self.index.read().expect("apps lock poisoned").clone()
    }

    fn count(&self) {
        let index = self.index();
        let fixed = index
            .by_id
            .values()
            .filter(|s| s.source == Source::Config)
            .count();
        metrics::apps_served(fixed, index.by_id.len() - fixed);
    }

    /// Every app, by id.
    pub fn list(&self) -> Vec<Served> {
        let mut all: Vec<Served> = self.index().by_id.values().cloned().collect();
        all.sort_by(|a, b| a.config.id.cmp(&b.config.id));
        all
    }

    /// The app with this id.
    pub fn get(&self, id: &str) -> Option<Served> {
        self.index().by_id.get(id).cloned()
    }

    fn store(&self) -> Result<&Arc<dyn AppRecords>, WriteError> {
        self.records
            .as_ref()
            .ok_or_else(|| WriteError::Unavailable(AppStoreError::unavailable("no app store")))
    }

    /// Refuses a write that would touch an app of the file or reuse its id or key.
    fn check_fixed(&self, app: &AppConfig) -> Result<(), WriteError> {
        let index = self.index();
        let fixed = |s: Option<&Served>| s.is_some_and(|s| s.source == Source::Config);
        if fixed(index.by_id.get(&app.id)) {
            return Err(WriteError::ReadOnly(app.id.clone()));
        }
        if index
            .by_key
            .get(&app.key)
            .is_some_and(|s| s.source == Source::Config || s.config.id != app.id)
        {
            return Err(WriteError::Conflict(format!(
                "the key {:?} is taken by another app",
                app.key
            )));
        }
        Ok(())
    }

    /// Stores a new app and serves it here at once (the other nodes on its notice).
    pub async fn create(&self, app: AppConfig) -> Result<Served, WriteError> {
        if self.index().by_id.contains_key(&app.id) {
            return Err(WriteError::Conflict(format!(
                "an app with id {:?} exists",
                app.id
            )));
        }
        self.check_fixed(&app)?;
        let store = self.store()?;
        store.create(&app).await?;
        store.announce(&app.id).await;
        self.apply(&app.id.clone(), Some(app.clone()));
        self.get(&app.id).ok_or(WriteError::NotFound)
    }

    /// Replaces a stored app's settings.
    pub async fn replace(&self, app: AppConfig) -> Result<Served, WriteError> {
        self.check_fixed(&app)?;
        let store = self.store()?;
        store.replace(&app).await?;
        store.announce(&app.id).await;
        self.apply(&app.id.clone(), Some(app.clone()));
        self.get(&app.id).ok_or(WriteError::NotFound)
    }

    /// Deletes a stored app; its connections here are closed (elsewhere on the notice).
    pub async fn delete(&self, id: &str) -> Result<(), WriteError> {
        if self
            .index()
            .by_id
            .get(id)
            .is_some_and(|s| s.source == Source::Config)
        {
            return Err(WriteError::ReadOnly(id.to_owned()));
        }
        let store = self.store()?;
        store.delete(id).await?;
        store.announce(id).await;
        self.apply(id, None);
        Ok(())
    }

    /// Serves `config` as the stored app `id` (`None`: no longer). A record that clashes
    /// with an app of the file is not served (logged). Closes the app's connections when
    /// it was disabled or removed.
    pub fn apply(&self, id: &str, config: Option<AppConfig>) {
        let closing = {
            let mut slot = self.index.write().expect("apps lock poisoned");
            let old = slot.by_id.get(id).cloned();
            if old.as_ref().is_some_and(|o| o.source == Source::Config) {
                if config.is_some() {
                    tracing::warn!(app = id, "stored app shadowed by the configuration file's");
                }
                return;
            }
            if old.as_ref().map(|o| &*o.config) == config.as_ref() {
                return;
            }
            let mut index = (**slot).clone();
            if let Some(old) = &old {
                index.by_id.remove(id);
                index.by_key.remove(&old.config.key);
            }
            let mut closing = old.as_ref().map(|_| CloseReason::AppDeleted);
            if let Some(c) = config {
                if index.by_key.contains_key(&c.key) {
                    tracing::error!(app = id, "stored app's key is another app's; not served");
                } else {
                    closing = (old.as_ref().is_some_and(|o| o.config.enabled) && !c.enabled)
                        .then_some(CloseReason::AppDisabled);
                    // The same app again: its open connections see the new secrets.
                    let app = match old.as_ref().filter(|o| o.config.id == c.id) {
                        Some(o) => App::with_credentials(&c, o.app.credentials.clone()),
                        None => App::from_config(&c),
                    };
                    let served = Served {
                        app: Arc::new(app),
                        config: Arc::new(c),
                        source: Source::Store,
                    };
                    index
                        .by_key
                        .insert(served.config.key.clone(), served.clone());
                    index.by_id.insert(id.to_owned(), served);
                }
            }
            *slot = Arc::new(index);
            closing
        };
        self.count();
        if let Some(reason) = closing {
            let app = crate::ids::AppId::new(id);
            let n = self.hub.close_app(&app, reason);
            if n > 0 {
                tracing::info!(app = id, connections = n, reason = ?reason, "closing the app's connections");
            }
        }
    }

    /// Serves exactly `all` as the stored apps (a full reload).
    pub fn apply_all(&self, all: Vec<AppConfig>) {
        let mut stale: Vec<String> = self
            .index()
            .by_id
            .values()
            .filter(|s| s.source == Source::Store)
            .map(|s| s.config.id.clone())
            .collect();
        // Removals first: a key that moved from one app to another is free again.
        stale.retain(|id| !all.iter().any(|a| &a.id == id));
        for id in stale {
            self.apply(&id, None);
        }
        for app in all {
            let id = app.id.clone();
            self.apply(&id, Some(app));
        }
    }
}

#[async_trait]
impl AppStore for Registry {
    async fn by_key(&self, key: &str) -> Result<Option<Arc<App>>, AppStoreError> {
        Ok(self.index().by_key.get(key).map(|s| s.app.clone()))
    }
    async fn by_id(&self, id: &str) -> Result<Option<Arc<App>>, AppStoreError> {
        Ok(self.index().by_id.get(id).map(|s| s.app.clone()))
    }
}
