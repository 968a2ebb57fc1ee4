//! The outbox's own rules: budgets, priorities, holding during a replay.

use super::*;
use crate::event::{Event, Meta};
use crate::ids::{AppId, ChannelName};

fn event(id: &str) -> Event {
    let mut e = Event::message(AppId::new("a"), ChannelName::new("r"), "e", "1".into());
    e.meta = Meta {
        id: Some(id.into()),
        ..Meta::default()
    };
    e
}

fn drain(rx: &mut Receiver) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(Out::Frame(f)) = rx.try_recv() {
        out.push(f.as_str().to_owned());
    }
    out
}

#[test]
fn queued_bytes_are_given_back_when_taken_killed_or_dropped() {
    let budget = Arc::new(QueueBudget::new(100, 1000));
    let (a, mut rx) = Outbox::new(10, CancellationToken::new(), budget.clone());
    assert!(a.push(Frame::from("x".repeat(60))));
    assert!(!a.push(Frame::from("x".repeat(60))), "over 100 bytes");
    assert_eq!(a.close_reason(), Some(CloseReason::SlowConsumer));
    assert_eq!(budget.used(), 0, "a killed queue gives its bytes back");
    drop(rx.try_recv());
    let (b, mut rx) = Outbox::new(10, CancellationToken::new(), budget.clone());
    assert!(b.push(Frame::from("x".repeat(40))));
    assert_eq!(budget.used(), 40);
    if let Some(Out::Frame(f)) = rx.try_recv() {
        b.taken(f.len());
    }
    assert_eq!(budget.used(), 0, "the writer took it");
    assert!(b.push(Frame::from("x".repeat(30))));
    drop((a, b, rx));
    assert_eq!(budget.used(), 0, "a dropped queue gives its bytes back");
}

#[test]
fn low_priority_gives_way_when_the_queue_is_nearly_full() {
    let (outbox, mut rx) = Outbox::new(
        10,
        CancellationToken::new(),
        Arc::new(QueueBudget::unlimited()),
    );
    let mut low = event("1-1");
    low.meta.priority = crate::event::Priority::Low;
    assert!(
        outbox.push_live(Frame::from("low-1"), &low, &mut Writes::default()),
        "room to spare"
    );
    for i in 0..8 {
        assert!(outbox.push(Frame::from(format!("n{i}"))));
    }
    assert!(
        !outbox.push_live(Frame::from("low-2"), &low, &mut Writes::default()),
        "dropped at 90 % full"
    );
    let mut high = event("1-2");
    high.meta.priority = crate::event::Priority::High;
    assert!(outbox.push_live(Frame::from("high"), &high, &mut Writes::default()));
    assert_eq!(drain(&mut rx).len(), 10);
    assert!(outbox.close_reason().is_none());
}

#[tokio::test]
async fn held_frames_follow_the_replay_without_duplicates() {
    let (outbox, mut rx) = Outbox::new(
        16,
        CancellationToken::new(),
        Arc::new(QueueBudget::unlimited()),
    );
    outbox.hold();
    // Live events arrive while the replay is being read; e2 is also in the replay.
    assert!(outbox.push_live(
        Frame::from("live-e2"),
        &event("1-2"),
        &mut Writes::default()
    ));
    assert!(outbox.push_live(
        Frame::from("live-e3"),
        &event("1-3"),
        &mut Writes::default()
    ));
    assert!(
        drain(&mut rx).is_empty(),
        "nothing live goes out before the replay"
    );
    outbox.push(Frame::from("replay-e1"));
    outbox.push(Frame::from("replay-e2"));
    assert!(
        outbox
            .release(&|stream, id| stream == "c:r" && (id == "1-1" || id == "1-2"))
            .await
    );
    assert!(!outbox.is_holding());
    outbox.push_live(
        Frame::from("live-e4"),
        &event("1-4"),
        &mut Writes::default(),
    );
    assert_eq!(
        drain(&mut rx),
        ["replay-e1", "replay-e2", "live-e3", "live-e4"]
    );
}
