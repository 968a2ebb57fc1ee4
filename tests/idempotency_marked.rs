//! An idempotent publish that went out is never published again, even when its node never
//! learns that it went out: the answer of the publish is lost (a timeout after Redis ran the
//! script), or the node is killed between the publish and recording the key. Found by
//! scripts/chaos.sh: `kill -9` of the ingesting node right after it published an outbox row
//! left the row's key "in flight"; the key lapsed 10 s later and the next ingester published
//! the row a second time (a bus consumer received it twice).
//!
//! Publisher level, over the real Redis broker and key store: a wrapper broker publishes
//! through the real one, then loses the answer (or never answers).

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use switchboard::broker::{Broker, BrokerError, History, Mark, Receipt, RedisBroker, Streams};
use switchboard::config::{HistoryConfig, OfflineConfig};
use switchboard::event::{stream_of, Event, EventKind, Meta, Target};
use switchboard::idempotency::{Idempotency, RedisKeys};
use switchboard::ids::{AppId, ChannelName};
use switchboard::publish::{PublishError, Publisher};
use switchboard::push::Push;
use switchboard::redis_base::{Redis, Topology};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What becomes of the answer of a publish that Redis ran.
#[derive(Clone, Copy)]
enum Answer {
    /// An error reaches the caller (the response timed out after the script ran).
    Lost,
    /// No answer ever (the node died right after the script ran).
    Never,
}

/// The real broker, whose answers go missing.
struct Flaky {
    inner: Arc<RedisBroker>,
    answer: Answer,
}

#[async_trait]
impl Streams for Flaky {
    async fn last_event(
        &self,
        app: &AppId,
        ch: &ChannelName,
    ) -> Result<Option<Event>, BrokerError> {
        self.inner.last_event(app, ch).await
    }

    async fn history(
        &self,
        app: &AppId,
        stream: &str,
        since: &str,
    ) -> Result<History, BrokerError> {
        self.inner.history(app, stream, since).await
    }

    async fn head(&self, app: &AppId, stream: &str) -> Result<Option<Arc<str>>, BrokerError> {
        self.inner.head(app, stream).await
    }
}

#[async_trait]
impl Broker for Flaky {
    async fn publish(&self, event: Event, mark: Option<Mark>) -> Result<Receipt, BrokerError> {
        self.inner
            .publish(event, mark)
            .await
            .expect("the real publish");
        match self.answer {
            Answer::Lost => Err(BrokerError::Unavailable("response timed out".into())),
            Answer::Never => std::future::pending().await,
        }
    }
}

/// Two nodes' publishers over one Redis: the first one's answers go missing.
struct Cluster {
    flaky: Publisher,
    other: Publisher,
    broker: Arc<RedisBroker>,
    stop: CancellationToken,
}

async fn cluster(answer: Answer) -> Cluster {
    let prefix = format!("marked-{}-{}", std::process::id(), answer as u8);
    let redis = Redis::open(
        Topology::Detect(support::redis_url()),
        &prefix,
        "node-a".into(),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let (tracker, stop) = (TaskTracker::new(), CancellationToken::new());
    redis.spawn_connector(&tracker, stop.clone());
    for _ in 0..100 {
        if redis.conn().is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let broker = Arc::new(RedisBroker::new(
        redis.clone(),
        Duration::from_secs(60),
        HistoryConfig::default(),
        OfflineConfig::default(),
    ));
    let window = Duration::from_secs(120);
    let idempotency = || Idempotency::new(Arc::new(RedisKeys::new(redis.clone())), window);
    let flaky = Arc::new(Flaky {
        inner: broker.clone(),
        answer,
    });
    Cluster {
        flaky: Publisher::new(flaky, Push::disabled(), idempotency()),
        other: Publisher::new(broker.clone(), Push::disabled(), idempotency()),
        broker,
        stop,
    }
}

fn event() -> Event {
    Event {
        app: AppId::new("app-id"),
        target: Target::Channel(ChannelName::parse("orders").unwrap()),
        kind: EventKind::Message {
            name: "paid".into(),
            data: "\"{}\"".into(),
            user_id: None,
            tags: None,
        },
        exclude: None,
        meta: Meta::default(),
    }
}

async fn published(c: &Cluster) -> usize {
    let stream = stream_of(&event()).unwrap();
    let h = c
        .broker
        .history(&AppId::new("app-id"), &stream, "0-0")
        .await
        .unwrap();
    h.events.len()
}

#[tokio::test]
async fn a_publish_whose_answer_was_lost_is_not_published_again() {
    let c = cluster(Answer::Lost).await;
    let first = c.flaky.publish_once(event(), Some("order-7")).await;
    assert!(matches!(first, Err(PublishError::Broker(_))), "{first:?}");
    // The publisher retries (through another node, or the same one).
    let retry = c.other.publish_once(event(), Some("order-7")).await;
    assert!(
        matches!(retry, Ok(None)),
        "the retry must be answered as already published: {retry:?}"
    );
    assert_eq!(published(&c).await, 1, "published once");
    c.stop.cancel();
}

#[tokio::test]
async fn a_publish_by_a_node_killed_before_it_recorded_the_key_is_not_published_again() {
    let c = cluster(Answer::Never).await;
    // The node dies with the publish out and the key not recorded: its call never ends.
    let first = tokio::time::timeout(
        Duration::from_millis(500),
        c.flaky.publish_once(event(), Some("row-42")),
    )
    .await;
    assert!(first.is_err(), "the call should never end");
    // Another node retries at once (the next ingester, or the publisher's retry).
    let retry = c.other.publish_once(event(), Some("row-42")).await;
    assert!(
        matches!(retry, Ok(None)),
        "the retry must be answered as already published: {retry:?}"
    );
    assert_eq!(published(&c).await, 1, "published once");
    c.stop.cancel();
}
