//! Catching a bus connection up: stream heads at subscribe, `since` replays, the offline
//! queue's drain, acknowledgements; and forgetting a push registration.

use std::collections::HashSet;
use std::sync::Arc;

use super::{Session, MAX_FIELD_LEN};
use crate::event::Event;
use crate::frame::Frame;
use crate::hub::Out;
use crate::protocol::bus::{self as wire, code, Since};

/// Most ids in one `ack`.
const MAX_ACK_IDS: usize = 100;
/// Events of a catch-up written (and then removed from the offline queue) at a time.
const PAGE: usize = 100;

impl Session {
    /// The latest id of each stream (read after the subscription, so nothing after it is
    /// missed), labelled as in `since`.
    pub(super) async fn heads(&self, streams: &[String]) -> Vec<(String, Arc<str>)> {
        let mut out = Vec::new();
        for stream in streams {
            match self.ctx.streams.head(&self.app.id, stream).await {
                Ok(Some(id)) => out.push((label_of(stream), id)),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "stream head read failed"),
            }
        }
        out
    }

    /// Sends, per stream, a `replay` header and the events after its `since` id (and, for
    /// the user's stream when `drain`, the offline queue), then releases the live events
    /// held meanwhile, minus those already sent: in order, without duplicates.
    pub(super) async fn catch_up(
        &mut self,
        streams: &[String],
        since: Option<&Since>,
        drain: bool,
    ) {
        let mut sent: HashSet<(String, Arc<str>)> = HashSet::new();
        for stream in streams {
            let label = label_of(stream);
            let since = since.and_then(|s| s.for_stream(&label));
            let queue = drain && stream.starts_with("u:");
            if since.is_none() && !queue {
                continue;
            }
            let (mut events, mut complete) = match since {
                Some(id) => match self.ctx.streams.history(&self.app.id, stream, id).await {
                    Ok(h) => (h.events, h.complete),
                    Err(e) => {
                        tracing::warn!(error = %e, "history read failed");
                        (Vec::new(), false)
                    }
                },
                None => (Vec::new(), true),
            };
            let mut dropped = 0;
            let mut queued: Vec<(Arc<str>, bool)> = Vec::new();
            if queue {
                match self.ctx.inbox.pending(&self.app.id, &self.user).await {
                    Ok(p) => {
                        dropped = p.dropped;
                        events = merge_queue(p.events, events, &mut queued);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "offline queue read failed");
                        complete = false;
                    }
                }
            }
            let frames: Vec<(Arc<str>, Frame)> = events
                .iter()
                .filter(|e| e.kind.interest().is_none_or(|b| self.interests & b != 0))
                .filter_map(|e| Some((e.meta.id.clone()?, wire::encode_event(e)?)))
                .collect();
            // A drain with nothing to say stays silent: no header without `since`.
            if since.is_some() || !frames.is_empty() || dropped > 0 || !complete {
                let header = wire::replay(
                    &label,
                    since,
                    frames.len(),
                    complete && dropped == 0,
                    dropped,
                );
                if !self.outbox.send_paced(Out::Frame(header)).await {
                    return;
                }
            }
            let high: HashSet<Arc<str>> = queued
                .iter()
                .filter(|(_, h)| *h)
                .map(|(id, _)| id.clone())
                .collect();
            let queued: HashSet<Arc<str>> = queued.into_iter().map(|(id, _)| id).collect();
            let mut settled = false;
            for page in frames.chunks(PAGE) {
                let ids: Vec<Arc<str>> = page.iter().map(|(id, _)| id.clone()).collect();
                let page: Vec<Frame> = page.iter().map(|(_, f)| f.clone()).collect();
                if !crate::session::send_page(&self.outbox, page).await {
                    // The connection ended: what was not written stays queued.
                    return;
                }
                sent.extend(ids.iter().map(|id| (stream.clone(), id.clone())));
                if queue {
                    let (kept, done): (Vec<_>, Vec<_>) = ids
                        .into_iter()
                        .filter(|id| queued.contains(id))
                        .partition(|id| high.contains(id));
                    if !done.is_empty() || !kept.is_empty() || dropped > 0 {
                        self.settle(done, kept).await;
                        settled = true;
                    }
                }
            }
            if queue {
                self.drained = true;
                // Nothing was queued: no write (and no fsync) for an empty queue.
                if !settled && dropped > 0 {
                    self.settle(Vec::new(), Vec::new()).await;
                }
            }
        }
        self.outbox
            .release(&|s, id| sent.contains(&(s.to_owned(), Arc::from(id))))
            .await;
    }

    /// Removes what a drain wrote to the socket from the offline queue; `high` events
    /// stay (marked live) until acked.
    async fn settle(&self, done: Vec<Arc<str>>, kept: Vec<Arc<str>>) {
        let r = self
            .ctx
            .inbox
            .settle(&self.app.id, &self.user, done, kept)
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "offline queue update failed");
        }
    }

    pub(super) async fn ack(&mut self, ids: Vec<String>) {
        if ids.is_empty() || ids.len() > MAX_ACK_IDS || ids.iter().any(|i| i.len() > MAX_FIELD_LEN)
        {
            return self.invalid("ack needs 1 to 100 ids");
        }
        match self.ctx.inbox.ack(&self.app.id, &self.user, ids).await {
            Ok(n) => self.send(wire::acked(n)),
            Err(e) => {
                tracing::warn!(error = %e, "offline queue ack failed");
                self.send(wire::error(
                    code::UNAVAILABLE,
                    "acknowledgement not recorded",
                ));
            }
        }
    }

    /// Removes one of this user's push registrations.
    pub(super) async fn unregister_push(&mut self, id: &str) {
        let Some(rid) = crate::push::RegistrationId::parse(id) else {
            return self.invalid("id must be a registration id from push_registered");
        };
        let Some(store) = self.ctx.push.store() else {
            return self.invalid("push notifications are not enabled");
        };
        match store.remove(&self.app.id, &self.user, &rid).await {
            Ok(removed) => self.send(wire::push_unregistered(id, removed)),
            Err(e) => {
                tracing::warn!(error = %e, "push registration not removed");
                self.send(wire::error(code::UNAVAILABLE, "registration not removed"));
            }
        }
    }
}

/// The `since` label of a stream: `"room:{name}"` or `"user"`.
fn label_of(stream: &str) -> String {
    match stream.split_once(':') {
        Some(("u", _)) => "user".to_owned(),
        _ => format!("room:{}", &stream[2..]),
    }
}

/// The user stream's events to send: the queued ones history does not carry (older than
/// `since`, or trimmed from history, so they come first, in queue order), then history.
/// `queued` receives every queued id with whether it is `high` (kept until acked).
fn merge_queue(
    queue: Vec<crate::offline::Queued>,
    history: Vec<Event>,
    queued: &mut Vec<(Arc<str>, bool)>,
) -> Vec<Event> {
    let in_history: HashSet<Arc<str>> = history.iter().filter_map(|e| e.meta.id.clone()).collect();
    let mut out = Vec::with_capacity(queue.len() + history.len());
    for q in queue {
        let Some(id) = q.event.meta.id.clone() else {
            continue;
        };
        queued.push((
            id.clone(),
            q.event.meta.priority == crate::event::Priority::High,
        ));
        if !in_history.contains(&id) {
            out.push(q.event);
        }
    }
    out.extend(history);
    out
}
