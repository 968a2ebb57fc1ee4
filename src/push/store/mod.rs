//! Where registrations, preferences, the hourly quota and the sent-once claims live: the
//! embedded store on one node ([`EmbeddedPushStore`]), Redis on a cluster
//! ([`RedisPushStore`]), so every node decides with the same data.

mod embedded;
mod redis;

use async_trait::async_trait;

pub use self::redis::RedisPushStore;
pub use embedded::EmbeddedPushStore;

use super::decide::Prefs;
use super::{Registration, RegistrationId};
use crate::ids::{AppId, UserId};

/// Why the store could not answer (I/O, Redis down). Nothing was changed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreFailure(pub String);

/// Durable push state. Every method is one atomic step of the backing store.
#[async_trait]
pub trait PushStore: Send + Sync + 'static {
    /// Adds `reg` for the user. A registration of the same device (token, or Web Push
    /// endpoint) is replaced; beyond `max` registrations the oldest are removed.
    async fn register(
        &self,
        app: &AppId,
        user: &UserId,
        reg: Registration,
        max: usize,
    ) -> Result<(), StoreFailure>;

    /// The user's registrations, oldest first.
    async fn registrations(
        &self,
        app: &AppId,
        user: &UserId,
    ) -> Result<Vec<Registration>, StoreFailure>;

    /// Removes one registration; whether it existed.
    async fn remove(
        &self,
        app: &AppId,
        user: &UserId,
        id: &RegistrationId,
    ) -> Result<bool, StoreFailure>;

    /// The user's preferences (defaults when never set).
    async fn prefs(&self, app: &AppId, user: &UserId) -> Result<Prefs, StoreFailure>;

    /// Replaces the user's preferences.
    async fn set_prefs(
        &self,
        app: &AppId,
        user: &UserId,
        prefs: &Prefs,
    ) -> Result<(), StoreFailure>;

    /// Counts one push for the user unless `max` were counted in the hour before `now_ms`;
    /// returns whether it was counted (`false`: throttled).
    async fn take_quota(
        &self,
        app: &AppId,
        user: &UserId,
        max: u32,
        now_ms: u64,
    ) -> Result<bool, StoreFailure>;

    /// Claims the push of `key` (an event, or a group of reactions) to device `id`: `true`
    /// the first time, `false` for every later call until `expires_ms`.
    async fn claim(
        &self,
        app: &AppId,
        key: &str,
        id: &RegistrationId,
        expires_ms: u64,
    ) -> Result<bool, StoreFailure>;
}

/// Milliseconds in the throttling window.
pub(crate) const HOUR_MS: u64 = 3_600_000;

/// Applies a registration to a user's list: same device replaced, oldest beyond `max` out.
pub(crate) fn merge(list: &mut Vec<Registration>, reg: Registration, max: usize) {
    list.retain(|r| r.device.identity() != reg.device.identity());
    list.push(reg);
    list.sort_by_key(|r| r.created_ms);
    let excess = list.len().saturating_sub(max);
    list.drain(..excess);
}
