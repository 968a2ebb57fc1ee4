//! Interest-based routing: a node receives from the cluster's Redis only the events of the
//! channels and users it has members of. Three node processes (each with its own metrics,
//! which in-process nodes would share) on one Redis, or on a Redis Cluster when
//! `SWITCHBOARD_TEST_REDIS_URL` names one of its nodes (scripts/test.sh runs both).

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(10);

fn unique_prefix(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "sbroute-{test}-{}-{}-{}",
        std::process::id(),
        now(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A `switchboard serve` process with its own metrics listener; killed when dropped.
struct Node {
    child: Child,
    dir: std::path::PathBuf,
    port: u16,
    metrics: u16,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Node {
    async fn start(url: &str, prefix: &str) -> Self {
        let (port, metrics) = (free_port(), free_port());
        let dir = temp_dir("cluster-routing");
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        for (k, _) in std::env::vars() {
            if k.starts_with("SWITCHBOARD_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .arg("serve")
            .env("SWITCHBOARD_HOST", "127.0.0.1")
            .env("SWITCHBOARD_PORT", port.to_string())
            .env("SWITCHBOARD_METRICS_PORT", metrics.to_string())
            .env("SWITCHBOARD_REDIS_URL", url)
            .env("SWITCHBOARD_REDIS_PREFIX", prefix)
            .env("SWITCHBOARD_APP_ID", APP_ID)
            .env("SWITCHBOARD_APP_KEY", KEY)
            .env("SWITCHBOARD_APP_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning the switchboard binary");
        let mut node = Self {
            child,
            dir,
            port,
            metrics,
        };
        let deadline = Instant::now() + WAIT;
        let http = reqwest::Client::new();
        loop {
            let up = http
                .get(format!("http://127.0.0.1:{port}/up"))
                .send()
                .await
                .ok();
            if let Some(r) = up {
                let v: Value = r.json().await.unwrap_or_default();
                if v["redis"] == "up" {
                    return node;
                }
            }
            assert!(
                node.child.try_wait().unwrap().is_none(),
                "node exited:\n{}",
                node.log()
            );
            assert!(Instant::now() < deadline, "node not up:\n{}", node.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    fn api(&self) -> Api {
        Api {
            base: format!("http://127.0.0.1:{}", self.port),
            app_id: APP_ID.into(),
            key: KEY.into(),
            secret: SECRET.into(),
            http: reqwest::Client::new(),
        }
    }

    async fn pusher(&self) -> PusherClient {
        let url = format!(
            "ws://127.0.0.1:{}/app/{KEY}?protocol=7&client=test&version=1.0",
            self.port
        );
        PusherClient::connect(&url).await
    }

    /// `switchboard_cluster_messages_received_total` on this node.
    async fn received(&self) -> u64 {
        received_at(&format!("127.0.0.1:{}", self.metrics)).await
    }
}

async fn trigger(api: &Api, channel: &str, n: u64) {
    let body = json!({"name": "n", "channel": channel, "data": json!({"n": n}).to_string()});
    let (status, v) = api.trigger(body).await;
    assert_eq!(status, 200, "{v}");
}

/// The next `n` event's number on `channel`.
async fn next_n(c: &mut PusherClient, channel: &str) -> u64 {
    let v = c.recv().await;
    assert_eq!(v["event"], "n", "{v}");
    assert_eq!(v["channel"], channel, "{v}");
    data_of(&v)["n"].as_u64().unwrap()
}

/// Waits until `channel`'s pub/sub channel has `want` subscribers (nodes) in Redis.
async fn wait_subscribers(url: &str, prefix: &str, channel: &str, want: i64) {
    let (mut conn, name) = redis_channel_topic(url, prefix, APP_ID, channel).await;
    let deadline = Instant::now() + WAIT;
    loop {
        // Sharded on a Redis Cluster, classic elsewhere: one of the two counts it.
        let mut n = 0;
        for cmd in ["NUMSUB", "SHARDNUMSUB"] {
            let r: Result<(String, i64), _> = redis::cmd("PUBSUB")
                .arg(cmd)
                .arg(&name)
                .query_async(&mut conn)
                .await;
            n += r.map_or(0, |(_, n)| n);
        }
        if n == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{channel}: {n} subscribers, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_hear_only_the_channels_they_have_subscribers_of() {
    let (url, prefix) = (redis_url(), unique_prefix("channels"));
    let nodes = [
        Node::start(&url, &prefix).await,
        Node::start(&url, &prefix).await,
        Node::start(&url, &prefix).await,
    ];
    let mut c1 = nodes[0].pusher().await;
    c1.subscribe("room-a").await;
    let before: Vec<u64> = futures_util::future::join_all(nodes.iter().map(Node::received)).await;
    // Published through node 2, which has no subscriber of it.
    let api = nodes[1].api();
    for n in 0..50 {
        trigger(&api, "room-a", n).await;
    }
    for n in 0..50 {
        assert_eq!(
            next_n(&mut c1, "room-a").await,
            n,
            "node 1 delivers in order"
        );
    }
    let after: Vec<u64> = futures_util::future::join_all(nodes.iter().map(Node::received)).await;
    assert!(
        after[0] >= before[0] + 50,
        "node 1 heard {before:?} → {after:?}"
    );
    assert_eq!(
        after[1], before[1],
        "node 2 heard room-a: {before:?} → {after:?}"
    );
    assert_eq!(
        after[2], before[2],
        "node 3 heard room-a: {before:?} → {after:?}"
    );

    // A subscriber joins on node 3 while events keep coming: it gets every event published
    // after its subscription_succeeded, and none is lost or reordered on node 1.
    let started: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (api, started, stop) = (api.clone(), started.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 50;
            while !stop.load(Ordering::Acquire) || n < 250 {
                started.lock().unwrap().push(Instant::now());
                trigger(&api, "room-a", n).await;
                n += 1;
            }
            n
        })
    };
    while started.lock().unwrap().len() < 30 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut c3 = nodes[2].pusher().await;
    c3.subscribe("room-a").await;
    let answered = Instant::now();
    stop.store(true, Ordering::Release);
    let last = publisher.await.unwrap() - 1;
    for n in 50..=last {
        assert_eq!(next_n(&mut c1, "room-a").await, n);
    }
    let first_after = 50
        + started
            .lock()
            .unwrap()
            .iter()
            .position(|t| *t > answered)
            .expect("events published after the answer") as u64;
    let first = next_n(&mut c3, "room-a").await;
    assert!(
        first <= first_after,
        "node 3's subscriber starts at {first}, but {first_after} was published after its answer"
    );
    for n in first + 1..=last {
        assert_eq!(
            next_n(&mut c3, "room-a").await,
            n,
            "node 3: every event once, in order"
        );
    }
    assert!(
        nodes[2].received().await > before[2],
        "node 3 hears room-a now"
    );

    // The last subscriber leaves node 3: it stops hearing the channel.
    c3.close().await;
    wait_subscribers(&url, &prefix, "room-a", 1).await;
    let quiet = nodes[2].received().await;
    for n in 0..20 {
        trigger(&api, "room-a", 1000 + n).await;
    }
    for n in 0..20 {
        assert_eq!(next_n(&mut c1, "room-a").await, 1000 + n);
    }
    assert_eq!(
        nodes[2].received().await,
        quiet,
        "node 3 still hears room-a"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn user_events_reach_only_the_nodes_holding_the_user() {
    let (url, prefix) = (redis_url(), unique_prefix("users"));
    let nodes = [
        Node::start(&url, &prefix).await,
        Node::start(&url, &prefix).await,
    ];
    let mut alice = nodes[0].pusher().await;
    alice.signin(r#"{"id":"alice"}"#).await;
    let before = [nodes[0].received().await, nodes[1].received().await];
    let api = nodes[1].api();
    for n in 0..10 {
        let body = json!({"name": "hello", "channel": "#server-to-user-alice",
            "data": json!({"n": n}).to_string()});
        let (status, v) = api.trigger(body).await;
        assert_eq!(status, 200, "{v}");
    }
    for n in 0..10 {
        let v = alice.expect("hello").await;
        assert_eq!(data_of(&v)["n"], n);
    }
    let after = [nodes[0].received().await, nodes[1].received().await];
    assert!(after[0] >= before[0] + 10, "{before:?} → {after:?}");
    assert_eq!(after[1], before[1], "node 2 heard alice's events");
    // Terminate goes the same way.
    let (status, v) = api.post("/users/alice/terminate_connections", "").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(alice.expect_close().await, 4009);
}

/// `switchboard_cluster_messages_received_total` of an in-process node.
async fn received_in_process(server: &TestServer) -> u64 {
    received_at(&server.metrics_addr.unwrap().to_string()).await
}

/// `switchboard_cluster_messages_received_total` on the metrics listener at `addr`.
async fn received_at(addr: &str) -> u64 {
    let url = format!("http://{addr}/metrics");
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("switchboard_cluster_messages_received_total "))
        .unwrap_or_else(|| panic!("no received counter in:\n{text}"))
        .trim()
        .parse::<f64>()
        .unwrap() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_in_one_process_each_report_their_own_inbound_count() {
    let (url, prefix) = (redis_url(), unique_prefix("in-process"));
    let start = || {
        let (url, prefix) = (url.clone(), prefix.clone());
        TestServer::start_full(
            move |c| {
                c.redis.url = Some(url);
                c.redis.prefix = prefix;
            },
            true,
        )
    };
    let (a, b) = (start().await, start().await);
    let mut client = a.pusher().await;
    client.subscribe("room-a").await;
    let before = (received_in_process(&a).await, received_in_process(&b).await);
    for n in 0..10 {
        trigger(&b.api(), "room-a", n).await;
    }
    for n in 0..10 {
        assert_eq!(next_n(&mut client, "room-a").await, n);
    }
    let after = (received_in_process(&a).await, received_in_process(&b).await);
    assert!(after.0 >= before.0 + 10, "{before:?} → {after:?}");
    assert_eq!(
        after.1, before.1,
        "node b heard room-a: {before:?} → {after:?}"
    );
    a.stop().await;
    b.stop().await;
}
