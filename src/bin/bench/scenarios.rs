//! The scenarios. Each returns the fields of its output line.

use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::conn::{self, Received, Ws};
use crate::procfs::{rss_kib, CpuMark};
use crate::publish::{self, Publisher};
use crate::stats::Counts;
use crate::stats::{round, Latencies};
use crate::{http, Common, Transport};

type Line = Result<Map<String, Value>, String>;

/// Connects `n` clients, client `i` to `channel(i)`, `connect_concurrency` at a time.
/// Returns the clients, handshake latencies and the wall time.
async fn connect_all(
    c: &Common,
    n: usize,
    channel: impl Fn(usize) -> String,
) -> Result<(Vec<Ws>, Latencies, f64), String> {
    connect_with(c, n, |i| {
        let ch = channel(i);
        async move { conn::open(c, i, &ch).await.map(|(ws, _)| ws) }
    })
    .await
}

/// Opens `n` clients with `open(i)`, `connect_concurrency` at a time.
async fn connect_with<T, F: Future<Output = Result<T, String>>>(
    c: &Common,
    n: usize,
    open: impl Fn(usize) -> F,
) -> Result<(Vec<T>, Latencies, f64), String> {
    let start = Instant::now();
    let results: Vec<Result<(T, u32), String>> = futures_util::stream::iter(0..n)
        .map(|i| {
            let opening = open(i);
            async move {
                let t = Instant::now();
                let client = opening.await?;
                Ok((client, t.elapsed().as_micros() as u32))
            }
        })
        .buffer_unordered(c.connect_concurrency.max(1))
        .collect()
        .await;
    let secs = start.elapsed().as_secs_f64();
    let mut clients = Vec::with_capacity(n);
    let mut lats = Latencies::default();
    let mut failed = 0;
    let mut first_err = None;
    for r in results {
        match r {
            Ok((client, l)) => {
                clients.push(client);
                lats.0.push(l);
            }
            Err(e) => {
                failed += 1;
                first_err.get_or_insert(e);
            }
        }
    }
    if failed > 0 {
        return Err(format!(
            "{failed} of {n} connections failed; first: {}",
            first_err.unwrap_or_default()
        ));
    }
    Ok((clients, lats, secs))
}

fn base(c: &Common, scenario: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("scenario".into(), scenario.into());
    m.insert(
        "protocol".into(),
        format!("{:?}", c.protocol).to_lowercase().into(),
    );
    let transport = match (c.transport, c.protocol) {
        (Transport::Ws, _) => "ws",
        (Transport::Http, crate::Proto::Pusher) => "xhr_streaming",
        (Transport::Http, crate::Proto::Bus) => "sse",
    };
    m.insert("transport".into(), transport.into());
    if let Some(pid) = c.server_pid {
        m.insert("server_rss_kib_start".into(), json!(rss_kib(pid)));
    }
    m
}

fn cpu_fields(out: &mut Map<String, Value>, mark: &CpuMark, c: &Common, secs: f64) {
    let (server, me) = mark.since(c.server_pid);
    if let Some((u, s)) = server {
        out.insert("server_cpu_user_s".into(), json!(round(u)));
        out.insert("server_cpu_sys_s".into(), json!(round(s)));
        out.insert(
            "server_cpu_pct".into(),
            json!(round((u + s) / secs * 100.0)),
        );
    }
    if let Some(m) = me {
        out.insert("loadgen_cpu_s".into(), json!(round(m)));
        out.insert("loadgen_cpu_pct".into(), json!(round(m / secs * 100.0)));
    }
    if let Some(pid) = c.server_pid {
        out.insert("server_rss_kib_end".into(), json!(rss_kib(pid)));
    }
}

async fn close_all(clients: Vec<Ws>) {
    futures_util::stream::iter(clients)
        .for_each_concurrent(256, |mut ws| async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
        })
        .await;
}

/// `connect`: rate and handshake latency of connect+subscribe.
pub async fn connect(c: &Common, n: usize) -> Line {
    let mut out = base(c, "connect");
    let mark = CpuMark::now(c.server_pid);
    let (clients, mut lats, secs) = connect_all(c, n, |i| format!("bench-c-{}", i % 100)).await?;
    out.insert("conns".into(), json!(n));
    out.insert("connect_rate_per_s".into(), json!(round(n as f64 / secs)));
    lats.report("handshake", &mut out);
    cpu_fields(&mut out, &mark, c, secs);
    close_all(clients).await;
    Ok(out)
}

/// `idle`: server RSS per idle subscribed connection.
pub async fn idle(c: &Common, n: usize, hold: u64, settle: u64) -> Line {
    let pid = c.server_pid.ok_or("idle needs --server-pid")?;
    let mut out = base(c, "idle");
    let before = rss_kib(pid).ok_or("cannot read server RSS")?;
    let (clients, mut lats, secs) = connect_all(c, n, |i| format!("bench-idle-{i}")).await?;
    tokio::time::sleep(Duration::from_secs(settle + hold)).await;
    let after = rss_kib(pid).ok_or("cannot read server RSS")?;
    out.insert("conns".into(), json!(n));
    out.insert("connect_rate_per_s".into(), json!(round(n as f64 / secs)));
    lats.report("handshake", &mut out);
    out.insert("rss_before_kib".into(), json!(before));
    out.insert("rss_after_kib".into(), json!(after));
    out.insert(
        "kib_per_conn".into(),
        json!(round((after as f64 - before as f64) / n as f64)),
    );
    close_all(clients).await;
    Ok(out)
}

/// Spawns a receiver per client; returns the stop token, the frame counter and the tasks.
fn spawn_receivers(
    clients: Vec<Ws>,
    stride: u64,
) -> (
    CancellationToken,
    Counts,
    Vec<tokio::task::JoinHandle<Received>>,
) {
    let stop = CancellationToken::new();
    let total = Counts::new(clients.len());
    let tasks = clients
        .into_iter()
        .enumerate()
        .map(|(i, ws)| tokio::spawn(conn::receive(ws, stride, stop.clone(), total.slot(i))))
        .collect();
    (stop, total, tasks)
}

/// Waits until `total` reaches `expected` or `drain` seconds pass.
async fn drain(total: &Counts, expected: u64, drain: u64) {
    let until = Instant::now() + Duration::from_secs(drain);
    while total.sum() < expected && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Delivery accounting shared by `fanout` and `channels`.
struct Tally {
    expected: u64,
    delivered: u64,
    duplicates: u64,
    lats: Latencies,
}

async fn collect(
    tasks: Vec<tokio::task::JoinHandle<Received>>,
    accepted_per_receiver: impl Fn(usize) -> (u64, u64),
) -> Tally {
    let mut t = Tally {
        expected: 0,
        delivered: 0,
        duplicates: 0,
        lats: Latencies::default(),
    };
    for (i, task) in tasks.into_iter().enumerate() {
        let (accepted, limit) = accepted_per_receiver(i);
        if let Ok(r) = task.await {
            t.delivered += r.seen.distinct_below(limit);
            t.duplicates += r.seen.duplicates;
            t.lats.merge(r.latencies_us);
        }
        t.expected += accepted;
    }
    t
}

fn tally_fields(out: &mut Map<String, Value>, t: &mut Tally, secs: f64) {
    out.insert("deliveries_expected".into(), json!(t.expected));
    out.insert("deliveries".into(), json!(t.delivered));
    out.insert("lost".into(), json!(t.expected.saturating_sub(t.delivered)));
    out.insert("duplicates".into(), json!(t.duplicates));
    out.insert(
        "deliveries_per_s".into(),
        json!(round(t.delivered as f64 / secs)),
    );
    t.lats.report("latency", out);
}

/// `fanout`: N subscribers on one channel, R events/s through `POST /events`.
pub async fn fanout(c: &Common, subs: usize, rate: u64, secs: u64, payload: usize) -> Line {
    let mut out = base(c, "fanout");
    let channel = "bench-fanout".to_owned();
    let (stop, total) = (CancellationToken::new(), Counts::new(subs));
    let tasks = match c.transport {
        Transport::Ws => {
            let (clients, mut hs, _) = connect_all(c, subs, |_| channel.clone()).await?;
            hs.report("handshake", &mut out);
            let receive = |(i, ws)| conn::receive(ws, 1, stop.clone(), total.slot(i));
            clients
                .into_iter()
                .enumerate()
                .map(|c| tokio::spawn(receive(c)))
                .collect()
        }
        Transport::Http => {
            // One connection per stream (HTTP/1.1), its sends on pooled ones.
            let client = reqwest::Client::builder()
                .http1_only()
                .build()
                .map_err(|e| e.to_string())?;
            let open = |i| http::open(&client, c, i, &channel);
            let (streams, mut hs, _) = connect_with(c, subs, open).await?;
            hs.report("handshake", &mut out);
            let receive = |(i, s)| http::receive(s, c.protocol, stop.clone(), total.slot(i));
            streams
                .into_iter()
                .enumerate()
                .map(|s| tokio::spawn(receive(s)))
                .collect()
        }
    };
    if let (Some(pid), Some(start)) = (c.server_pid, out.get("server_rss_kib_start")) {
        // What the server holds for each subscriber (connected, subscribed, idle so far).
        let (start, now) = (start.as_u64().unwrap_or(0), rss_kib(pid).unwrap_or(0));
        let per_conn = (now as f64 - start as f64) / subs.max(1) as f64;
        out.insert("rss_kib_per_conn".into(), json!(round(per_conn)));
    }
    let publisher = Publisher::new(c);
    let mark = CpuMark::now(c.server_pid);
    let started = Instant::now();
    let mut published = publish::open_loop(rate, secs, c.http_concurrency, |seq| {
        let p = publisher.clone();
        let ch = channel.clone();
        async move { p.trigger(&ch, &publish::payload(seq, payload)).await }
    })
    .await;
    let accepted: Vec<bool> = published.accepted.clone();
    let n_accepted = accepted.iter().filter(|a| **a).count() as u64;
    drain(&total, n_accepted * subs as u64, c.drain).await;
    let elapsed = started.elapsed().as_secs_f64();
    stop.cancel();
    let sent = accepted.len() as u64;
    let mut t = collect(tasks, |_| (n_accepted, sent)).await;
    out.insert("subs".into(), json!(subs));
    out.insert("rate_target".into(), json!(rate));
    out.insert("payload".into(), json!(payload));
    out.insert("events_sent".into(), json!(sent));
    out.insert("events_accepted".into(), json!(n_accepted));
    out.insert(
        "published_per_s".into(),
        json!(round(n_accepted as f64 / published.secs)),
    );
    publish_fields(&mut out, &mut published);
    tally_fields(&mut out, &mut t, published.secs);
    cpu_fields(&mut out, &mark, c, elapsed);
    Ok(out)
}

/// How the publishing went: its duration, its worst lag behind the schedule and each
/// request's latency (taken out of `published`).
fn publish_fields(out: &mut Map<String, Value>, published: &mut publish::Published) {
    out.insert("publish_secs".into(), json!(round(published.secs)));
    out.insert(
        "publish_max_sched_lag_ms".into(),
        json!(round(published.max_sched_lag_ms)),
    );
    crate::stats::Latencies(std::mem::take(&mut published.request_us))
        .report("publish_request", out);
}

/// `channels`: N connections each on its own channel; R events/s round-robin over the
/// channels, `batch` events per `POST /batch_events`.
pub async fn channels(
    c: &Common,
    n: usize,
    rate: u64,
    secs: u64,
    payload: usize,
    batch: usize,
) -> Line {
    let mut out = base(c, "channels");
    let batch = batch.max(1);
    let (clients, mut hs, _) = connect_all(c, n, |i| format!("bench-ch-{i}")).await?;
    hs.report("handshake", &mut out);
    let (stop, total, tasks) = spawn_receivers(clients, n as u64);
    let publisher = Publisher::new(c);
    let mark = CpuMark::now(c.server_pid);
    let started = Instant::now();
    let requests_per_s = (rate / batch as u64).max(1);
    let mut published = publish::open_loop(requests_per_s, secs, c.http_concurrency, |req| {
        let p = publisher.clone();
        async move {
            let events: Vec<(String, String)> = (0..batch as u64)
                .map(|k| {
                    let seq = req * batch as u64 + k;
                    (
                        format!("bench-ch-{}", seq % n as u64),
                        publish::payload(seq, payload),
                    )
                })
                .collect();
            p.batch(&events).await
        }
    })
    .await;
    let accepted_reqs = published.accepted.iter().filter(|a| **a).count() as u64;
    let expected_total = accepted_reqs * batch as u64;
    drain(&total, expected_total, c.drain).await;
    let elapsed = started.elapsed().as_secs_f64();
    stop.cancel();
    // Receiver i gets every seq with seq % n == i; count its accepted ones exactly.
    let accepted = published.accepted.clone();
    let per_receiver = |i: usize| {
        let mut count = 0;
        let mut limit = 0;
        for (req, ok) in accepted.iter().enumerate() {
            for k in 0..batch as u64 {
                let seq = req as u64 * batch as u64 + k;
                if seq % n as u64 == i as u64 {
                    limit = seq / n as u64 + 1;
                    if *ok {
                        count += 1;
                    }
                }
            }
        }
        (count, limit)
    };
    let mut t = collect(tasks, per_receiver).await;
    out.insert("conns".into(), json!(n));
    out.insert("rate_target".into(), json!(rate));
    out.insert("batch".into(), json!(batch));
    out.insert("payload".into(), json!(payload));
    out.insert("events_accepted".into(), json!(expected_total));
    publish_fields(&mut out, &mut published);
    tally_fields(&mut out, &mut t, published.secs);
    cpu_fields(&mut out, &mark, c, elapsed);
    Ok(out)
}

/// `presence`: observers hold a presence channel while churners join and leave it.
pub async fn presence(c: &Common, observers: usize, churners: usize, secs: u64) -> Line {
    if c.protocol != crate::Proto::Pusher {
        return Err("presence is a Pusher scenario".into());
    }
    let mut out = base(c, "presence");
    let channel = "presence-bench";
    let mut obs = Vec::with_capacity(observers);
    for i in 0..observers {
        let (mut ws, sid) = open_pusher(c, i).await?;
        let data = format!(r#"{{"user_id":"obs-{i}"}}"#);
        conn::subscribe_pusher(&mut ws, c, &sid, channel, Some(&data)).await?;
        obs.push(ws);
    }
    let events = Counts::new(observers);
    let stop = CancellationToken::new();
    let obs_tasks: Vec<_> = obs
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            let (stop, events) = (stop.clone(), events.slot(i));
            tokio::spawn(async move {
                loop {
                    let m = tokio::select! { _ = stop.cancelled() => break, m = ws.next() => m };
                    match m {
                        Some(Ok(Message::Text(t)))
                            if t.contains("member_") && t.contains("churn-") =>
                        {
                            events.add();
                        }
                        Some(Ok(Message::Text(t))) if t.contains("pusher:ping") => {
                            let _ = ws
                                .send(Message::text(r#"{"event":"pusher:pong","data":{}}"#))
                                .await;
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    }
                }
            })
        })
        .collect();
    let mark = CpuMark::now(c.server_pid);
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let churn_tasks: Vec<_> = (0..churners)
        .map(|k| {
            let c = c.clone();
            tokio::spawn(async move {
                let (mut ws, sid) = open_pusher(&c, 100_000 + k).await?;
                let data = format!(r#"{{"user_id":"churn-{k}"}}"#);
                let mut lats = Vec::new();
                let mut cycles = 0u64;
                while Instant::now() < until {
                    let t = Instant::now();
                    conn::subscribe_pusher(&mut ws, &c, &sid, channel, Some(&data)).await?;
                    lats.push(t.elapsed().as_micros() as u32);
                    let unsub = json!({"event":"pusher:unsubscribe","data":{"channel":channel}});
                    ws.send(Message::text(unsub.to_string()))
                        .await
                        .map_err(|e| e.to_string())?;
                    cycles += 1;
                }
                let _ = ws.close(None).await;
                Ok::<_, String>((cycles, lats))
            })
        })
        .collect();
    let mut cycles = 0;
    let mut lats = Latencies::default();
    for t in churn_tasks {
        let (n, l) = t.await.map_err(|e| e.to_string())??;
        cycles += n;
        lats.merge(l);
    }
    let secs_done = started.elapsed().as_secs_f64();
    let expected = cycles * 2 * observers as u64;
    drain(&events, expected, c.drain).await;
    stop.cancel();
    for t in obs_tasks {
        let _ = t.await;
    }
    out.insert("observers".into(), json!(observers));
    out.insert("churners".into(), json!(churners));
    out.insert("join_leave_cycles".into(), json!(cycles));
    out.insert(
        "cycles_per_s".into(),
        json!(round(cycles as f64 / secs_done)),
    );
    out.insert("member_events_expected".into(), json!(expected));
    out.insert("member_events".into(), json!(events.sum()));
    lats.report("subscribe", &mut out);
    cpu_fields(&mut out, &mark, c, secs_done);
    Ok(out)
}

async fn open_pusher(c: &Common, idx: usize) -> Result<(Ws, String), String> {
    // Connect with a public channel subscription, then reuse the socket.
    conn::open(c, idx, &format!("bench-p-{idx}")).await
}
