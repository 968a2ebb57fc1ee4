//! Single-node presence.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use indexmap::IndexMap;

use super::{Joined, Left, Member, PresenceError, PresenceStore, OCCUPIED};
use crate::hub::Hub;
use crate::ids::{AppId, ChannelName, SocketId, UserId};

#[derive(Default)]
struct Channel {
    /// user → (user_info, that user's sockets in the channel)
    users: IndexMap<UserId, (Arc<str>, Vec<SocketId>)>,
    sockets: HashMap<SocketId, UserId>,
}

type Channels = HashMap<(AppId, ChannelName), Channel>;

/// Presence held in this process. A `std` mutex: nothing awaits while it is held.
pub struct MemoryPresence {
    channels: Mutex<Channels>,
    announced: Mutex<HashMap<(AppId, ChannelName, &'static str), String>>,
    hub: Hub,
}

impl MemoryPresence {
    /// Presence for a single node whose connections are in `hub`.
    pub fn new(hub: Hub) -> Self {
        Self {
            channels: Mutex::default(),
            announced: Mutex::default(),
            hub,
        }
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn join(
        &self,
        app: &AppId,
        ch: &ChannelName,
        socket: SocketId,
        member: Member,
        max_members: usize,
    ) -> Result<Joined, PresenceError> {
        let mut channels = self.channels.lock().expect("presence lock poisoned");
        let c = channels.entry((app.clone(), ch.clone())).or_default();
        if let Some((_, sockets)) = c.users.get_mut(&member.user_id) {
            if !sockets.contains(&socket) {
                sockets.push(socket);
            }
            c.sockets.insert(socket, member.user_id);
            return Ok(Joined::Again);
        }
        if max_members > 0 && c.users.len() >= max_members {
            if c.users.is_empty() {
                channels.remove(&(app.clone(), ch.clone()));
            }
            return Err(PresenceError::Full);
        }
        c.sockets.insert(socket, member.user_id.clone());
        c.users
            .insert(member.user_id, (member.user_info, vec![socket]));
        Ok(Joined::First)
    }

    async fn leave(
        &self,
        app: &AppId,
        ch: &ChannelName,
        socket: SocketId,
    ) -> Result<Option<Left>, PresenceError> {
        let mut channels = self.channels.lock().expect("presence lock poisoned");
        let key = (app.clone(), ch.clone());
        let Some(c) = channels.get_mut(&key) else {
            return Ok(None);
        };
        let Some(user) = c.sockets.remove(&socket) else {
            return Ok(None);
        };
        let Some((_, sockets)) = c.users.get_mut(&user) else {
            return Ok(None);
        };
        sockets.retain(|s| *s != socket);
        if !sockets.is_empty() {
            return Ok(Some(Left::StillPresent));
        }
        c.users.shift_remove(&user);
        if c.users.is_empty() {
            channels.remove(&key);
        }
        Ok(Some(Left::Last(user)))
    }

    async fn occupancy(
        &self,
        app: &AppId,
        only: Option<&ChannelName>,
    ) -> Result<Vec<(ChannelName, usize)>, PresenceError> {
        Ok(match only {
            Some(ch) => {
                let n = self.hub.subscription_count(app, ch);
                if n > 0 {
                    vec![(ch.clone(), n)]
                } else {
                    vec![]
                }
            }
            None => self.hub.channels(app),
        })
    }

    async fn hold(&self, app: &AppId, ch: &ChannelName) -> Result<bool, PresenceError> {
        self.announce(app, ch, OCCUPIED, "1").await
    }

    async fn release(&self, _: &AppId, _: &ChannelName) -> Result<(), PresenceError> {
        Ok(())
    }

    async fn vacated(&self, app: &AppId, ch: &ChannelName) -> Result<bool, PresenceError> {
        // The hub is this node's whole truth; a subscriber whose `hold` is still queued
        // is already counted here.
        if self.hub.subscription_count(app, ch) > 0 {
            return Ok(false);
        }
        self.announce(app, ch, OCCUPIED, "0").await
    }

    async fn announce(
        &self,
        app: &AppId,
        ch: &ChannelName,
        field: &'static str,
        value: &str,
    ) -> Result<bool, PresenceError> {
        let mut map = self.announced.lock().expect("presence lock poisoned");
        let key = (app.clone(), ch.clone(), field);
        let old = map.get(&key).map_or("0", String::as_str);
        if old == value {
            return Ok(false);
        }
        if value == "0" {
            map.remove(&key);
        } else {
            map.insert(key, value.to_owned());
        }
        Ok(true)
    }

    async fn members(&self, app: &AppId, ch: &ChannelName) -> Result<Vec<Member>, PresenceError> {
        let channels = self.channels.lock().expect("presence lock poisoned");
        Ok(channels
            .get(&(app.clone(), ch.clone()))
            .map(|c| {
                c.users
                    .iter()
                    .map(|(id, (info, _))| Member {
                        user_id: id.clone(),
                        user_info: info.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str) -> Member {
        Member {
            user_id: UserId::new(id),
            user_info: "null".into(),
        }
    }

    #[tokio::test]
    async fn membership_is_per_user() {
        let p = MemoryPresence::new(Hub::new());
        let (a, c) = (AppId::new("a"), ChannelName::new("presence-c"));
        let (s1, s2, s3) = (SocketId::next(1), SocketId::next(1), SocketId::next(1));
        assert_eq!(p.join(&a, &c, s1, m("u"), 2).await, Ok(Joined::First));
        assert_eq!(p.join(&a, &c, s2, m("u"), 2).await, Ok(Joined::Again));
        assert_eq!(p.join(&a, &c, s3, m("v"), 2).await, Ok(Joined::First));
        assert_eq!(
            p.join(&a, &c, SocketId::next(1), m("w"), 2).await,
            Err(PresenceError::Full)
        );
        assert_eq!(p.members(&a, &c).await.unwrap().len(), 2);
        assert_eq!(p.leave(&a, &c, s1).await, Ok(Some(Left::StillPresent)));
        assert_eq!(
            p.leave(&a, &c, s2).await,
            Ok(Some(Left::Last(UserId::new("u"))))
        );
        assert_eq!(p.leave(&a, &c, s2).await, Ok(None));
        assert_eq!(p.members(&a, &c).await.unwrap(), vec![m("v")]);
    }
}
