//! Push notifications for users who are offline.
//!
//! `Publisher::publish` offers every user event it published to [`Push::offer`] together with
//! the broker's verdict on whether the user had a connection anywhere in the cluster
//! (`Receipt::offline`). The offer never waits: it is put on a bounded queue (full → dropped
//! and counted). One worker task takes the decision tree, in this order: the user is online
//! → nothing; the event type is not eligible → nothing; the user's preferences refuse it →
//! nothing (reactions are grouped here for `react_group_secs` into one push); the user is over
//! `max_per_hour` → nothing; otherwise one delivery per registered device, each claimed once
//! per (event, device) in the store so nothing is pushed twice. Deliveries run on a bounded
//! pool of tasks, retried with backoff on transient failures (5xx, 429, network) until
//! `retry_secs` or the event's ttl, never on permanent ones; a device the provider calls
//! gone (404/410) loses its registration.
//!
//! Registrations and preferences live in a [`store::PushStore`]: the embedded store on one
//! node, Redis on a cluster.

pub mod decide;
pub mod providers;
pub mod store;
mod worker;

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::PushConfig;
use crate::event::{Event, EventKind, Target};
use crate::ids::{AppId, UserId};
use crate::metrics;
use crate::protocol::bus::{PushSubscription, PushToken};
use providers::Providers;
use store::PushStore;

/// A registration's id: 16 random bytes, hex.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RegistrationId(String);

impl RegistrationId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(hex::encode(rand::random::<[u8; 16]>()))
    }

    /// An id given by a client (checked for shape only).
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Self(s.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RegistrationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The device family, which decides the provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// A browser (Web Push).
    Web,
    /// Android (FCM).
    Android,
    /// iOS (APNs).
    Ios,
}

impl Platform {
    /// Parses `web`, `android` or `ios`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "web" => Self::Web,
            "android" => Self::Android,
            "ios" => Self::Ios,
            _ => return None,
        })
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::Android => "android",
            Self::Ios => "ios",
        }
    }
}

/// Where a push goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    /// An FCM registration token, an APNs device token, or a token of your own service.
    Token(String),
    /// A browser's Web Push subscription (keys base64url, as the browser gives them).
    WebPush {
        /// The push service URL.
        endpoint: String,
        /// The browser's P-256 public key (uncompressed point).
        p256dh: String,
        /// The 16-byte authentication secret.
        auth: String,
    },
}

impl Device {
    /// What identifies the device: registering it again replaces the old registration.
    fn identity(&self) -> &str {
        match self {
            Device::Token(t) => t,
            Device::WebPush { endpoint, .. } => endpoint,
        }
    }

    /// A form safe to show (API listings): never the whole token or the keys.
    pub fn redacted(&self) -> String {
        match self {
            // Tokens are ASCII (checked at registration), so byte slicing is safe.
            Device::Token(t) if t.len() > 12 => format!("{}…{}", &t[..6], &t[t.len() - 4..]),
            Device::Token(_) => "…".into(),
            Device::WebPush { endpoint, .. } => match endpoint.find("://") {
                Some(i) => {
                    let host_end = endpoint[i + 3..]
                        .find('/')
                        .map_or(endpoint.len(), |j| i + 3 + j);
                    format!("{}/…", &endpoint[..host_end])
                }
                None => "…".into(),
            },
        }
    }
}

/// One device of a user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Its id (API, bus answer).
    pub id: RegistrationId,
    /// The device family.
    pub platform: Platform,
    /// Where pushes go.
    pub device: Device,
    /// When it was registered (ms since the epoch).
    pub created_ms: u64,
}

/// An event offered for a push.
struct Offer {
    user: UserId,
    event: Event,
}

/// Why a registration was refused (answered to the client).
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// Push is not configured, or not for this platform.
    #[error("{0}")]
    Unsupported(String),
    /// Bad token or subscription.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error("push store: {0}")]
    Store(#[from] store::StoreFailure),
}

/// The push component's handle. Cheap to clone; `offer` never waits.
#[derive(Clone)]
pub struct Push {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    config: PushConfig,
    store: Arc<dyn PushStore>,
    providers: Arc<Providers>,
    tx: mpsc::Sender<Offer>,
    rx: Mutex<Option<mpsc::Receiver<Offer>>>,
}

impl Push {
    /// Push switched off (no provider configured).
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// Push with `config`'s providers (keys are read and checked now: a bad key file is
    /// fatal at start-up) over `store`. Disabled when no provider is configured.
    pub fn new(config: &PushConfig, store: Arc<dyn PushStore>) -> Result<Self, String> {
        if !config.enabled() {
            return Ok(Self::disabled());
        }
        let providers = Arc::new(Providers::from_config(config)?);
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        Ok(Self {
            inner: Some(Arc::new(Inner {
                config: config.clone(),
                store,
                providers,
                tx,
                rx: Mutex::new(Some(rx)),
            })),
        })
    }

    /// Whether push is configured.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The registrations and preferences store, when push is on.
    pub fn store(&self) -> Option<&Arc<dyn PushStore>> {
        self.inner.as_ref().map(|i| &i.store)
    }

    /// Starts the worker on `tracker` (once; later calls do nothing); it stops with `stop`.
    pub fn spawn(&self, tracker: &TaskTracker, stop: CancellationToken) {
        let Some(inner) = &self.inner else {
            return;
        };
        let Some(rx) = inner.rx.lock().expect("push queue slot").take() else {
            return;
        };
        let w = worker::Worker::new(
            inner.config.clone(),
            inner.store.clone(),
            inner.providers.clone(),
            rx,
            tracker.clone(),
            stop,
        );
        tracker.spawn(w.run());
    }

    /// Whether `event` could lead to a push: push is on and it is a user event of a kind
    /// that carries a notification. Cheap; `Publisher::publish` keeps a copy only then.
    pub fn wants(&self, event: &Event) -> bool {
        self.inner.is_some()
            && matches!(event.target, Target::User(_))
            && matches!(
                event.kind,
                EventKind::Notification { .. }
                    | EventKind::DirectMessage { .. }
                    | EventKind::Action { .. }
            )
    }

    /// Offers a published user event; `offline`: its user had no connection anywhere when
    /// it was published. Never waits: a full queue drops the event (counted, logged).
    /// Returns whether the event was queued for a decision.
    pub fn offer(&self, event: Event, offline: bool) -> bool {
        let Some(inner) = &self.inner else {
            return false;
        };
        let Target::User(user) = &event.target else {
            return false;
        };
        if !offline {
            metrics::push_decision("online");
            return false;
        }
        let user = user.clone();
        if inner.tx.try_send(Offer { user, event }).is_err() {
            metrics::push_dropped("queue_full");
            tracing::warn!("push queue full: an event was not considered for a push");
            return false;
        }
        true
    }

    /// Registers the device of a bus `register_push` message: `token` is a string (FCM,
    /// APNs, or the JSON text of a subscription) or a subscription object.
    pub async fn register_wire(
        &self,
        app: &AppId,
        user: &UserId,
        platform: &str,
        token: Option<PushToken>,
        subscription: Option<PushSubscription>,
    ) -> Result<(RegistrationId, Platform), RegisterError> {
        let invalid = |m: &str| RegisterError::Invalid(m.to_owned());
        let p = Platform::parse(platform)
            .ok_or_else(|| invalid("platform must be web, android or ios"))?;
        let sub = match (token, subscription) {
            (_, Some(s)) | (Some(PushToken::Subscription(s)), None) => Some(s),
            (Some(PushToken::Text(t)), None) if p == Platform::Web => Some(
                serde_json::from_str::<PushSubscription>(&t)
                    .map_err(|_| invalid("token must be the browser's subscription object"))?,
            ),
            (Some(PushToken::Text(t)), None) => {
                return Ok((self.register(app, user, p, Device::Token(t)).await?, p))
            }
            (None, None) => return Err(invalid("token is required")),
        };
        let s = sub.expect("set above");
        let device = Device::WebPush {
            endpoint: s.endpoint,
            p256dh: s.keys.p256dh,
            auth: s.keys.auth,
        };
        Ok((self.register(app, user, p, device).await?, p))
    }

    /// Registers a device for `user` (replacing the same device, and the oldest beyond
    /// `max_registrations`).
    pub async fn register(
        &self,
        app: &AppId,
        user: &UserId,
        platform: Platform,
        device: Device,
    ) -> Result<RegistrationId, RegisterError> {
        let Some(inner) = &self.inner else {
            return Err(RegisterError::Unsupported(
                "push notifications are not enabled".into(),
            ));
        };
        if !inner.providers.supports(platform) {
            return Err(RegisterError::Unsupported(format!(
                "no push provider for platform {}",
                platform.as_str()
            )));
        }
        providers::validate(platform, &device, &inner.config).map_err(RegisterError::Invalid)?;
        let reg = Registration {
            id: RegistrationId::random(),
            platform,
            device,
            created_ms: crate::clock::now_ms(),
        };
        let id = reg.id.clone();
        inner
            .store
            .register(app, user, reg, inner.config.max_registrations)
            .await?;
        metrics::push_registered(platform.as_str());
        Ok(id)
    }
}
