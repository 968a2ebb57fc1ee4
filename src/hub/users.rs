//! Users' connections and their watchers, and the hub's interest hooks.

use std::collections::HashMap;

use super::{Hub, Interest, Members, Recipient, Topic};
use crate::ids::{AppId, SocketId, UserId};

impl Hub {
    /// Registers a connection as the user's; returns the user's local connection count.
    pub fn add_user(&self, app: &AppId, user: &UserId, id: SocketId, r: Recipient) -> usize {
        let key = (app.clone(), user.clone());
        let mut shard = self.shard(&key);
        let set = shard.users.entry(key).or_insert_with(|| {
            self.interest(Topic::User(app, user), true);
            Members::default()
        });
        set.insert(id, r);
        set.len()
    }

    /// Unregisters a user's connection; returns the remaining count, `None` if absent.
    pub fn remove_user(&self, app: &AppId, user: &UserId, id: SocketId) -> Option<usize> {
        let mut shard = self.shard(&(app, user));
        let left = remove(&mut shard.users, (app, user), id);
        if left == Some(0) {
            self.interest(Topic::User(app, user), false);
        }
        left
    }

    /// Makes connection `id` a watcher of `user`.
    pub fn watch(&self, app: &AppId, user: &UserId, id: SocketId, r: Recipient) {
        let key = (app.clone(), user.clone());
        let mut shard = self.shard(&key);
        let set = shard.watchers.entry(key).or_insert_with(|| {
            self.interest(Topic::Watchers(app, user), true);
            Members::default()
        });
        set.insert(id, r);
    }

    /// Stops connection `id` watching `user`.
    pub fn unwatch(&self, app: &AppId, user: &UserId, id: SocketId) {
        let mut shard = self.shard(&(app, user));
        if remove(&mut shard.watchers, (app, user), id) == Some(0) {
            self.interest(Topic::Watchers(app, user), false);
        }
    }

    /// Tells `interest` from now on which topics gain or lose local members (once; a cluster
    /// broker does it before the node serves).
    pub fn route_interest(&self, interest: std::sync::Arc<dyn Interest>) {
        let _ = self.0.interest.set(interest);
    }

    /// Resolves once every topic with local members is heard from the cluster (at once
    /// without routing).
    pub async fn settled(&self) {
        if let Some(i) = self.0.interest.get() {
            i.settled().await;
        }
    }

    pub(super) fn interest(&self, topic: Topic<'_>, wanted: bool) {
        if let Some(i) = self.0.interest.get() {
            i.set(topic, wanted);
        }
    }
}

fn remove<K: std::hash::Hash + Eq + Clone>(
    map: &mut HashMap<(AppId, K), Members>,
    key: (&AppId, &K),
    id: SocketId,
) -> Option<usize> {
    let key = (key.0.clone(), key.1.clone());
    let set = map.get_mut(&key)?;
    set.swap_remove(&id)?;
    let left = set.len();
    if left == 0 {
        map.remove(&key);
    }
    Some(left)
}
