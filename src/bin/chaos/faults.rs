//! The fault schedule: one fault at a time, each followed by a wait for recovery and a
//! quiet gap. Process faults go through the control command (`CTL ctl ACTION [NODE]`,
//! which is `scripts/chaos.sh ctl ...`); consumer faults act on the consumers directly.

use std::sync::Arc;
use std::time::Duration;

use tokio::process::Command;
use tokio::time::Instant;

use crate::api::{metric_sum, Api};
use crate::consume::{Role, Rx};
use crate::ledger::{now_ms, Stream};

/// The fault types, in schedule order.
pub const KINDS: [&str; 6] = [
    "node-kill",
    "consumer-cut",
    "redis-restart",
    "slow-consumer",
    "pg-restart",
    "stalled-consumer",
];

/// One injected fault.
pub struct Fault {
    pub kind: &'static str,
    pub target: String,
    /// Injected (ms).
    pub start: u64,
    /// The fault's cause removed: node or service started again, consumer free to
    /// reconnect or reading again (ms).
    pub restore: u64,
    /// Everything flowing again (see [`Faults::recovered`]), or `None` within the limit.
    pub recovered: Option<u64>,
    pub note: String,
}

pub struct Faults {
    pub api: Arc<Api>,
    pub streams: Vec<Arc<Stream>>,
    pub rxs: Vec<Arc<Rx>>,
    pub ctl: String,
    /// How long a node, Redis or PostgreSQL stays down.
    pub down: Duration,
    pub cut_hold: Duration,
    /// How long a slow consumer stops reading (short enough for the buffers to absorb).
    pub pause: Duration,
    /// How long a stalled consumer stops reading (long enough to be closed as too slow).
    pub stall: Duration,
    pub gap: Duration,
    /// Longest wait for recovery.
    pub limit: Duration,
}

impl Faults {
    async fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new(&self.ctl)
            .arg("ctl")
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(Duration::from_secs(60), out).await {
            Ok(Ok(o)) if o.status.success() => String::new(),
            Ok(Ok(o)) => format!(
                "ctl {args:?}: {} {}; ",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Ok(Err(e)) => format!("ctl {args:?}: {e}; "),
            Err(_) => format!("ctl {args:?}: timed out; "),
        }
    }

    /// The node to kill: the ingest leader if it is node 2 or 3 (node 1 has no database),
    /// else the one not killed last time.
    async fn victim(&self, last: usize) -> usize {
        for k in 1..self.api.nodes.len() {
            if let Some(text) = self.api.metrics(k).await {
                if metric_sum(&text, "switchboard_ingest_leader") == 1.0 {
                    return k;
                }
            }
        }
        if last == 1 {
            2
        } else {
            1
        }
    }

    /// Runs faults one after the other while the next one can finish before `until`.
    pub async fn campaign(&self, until: Instant) -> Vec<Fault> {
        let mut done = Vec::new();
        let mut last_victim = 2;
        for i in 0.. {
            let kind = KINDS[i % KINDS.len()];
            let hold = match kind {
                "slow-consumer" => self.pause,
                "stalled-consumer" => self.stall,
                _ => self.down,
            };
            if Instant::now() + hold + Duration::from_secs(15) > until {
                break;
            }
            let start = now_ms();
            let (target, note, affected, node) = match kind {
                "node-kill" => {
                    let k = self.victim(last_victim).await;
                    last_victim = k;
                    let n = (k + 1).to_string();
                    let mut note = self.ctl(&["kill", n.as_str()]).await;
                    tokio::time::sleep(self.down).await;
                    note += &self.ctl(&["start", n.as_str()]).await;
                    let affected = self.with(|r| r.node == k && r.role == Role::NodeKill);
                    (format!("node {n}"), note, affected, Some(k))
                }
                "redis-restart" | "pg-restart" => {
                    let svc = &kind[..kind.find('-').unwrap_or(0)];
                    let (stop, start) = (format!("{svc}-stop"), format!("{svc}-start"));
                    let mut note = self.ctl(&[stop.as_str()]).await;
                    tokio::time::sleep(self.down).await;
                    note += &self.ctl(&[start.as_str()]).await;
                    (svc.to_owned(), note, Vec::new(), None)
                }
                "consumer-cut" => {
                    let affected = self.with(|r| r.role == Role::Cut);
                    affected.iter().for_each(|&c| self.rxs[c].cut());
                    tokio::time::sleep(self.cut_hold).await;
                    ("cut consumers".to_owned(), String::new(), affected, None)
                }
                _ => {
                    let affected = self.with(|r| r.role == Role::Slow);
                    affected.iter().for_each(|&c| self.rxs[c].pause(true));
                    tokio::time::sleep(hold).await;
                    affected.iter().for_each(|&c| self.rxs[c].pause(false));
                    let target = format!("slow consumers, {} s", hold.as_secs());
                    (target, String::new(), affected, None)
                }
            };
            let restore = now_ms();
            let recovered = self.recovered(restore, &affected, node).await;
            eprintln!(
                "chaos: {kind} ({target}) at {:.1}s, recovered {:?} s after restore {note}",
                start as f64 / 1000.0,
                recovered.map(|r| (r - restore) as f64 / 1000.0)
            );
            done.push(Fault {
                kind,
                target,
                start,
                restore,
                recovered,
                note,
            });
            tokio::time::sleep(self.gap).await;
        }
        done
    }

    fn with(&self, f: impl Fn(&Rx) -> bool) -> Vec<usize> {
        (0..self.rxs.len()).filter(|&i| f(&self.rxs[i])).collect()
    }

    /// When everything flows again after `restore`: every node answers `/up`; `node` (if
    /// any) took an API call; every stream's events started after `restore` reach every
    /// consumer connected throughout; every `affected` consumer is connected and receives
    /// every one of its streams again. Checked every 50 ms, up to `limit`.
    async fn recovered(
        &self,
        restore: u64,
        affected: &[usize],
        node: Option<usize>,
    ) -> Option<u64> {
        let marks: Vec<u64> = self.streams.iter().map(|s| s.started()).collect();
        let deadline = Instant::now() + self.limit;
        let receives = |rx: &Rx| {
            rx.streams
                .iter()
                .all(|&p| rx.max_seen(p).is_some_and(|m| m >= marks[p]))
        };
        loop {
            let mut ok = node.is_none_or(|k| {
                self.api.last_ok[k].load(std::sync::atomic::Ordering::Acquire) >= restore
            });
            ok = ok
                && self
                    .rxs
                    .iter()
                    .filter(|r| r.role == Role::Throughout)
                    .all(|r| receives(r));
            ok = ok
                && affected.iter().all(|&c| {
                    let rx = &self.rxs[c];
                    rx.connected.load(std::sync::atomic::Ordering::Acquire) && receives(rx)
                });
            if ok {
                let mut all_up = true;
                for k in 0..self.api.nodes.len() {
                    all_up &= self.api.up(k).await;
                }
                if all_up {
                    return Some(now_ms());
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
