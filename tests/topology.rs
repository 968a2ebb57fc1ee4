//! The Redis topologies of tests/support/topology.rs work: a Redis Cluster of 3 primaries with
//! a replica each serves keys of every slot through `redis-cli -c` and fails over when a
//! primary is killed; a Sentinel group fails over when its primary is killed.
//!
//! Needs `redis-server` (≥ 7) and `redis-cli`; skipped when `redis-server` is missing and
//! `SWITCHBOARD_TEST_REDIS_URL` is unset (scripts/test.sh sets it, so in CI these run).

mod support;

use std::time::Instant;

use support::topology::*;

#[tokio::test]
async fn cluster_serves_every_slot_and_fails_over() {
    if !redis_topology_available("cluster_serves_every_slot_and_fails_over") {
        return;
    }
    let t0 = Instant::now();
    let mut cluster = RedisCluster::start(3, 1).await;
    println!(
        "cluster of 3 primaries + 3 replicas ready in {:?}",
        t0.elapsed()
    );
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3, "{primaries:?}");
    assert_eq!(cluster.urls().len(), 6);
    assert_eq!(cluster.replicas().len(), 3);
    for &p in &primaries {
        assert_eq!(cluster.replicas_of(p).len(), 1, "replicas of {p}");
    }

    // Written through one node, following MOVED to the others.
    let entry = cluster.url();
    let entry_port = entry.rsplit(':').next().unwrap().to_owned();
    let keys: Vec<String> = (0..30).map(|i| format!("key-{i}")).collect();
    for k in &keys {
        let ok = redis_cli(&["-c", "-p", &entry_port, "SET", k, &format!("value of {k}")]).await;
        assert_eq!(ok, "OK", "SET {k}");
    }
    for &p in &primaries {
        let n: i64 = ask(p, &["DBSIZE"]).await.unwrap();
        assert!(n > 0, "primary {p} holds none of the keys");
    }
    cluster.wait_replicated().await;

    let key = "key-0";
    let killed = cluster.kill_primary_of(key).await;
    let t1 = Instant::now();
    let promoted = cluster.wait_failover(killed).await;
    println!(
        "primary {killed} killed; replica {promoted} promoted, cluster_state:ok in {:?}",
        t1.elapsed()
    );
    assert_ne!(promoted, killed);
    let now = cluster.primaries();
    assert_eq!(now.len(), 3, "{now:?}");
    assert!(now.contains(&promoted) && !now.contains(&killed), "{now:?}");
    assert_eq!(cluster.primary_of(key).await, promoted);
    assert!(!cluster
        .urls()
        .iter()
        .any(|u| u.ends_with(&format!(":{killed}"))));

    // Nothing acknowledged before the kill was lost, and the slots take writes again.
    let entry = cluster.url();
    let entry_port = entry.rsplit(':').next().unwrap().to_owned();
    for k in &keys {
        let v = redis_cli(&["-c", "-p", &entry_port, "GET", k]).await;
        assert_eq!(v, format!("value of {k}"), "GET {k} after the failover");
    }
    let ok = redis_cli(&["-c", "-p", &entry_port, "SET", key, "after"]).await;
    assert_eq!(ok, "OK");
    println!("whole test {:?}", t0.elapsed());
}

#[tokio::test]
async fn sentinel_group_fails_over() {
    if !redis_topology_available("sentinel_group_fails_over") {
        return;
    }
    let t0 = Instant::now();
    let mut group = RedisSentinel::start().await;
    println!("sentinel group ready in {:?}", t0.elapsed());
    assert_eq!(group.master_name(), "mymaster");
    let urls = group.sentinel_urls();
    assert_eq!(urls.len(), 3);
    let hosts: Vec<&str> = urls
        .iter()
        .map(|u| u.strip_prefix("redis://").unwrap())
        .collect();
    assert_eq!(
        group.sentinel_url(),
        format!("redis+sentinel://{}/mymaster", hosts.join(","))
    );

    let old = group.primary_port();
    let old_s = old.to_string();
    assert_eq!(redis_cli(&["-p", &old_s, "SET", "k", "v"]).await, "OK");
    group.wait_replicated().await;

    assert_eq!(group.kill_primary(), old);
    let t1 = Instant::now();
    let new = group.wait_failover().await;
    println!("primary {old} killed; {new} promoted in {:?}", t1.elapsed());
    assert_ne!(new, old);
    assert_eq!(group.primary_port(), new);
    assert_eq!(group.primary_url(), format!("redis://127.0.0.1:{new}"));
    let new_s = new.to_string();
    assert_eq!(redis_cli(&["-p", &new_s, "GET", "k"]).await, "v");
    assert_eq!(redis_cli(&["-p", &new_s, "SET", "k", "w"]).await, "OK");
    println!("whole test {:?}", t0.elapsed());
}

/// The ports the topologies are given lie below the kernel's ephemeral range, so that no
/// outgoing connection (a replica's link, a cluster bus link) takes one as its source port
/// between the pick and the bind. CI once lost a sentinel group's Redis to "Address already
/// in use" when the ports came from `bind(127.0.0.1:0)`, which picks inside the range.
#[test]
fn picked_ports_lie_below_the_ephemeral_range_and_are_distinct() {
    let low = support::ephemeral_low();
    // The positive control: the kernel's own pick is inside the range.
    let kernel = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    assert!(kernel.local_addr().unwrap().port() >= low);
    let ports = support::free_ports(64);
    let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
    assert_eq!(distinct.len(), 64, "{ports:?}");
    assert!(
        ports.iter().all(|&p| p < low),
        "{ports:?} (ephemeral from {low})"
    );
    let mut more = support::free_ports(8);
    more.retain(|p| ports.contains(p));
    assert!(more.is_empty(), "picked twice: {more:?}");
}
