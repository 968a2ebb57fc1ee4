//! Real Redis topologies on loopback (issue 19): a Redis Cluster ([`RedisCluster`]) and a
//! Sentinel group ([`RedisSentinel`]), each a set of child processes of the test on free
//! 127.0.0.1 ports in a temp dir. Every wait is bounded by [`TOPOLOGY_WAIT`] and polls the
//! servers (never a blind sleep); a node that fails to start panics with its log. Drop kills
//! every process (SIGKILL) and removes the dir. Used by tests/topology.rs.
//!
//! The processes are children of the test process: a test that panics still drops its
//! topology on unwind; a test process that is killed outright leaves them behind.
#![allow(unused_imports)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::*;

/// Longest wait for a topology to form or to fail over.
pub const TOPOLOGY_WAIT: Duration = Duration::from_secs(30);
/// Longest wait for one command to one node (a killed node refuses at once; a stuck one not).
const ASK_WAIT: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(100);
/// The master name of [`RedisSentinel`].
pub const MASTER_NAME: &str = "mymaster";

// ============================================================================================
// Whether the topology tests can run here.
// ============================================================================================

/// Whether `redis-server` (≥ 7, for sharded pub/sub) and `redis-cli` can be run here. When
/// `redis-server` is missing it prints why and returns false, unless
/// `SWITCHBOARD_TEST_REDIS_URL` is set (scripts/test.sh, CI): then the tests must run, and it
/// panics. A `redis-server` older than 7 panics too.
pub fn redis_topology_available(test: &str) -> bool {
    let version = match Command::new("redis-server").arg("--version").output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => {
            assert!(
                std::env::var_os("SWITCHBOARD_TEST_REDIS_URL").is_none(),
                "{test}: redis-server is not installed but SWITCHBOARD_TEST_REDIS_URL is set, so \
                 the Redis topology tests must run: apt-get install -y redis-server \
                 (scripts/services.sh does)"
            );
            println!(
                "{test}: skipped: redis-server is not installed and SWITCHBOARD_TEST_REDIS_URL \
                 is unset (apt-get install -y redis-server, or run scripts/test.sh)"
            );
            return false;
        }
    };
    // "Redis server v=7.0.15 sha=..."
    let major: u32 = version
        .split("v=")
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the version of redis-server from {version:?}"));
    assert!(
        major >= 7,
        "{test}: {} is older than 7 (sharded pub/sub needs Redis 7)",
        version.trim()
    );
    let cli = Command::new("redis-cli").arg("--version").output();
    assert!(
        cli.is_ok_and(|o| o.status.success()),
        "{test}: redis-server is installed but redis-cli is not (apt-get install -y redis-tools)"
    );
    true
}

// ============================================================================================
// Processes and commands.
// ============================================================================================

/// One Redis process of a topology (a data node or a sentinel), restartable with its args.
struct Proc {
    port: u16,
    program: &'static str,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn spawn(dir: &Path, port: u16, program: &'static str, args: Vec<String>) -> Self {
        let log = dir.join(format!("redis-{port}.log"));
        let mut p = Self {
            port,
            program,
            args,
            log,
            child: None,
        };
        p.start(dir);
        p
    }

    fn start(&mut self, dir: &Path) {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(self.program)
            .args(&self.args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {} {:?}: {e}", self.program, self.args));
        self.child = Some(child);
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// Panics with the log when the process has exited.
    fn assert_running(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{} on port {} exited ({status}); its log ({}):\n{}",
                self.program,
                self.port,
                self.log.display(),
                self.log_text()
            );
        }
    }

    fn alive(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL, then reaps the process.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until the process answers PING; panics with its log when it exits or does not.
    async fn wait_up(&mut self) {
        let deadline = tokio::time::Instant::now() + TOPOLOGY_WAIT;
        loop {
            self.assert_running();
            if ask::<String>(self.port, &["PING"]).await.is_ok() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} on port {} does not answer PING within {TOPOLOGY_WAIT:?}; its log:\n{}",
                self.program,
                self.port,
                self.log_text()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Killed when dropped too: a topology that panics while starting leaves no process behind.
impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One command to the Redis on 127.0.0.1:`port`, on a fresh connection, within [`ASK_WAIT`].
pub async fn ask<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> Result<T, String> {
    let run = async {
        let client =
            redis::Client::open(format!("redis://127.0.0.1:{port}")).map_err(|e| e.to_string())?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async::<T>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(ASK_WAIT, run)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {ASK_WAIT:?}")))
}

/// Runs `redis-cli args...` and returns its stdout, trimmed; panics when it fails.
/// E.g. `redis_cli(&["-c", "-p", "7000", "SET", "k", "v"])` (`-c` follows MOVED/ASK).
pub async fn redis_cli(args: &[&str]) -> String {
    let out = tokio::process::Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "redis-cli {args:?} failed ({}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `field:value` lines of INFO or CLUSTER INFO.
fn info_fields(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Polls `check` (Ok when the state is reached, Err(what is still missing)) until it holds;
/// panics with the last Err after [`TOPOLOGY_WAIT`].
async fn wait_until<T, F, Fut>(what: &str, dir: &Path, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + TOPOLOGY_WAIT;
    loop {
        let last = match check().await {
            Ok(t) => return t,
            Err(e) => e,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached within {TOPOLOGY_WAIT:?}: {last} (logs in {})",
            dir.display()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Ok when the primary on `port` has `replicas` online replicas that acknowledged its whole
/// replication stream.
async fn replicated(port: u16, replicas: usize) -> Result<(), String> {
    let info = info_fields(&ask::<String>(port, &["INFO", "replication"]).await?);
    let offset = info.get("master_repl_offset").cloned().unwrap_or_default();
    let acked = (0..replicas)
        .filter(|i| {
            info.get(&format!("slave{i}")).is_some_and(|s| {
                s.contains("state=online") && s.contains(&format!("offset={offset},"))
            })
        })
        .count();
    if acked == replicas {
        Ok(())
    } else {
        Err(format!(
            "primary {port}: {acked} of {replicas} replicas acknowledged offset {offset}"
        ))
    }
}

// ============================================================================================
// Redis Cluster.
// ============================================================================================

/// One line of CLUSTER NODES.
#[derive(Clone, Debug)]
struct NodeLine {
    id: String,
    port: u16,
    flags: Vec<String>,
    /// The id of its primary, for a replica.
    master: Option<String>,
    /// Slot ranges it serves (`(first, last)`), for a primary.
    slots: Vec<(u16, u16)>,
}

impl NodeLine {
    fn is_master(&self) -> bool {
        self.flags.iter().any(|f| f == "master")
    }

    fn failing(&self) -> bool {
        self.flags.iter().any(|f| f == "fail" || f == "fail?")
    }

    fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
    }
}

fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // <id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>...
            let port = f[1]
                .split('@')
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let slots = f
                .get(8..)
                .unwrap_or(&[])
                .iter()
                .filter(|s| !s.starts_with('['))
                .map(|s| match s.split_once('-') {
                    Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                    None => (s.parse().unwrap(), s.parse().unwrap()),
                })
                .collect();
            NodeLine {
                id: f[0].to_owned(),
                port,
                flags: f[2].split(',').map(str::to_owned).collect(),
                master: (f[3] != "-").then(|| f[3].to_owned()),
                slots,
            }
        })
        .collect()
}

/// A Redis Cluster of real `redis-server --cluster-enabled yes` processes on loopback, made
/// by `redis-cli --cluster create`; `cluster-node-timeout` 1000 ms, no persistence.
pub struct RedisCluster {
    dir: PathBuf,
    nodes: Vec<Proc>,
    /// CLUSTER NODES as last seen ready (at start and after each failover).
    layout: Vec<NodeLine>,
    primaries: usize,
    replicas_per_primary: usize,
}

impl RedisCluster {
    /// Starts `primaries` (≥ 3) primaries with `replicas_per_primary` replicas each and waits
    /// until every node says `cluster_state:ok`, all 16384 slots are served, and every replica
    /// has its primary's data link up.
    pub async fn start(primaries: usize, replicas_per_primary: usize) -> Self {
        assert!(primaries >= 3, "a Redis Cluster needs at least 3 primaries");
        let dir = temp_dir("redis-cluster");
        std::fs::create_dir_all(&dir).unwrap();
        let total = primaries * (1 + replicas_per_primary);
        // A data port and a cluster bus port per node (the bus port is set, not port + 10000,
        // which may not exist).
        let ports = free_ports(2 * total);
        let mut nodes: Vec<Proc> = (0..total)
            .map(|i| {
                let (port, bus) = (ports[2 * i], ports[2 * i + 1]);
                let args = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &dir.join(format!("nodes-{port}.conf")).to_string_lossy(),
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-port",
                    &bus.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--repl-diskless-sync-delay",
                    "0",
                    "--dir",
                    &dir.to_string_lossy(),
                ]
                .map(str::to_owned)
                .to_vec();
                Proc::spawn(&dir, port, "redis-server", args)
            })
            .collect();
        for n in &mut nodes {
            n.wait_up().await;
        }
        let mut create: Vec<String> = vec!["--cluster".into(), "create".into()];
        create.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        create.extend([
            "--cluster-replicas".into(),
            replicas_per_primary.to_string(),
            "--cluster-yes".into(),
        ]);
        let out = tokio::process::Command::new("redis-cli")
            .args(&create)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("redis-cli runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("All 16384 slots covered"),
            "redis-cli --cluster create failed ({}):\n{text}",
            out.status
        );
        let mut cluster = Self {
            dir,
            nodes,
            layout: Vec::new(),
            primaries,
            replicas_per_primary,
        };
        cluster.wait_ready().await;
        cluster
    }

    /// Waits until every live node sees the cluster ok, with `self.primaries` serving primaries
    /// and all their live replicas linked; stores that layout.
    async fn wait_ready(&mut self) {
        let live: Vec<u16> = self.live_ports();
        let (want_primaries, want_replicas) =
            (self.primaries, live.len().saturating_sub(self.primaries));
        self.layout = wait_until("Redis Cluster ready", &self.dir, || {
            let live = live.clone();
            async move {
                let mut seen = Vec::new();
                for &port in &live {
                    let info = info_fields(&ask::<String>(port, &["CLUSTER", "INFO"]).await?);
                    for (k, v) in [
                        ("cluster_state", "ok"),
                        ("cluster_slots_assigned", "16384"),
                        ("cluster_slots_ok", "16384"),
                    ] {
                        if info.get(k).map(String::as_str) != Some(v) {
                            return Err(format!("node {port}: {k} is {:?}", info.get(k)));
                        }
                    }
                    let nodes = parse_nodes(&ask::<String>(port, &["CLUSTER", "NODES"]).await?);
                    let ok = |n: &&NodeLine| live.contains(&n.port) && !n.failing();
                    let primaries = nodes
                        .iter()
                        .filter(ok)
                        .filter(|n| n.is_master() && !n.slots.is_empty())
                        .count();
                    let replicas = nodes.iter().filter(ok).filter(|n| !n.is_master()).count();
                    if (primaries, replicas) != (want_primaries, want_replicas) {
                        return Err(format!(
                            "node {port} sees {primaries} primaries and {replicas} replicas"
                        ));
                    }
                    seen = nodes;
                }
                for n in seen.iter().filter(|n| !n.is_master()) {
                    let info = info_fields(&ask::<String>(n.port, &["INFO", "replication"]).await?);
                    if info.get("master_link_status").map(String::as_str) != Some("up") {
                        return Err(format!("replica {} has its master link down", n.port));
                    }
                }
                Ok(seen)
            }
        })
        .await;
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.alive())
            .map(|n| n.port)
            .collect()
    }

    /// `redis://127.0.0.1:PORT` of one live primary.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.primaries()[0])
    }

    /// `redis://127.0.0.1:PORT` of every live node, primaries first.
    pub fn urls(&self) -> Vec<String> {
        let mut ports = self.primaries();
        ports.extend(self.replicas());
        ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// The ports of the live primaries (as last seen ready), in slot order.
    pub fn primaries(&self) -> Vec<u16> {
        let live = self.live_ports();
        let mut p: Vec<&NodeLine> = self
            .layout
            .iter()
            .filter(|n| n.is_master() && !n.slots.is_empty() && live.contains(&n.port))
            .collect();
        p.sort_by_key(|n| n.slots[0]);
        p.iter().map(|n| n.port).collect()
    }

    /// The ports of the live replicas (as last seen ready).
    pub fn replicas(&self) -> Vec<u16> {
        let live = self.live_ports();
        self.layout
            .iter()
            .filter(|n| !n.is_master() && live.contains(&n.port))
            .map(|n| n.port)
            .collect()
    }

    /// The ports of the (live) replicas of the primary on `port`.
    pub fn replicas_of(&self, port: u16) -> Vec<u16> {
        let Some(p) = self.layout.iter().find(|n| n.port == port) else {
            return Vec::new();
        };
        let live = self.live_ports();
        self.layout
            .iter()
            .filter(|n| n.master.as_deref() == Some(&p.id) && live.contains(&n.port))
            .map(|n| n.port)
            .collect()
    }

    /// Waits until every live replica acknowledged all of its primary's writes so far (a
    /// test that must not lose a write to asynchronous replication calls it before a kill).
    pub async fn wait_replicated(&self) {
        let counts: Vec<(u16, usize)> = self
            .primaries()
            .into_iter()
            .map(|p| (p, self.replicas_of(p).len()))
            .collect();
        wait_until("Redis Cluster replicated", &self.dir, || {
            let counts = counts.clone();
            async move {
                for (p, n) in counts {
                    replicated(p, n).await?;
                }
                Ok(())
            }
        })
        .await
    }

    /// The slot of `key` (CLUSTER KEYSLOT, so hash tags count as Redis counts them).
    pub async fn slot_of(&self, key: &str) -> u16 {
        let slot: i64 = ask(self.primaries()[0], &["CLUSTER", "KEYSLOT", key])
            .await
            .unwrap_or_else(|e| panic!("CLUSTER KEYSLOT {key}: {e}"));
        slot as u16
    }

    /// The port of the primary that serves `key`'s slot.
    pub async fn primary_of(&self, key: &str) -> u16 {
        let slot = self.slot_of(key).await;
        self.layout
            .iter()
            .find(|n| n.is_master() && n.serves(slot))
            .unwrap_or_else(|| panic!("no primary serves slot {slot}"))
            .port
    }

    /// SIGKILLs the primary that serves `key`; returns its port.
    pub async fn kill_primary_of(&mut self, key: &str) -> u16 {
        let port = self.primary_of(key).await;
        self.kill(port);
        port
    }

    /// SIGKILLs the node on `port` (and reaps it).
    pub fn kill(&mut self, port: u16) {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node of this cluster on port {port}"))
            .kill();
    }

    /// Waits until a replica of the killed primary on `killed` serves its slots as a primary
    /// (and answers ROLE as one) and every live node says `cluster_state:ok` with all slots
    /// served; returns the new primary's port.
    pub async fn wait_failover(&mut self, killed: u16) -> u16 {
        let old = self
            .layout
            .iter()
            .find(|n| n.port == killed)
            .unwrap_or_else(|| panic!("no node of this cluster on port {killed}"))
            .clone();
        assert!(
            old.is_master() && !old.slots.is_empty(),
            "node {killed} was not a primary"
        );
        let candidates = self.replicas_of(killed);
        assert!(
            !candidates.is_empty(),
            "primary {killed} has no live replica to fail over to"
        );
        let slot = old.slots[0].0;
        let live = self.live_ports();
        let promoted = wait_until(&format!("failover of primary {killed}"), &self.dir, || {
            let (live, candidates) = (live.clone(), candidates.clone());
            async move {
                let mut owner = None;
                for &port in &live {
                    let nodes = parse_nodes(&ask::<String>(port, &["CLUSTER", "NODES"]).await?);
                    let o = nodes
                        .iter()
                        .find(|n| n.is_master() && !n.failing() && n.serves(slot))
                        .map(|n| n.port);
                    match o {
                        Some(o) if candidates.contains(&o) => owner = Some(o),
                        other => return Err(format!("node {port} sees slot {slot} on {other:?}")),
                    }
                }
                let owner = owner.unwrap();
                let role: Vec<redis::Value> = ask(owner, &["ROLE"]).await?;
                match role.first() {
                    Some(redis::Value::BulkString(r)) if r == b"master" => {}
                    other => return Err(format!("ROLE of {owner} is {other:?}")),
                }
                Ok(owner)
            }
        })
        .await;
        // The promoted replica takes the killed primary's place in the count of primaries.
        self.wait_ready().await;
        promoted
    }

    /// The temp dir with the nodes' logs and config files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
        // (A start that panicked keeps its dir, with the logs its message names.)
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ============================================================================================
// Redis Sentinel.
// ============================================================================================

/// A primary, a replica (`--replicaof`) and three sentinels (`redis-server <conf>
/// --sentinel`, which is what Debian's `redis-sentinel` runs) monitoring it as
/// [`MASTER_NAME`] with quorum 2, `down-after-milliseconds` 1000, `failover-timeout` 5000.
pub struct RedisSentinel {
    dir: PathBuf,
    /// The data nodes: [0] started as the primary, [1] as its replica.
    data: Vec<Proc>,
    sentinels: Vec<Proc>,
    primary: u16,
}

impl RedisSentinel {
    /// Starts the group and waits until every sentinel names the primary, knows the replica
    /// and the two other sentinels, and the replica is in sync.
    pub async fn start() -> Self {
        let dir = temp_dir("redis-sentinel");
        std::fs::create_dir_all(&dir).unwrap();
        let ports = free_ports(5);
        let (primary, replica) = (ports[0], ports[1]);
        let data_args = |port: u16| {
            [
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                // A replica's first full sync at once, not after the default 5 s wait for
                // other replicas.
                "--repl-diskless-sync-delay",
                "0",
                "--dir",
                &dir.to_string_lossy(),
            ]
            .map(str::to_owned)
            .to_vec()
        };
        let mut data = vec![Proc::spawn(
            &dir,
            primary,
            "redis-server",
            data_args(primary),
        )];
        let mut replica_args = data_args(replica);
        replica_args.extend([
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary.to_string(),
        ]);
        data.push(Proc::spawn(&dir, replica, "redis-server", replica_args));
        for d in &mut data {
            d.wait_up().await;
        }
        // The replica in sync before the sentinels start: a sentinel learns of replicas from
        // the primary's INFO, which it reads at once and then every 10 s.
        wait_until("replica in sync", &dir, || async move {
            let info = info_fields(&ask::<String>(replica, &["INFO", "replication"]).await?);
            if info.get("master_link_status").map(String::as_str) != Some("up") {
                return Err(format!("replica {replica}: master link not up"));
            }
            replicated(primary, 1).await
        })
        .await;
        let sentinels: Vec<Proc> = ports[2..]
            .iter()
            .map(|&port| {
                // A sentinel rewrites its config file (what it learns), so each has its own.
                let conf = dir.join(format!("sentinel-{port}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {dir}\n\
                         sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} 2\n\
                         sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                         sentinel failover-timeout {MASTER_NAME} 5000\n\
                         sentinel parallel-syncs {MASTER_NAME} 1\n",
                        dir = dir.display()
                    ),
                )
                .unwrap();
                let args = vec![conf.to_string_lossy().into_owned(), "--sentinel".into()];
                Proc::spawn(&dir, port, "redis-server", args)
            })
            .collect();
        let mut group = Self {
            dir,
            data,
            sentinels,
            primary,
        };
        for p in &mut group.sentinels {
            p.wait_up().await;
        }
        let sentinel_ports = group.sentinel_ports();
        wait_until("Sentinel group ready", &group.dir, || {
            let sentinel_ports = sentinel_ports.clone();
            async move {
                let info = info_fields(&ask::<String>(replica, &["INFO", "replication"]).await?);
                if info.get("master_link_status").map(String::as_str) != Some("up") {
                    return Err(format!("replica {replica}: master link not up"));
                }
                let info = info_fields(&ask::<String>(primary, &["INFO", "replication"]).await?);
                if !info
                    .get("slave0")
                    .is_some_and(|s| s.contains("state=online"))
                {
                    return Err(format!("primary {primary}: replica not online: {info:?}"));
                }
                for &s in &sentinel_ports {
                    let addr = master_addr(s).await?;
                    if addr != Some(primary) {
                        return Err(format!("sentinel {s} names {addr:?} as the master"));
                    }
                    let m = pairs(ask(s, &["SENTINEL", "MASTER", MASTER_NAME]).await?);
                    for (k, v) in [("num-slaves", "1"), ("num-other-sentinels", "2")] {
                        if m.get(k).map(String::as_str) != Some(v) {
                            return Err(format!("sentinel {s}: {k} is {:?}", m.get(k)));
                        }
                    }
                    let replicas: Vec<Vec<String>> =
                        ask(s, &["SENTINEL", "REPLICAS", MASTER_NAME]).await?;
                    let r = replicas
                        .into_iter()
                        .map(pairs)
                        .find(|r| r.get("port").map(String::as_str) == Some(&replica.to_string()));
                    match r {
                        Some(r)
                            if r.get("flags").map(String::as_str) == Some("slave")
                                && r.get("master-link-status").map(String::as_str)
                                    == Some("ok") => {}
                        other => return Err(format!("sentinel {s} sees the replica as {other:?}")),
                    }
                }
                Ok(())
            }
        })
        .await;
        group
    }

    /// The ports of the sentinels.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.port).collect()
    }

    /// `redis://127.0.0.1:PORT` of each sentinel.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinel_ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// The whole group as one URL, the form `redis.url` accepts for Sentinel (issue 19):
    ///
    /// `redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER_NAME`
    ///
    /// every sentinel's address, comma-separated, then the master name as the path; here
    /// `redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/mymaster`.
    pub fn sentinel_url(&self) -> String {
        let addrs: Vec<String> = self
            .sentinel_ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", addrs.join(","))
    }

    pub fn master_name(&self) -> &'static str {
        MASTER_NAME
    }

    /// The port of the current primary (the one started as primary until [`Self::wait_failover`]).
    pub fn primary_port(&self) -> u16 {
        self.primary
    }

    /// `redis://127.0.0.1:PORT` of the current primary.
    pub fn primary_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.primary)
    }

    /// The port of the other data node (the replica until a failover).
    fn other_port(&self) -> u16 {
        self.data
            .iter()
            .map(|d| d.port)
            .find(|&p| p != self.primary)
            .unwrap()
    }

    /// Waits until the replica acknowledged all of the primary's writes so far.
    pub async fn wait_replicated(&self) {
        let primary = self.primary;
        let replicas = self.data.iter().filter(|d| d.alive()).count() - 1;
        wait_until("Sentinel group replicated", &self.dir, || {
            replicated(primary, replicas)
        })
        .await
    }

    /// SIGKILLs the current primary; returns its port.
    pub fn kill_primary(&mut self) -> u16 {
        let port = self.primary;
        self.data
            .iter_mut()
            .find(|d| d.port == port)
            .unwrap()
            .kill();
        port
    }

    /// Waits until every sentinel's `SENTINEL get-master-addr-by-name mymaster` names the
    /// other data node and that node answers ROLE as master; returns its port (now
    /// [`Self::primary_port`]).
    pub async fn wait_failover(&mut self) -> u16 {
        let new = self.other_port();
        let ports = self.sentinel_ports();
        wait_until("Sentinel failover", &self.dir, || {
            let ports = ports.clone();
            async move {
                for &s in &ports {
                    let addr = master_addr(s).await?;
                    if addr != Some(new) {
                        return Err(format!("sentinel {s} names {addr:?} as the master"));
                    }
                }
                let role: Vec<redis::Value> = ask(new, &["ROLE"]).await?;
                match role.first() {
                    Some(redis::Value::BulkString(r)) if r == b"master" => Ok(()),
                    other => Err(format!("ROLE of {new} is {other:?}")),
                }
            }
        })
        .await;
        self.primary = new;
        new
    }

    /// The temp dir with the logs and the sentinels' config files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The master's port as sentinel `s` names it.
async fn master_addr(s: u16) -> Result<Option<u16>, String> {
    let addr: Option<Vec<String>> =
        ask(s, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME]).await?;
    Ok(addr.and_then(|a| a.get(1)?.parse().ok()))
}

/// A flat `[k1, v1, k2, v2, ...]` reply as a map.
fn pairs(flat: Vec<String>) -> HashMap<String, String> {
    flat.chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].clone(), c[1].clone()))
        .collect()
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        for p in self.sentinels.iter_mut().chain(self.data.iter_mut()) {
            p.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
