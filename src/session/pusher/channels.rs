//! Subscriptions, presence channels and client events of a Pusher connection.

use std::sync::Arc;

use super::Session;
use crate::auth;
use crate::event::{Event, EventKind, Meta, Origin, Target};
use crate::filter::Filter;
use crate::hub::Recipient;
use crate::ids::{self, ChannelKind, ChannelName};
use crate::metrics;
use crate::presence::{Joined, Left, Member, PresenceError};
use crate::protocol::pusher::{self as wire, code, user_id_of, ChannelData, PresenceMember};

/// Why `channel_data` was refused.
enum Bad {
    Invalid(&'static str),
    TooLarge(String),
}

impl Session {
    fn sub_error(&self, channel: &str, status: u16, message: &str) {
        metrics::client_error("subscription");
        self.send(wire::subscription_error(channel, false, status, message));
    }

    /// An authorized subscription that a limit refused (soketi's codes: 4100 for the
    /// member count, 4301 for the member's size).
    fn sub_limit(&self, channel: &str, status: u16, message: &str) {
        metrics::client_error("subscription_limit");
        self.send(wire::subscription_error(channel, true, status, message));
    }

    pub(super) async fn subscribe(
        &mut self,
        channel: &str,
        auth: Option<String>,
        channel_data: Option<String>,
        filter: Option<serde_json::Value>,
    ) {
        let filter = match filter.as_ref().map(Filter::parse).transpose() {
            Ok(f) => f.map(Arc::new),
            Err(e) => return self.sub_error(channel, 400, &format!("Invalid filter: {e}")),
        };
        let ch = match ChannelName::parse(channel) {
            Ok(ch) => ch,
            Err(e) => return self.sub_error(channel, 400, &format!("Invalid channel name: {e}")),
        };
        if let Some(presence_user) = self.channels.get(&ch) {
            // Idempotent: pusher-js may resubscribe; confirm again without a second join.
            // A presence confirmation must carry the member list: pusher-js reads it.
            if presence_user.is_some() {
                return self.presence_succeeded(&ch).await;
            }
            return self.send(wire::subscription_succeeded(ch.as_str(), None));
        }
        if self.channels.len() >= self.app.limits.max_channels_per_connection {
            return self.sub_error(channel, 400, "Too many channels on this connection");
        }
        let kind = ch.kind();
        if kind == ChannelKind::ServerToUser {
            // pusher-js subscribes to its own user channel after sign-in; user events reach
            // signed-in connections whether or not they do.
            let mine = self.user.as_ref().map(|u| u.id.as_str()) == ch.server_to_user();
            return if mine {
                self.send(wire::subscription_succeeded(ch.as_str(), None))
            } else {
                self.sub_error(channel, 403, "Not signed in as this user")
            };
        }
        if kind.needs_auth() {
            let data = if kind == ChannelKind::Presence {
                match channel_data.as_deref() {
                    Some(d) => Some(d),
                    None => {
                        return self.sub_error(channel, 400, "Presence channels need channel_data")
                    }
                }
            } else {
                None
            };
            let ok = auth
                .as_deref()
                .is_some_and(|a| auth::channel_auth_ok(&self.app, self.id, channel, data, a));
            if !ok {
                return self.sub_error(channel, 401, "Invalid signature");
            }
        }
        let member = if kind == ChannelKind::Presence {
            match self.presence_member(channel_data.as_deref().unwrap_or_default()) {
                Ok(m) => Some(m),
                Err(Bad::Invalid(msg)) => return self.sub_error(channel, 400, msg),
                Err(Bad::TooLarge(msg)) => return self.sub_limit(channel, 4301, &msg),
            }
        } else {
            None
        };
        match member {
            None => {
                let recipient = self.filtered_recipient(filter);
                let succeeded = wire::subscription_succeeded(ch.as_str(), None);
                let local = match self.ctx.counts.clone() {
                    None => {
                        self.send(succeeded);
                        self.ctx
                            .hub
                            .subscribe(&self.app.id, &ch, self.id, recipient)
                    }
                    // On a cluster the subscription answers once its count is in Redis, so
                    // any node's subscription_count includes it; live events that arrive
                    // meanwhile are held and follow the answer.
                    Some(counts) => {
                        let hold = !self.outbox.is_holding();
                        if hold {
                            self.outbox.hold();
                        }
                        let local = self
                            .ctx
                            .hub
                            .subscribe(&self.app.id, &ch, self.id, recipient);
                        counts.fence().await;
                        self.ctx.hub.settled().await;
                        self.send(succeeded);
                        if hold {
                            self.outbox.release(&|_, _| false).await;
                        }
                        local
                    }
                };
                self.ctx.webhooks.subscribed(&self.app, &ch, local);
                self.channels.insert(ch.clone(), None);
                metrics::subscriptions(1.0);
                self.send_cached(&ch).await;
            }
            Some(member) => {
                if self.join_presence(ch.clone(), member, filter).await {
                    self.send_cached(&ch).await;
                }
            }
        }
    }

    fn filtered_recipient(&self, filter: Option<Arc<Filter>>) -> Recipient {
        Recipient {
            filter,
            ..self.recipient()
        }
    }

    /// Right after `subscription_succeeded` on a cache channel: its last event, or
    /// `pusher:cache_miss` (and the `cache_miss` webhook).
    async fn send_cached(&self, ch: &ChannelName) {
        if !ch.is_cache() {
            return;
        }
        match self.ctx.streams.last_event(&self.app.id, ch).await {
            Ok(Some(event)) => {
                if let Some(f) = wire::encode_event(&event) {
                    self.send(f);
                }
            }
            Ok(None) => {
                self.send(wire::cache_miss(ch.as_str()));
                self.ctx.webhooks.cache_miss(&self.app, ch);
            }
            Err(e) => tracing::warn!(error = %e, "cache read failed"),
        }
    }

    fn presence_member(&self, channel_data: &str) -> Result<Member, Bad> {
        let d: ChannelData<'_> = serde_json::from_str(channel_data)
            .map_err(|_| Bad::Invalid("channel_data is not valid JSON"))?;
        let user_id = user_id_of(&d.user_id).ok_or(Bad::Invalid(
            "channel_data.user_id must be a non-empty string or a number, of at most 128 characters",
        ))?;
        let info = d.user_info.map_or("null", |r| r.get());
        let max = self.app.limits.presence_max_member_bytes;
        if info.len() > max {
            return Err(Bad::TooLarge(format!(
                "The maximum size of a presence member's user_info (presence_max_member_bytes: {max} bytes) was reached"
            )));
        }
        Ok(Member {
            user_id,
            user_info: info.into(),
        })
    }

    /// Joins a presence channel; returns whether the subscription succeeded.
    async fn join_presence(
        &mut self,
        ch: ChannelName,
        member: Member,
        filter: Option<Arc<Filter>>,
    ) -> bool {
        let app = self.app.id.clone();
        let joined = self
            .ctx
            .presence
            .join(
                &app,
                &ch,
                self.id,
                member.clone(),
                self.app.limits.presence_max_members,
            )
            .await;
        let joined = match joined {
            Ok(j) => j,
            Err(PresenceError::Full) => {
                let max = self.app.limits.presence_max_members;
                let msg = format!(
                    "The maximum members per presence channel (presence_max_members: {max}) was reached"
                );
                self.sub_limit(ch.as_str(), 4100, &msg);
                return false;
            }
            Err(e) => {
                self.sub_error(ch.as_str(), 503, &e.to_string());
                return false;
            }
        };
        // Subscribe before reading the member list: whoever joins after this point reaches
        // us as member_added, whoever joined before is in the list.
        let recipient = self.filtered_recipient(filter);
        let local = self.ctx.hub.subscribe(&app, &ch, self.id, recipient);
        if let Some(counts) = &self.ctx.counts {
            counts.fence().await;
        }
        self.ctx.hub.settled().await;
        self.ctx.webhooks.subscribed(&self.app, &ch, local);
        self.channels
            .insert(ch.clone(), Some(member.user_id.clone()));
        metrics::subscriptions(1.0);
        self.presence_succeeded(&ch).await;
        if joined == Joined::First {
            self.ctx
                .webhooks
                .member_added(&self.app, &ch, &member.user_id);
            let event = Event {
                app,
                target: Target::Channel(ch),
                kind: EventKind::MemberAdded {
                    user_id: member.user_id,
                    user_info: member.user_info,
                },
                exclude: Some(self.id),
                meta: Default::default(),
            };
            self.publish("internal", event).await;
        }
        true
    }

    /// Sends `subscription_succeeded` for a presence channel with its current member list.
    async fn presence_succeeded(&self, ch: &ChannelName) {
        let members = self
            .ctx
            .presence
            .members(&self.app.id, ch)
            .await
            .unwrap_or_default();
        let list: Vec<PresenceMember<'_>> = members
            .iter()
            .map(|m| PresenceMember {
                user_id: m.user_id.as_str(),
                user_info: &m.user_info,
            })
            .collect();
        self.send(wire::subscription_succeeded(ch.as_str(), Some(&list)));
    }

    pub(super) async fn unsubscribe(&mut self, ch: &ChannelName) {
        let Some(presence_user) = self.channels.remove(ch) else {
            return;
        };
        let app = self.app.id.clone();
        let local = self.ctx.hub.unsubscribe(&app, ch, self.id);
        self.ctx.webhooks.unsubscribed(&self.app, ch, local);
        metrics::subscriptions(-1.0);
        if presence_user.is_none() {
            return;
        }
        if let Ok(Some(Left::Last(user_id))) = self.ctx.presence.leave(&app, ch, self.id).await {
            self.ctx.webhooks.member_removed(&self.app, ch, &user_id);
            let event = Event {
                app,
                target: Target::Channel(ch.clone()),
                kind: EventKind::MemberRemoved { user_id },
                exclude: None,
                meta: Default::default(),
            };
            self.publish("internal", event).await;
        }
    }

    pub(super) async fn client_event(&mut self, event: &str, channel: &str, data: String) {
        let refuse = |s: &Self, reason: &'static str, msg: &str| {
            metrics::client_error(reason);
            s.send(wire::error(Some(code::INVALID_MESSAGE), msg));
        };
        if !self.app.client_events {
            return refuse(
                self,
                "client_event",
                "Client events are not enabled for this app",
            );
        }
        if ids::check_event_name(event).is_err() {
            return refuse(self, "client_event", "Invalid event name");
        }
        let Ok(ch) = ChannelName::parse(channel) else {
            return refuse(self, "client_event", "Invalid channel name");
        };
        if !matches!(ch.kind(), ChannelKind::Private | ChannelKind::Presence) {
            return refuse(
                self,
                "client_event",
                "Client events are only allowed on private and presence channels",
            );
        }
        let Some(presence_user) = self.channels.get(&ch) else {
            return refuse(self, "client_event", "Not subscribed to this channel");
        };
        if data.len() > self.app.limits.max_event_bytes {
            return refuse(self, "client_event", "Event data is too large");
        }
        let presence_user = presence_user.clone();
        if !self.client_event_allowed() {
            metrics::client_error("client_event_rate");
            return self.send(wire::error(
                Some(code::CLIENT_EVENT_RATE),
                "Client event rejected due to rate limit",
            ));
        }
        self.ctx.webhooks.client_event(
            &self.app,
            &ch,
            event,
            &data,
            &self.id.to_string(),
            presence_user.as_ref(),
        );
        let event = Event {
            app: self.app.id.clone(),
            target: Target::Channel(ch),
            kind: EventKind::Message {
                name: event.into(),
                data: Arc::from(data),
                user_id: presence_user,
                tags: None,
            },
            exclude: Some(self.id),
            meta: Meta {
                origin: Origin::Client,
                ..Meta::default()
            },
        };
        self.publish("client", event).await;
    }

    async fn publish(&self, source: &'static str, event: Event) {
        metrics::published(source);
        if let Err(e) = self.ctx.publisher.publish(event).await {
            tracing::warn!(error = %e, "publish from a connection failed");
            self.send(wire::error(
                Some(code::RECONNECT),
                "Event could not be published",
            ));
        }
    }
}
