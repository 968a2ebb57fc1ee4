//! `switchboard-chaos`: the driver of `scripts/chaos.sh`, a fault campaign against a
//! three-node Switchboard cluster on loopback (one Redis, one PostgreSQL). It publishes
//! numbered events at a steady rate (signed HTTP API with idempotency keys, and the
//! PostgreSQL outbox), consumes them on Pusher and bus connections on every node, injects
//! faults one at a time (kill -9 of a node, Redis and PostgreSQL restarts through the
//! script's `ctl` mode; cut and slow consumers itself), and prints one JSON line: per fault
//! type, what was acknowledged, delivered, lost, duplicated and reordered, and how long
//! recovery took. See `report` for the definitions.
//!
//! Topology: node 1 hosts the consumers connected throughout (no fault touches node 1 or
//! them) and the cut and slow consumers; nodes 2 and 3 each host a Pusher and a bus
//! consumer that lose their node when it is killed. Node 1 has no database URL, so the
//! outbox ingester is always node 2 or 3, and every node kill kills the ingester.

mod api;
mod consume;
mod faults;
mod ledger;
mod publish;
mod report;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use serde_json::{json, Map, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use api::{metric_sum, Api};
use consume::{Net, Proto, Role, Rx};
use ledger::{Kind, Stream};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "switchboard-chaos",
    about = "Fault campaign driver (scripts/chaos.sh)"
)]
struct Opts {
    /// API addresses (host:port) of nodes 1, 2, 3.
    #[arg(long, value_delimiter = ',', required = true)]
    nodes: Vec<String>,
    /// Metrics addresses, same order.
    #[arg(long, value_delimiter = ',', required = true)]
    metrics: Vec<String>,
    /// The database the outbox lives in.
    #[arg(long)]
    database_url: String,
    /// Control command, run as `CTL ctl kill|start N`, `CTL ctl redis-stop|redis-start`,
    /// `CTL ctl pg-stop|pg-start`.
    #[arg(long)]
    ctl: String,
    /// Length of the run, in seconds (publishing stops `settle` seconds before the end).
    #[arg(long, default_value_t = 900)]
    secs: u64,
    #[arg(long, default_value_t = 15)]
    settle: u64,
    /// Seconds of steady traffic before the first fault.
    #[arg(long, default_value_t = 10)]
    warmup: u64,
    /// Quiet seconds after each fault recovered.
    #[arg(long, default_value_t = 8)]
    gap: u64,
    /// Events per second of each HTTP channel publisher (4 of them).
    #[arg(long, default_value_t = 10)]
    http_rate: u64,
    /// Events per second on the bulk channel.
    #[arg(long, default_value_t = 40)]
    bulk_rate: u64,
    /// Bytes of padding in each bulk event.
    #[arg(long, default_value_t = 8000)]
    bulk_pad: usize,
    /// Notification calls per second of each HTTP notification publisher (2).
    #[arg(long, default_value_t = 5)]
    notify_rate: u64,
    /// Rows (channel) or row groups (users) per second of each outbox publisher (3).
    #[arg(long, default_value_t = 8)]
    outbox_rate: u64,
    /// Seconds a killed node, Redis or PostgreSQL stays down.
    #[arg(long, default_value_t = 3)]
    down: u64,
    /// Seconds a cut consumer waits before reconnecting.
    #[arg(long, default_value_t = 1)]
    cut_hold: u64,
    /// Seconds a slow consumer stops reading (the socket buffers absorb it).
    #[arg(long, default_value_t = 8)]
    pause: u64,
    /// Seconds a stalled consumer stops reading (long enough to be closed as too slow).
    #[arg(long, default_value_t = 40)]
    stall: u64,
    #[arg(long, default_value = "app-id")]
    app_id: String,
    #[arg(long, default_value = "app-key")]
    key: String,
    #[arg(long, default_value = "app-secret")]
    secret: String,
    #[arg(long, default_value = "")]
    label: String,
}

const CHANNELS: [&str; 2] = ["chaos-0", "chaos-1"];
/// The channel of large events, which fills a stalled consumer's buffers within seconds.
const BULK: &str = "chaos-bulk";

fn streams(bulk_pad: usize) -> Vec<Arc<Stream>> {
    let mut s: Vec<(Kind, usize)> = [0, 0, 1, 1]
        .map(|c| (Kind::Http(CHANNELS[c].into()), 0))
        .to_vec();
    s.extend([(Kind::Notify, 0), (Kind::Notify, 0)]);
    s.extend(CHANNELS.map(|c| (Kind::OutboxChannel(c.into()), 0)));
    s.push((Kind::OutboxUser, 0));
    s.push((Kind::Http(BULK.into()), bulk_pad));
    s.into_iter()
        .enumerate()
        .map(|(i, (k, pad))| {
            let name = match &k {
                Kind::Http(c) => format!("http#{i}->{c}"),
                Kind::Notify => format!("http#{i}->users"),
                Kind::OutboxChannel(c) => format!("outbox#{i}->{c}"),
                Kind::OutboxUser => format!("outbox#{i}->users"),
            };
            Arc::new(Stream::new(name, k, pad))
        })
        .collect()
}

/// Node 1: the consumers connected throughout, the cut pair, the slow pair; nodes 2 and 3:
/// a pair each that their node's kill disconnects. Only the throughout and slow consumers
/// take the bulk channel.
fn consumers(streams: &[Arc<Stream>]) -> Vec<Arc<Rx>> {
    let spec = [
        ("t-pusher", Proto::Pusher, 0, Role::Throughout),
        ("t-bus", Proto::Bus, 0, Role::Throughout),
        ("k2-pusher", Proto::Pusher, 1, Role::NodeKill),
        ("k2-bus", Proto::Bus, 1, Role::NodeKill),
        ("k3-pusher", Proto::Pusher, 2, Role::NodeKill),
        ("k3-bus", Proto::Bus, 2, Role::NodeKill),
        ("cut-pusher", Proto::Pusher, 0, Role::Cut),
        ("cut-bus", Proto::Bus, 0, Role::Cut),
        ("slow-pusher", Proto::Pusher, 0, Role::Slow),
        ("slow-bus", Proto::Bus, 0, Role::Slow),
    ];
    spec.iter()
        .map(|&(name, proto, node, role)| {
            let mut channels: Vec<String> = CHANNELS.map(String::from).to_vec();
            if matches!(role, Role::Throughout | Role::Slow) {
                channels.push(BULK.into());
            }
            let subs = (0..streams.len())
                .filter(|&p| match streams[p].channel() {
                    Some(c) => channels.iter().any(|x| x == c),
                    None => proto == Proto::Bus,
                })
                .collect();
            Arc::new(Rx::new((name, proto, node, role), channels, subs))
        })
        .collect()
}

async fn run(o: Opts) -> Result<Map<String, Value>, String> {
    ledger::now_ms();
    let date_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let api = Arc::new(Api::new(
        o.nodes.clone(),
        o.metrics.clone(),
        (&o.app_id, &o.key, &o.secret),
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    for k in 0..api.nodes.len() {
        while !api.up(k).await {
            if Instant::now() > deadline {
                return Err(format!("node {} is not up", k + 1));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let streams = streams(o.bulk_pad);
    let rxs = consumers(&streams);
    let users: Vec<String> = rxs
        .iter()
        .filter(|r| r.proto == Proto::Bus)
        .map(|r| r.name.clone())
        .collect();
    let stop = CancellationToken::new();
    let net = Arc::new(Net {
        api: api.clone(),
        cut_hold: Duration::from_secs(o.cut_hold),
    });
    let mut tasks = Vec::new();
    for rx in &rxs {
        tasks.push(tokio::spawn(consume::run(
            rx.clone(),
            net.clone(),
            stop.clone(),
        )));
    }
    let ready = |r: &Arc<Rx>| r.connected.load(std::sync::atomic::Ordering::Acquire);
    while !rxs.iter().all(ready) {
        if Instant::now() > deadline {
            return Err("consumers did not connect".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t0 = Instant::now();
    let publish_for = Duration::from_secs(o.secs.saturating_sub(o.settle).max(10));
    let w = publish::Window {
        stop: t0 + publish_for,
        give_up: t0 + publish_for + Duration::from_secs(o.settle.saturating_sub(5)),
    };
    let mut publishers = Vec::new();
    for (i, s) in streams.iter().enumerate() {
        let (s, users) = (s.clone(), users.clone());
        publishers.push(match &s.kind {
            Kind::Http(c) => tokio::spawn(publish::http(
                api.clone(),
                s.clone(),
                i,
                date_ms,
                users,
                if c == BULK { o.bulk_rate } else { o.http_rate },
                w,
            )),
            Kind::Notify => tokio::spawn(publish::http(
                api.clone(),
                s,
                i,
                date_ms,
                users,
                o.notify_rate,
                w,
            )),
            _ => tokio::spawn(publish::outbox(
                o.database_url.clone(),
                o.app_id.clone(),
                s,
                i,
                users,
                o.outbox_rate,
                w,
            )),
        });
    }
    tokio::time::sleep(Duration::from_secs(o.warmup)).await;
    let plan = faults::Faults {
        api: api.clone(),
        streams: streams.clone(),
        rxs: rxs.clone(),
        ctl: o.ctl.clone(),
        down: Duration::from_secs(o.down),
        cut_hold: Duration::from_secs(o.cut_hold),
        pause: Duration::from_secs(o.pause),
        stall: Duration::from_secs(o.stall),
        gap: Duration::from_secs(o.gap),
        limit: Duration::from_secs(120),
    };
    let faults = plan.campaign(w.stop).await;
    for p in publishers {
        let _ = tokio::time::timeout(Duration::from_secs(o.settle + 5), p).await;
    }
    // The last acknowledged events reach the consumers.
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.cancel();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let mut out = report::build(&streams, &rxs, &faults);
    let mut nodes = Vec::new();
    for k in 0..api.nodes.len() {
        let text = api.metrics(k).await.unwrap_or_default();
        let m = |n: &str| metric_sum(&text, n);
        nodes.push(json!({
            "node": k + 1,
            "idempotent_repeats": m("switchboard_idempotent_repeats_total"),
            "slow_consumer_closes": m("switchboard_slow_consumer_closes_total"),
            "lease_lost": m("switchboard_lease_lost_total"),
            "ingest_rows": m("switchboard_ingest_rows_total"),
            "ingest_leader": m("switchboard_ingest_leader"),
        }));
    }
    out.insert("node_metrics_since_last_start".into(), json!(nodes));
    out.insert("label".into(), json!(o.label));
    out.insert("started_unix_ms".into(), json!(date_ms));
    out.insert(
        "config".into(),
        json!({"secs": o.secs, "settle": o.settle, "warmup": o.warmup, "gap": o.gap,
            "http_rate": o.http_rate, "notify_rate": o.notify_rate,
            "outbox_rate": o.outbox_rate, "down": o.down, "cut_hold": o.cut_hold,
            "pause": o.pause, "stall": o.stall, "bulk_rate": o.bulk_rate,
            "bulk_pad": o.bulk_pad, "nodes": o.nodes, "channels": CHANNELS, "bulk": BULK,
            "users": users}),
    );
    Ok(out)
}

fn main() {
    let o = Opts::parse();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let limit = Duration::from_secs(o.secs + o.settle + 240);
    // A watchdog outside the runtime: the process ends even if the runtime wedges.
    let hard = limit + Duration::from_secs(30);
    std::thread::spawn(move || {
        std::thread::sleep(hard);
        eprintln!("switchboard-chaos: watchdog fired after {hard:?}");
        std::process::exit(3);
    });
    let result = rt.block_on(async move { tokio::time::timeout(limit, run(o)).await });
    let code = match result {
        Ok(Ok(line)) => {
            println!("{}", Value::Object(line));
            0
        }
        Ok(Err(e)) => {
            eprintln!("switchboard-chaos: {e}");
            1
        }
        Err(_) => {
            eprintln!("switchboard-chaos: timed out after {limit:?}");
            2
        }
    };
    rt.shutdown_timeout(Duration::from_secs(2));
    std::process::exit(code);
}
