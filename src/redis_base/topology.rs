//! Which Redis a cluster runs on: one server, a Redis Cluster, or a primary found through
//! Sentinels; and the command connection that hides the difference from every caller.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::config::RedisConfig;

/// Where the cluster's Redis is, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Topology {
    /// One server (or one we could not ask at start).
    Single(String),
    /// A Redis Cluster, from any of these nodes.
    Cluster(Vec<String>),
    /// A primary named `master` at these Sentinels (`redis://host:port`).
    Sentinel {
        /// The Sentinels.
        sentinels: Vec<String>,
        /// The primary's name there.
        master: String,
    },
    /// A URL that may name a Redis Cluster node: asked at start.
    Detect(String),
}

impl Topology {
    /// From the `[redis]` settings; `None` without Redis.
    pub fn from_config(c: &RedisConfig) -> Result<Option<Self>, String> {
        if let Some(url) = c
            .url
            .as_deref()
            .filter(|u| u.starts_with("redis+sentinel://"))
        {
            return sentinel_url(url).map(Some);
        }
        if !c.sentinels.is_empty() {
            let master = c
                .master_name
                .clone()
                .ok_or("redis.sentinels needs redis.master_name")?;
            let sentinels = c.sentinels.iter().map(|s| with_scheme(s)).collect();
            return Ok(Some(Self::Sentinel { sentinels, master }));
        }
        let mut urls: Vec<String> = c.url.iter().cloned().collect();
        urls.extend(c.cluster_urls.iter().cloned());
        Ok(match urls.len() {
            0 => None,
            1 if !c.cluster => Some(Self::Detect(urls.remove(0))),
            _ => Some(Self::Cluster(urls)),
        })
    }
}

fn with_scheme(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("redis://{addr}")
    }
}

/// `redis+sentinel://[user:pass@]h1:p1,h2:p2/master`: the password, if any, is the
/// Sentinels'.
fn sentinel_url(url: &str) -> Result<Topology, String> {
    let rest = &url["redis+sentinel://".len()..];
    let (hosts, master) = rest
        .split_once('/')
        .filter(|(_, m)| !m.is_empty())
        .ok_or_else(|| format!("{url}: a sentinel URL ends with /master_name"))?;
    let (auth, hosts) = match hosts.rsplit_once('@') {
        Some((a, h)) => (format!("{a}@"), h),
        None => (String::new(), hosts),
    };
    let sentinels: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| format!("redis://{auth}{h}"))
        .collect();
    if sentinels.is_empty() {
        return Err(format!("{url}: no sentinel address"));
    }
    Ok(Topology::Sentinel {
        sentinels,
        master: master.trim_end_matches('/').to_owned(),
    })
}

/// Asks the node at `url` whether it is part of a Redis Cluster. `None` when it cannot be
/// reached within `max`.
pub async fn is_cluster_node(url: &str, max: Duration) -> Option<bool> {
    let client = redis::Client::open(url).ok()?;
    let ask = async {
        let mut c = client.get_multiplexed_async_connection().await.ok()?;
        let info: String = redis::cmd("INFO")
            .arg("cluster")
            .query_async(&mut c)
            .await
            .ok()?;
        Some(info.lines().any(|l| l.trim() == "cluster_enabled:1"))
    };
    tokio::time::timeout(max, ask).await.ok().flatten()
}

/// The nodes `CLUSTER NODES` lists as not failed, as URLs (`base` + address), and the one
/// among them that is the primary of `slot`.
pub(super) fn parse_nodes(nodes: &str, slot: u16, base: &str) -> (Vec<String>, Option<String>) {
    let serves = |ranges: &[&str]| {
        ranges.iter().any(|r| {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
        })
    };
    let mut live = Vec::new();
    let mut owner = None;
    for l in nodes.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (Some(addr), Some(flags)) = (f.get(1), f.get(2)) else {
            continue;
        };
        let Some(addr) = addr.split('@').next() else {
            continue;
        };
        if flags.contains("fail") || addr.starts_with(':') {
            continue;
        }
        let url = format!("{base}{addr}");
        if flags.contains("master") && serves(f.get(8..).unwrap_or_default()) {
            owner = Some(url.clone());
        }
        live.push(url);
    }
    (live, owner)
}

/// The command connection. On a Redis Cluster every command, script and pipeline goes to
/// the primary of one shard's hash slot ([`Conn::at`]; a script's keys all carry that
/// shard's tag), and the client follows MOVED/ASK and failovers.
#[derive(Clone)]
pub enum Conn {
    /// One server, or the Sentinels' current primary; reconnects by itself.
    Single(ConnectionManager),
    /// A Redis Cluster, routed to the primary of `slot`.
    Cluster(ClusterConnection, u16),
}

impl Conn {
    /// This connection, its commands going to the primary of `slot` (a Redis Cluster's; one
    /// server ignores it).
    pub(super) fn at(self, slot: u16) -> Self {
        match self {
            Self::Cluster(c, _) => Self::Cluster(c, slot),
            single => single,
        }
    }

    fn route(slot: u16) -> SingleNodeRoutingInfo {
        SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master))
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c, slot) => {
                let routing = RoutingInfo::SingleNode(Self::route(*slot));
                Box::pin(async move { c.route_command(cmd.clone(), routing).await })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c, slot) => {
                let route = Self::route(*slot);
                Box::pin(async move { c.route_pipeline(cmd.clone(), offset, count, route).await })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c, _) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(f: impl FnOnce(&mut RedisConfig)) -> RedisConfig {
        let mut c = RedisConfig::default();
        f(&mut c);
        c
    }

    #[test]
    fn topologies_come_from_the_settings() {
        assert_eq!(Topology::from_config(&config(|_| {})), Ok(None));
        let one = config(|c| c.url = Some("redis://a:1".into()));
        assert_eq!(
            Topology::from_config(&one),
            Ok(Some(Topology::Detect("redis://a:1".into())))
        );
        let forced = config(|c| {
            c.url = Some("redis://a:1".into());
            c.cluster = true;
        });
        assert_eq!(
            Topology::from_config(&forced),
            Ok(Some(Topology::Cluster(vec!["redis://a:1".into()])))
        );
        let several = config(|c| c.cluster_urls = vec!["redis://a:1".into(), "redis://b:2".into()]);
        assert!(matches!(
            Topology::from_config(&several),
            Ok(Some(Topology::Cluster(u))) if u.len() == 2
        ));
        let sentinels = config(|c| {
            c.sentinels = vec!["h:26379".into(), "redis://k:26380".into()];
            c.master_name = Some("mymaster".into());
        });
        assert_eq!(
            Topology::from_config(&sentinels),
            Ok(Some(Topology::Sentinel {
                sentinels: vec!["redis://h:26379".into(), "redis://k:26380".into()],
                master: "mymaster".into()
            }))
        );
        let nameless = config(|c| c.sentinels = vec!["h:1".into()]);
        assert!(Topology::from_config(&nameless).is_err());
    }

    #[test]
    fn cluster_nodes_name_the_live_nodes_and_a_slots_primary() {
        let nodes = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922 [10923->-c3]
c3 127.0.0.1:7002@17002 master,fail - 0 0 3 connected 10923-16383
d4 127.0.0.1:7003@17003 slave a1 0 0 1 connected
";
        let (live, owner) = parse_nodes(nodes, 6000, "redis://:pw@");
        assert_eq!(
            live,
            [
                "redis://:pw@127.0.0.1:7000",
                "redis://:pw@127.0.0.1:7001",
                "redis://:pw@127.0.0.1:7003"
            ]
        );
        assert_eq!(owner.as_deref(), Some("redis://:pw@127.0.0.1:7001"));
        assert_eq!(
            parse_nodes(nodes, 0, "redis://").1.as_deref(),
            Some("redis://127.0.0.1:7000")
        );
        assert_eq!(
            parse_nodes(nodes, 12000, "redis://").1,
            None,
            "its primary failed"
        );
    }

    #[test]
    fn a_sentinel_url_names_its_sentinels_and_master() {
        let c = config(|c| c.url = Some("redis+sentinel://:pw@h1:1,h2:2/mymaster".into()));
        assert_eq!(
            Topology::from_config(&c),
            Ok(Some(Topology::Sentinel {
                sentinels: vec!["redis://:pw@h1:1".into(), "redis://:pw@h2:2".into()],
                master: "mymaster".into()
            }))
        );
        for bad in [
            "redis+sentinel://h1:1",
            "redis+sentinel:///m",
            "redis+sentinel://h/",
        ] {
            let c = config(|c| c.url = Some(bad.into()));
            assert!(Topology::from_config(&c).is_err(), "{bad}");
        }
    }
}
