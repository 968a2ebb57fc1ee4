//! Server and load-generator resource readings from /proc.

/// Resident set size of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// User and system CPU seconds of `pid` (or `self`).
pub fn cpu_secs(pid: Option<u32>) -> Option<(f64, f64)> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name; utime and stime are 14th and 15th overall.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = 100.0; // USER_HZ on Linux
    let user: f64 = f.get(11)?.parse().ok()?;
    let sys: f64 = f.get(12)?.parse().ok()?;
    Some((user / ticks, sys / ticks))
}

/// CPU used between two readings.
#[derive(Clone, Copy)]
pub struct CpuMark {
    server: Option<(f64, f64)>,
    me: Option<(f64, f64)>,
}

impl CpuMark {
    /// Reads both processes now.
    pub fn now(server_pid: Option<u32>) -> Self {
        Self {
            server: server_pid.and_then(|p| cpu_secs(Some(p))),
            me: cpu_secs(None),
        }
    }

    /// (server user, server sys, loadgen total) seconds since `self`.
    pub fn since(&self, server_pid: Option<u32>) -> (Option<(f64, f64)>, Option<f64>) {
        let later = Self::now(server_pid);
        let server = match (self.server, later.server) {
            (Some(a), Some(b)) => Some((b.0 - a.0, b.1 - a.1)),
            _ => None,
        };
        let me = match (self.me, later.me) {
            (Some(a), Some(b)) => Some((b.0 + b.1) - (a.0 + a.1)),
            _ => None,
        };
        (server, me)
    }
}
