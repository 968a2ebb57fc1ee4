//! Every open connection of each app: what the admin API lists, and whom to close when an
//! app is disabled or deleted (channel and user maps only know connections that joined
//! something).

use std::collections::HashMap;
use std::sync::Mutex;

use super::{Hub, Outbox};
use crate::frame::CloseReason;
use crate::ids::{AppId, SocketId};

/// What the admin API shows of a connection.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ConnectionInfo {
    /// Its socket (Pusher) or session (bus) id.
    pub socket_id: SocketId,
    /// `pusher` or `bus`.
    pub protocol: &'static str,
    /// `ws`, `xhr` or `sse`.
    pub transport: &'static str,
    /// When it was accepted (ms since the epoch).
    pub connected_at_ms: u64,
}

struct Entry {
    info: ConnectionInfo,
    outbox: Outbox,
}

#[derive(Default)]
pub(super) struct Roster(Mutex<HashMap<AppId, HashMap<SocketId, Entry>>>);

/// A connection on the roster; dropping it takes it off.
pub struct Listed {
    hub: Hub,
    app: AppId,
    id: SocketId,
}

impl Drop for Listed {
    fn drop(&mut self) {
        let mut apps = self.hub.0.roster.0.lock().expect("roster lock poisoned");
        if let Some(conns) = apps.get_mut(&self.app) {
            conns.remove(&self.id);
            if conns.is_empty() {
                apps.remove(&self.app);
            }
        }
    }
}

impl Hub {
    /// What the live console sees of this node's deliveries.
    pub fn tap(&self) -> &crate::tap::Tap {
        &self.0.tap
    }

    /// Puts an accepted connection of `app` on the roster until the guard is dropped.
    pub fn list(&self, app: &AppId, info: ConnectionInfo, outbox: &Outbox) -> Listed {
        let id = info.socket_id;
        let entry = Entry {
            info,
            outbox: outbox.clone(),
        };
        let mut apps = self.0.roster.0.lock().expect("roster lock poisoned");
        apps.entry(app.clone()).or_default().insert(id, entry);
        drop(apps);
        Listed {
            hub: self.clone(),
            app: app.clone(),
            id,
        }
    }

    /// The number of `app`'s connections on this node, and at most `limit` of them.
    pub fn roster(&self, app: &AppId, limit: usize) -> (usize, Vec<ConnectionInfo>) {
        let apps = self.0.roster.0.lock().expect("roster lock poisoned");
        let Some(conns) = apps.get(app) else {
            return (0, Vec::new());
        };
        let list = conns.values().take(limit).map(|e| e.info.clone()).collect();
        (conns.len(), list)
    }

    /// Closes every connection of `app` on this node with `reason`; returns how many.
    pub fn close_app(&self, app: &AppId, reason: CloseReason) -> usize {
        let outboxes: Vec<Outbox> = {
            let apps = self.0.roster.0.lock().expect("roster lock poisoned");
            apps.get(app)
                .map(|c| c.values().map(|e| e.outbox.clone()).collect())
                .unwrap_or_default()
        };
        outboxes.iter().filter(|o| o.kill(reason)).count()
    }
}
