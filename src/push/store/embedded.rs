//! Push state in the embedded store (one node). Tables: `push_registrations` and
//! `push_prefs` map `(app, user)` to JSON; `push_quota` maps `(app, user)` to the send times
//! of the last hour (at most `max_per_hour`, 8 bytes each); `push_sent` maps `(app, key,
//! registration)` to its expiry and `push_sent_expiry` indexes it by expiry, so every claim
//! also deletes a few expired claims and the table stays bounded by the pushes of a ttl.

use async_trait::async_trait;
use redb::{ReadTransaction, ReadableTable, TableDefinition, TableError, WriteTransaction};

use super::{merge, PushStore, StoreFailure, HOUR_MS};
use crate::ids::{AppId, UserId};
use crate::push::decide::Prefs;
use crate::push::{Registration, RegistrationId};
use crate::store::{Store, StoreError};

type User<'a> = (&'a str, &'a str);
const REGS: TableDefinition<User, &[u8]> = TableDefinition::new("push_registrations");
const PREFS: TableDefinition<User, &[u8]> = TableDefinition::new("push_prefs");
const QUOTA: TableDefinition<User, &[u8]> = TableDefinition::new("push_quota");
const SENT: TableDefinition<(&str, &str, &str), u64> = TableDefinition::new("push_sent");
const SENT_EXPIRY: TableDefinition<(u64, &str, &str, &str), ()> =
    TableDefinition::new("push_sent_expiry");
/// Expired claims deleted per claim: more than one, so cleanup outpaces growth.
const PRUNE: usize = 16;

/// Push state in the embedded store.
pub struct EmbeddedPushStore {
    store: Store,
}

impl EmbeddedPushStore {
    /// Over `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

impl From<StoreError> for StoreFailure {
    fn from(e: StoreError) -> Self {
        Self(e.to_string())
    }
}

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Db(format!("push record unreadable: {e}"))
}

/// The JSON value of `(app, user)` in `table`, from a snapshot; `None` when absent.
fn read_json<T: serde::de::DeserializeOwned>(
    txn: &ReadTransaction,
    table: TableDefinition<User, &[u8]>,
    key: User,
) -> Result<Option<T>, StoreError> {
    let t = match txn.open_table(table) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some(v) = t.get(key)? else {
        return Ok(None);
    };
    serde_json::from_slice(v.value()).map(Some).map_err(corrupt)
}

fn regs_of(txn: &WriteTransaction, key: User) -> Result<Vec<Registration>, StoreError> {
    let t = txn.open_table(REGS)?;
    let v = t.get(key)?;
    match v {
        Some(v) => serde_json::from_slice(v.value()).map_err(corrupt),
        None => Ok(Vec::new()),
    }
}

fn put_regs(txn: &WriteTransaction, key: User, list: &[Registration]) -> Result<(), StoreError> {
    let mut t = txn.open_table(REGS)?;
    if list.is_empty() {
        t.remove(key)?;
    } else {
        let json = serde_json::to_vec(list).expect("registrations serialize");
        t.insert(key, json.as_slice())?;
    }
    Ok(())
}

#[async_trait]
impl PushStore for EmbeddedPushStore {
    async fn register(
        &self,
        app: &AppId,
        user: &UserId,
        reg: Registration,
        max: usize,
    ) -> Result<(), StoreFailure> {
        let (app, user) = (app.to_string(), user.to_string());
        self.store
            .write(move |txn| {
                let mut list = regs_of(txn, (&app, &user))?;
                merge(&mut list, reg, max);
                put_regs(txn, (&app, &user), &list)
            })
            .await?;
        Ok(())
    }

    async fn registrations(
        &self,
        app: &AppId,
        user: &UserId,
    ) -> Result<Vec<Registration>, StoreFailure> {
        let (app, user) = (app.to_string(), user.to_string());
        let list = self
            .store
            .read(move |txn| read_json(txn, REGS, (&app, &user)))
            .await?;
        Ok(list.unwrap_or_default())
    }

    async fn remove(
        &self,
        app: &AppId,
        user: &UserId,
        id: &RegistrationId,
    ) -> Result<bool, StoreFailure> {
        let (app, user, id) = (app.to_string(), user.to_string(), id.clone());
        let removed = self
            .store
            .write(move |txn| {
                let mut list = regs_of(txn, (&app, &user))?;
                let before = list.len();
                list.retain(|r| r.id != id);
                put_regs(txn, (&app, &user), &list)?;
                Ok(list.len() != before)
            })
            .await?;
        Ok(removed)
    }

    async fn prefs(&self, app: &AppId, user: &UserId) -> Result<Prefs, StoreFailure> {
        let (app, user) = (app.to_string(), user.to_string());
        let p = self
            .store
            .read(move |txn| read_json(txn, PREFS, (&app, &user)))
            .await?;
        Ok(p.unwrap_or_default())
    }

    async fn set_prefs(
        &self,
        app: &AppId,
        user: &UserId,
        prefs: &Prefs,
    ) -> Result<(), StoreFailure> {
        let (app, user) = (app.to_string(), user.to_string());
        let json = serde_json::to_vec(prefs).expect("preferences serialize");
        self.store
            .write(move |txn| {
                txn.open_table(PREFS)?
                    .insert((app.as_str(), user.as_str()), json.as_slice())?;
                Ok(())
            })
            .await?;
        Ok(())
    }

    async fn take_quota(
        &self,
        app: &AppId,
        user: &UserId,
        max: u32,
        now_ms: u64,
    ) -> Result<bool, StoreFailure> {
        let (app, user) = (app.to_string(), user.to_string());
        let taken = self
            .store
            .write(move |txn| {
                let mut t = txn.open_table(QUOTA)?;
                let mut times: Vec<u64> = t
                    .get((app.as_str(), user.as_str()))?
                    .map(|v| {
                        v.value()
                            .chunks_exact(8)
                            .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
                            .collect()
                    })
                    .unwrap_or_default();
                times.retain(|t| t + HOUR_MS > now_ms);
                let taken = times.len() < max as usize;
                if taken {
                    times.push(now_ms);
                }
                let bytes: Vec<u8> = times.iter().flat_map(|t| t.to_be_bytes()).collect();
                t.insert((app.as_str(), user.as_str()), bytes.as_slice())?;
                Ok(taken)
            })
            .await?;
        Ok(taken)
    }

    async fn claim(
        &self,
        app: &AppId,
        key: &str,
        id: &RegistrationId,
        expires_ms: u64,
    ) -> Result<bool, StoreFailure> {
        let (app, key, id) = (app.to_string(), key.to_owned(), id.to_string());
        let now = crate::clock::now_ms();
        let fresh = self
            .store
            .write(move |txn| {
                let mut sent = txn.open_table(SENT)?;
                let mut index = txn.open_table(SENT_EXPIRY)?;
                let k = (app.as_str(), key.as_str(), id.as_str());
                if sent.get(k)?.is_some_and(|e| e.value() >= now) {
                    return Ok(false);
                }
                sent.insert(k, expires_ms)?;
                index.insert((expires_ms, k.0, k.1, k.2), ())?;
                let expired: Vec<(u64, String, String, String)> = index
                    .range((0, "", "", "")..(now, "", "", ""))?
                    .take(PRUNE)
                    .filter_map(Result::ok)
                    .map(|(k, _)| {
                        let (e, a, b, c) = k.value();
                        (e, a.to_owned(), b.to_owned(), c.to_owned())
                    })
                    .collect();
                for (e, a, b, c) in &expired {
                    index.remove((*e, a.as_str(), b.as_str(), c.as_str()))?;
                    if sent
                        .get((a.as_str(), b.as_str(), c.as_str()))?
                        .map(|v| v.value())
                        == Some(*e)
                    {
                        sent.remove((a.as_str(), b.as_str(), c.as_str()))?;
                    }
                }
                Ok(true)
            })
            .await?;
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::{Device, Platform};

    fn store() -> EmbeddedPushStore {
        let dir = std::env::temp_dir().join(format!(
            "switchboard-push-store-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        EmbeddedPushStore::new(Store::open(&dir, 1000).unwrap())
    }

    fn reg(token: &str, created_ms: u64) -> Registration {
        Registration {
            id: RegistrationId::random(),
            platform: Platform::Android,
            device: Device::Token(token.into()),
            created_ms,
        }
    }

    #[tokio::test]
    async fn registrations_replace_the_same_device_and_keep_the_newest() {
        let s = store();
        let (app, user) = (AppId::new("a"), UserId::new("u"));
        for (i, t) in ["t1", "t2", "t1", "t3"].iter().enumerate() {
            s.register(&app, &user, reg(t, i as u64), 2).await.unwrap();
        }
        let list = s.registrations(&app, &user).await.unwrap();
        let tokens: Vec<_> = list.iter().map(|r| r.device.identity()).collect();
        assert_eq!(tokens, ["t1", "t3"], "t1 replaced, t2 the oldest beyond 2");
        assert!(s.remove(&app, &user, &list[0].id).await.unwrap());
        assert!(!s.remove(&app, &user, &list[0].id).await.unwrap());
        assert_eq!(s.registrations(&app, &user).await.unwrap().len(), 1);
        let other = UserId::new("v");
        assert!(s.registrations(&app, &other).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn quota_counts_an_hour_and_claims_hold_once() {
        let s = store();
        let (app, user) = (AppId::new("a"), UserId::new("u"));
        let t0 = 10 * HOUR_MS;
        assert!(s.take_quota(&app, &user, 2, t0).await.unwrap());
        assert!(s.take_quota(&app, &user, 2, t0 + 1).await.unwrap());
        assert!(!s.take_quota(&app, &user, 2, t0 + 2).await.unwrap());
        assert!(s.take_quota(&app, &user, 2, t0 + HOUR_MS).await.unwrap());
        let id = RegistrationId::random();
        let later = crate::clock::now_ms() + 60_000;
        assert!(s.claim(&app, "u/1-1", &id, later).await.unwrap());
        assert!(!s.claim(&app, "u/1-1", &id, later).await.unwrap());
        assert!(s.claim(&app, "u/1-2", &id, later).await.unwrap());
        // An expired claim is free again (and pruned).
        assert!(s.claim(&app, "u/old", &id, 1).await.unwrap());
        assert!(s.claim(&app, "u/old", &id, later).await.unwrap());
        let prefs = Prefs {
            enabled: false,
            ..Prefs::default()
        };
        s.set_prefs(&app, &user, &prefs).await.unwrap();
        assert_eq!(s.prefs(&app, &user).await.unwrap(), prefs);
        assert_eq!(
            s.prefs(&app, &UserId::new("v")).await.unwrap(),
            Prefs::default()
        );
    }
}
