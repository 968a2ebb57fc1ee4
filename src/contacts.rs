//! Contacts: for each user, the users whose presence they may see, set by the app through the
//! HTTP API. A bus session watches its token's `watchlist` plus its user's contacts, as they
//! are when the session opens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::ids::{AppId, UserId};

/// Most contacts stored per user.
pub const MAX_CONTACTS: usize = 1000;

type ContactMap = HashMap<(AppId, UserId), Arc<[UserId]>>;

/// Contacts held in this process (`std` mutex: never held across an await).
#[derive(Default)]
pub struct Contacts {
    map: Mutex<ContactMap>,
}

impl Contacts {
    /// Replaces a user's contacts; an empty list removes them.
    pub fn set(&self, app: &AppId, user: &UserId, contacts: Vec<UserId>) {
        let mut map = self.map.lock().expect("contacts lock poisoned");
        let key = (app.clone(), user.clone());
        if contacts.is_empty() {
            map.remove(&key);
        } else {
            map.insert(key, contacts.into());
        }
    }

    /// A user's contacts.
    pub fn get(&self, app: &AppId, user: &UserId) -> Arc<[UserId]> {
        let map = self.map.lock().expect("contacts lock poisoned");
        map.get(&(app.clone(), user.clone()))
            .cloned()
            .unwrap_or_else(|| Arc::from(Vec::new()))
    }
}
