//! `switchboard-bench`: a load generator for Pusher-protocol servers (Switchboard, Sockudo,
//! soketi) and Switchboard's bus protocol. Each run prints one JSON line.
//!
//! Scenarios: `connect` (connect+subscribe rate), `idle` (RSS per idle connection), `fanout`
//! (N subscribers of one channel, R events/s through the signed HTTP API), `channels` (one
//! subscriber per channel, batched triggers), `presence` (presence subscribe/unsubscribe churn).
//! `--transport http` runs `fanout`'s subscribers over HTTP streaming instead of WebSocket.

mod conn;
mod http;
mod offline;
mod procfs;
mod publish;
mod scenarios;
mod stats;

use std::net::IpAddr;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// Wire protocol of the subscribers.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Proto {
    /// Pusher protocol v7 (`/app/{key}`).
    Pusher,
    /// Switchboard's bus (`/ws/bus`, rooms).
    Bus,
}

/// How the subscribers are connected.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Transport {
    /// WebSocket.
    Ws,
    /// HTTP streaming, for networks that break WebSocket: pusher-js's `xhr_streaming`
    /// (Pusher) or Server-Sent Events (bus). `fanout` only.
    Http,
}

/// Options every scenario shares.
#[derive(Parser, Clone, Debug)]
pub struct Common {
    /// Server host.
    #[arg(long, default_value = "127.0.0.1", global = true)]
    pub host: String,
    /// Server port.
    #[arg(long, default_value_t = 6001, global = true)]
    pub port: u16,
    /// Port of the node that takes the HTTP publishes (another node of a cluster; default:
    /// `--port`).
    #[arg(long, global = true)]
    pub publish_port: Option<u16>,
    /// App id.
    #[arg(long, default_value = "app-id", global = true)]
    pub app_id: String,
    /// App key.
    #[arg(long, default_value = "app-key", global = true)]
    pub key: String,
    /// App secret.
    #[arg(long, default_value = "app-secret", global = true)]
    pub secret: String,
    /// PID of the server, to read its RSS and CPU from /proc.
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// Label copied into the output line.
    #[arg(long, default_value = "", global = true)]
    pub label: String,
    /// Hard limit on the whole run, in seconds.
    #[arg(long, default_value_t = 240, global = true)]
    pub timeout: u64,
    /// WebSocket handshakes in flight at once.
    #[arg(long, default_value_t = 100, global = true)]
    pub connect_concurrency: usize,
    /// Loopback source addresses to spread connections over (more than ~28k connections
    /// need several), e.g. `127.0.0.2,127.0.0.3`.
    #[arg(long, value_delimiter = ',', global = true)]
    pub source_ips: Vec<IpAddr>,
    /// Subscriber protocol.
    #[arg(long, value_enum, default_value_t = Proto::Pusher, global = true)]
    pub protocol: Proto,
    /// Subscriber transport.
    #[arg(long, value_enum, default_value_t = Transport::Ws, global = true)]
    pub transport: Transport,
    /// HTTP publish requests in flight at once.
    #[arg(long, default_value_t = 32, global = true)]
    pub http_concurrency: usize,
    /// Seconds to wait for stragglers after publishing stops.
    #[arg(long, default_value_t = 5, global = true)]
    pub drain: u64,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Connect and subscribe N clients; report the rate and handshake latency.
    Connect {
        #[arg(long, default_value_t = 1000)]
        conns: usize,
    },
    /// Hold N idle subscribed connections; report RSS per connection.
    Idle {
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        /// Seconds to hold before reading RSS.
        #[arg(long, default_value_t = 5)]
        hold: u64,
        /// Seconds to let the server settle after connecting.
        #[arg(long, default_value_t = 2)]
        settle: u64,
    },
    /// N subscribers on one channel, R events/s for S seconds.
    Fanout {
        #[arg(long, default_value_t = 1000)]
        subs: usize,
        #[arg(long, default_value_t = 100)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        secs: u64,
        #[arg(long, default_value_t = 100)]
        payload: usize,
    },
    /// N connections on N channels, R events/s over them, B events per batch request.
    Channels {
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        #[arg(long, default_value_t = 2000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        secs: u64,
        #[arg(long, default_value_t = 100)]
        payload: usize,
        #[arg(long, default_value_t = 10)]
        batch: usize,
    },
    /// Notifications for U absent bus users, E each, then every user connects and drains its
    /// offline queue (Switchboard only).
    Offline {
        #[arg(long, default_value_t = 1000)]
        users: usize,
        #[arg(long, default_value_t = 20)]
        per_user: usize,
        #[arg(long, default_value_t = 100)]
        payload: usize,
    },
    /// N observers on a presence channel while C churners join and leave it for S seconds.
    Presence {
        #[arg(long, default_value_t = 100)]
        observers: usize,
        #[arg(long, default_value_t = 20)]
        churners: usize,
        #[arg(long, default_value_t = 10)]
        secs: u64,
    },
}

#[derive(Parser, Debug)]
#[command(
    name = "switchboard-bench",
    about = "Load generator for Pusher-protocol servers"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: Scenario,
}

fn main() {
    let cli = Cli::parse();
    if cli.common.transport == Transport::Http && !matches!(cli.scenario, Scenario::Fanout { .. }) {
        eprintln!("switchboard-bench: --transport http is for the fanout scenario");
        std::process::exit(1);
    }
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let limit = Duration::from_secs(cli.common.timeout);
    // A watchdog outside the runtime: the process ends even if the runtime wedges.
    let hard = limit + Duration::from_secs(15);
    std::thread::spawn(move || {
        std::thread::sleep(hard);
        eprintln!("switchboard-bench: watchdog fired after {hard:?}");
        std::process::exit(3);
    });
    let c = cli.common.clone();
    let result = rt.block_on(async move {
        tokio::time::timeout(limit, async move {
            match cli.scenario {
                Scenario::Connect { conns } => scenarios::connect(&c, conns).await,
                Scenario::Idle {
                    conns,
                    hold,
                    settle,
                } => scenarios::idle(&c, conns, hold, settle).await,
                Scenario::Fanout {
                    subs,
                    rate,
                    secs,
                    payload,
                } => scenarios::fanout(&c, subs, rate, secs, payload).await,
                Scenario::Channels {
                    conns,
                    rate,
                    secs,
                    payload,
                    batch,
                } => scenarios::channels(&c, conns, rate, secs, payload, batch).await,
                Scenario::Presence {
                    observers,
                    churners,
                    secs,
                } => scenarios::presence(&c, observers, churners, secs).await,
                Scenario::Offline {
                    users,
                    per_user,
                    payload,
                } => offline::offline(&c, users, per_user, payload).await,
            }
        })
        .await
    });
    match result {
        Ok(Ok(mut line)) => {
            line.insert("label".into(), cli.common.label.clone().into());
            println!("{}", serde_json::Value::Object(line));
        }
        Ok(Err(e)) => {
            eprintln!("switchboard-bench: {e}");
            std::process::exit(1);
        }
        Err(_) => {
            eprintln!("switchboard-bench: timed out after {limit:?}");
            std::process::exit(2);
        }
    }
    rt.shutdown_timeout(Duration::from_secs(2));
}
