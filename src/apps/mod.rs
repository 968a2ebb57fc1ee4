//! Applications: credentials, feature switches and limits, behind the [`AppStore`] seam.
//!
//! Apps come from the configuration file (read-only) and from a store that is data
//! ([`records`]: PostgreSQL, Redis or the embedded store), changed through the admin API.
//! Every lookup on the connect and publish paths reads the in-memory [`Registry`]; the store
//! is read at start, on a change notice from any node ([`sync`]) and every
//! [`sync::RESYNC`], and a node that cannot reach it keeps serving the apps it has.

pub mod records;
mod registry;
pub mod sync;

pub use records::{AppRecords, WriteError};
pub use registry::{Change, Registry, Served, Source};

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use crate::config::AppConfig;
use crate::ids::AppId;
use crate::metrics::AppMetrics;

/// An app secret. Its `Debug` never prints it, so it cannot leak into logs.
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: &str) -> Self {
        Self(s.into())
    }
    /// The secret's bytes, for HMAC keys only.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Per-app limits. Every one has a default and a visible behaviour on breach.
#[derive(Clone, Debug)]
pub struct AppLimits {
    /// Connections for the app; 0 = unlimited. Breach: Pusher 4004.
    pub max_connections: usize,
    /// Bytes of event `data`. Breach: HTTP 413 / `pusher:error`.
    pub max_event_bytes: usize,
    /// Channels per trigger call. Breach: HTTP 400.
    pub max_channels_per_event: usize,
    /// Events per batch call. Breach: HTTP 400.
    pub max_batch_size: usize,
    /// Distinct users per presence channel. Breach: `pusher:subscription_error`.
    pub presence_max_members: usize,
    /// Bytes of a member's `user_info`. Breach: `pusher:subscription_error`.
    pub presence_max_member_bytes: usize,
    /// Client events per second per connection. Breach: `pusher:error` 4301, no close.
    pub client_events_per_second: u32,
    /// Channels one connection may be subscribed to. Breach: `pusher:subscription_error`.
    pub max_channels_per_connection: usize,
}

/// One application.
#[derive(Clone, Debug)]
pub struct App {
    /// Id, as in `/apps/{id}`.
    pub id: AppId,
    /// Public key, as in `/app/{key}` and `auth_key`.
    pub key: String,
    /// The secrets, shared by every version of the app built while the node runs: a
    /// connection opened before a rotation checks signatures against the current ones.
    pub credentials: Arc<Credentials>,
    /// A disabled app refuses connections (4003) and API calls (403).
    pub enabled: bool,
    /// Whether `client-` events are accepted.
    pub client_events: bool,
    /// Whether `pusher:signin` is accepted.
    pub user_authentication: bool,
    /// A Pusher connection not signed in after this long is closed (4009); `None`: never.
    pub require_signin: Option<std::time::Duration>,
    /// Limits.
    pub limits: AppLimits,
    /// Webhook endpoints.
    pub webhooks: Vec<crate::config::WebhookConfig>,
    /// The app's connection and message series.
    pub metrics: AppMetrics,
}

/// An app's secrets: the one it signs with, and the one before a rotation, still accepted
/// until it expires (Unix seconds).
#[derive(Debug)]
pub struct Credentials(RwLock<Keys>);

/// The current secret, and the previous one with its expiry.
type Keys = (Secret, Option<(Secret, Option<u64>)>);

impl Credentials {
    /// One secret, no previous one.
    pub fn new(secret: &str) -> Arc<Self> {
        Arc::new(Self(RwLock::new((Secret::new(secret), None))))
    }

    fn of(c: &AppConfig) -> Keys {
        let previous = c.previous_secret.as_deref();
        (
            Secret::new(&c.secret),
            previous.map(|s| (Secret::new(s), c.previous_secret_expires_at)),
        )
    }

    /// Replaces the secrets with `c`'s.
    pub fn set(&self, c: &AppConfig) {
        *self.0.write().expect("credentials lock poisoned") = Self::of(c);
    }
}

impl App {
    /// The secret the app signs with (webhooks, tokens it mints).
    pub fn secret(&self) -> Secret {
        self.credentials
            .0
            .read()
            .expect("credentials lock poisoned")
            .0
            .clone()
    }

    /// The secrets a signature may be made with now: the current one, and the one before a
    /// rotation until it expires.
    pub fn secrets(&self) -> Vec<Secret> {
        let now = crate::clock::now_secs();
        let keys = self
            .credentials
            .0
            .read()
            .expect("credentials lock poisoned");
        let previous = keys
            .1
            .as_ref()
            .filter(|(_, until)| until.is_none_or(|u| now < u))
            .map(|(s, _)| s.clone());
        std::iter::once(keys.0.clone()).chain(previous).collect()
    }

    /// Whether any webhook endpoint wants `event` for `channel`.
    pub fn wants_webhook(&self, event: &str, channel: &str) -> bool {
        self.webhooks.iter().any(|w| w.wants(event, channel))
    }
}

impl App {
    /// Builds an app from its configuration (after [`crate::metrics::install`], for its
    /// series to count).
    pub fn from_config(c: &AppConfig) -> Self {
        Self::with_credentials(c, Arc::new(Credentials(RwLock::new(Credentials::of(c)))))
    }

    /// [`Self::from_config`], the secrets kept in `credentials` (set to `c`'s).
    pub fn with_credentials(c: &AppConfig, credentials: Arc<Credentials>) -> Self {
        credentials.set(c);
        let id = AppId::new(c.id.as_str());
        Self {
            metrics: AppMetrics::new(&id),
            id,
            key: c.key.clone(),
            credentials,
            enabled: c.enabled,
            client_events: c.client_events,
            user_authentication: c.user_authentication,
            require_signin: (c.require_signin_secs > 0)
                .then(|| std::time::Duration::from_secs(c.require_signin_secs)),
            limits: AppLimits {
                max_connections: c.max_connections,
                max_event_bytes: c.max_event_bytes,
                max_channels_per_event: c.max_channels_per_event,
                max_batch_size: c.max_batch_size,
                presence_max_members: c.presence_max_members,
                presence_max_member_bytes: c.presence_max_member_bytes,
                client_events_per_second: c.client_events_per_second,
                max_channels_per_connection: c.max_channels_per_connection,
            },
            webhooks: c.webhooks.clone(),
        }
    }
}

/// Why an app lookup failed (not "not found": that is `Ok(None)`).
#[derive(Debug, thiserror::Error)]
pub enum AppStoreError {
    /// The backing store could not be reached.
    #[error("app store unavailable: {0}")]
    Unavailable(String),
}

impl AppStoreError {
    /// The store could not be reached, for `why`.
    pub fn unavailable(why: impl fmt::Display) -> Self {
        Self::Unavailable(why.to_string())
    }
}

/// Where the connect and publish paths look apps up ([`Registry`]; [`StaticAppStore`] in
/// tests).
#[async_trait]
pub trait AppStore: Send + Sync + 'static {
    /// The app whose public key is `key`.
    async fn by_key(&self, key: &str) -> Result<Option<Arc<App>>, AppStoreError>;
    /// The app whose id is `id`.
    async fn by_id(&self, id: &str) -> Result<Option<Arc<App>>, AppStoreError>;
}

/// Apps from the configuration file and environment, fixed for the process lifetime.
pub struct StaticAppStore {
    by_key: HashMap<String, Arc<App>>,
    by_id: HashMap<String, Arc<App>>,
}

impl StaticAppStore {
    /// Indexes the given apps by key and by id.
    pub fn new(apps: impl IntoIterator<Item = App>) -> Self {
        let mut by_key = HashMap::new();
        let mut by_id = HashMap::new();
        for app in apps {
            let app = Arc::new(app);
            by_key.insert(app.key.clone(), app.clone());
            by_id.insert(app.id.to_string(), app);
        }
        Self { by_key, by_id }
    }
}

#[async_trait]
impl AppStore for StaticAppStore {
    async fn by_key(&self, key: &str) -> Result<Option<Arc<App>>, AppStoreError> {
        Ok(self.by_key.get(key).cloned())
    }
    async fn by_id(&self, id: &str) -> Result<Option<Arc<App>>, AppStoreError> {
        Ok(self.by_id.get(id).cloned())
    }
}
