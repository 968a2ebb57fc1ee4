//! The offline-queue scenario (Switchboard's bus only): notifications for users who are not
//! connected are queued, then every user connects and drains their queue. Reports the queueing
//! rate (through the HTTP API), the drain rate, each user's time from subscribe to last event,
//! and loss, duplicates and order violations (each user must see 0..per_user in order).

use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::conn::bus_token;
use crate::procfs::rss_kib;
use crate::publish::Publisher;
use crate::stats::{round, Latencies};
use crate::Common;

type Line = Result<serde_json::Map<String, Value>, String>;

/// Recipients per API call (the bus API's limit).
const PER_CALL: usize = 100;

pub async fn offline(c: &Common, users: usize, per_user: usize, payload: usize) -> Line {
    let publisher = Publisher::new(c);
    let ids: Vec<String> = (0..users).map(|i| format!("bench-{i}")).collect();
    let pad = "x".repeat(payload);
    let start = Instant::now();
    // One round per event number, so each user's events are queued in order.
    for n in 0..per_user {
        let message = format!("{n}|{pad}");
        let calls = ids
            .chunks(PER_CALL)
            .map(|to| publisher.notify(to, &message));
        let ok = futures_util::stream::iter(calls)
            .buffer_unordered(c.http_concurrency.max(1))
            .collect::<Vec<bool>>()
            .await;
        if ok.iter().any(|ok| !ok) {
            return Err(format!("a publish of round {n} failed"));
        }
    }
    let queue_secs = start.elapsed().as_secs_f64();
    let rss_queued = c.server_pid.and_then(rss_kib);

    let start = Instant::now();
    let results: Vec<Result<(u32, Tally), String>> = futures_util::stream::iter(0..users)
        .map(|i| drain_one(c, i, per_user))
        .buffer_unordered(c.connect_concurrency.max(1))
        .collect()
        .await;
    let drain_secs = start.elapsed().as_secs_f64();
    let (mut lats, mut total) = (Latencies::default(), Tally::default());
    for r in results {
        let (us, t) = r?;
        lats.0.push(us);
        total.got += t.got;
        total.duplicates += t.duplicates;
        total.out_of_order += t.out_of_order;
    }
    let expected = (users * per_user) as u64;
    let mut out = serde_json::Map::new();
    out.insert("scenario".into(), "offline".into());
    out.insert("users".into(), users.into());
    out.insert("per_user".into(), per_user.into());
    out.insert(
        "queued_per_s".into(),
        round(expected as f64 / queue_secs).into(),
    );
    out.insert(
        "drained_per_s".into(),
        round(total.got as f64 / drain_secs).into(),
    );
    lats.report("drain", &mut out);
    out.insert("lost".into(), expected.saturating_sub(total.got).into());
    out.insert("duplicates".into(), total.duplicates.into());
    out.insert("out_of_order".into(), total.out_of_order.into());
    if let Some(kib) = rss_queued {
        out.insert("server_rss_kib_queued".into(), kib.into());
    }
    Ok(out)
}

#[derive(Default)]
struct Tally {
    got: u64,
    duplicates: u64,
    out_of_order: u64,
}

/// Connects user `i`, subscribes to notifications and reads `per_user` of them; returns the
/// time from subscribe to the last one (µs) and what was seen.
async fn drain_one(c: &Common, i: usize, per_user: usize) -> Result<(u32, Tally), String> {
    let url = format!(
        "ws://{}:{}/ws/bus?token={}",
        c.host,
        c.port,
        bus_token(c, i, "none")
    );
    let mut ws = crate::conn::connect(c, i, url).await?;
    let t = Instant::now();
    let sub = json!({"type":"subscribe","events":["notification"]});
    ws.send(Message::text(sub.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    let mut seen = vec![false; per_user];
    let (mut tally, mut last) = (Tally::default(), None::<usize>);
    while tally.got + tally.duplicates < per_user as u64 {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(30), ws.next())
            .await
            .map_err(|_| format!("user {i}: drain stalled after {} events", tally.got))?;
        let Some(Ok(Message::Text(text))) = msg else {
            continue;
        };
        let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        if v["type"] != "notification" {
            continue;
        }
        let n: usize = v["message"]
            .as_str()
            .and_then(|m| m.split('|').next()?.parse().ok())
            .ok_or("unreadable notification")?;
        match seen.get_mut(n) {
            Some(s) if !*s => {
                *s = true;
                tally.got += 1;
            }
            _ => tally.duplicates += 1,
        }
        if last.is_some_and(|l| n <= l) {
            tally.out_of_order += 1;
        }
        last = Some(n);
    }
    let us = t.elapsed().as_micros() as u32;
    let _ = ws.close(None).await;
    Ok((us, tally))
}
