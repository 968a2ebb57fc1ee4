//! PostgreSQL ingest against a real PostgreSQL (`SWITCHBOARD_TEST_DATABASE_URL`, a fresh
//! database per test): outbox rows reach Pusher and bus clients, in order and once, across
//! a lost listener, a PostgreSQL restart, a Switchboard restart, a takeover, out-of-order
//! commits and bad rows.

mod support;

use std::ops::RangeInclusive;
use std::sync::LazyLock;
use std::time::Duration;

use serde_json::json;
use support::*;
use switchboard::config::Config;
use switchboard::ingest::{LISTEN_APP_NAME, LOCK_KEY, QUERY_APP_NAME};
use tokio::sync::RwLock;
use tokio::time::Instant;

/// All tests share one PostgreSQL server; the restart test takes it exclusively.
static PG: LazyLock<RwLock<()>> = LazyLock::new(|| RwLock::new(()));

const LONG: Duration = PG_WAIT;

/// A server ingesting from `db`, with metrics, a short lock retry and room for bursts.
async fn server(db: &Db, f: impl FnOnce(&mut Config)) -> TestServer {
    let url = db.url.clone();
    TestServer::start_full(
        move |c| {
            c.database.url = Some(url);
            c.database.lock_retry_ms = 200;
            c.server.outbox_capacity = 100_000;
            f(c);
        },
        true,
    )
    .await
}

/// Asserts the next events are `seq` with exactly the numbers of `range`, in order.
async fn expect_seq(c: &mut PusherClient, range: RangeInclusive<i32>) {
    for want in range {
        let v = pusher_event(c, LONG).await;
        assert_eq!(v["event"], "seq", "expected seq {want}, got {v}");
        assert_eq!(data_of(&v)["n"], want, "expected seq {want}, got {v}");
    }
}

/// Proves nothing more is queued for `c`: a sentinel row must be its very next event.
async fn expect_nothing_more(db: &Db, c: &mut PusherClient, channel: &str) {
    db.channel_row(channel, "end", json!({})).await;
    let v = pusher_event(c, LONG).await;
    assert_eq!(v["event"], "end", "expected no further events, got {v}");
}

#[tokio::test]
async fn channel_and_user_rows_reach_both_protocols() {
    let _pg = PG.read().await;
    let db = Db::fresh().await;
    let s = server(&db, |_| {}).await;
    let mut p = s.pusher().await;
    p.subscribe("orders").await;
    p.signin(r#"{"id":"alice"}"#).await;
    let mut claims = bus_claims("alice");
    claims.channels = vec!["orders".into()];
    let mut b = s.bus_with(&claims).await;
    b.subscribe(&["notification", "message", "action"], &["orders"])
        .await;
    db.wait_schema().await;

    db.channel_row("orders", "shipped", json!({"order": 7}))
        .await;
    let v = pusher_event(&mut p, LONG).await;
    assert_eq!(
        (&v["event"], &v["channel"]),
        (&json!("shipped"), &json!("orders"))
    );
    assert_eq!(data_of(&v), json!({"order": 7}));
    let v = b.expect("event").await;
    assert_eq!(
        (&v["room"], &v["event"]),
        (&json!("orders"), &json!("shipped"))
    );
    assert_eq!(data_of(&v), json!({"order": 7}));

    let n = json!({"notification_type":"connection_request","from":"carol","message":"hi","action_url":"/c"});
    db.user_row("alice", "notification", n).await;
    let v = b.expect("notification").await;
    assert_eq!((&v["from"], &v["message"]), (&json!("carol"), &json!("hi")));
    assert_eq!(v["action_url"], "/c");
    let v = pusher_event(&mut p, LONG).await;
    assert_eq!(v["event"], "notification", "{v}");
    assert_eq!(v["channel"], "#server-to-user-alice");
    assert_eq!(data_of(&v)["notification_type"], "connection_request");

    let m =
        json!({"message_id":"m1","sender":"bob","content":"x".repeat(150),"conversation_id":"c1"});
    db.user_row("alice", "message", m).await;
    let v = b.expect("message").await;
    assert_eq!(v["preview"].as_str().unwrap().len(), 100);
    assert_eq!(
        (&v["sender"], &v["conversation_id"]),
        (&json!("bob"), &json!("c1"))
    );
    assert_eq!(pusher_event(&mut p, LONG).await["event"], "message");

    let a = json!({"action_type":"REACT","action_id":"a1","issuer":"bob","content":{"emoji":"+1"}});
    db.user_row("alice", "action", a).await;
    let v = b.expect("action").await;
    assert_eq!(v["content"], json!({"emoji": "+1"}));
    assert_eq!(
        (&v["action_type"], &v["source"]),
        (&json!("REACT"), &json!("local"))
    );
    assert_eq!(pusher_event(&mut p, LONG).await["event"], "action");

    // Any other event name is a Pusher send-to-user event; the bus has no frame for it.
    db.user_row("alice", "invoice-paid", json!({"total": 3}))
        .await;
    db.channel_row("#server-to-user-alice", "via-channel", json!(1))
        .await;
    let v = pusher_event(&mut p, LONG).await;
    assert_eq!(
        (&v["event"], &v["channel"]),
        (&json!("invoice-paid"), &json!("#server-to-user-alice"))
    );
    assert_eq!(data_of(&v), json!({"total": 3}));
    assert_eq!(pusher_event(&mut p, LONG).await["event"], "via-channel");
    b.ping().await;
    assert!(metric(&s, "switchboard_ingest_rows_total").await >= 7.0);
    s.stop().await;
}

#[tokio::test]
async fn user_rows_for_an_absent_user_wait_in_the_offline_queue() {
    let _pg = PG.read().await;
    let db = Db::fresh().await;
    let s = server(&db, |_| {}).await;
    db.wait_schema().await;
    for i in 1..=3 {
        let n = json!({"notification_type":"t","message":format!("row-{i}")});
        db.user_row("zoe", "notification", n).await;
    }
    // The envelope columns: a high-priority row, and one that refuses a bad priority.
    db.exec(
        r#"INSERT INTO switchboard.outbox (app_id, user_id, event, data, priority, ttl) VALUES
           ('app-id', 'zoe', 'notification', '{"notification_type":"t","message":"urgent"}', 'high', 60),
           ('app-id', 'zoe', 'notification', '{"notification_type":"t","message":"bad"}', 'urgent', NULL)"#,
    )
    .await;
    let deadline = Instant::now() + LONG;
    let processed = "SELECT count(*) FROM switchboard.outbox WHERE processed_at IS NOT NULL";
    while db.count(processed).await < 5 {
        assert!(Instant::now() < deadline, "rows not processed in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut b = s.bus("zoe").await;
    b.subscribe(&["notification"], &[]).await;
    assert_eq!(b.recv_type("replay").await["count"], 4);
    for i in 1..=3 {
        assert_eq!(
            b.recv_type("notification").await["message"],
            format!("row-{i}")
        );
    }
    let urgent = b.recv_type("notification").await;
    assert_eq!(
        (&urgent["message"], &urgent["priority"]),
        (&json!("urgent"), &json!("high"))
    );
    let refused = "SELECT count(*) FROM switchboard.outbox WHERE error LIKE 'invalid_envelope:%'";
    assert_eq!(db.count(refused).await, 1);
    s.stop().await;
}

#[tokio::test]
async fn a_row_the_full_offline_queues_cannot_take_is_marked_and_ingest_goes_on() {
    let _pg = PG.read().await;
    let db = Db::fresh().await;
    let s = server(&db, |c| c.offline.max_total_events = 1).await;
    let mut p = s.pusher().await;
    p.subscribe("seq").await;
    db.wait_schema().await;
    for i in 1..=2 {
        let n = json!({"notification_type":"t","message":format!("row-{i}")});
        db.user_row("yan", "notification", n).await;
    }
    // Rows behind the one that could not be queued still flow.
    db.seq_rows("seq", 0..=2).await;
    expect_seq(&mut p, 0..=2).await;
    // Rows are marked after their batch is published: wait for the marks.
    db.wait_for("SELECT count(*) = 5 FROM switchboard.outbox WHERE processed_at IS NOT NULL")
        .await;
    let refused = "SELECT count(*) FROM switchboard.outbox WHERE error LIKE 'offline_queue_full:%'";
    assert_eq!(db.count(refused).await, 1);
    // yan gets what was queued and hears of what was not.
    let mut b = s.bus("yan").await;
    b.subscribe(&["notification"], &[]).await;
    let replay = b.recv_type("replay").await;
    assert_eq!(
        (&replay["count"], &replay["dropped"], &replay["complete"]),
        (&json!(1), &json!(1), &json!(false)),
        "{replay}"
    );
    assert_eq!(b.recv_type("notification").await["message"], "row-1");
    s.stop().await;
}

#[tokio::test]
async fn rows_inserted_while_the_listener_is_down_are_delivered_once_in_order() {
    let _pg = PG.read().await;
    let db = Db::fresh().await;
    // No polling to fall back on: only NOTIFY and the listener's reconnect wake the reader.
    let s = server(&db, |c| c.database.poll_interval_ms = 600_000).await;
    let mut p = s.pusher().await;
    p.subscribe("seq").await;
    db.wait_schema().await;
    db.seq_rows("seq", 0..=0).await;
    expect_seq(&mut p, 0..=0).await;

    // Keep the listener out while rows are inserted: no new connections, then kill it.
    let dbname: String = db
        .sql
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    let allow = |on: bool| format!("ALTER DATABASE {dbname} ALLOW_CONNECTIONS {on}");
    // PostgreSQL refuses that for the current database: another one's session does it.
    let admin = pg_connect(&test_database_url()).await;
    admin.batch_execute(&allow(false)).await.unwrap();
    let kill =
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM pg_stat_activity \
                WHERE application_name = $1 AND datname = current_database()";
    let killed: i64 = db
        .sql
        .query_one(kill, &[&LISTEN_APP_NAME])
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1, "one LISTEN connection to terminate");
    for i in 1..=50 {
        db.seq_rows("seq", i..=i).await;
    }
    admin.batch_execute(&allow(true)).await.unwrap();

    expect_seq(&mut p, 1..=50).await;
    expect_nothing_more(&db, &mut p, "seq").await;
    db.wait_for(&format!(
        "SELECT count(*) = 1 FROM pg_stat_activity WHERE application_name = '{LISTEN_APP_NAME}' \
         AND datname = current_database()"
    ))
    .await;
    assert!(metric(&s, "switchboard_ingest_listener_reconnects_total").await >= 1.0);
    s.stop().await;
}

#[tokio::test]
async fn a_postgres_restart_loses_and_repeats_nothing() {
    let _pg = PG.write().await;
    let mut db = Db::fresh().await;
    let s = server(&db, |c| c.database.poll_interval_ms = 600_000).await;
    let mut p = s.pusher().await;
    p.subscribe("seq").await;
    db.wait_schema().await;
    let setting = |name: &str| format!("SELECT setting FROM pg_settings WHERE name = '{name}'");
    let datadir: String = db
        .sql
        .query_one(&setting("data_directory"), &[])
        .await
        .unwrap()
        .get(0);
    let bindir: String = db
        .sql
        .query_one("SELECT setting FROM pg_config WHERE name = 'BINDIR'", &[])
        .await
        .unwrap()
        .get(0);

    const N: i32 = 10_000;
    db.seq_rows("seq", 0..=N - 1).await;
    expect_seq(&mut p, 0..=0).await;
    // Restart while the burst is being ingested; rows delivered meanwhile queue up.
    tokio::task::spawn_blocking(move || restart_postgres(&bindir, &datadir))
        .await
        .unwrap();
    db.sql = pg_connect(&db.url).await;
    let done = db
        .count("SELECT count(*) FROM switchboard.outbox WHERE processed_at IS NOT NULL")
        .await;
    println!("rows marked when PostgreSQL came back: {done} of {N}");
    // Inserted before the ingester is back (it reconnects with backoff).
    db.seq_rows("seq", N..=N + 99).await;
    expect_seq(&mut p, 1..=N + 99).await;
    expect_nothing_more(&db, &mut p, "seq").await;
    // Marks are written after the batch is published.
    db.wait_for("SELECT bool_and(processed_at IS NOT NULL) FROM switchboard.outbox")
        .await;
    let failed = "SELECT count(*) FROM switchboard.outbox WHERE error IS NOT NULL";
    assert_eq!(db.count(failed).await, 0);
    s.stop().await;
}

#[tokio::test]
async fn a_switchboard_restart_delivers_the_backlog_once() {
    let _pg = PG.read().await;
    let db = Db::fresh().await;
    let a = server(&db, |_| {}).await;
    let mut pa = a.pusher().await;
    pa.subscribe("seq").await;
    db.wait_schema().await;
    db.seq_rows("seq", 0..=9).await;
    expect_seq(&mut pa, 0..=9).await;
    a.stop().await;

    db.seq_rows("seq", 10..=19).await;
    // Hold the ingest lock until the new server has a subscriber, as a live node would.
    let holder = pg_connect(&db.url).await;
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .unwrap();
    let b = server(&db, |_| {}).await;
    let mut pb = b.pusher().await;
    pb.subscribe("seq").await;
    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await
        .unwrap();
    expect_seq(&mut pb, 10..=19).await;
    expect_nothing_more(&db, &mut pb, "seq").await;
    b.stop().await;
}

#[tokio::test]
async fn a_standby_node_takes_over_when_the_ingester_stops() {
    let _pg = PG.read().await;
    let db = Db::fresh().await;
    let a = server(&db, |_| {}).await;
    let mut pa = a.pusher().await;
    pa.subscribe("seq").await;
    db.wait_schema().await;
    db.seq_rows("seq", 0..=0).await;
    expect_seq(&mut pa, 0..=0).await;

    let b = server(&db, |_| {}).await;
    let mut pb = b.pusher().await;
    pb.subscribe("seq").await;
    db.wait_for(&format!(
        "SELECT count(*) = 2 FROM pg_stat_activity WHERE application_name = '{QUERY_APP_NAME}' \
         AND datname = current_database()"
    ))
    .await;
    db.seq_rows("seq", 1..=1).await;
    expect_seq(&mut pa, 1..=1).await;
    a.stop().await;

    db.seq_rows("seq", 2..=5).await;
    // B's very first events are 2..5: it delivered neither 0 nor 1 while A held the lock.
    expect_seq(&mut pb, 2..=5).await;
    expect_nothing_more(&db, &mut pb, "seq").await;
    b.stop().await;
}

#[tokio::test]
async fn a_lower_id_committed_after_a_higher_one_is_delivered() {
    let _pg = PG.read().await;
    let db = Db::fresh().await;
    let s = server(&db, |_| {}).await;
    let mut p = s.pusher().await;
    p.subscribe("w").await;
    db.wait_schema().await;

    let slow = pg_connect(&db.url).await;
    slow.batch_execute("BEGIN").await.unwrap();
    let insert = "INSERT INTO switchboard.outbox (app_id, channel, event) VALUES ('app-id', 'w', $1) RETURNING id";
    let low: i64 = slow.query_one(insert, &[&"first"]).await.unwrap().get(0);
    let high = db.channel_row("w", "second", json!({})).await;
    assert!(low < high);
    assert_eq!(pusher_event(&mut p, LONG).await["event"], "second");
    slow.batch_execute("COMMIT").await.unwrap();
    assert_eq!(pusher_event(&mut p, LONG).await["event"], "first");
    expect_nothing_more(&db, &mut p, "w").await;
    s.stop().await;
}

#[tokio::test]
async fn concurrent_writers_lose_nothing() {
    let _pg = PG.read().await;
    let db = Db::fresh().await;
    let s = server(&db, |_| {}).await;
    let mut p = s.pusher().await;
    p.subscribe("w").await;
    db.wait_schema().await;

    const WRITERS: i32 = 8;
    const EACH: i32 = 40;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let url = db.url.clone();
        tasks.push(tokio::spawn(async move {
            let c = pg_connect(&url).await;
            let sql = "INSERT INTO switchboard.outbox (app_id, channel, event, data) \
                       VALUES ('app-id', 'w', 'seq', jsonb_build_object('w', $1::int, 'n', $2::int))";
            for n in 0..EACH {
                c.batch_execute("BEGIN").await.unwrap();
                c.execute(sql, &[&w, &n]).await.unwrap();
                // Hold some transactions open so that ids commit out of order.
                let pause = rand::random::<u64>() % 15;
                tokio::time::sleep(Duration::from_millis(pause)).await;
                c.batch_execute("COMMIT").await.unwrap();
            }
        }));
    }
    let mut next = vec![0; WRITERS as usize];
    for _ in 0..WRITERS * EACH {
        let v = data_of(&pusher_event(&mut p, LONG).await);
        let w = v["w"].as_i64().unwrap() as usize;
        assert_eq!(v["n"], next[w], "writer {w}: out of order or repeated: {v}");
        next[w] += 1;
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(next.iter().all(|n| *n == EACH), "{next:?}");
    expect_nothing_more(&db, &mut p, "w").await;
    s.stop().await;
}

#[tokio::test]
async fn bad_rows_are_logged_counted_marked_and_skipped() {
    let _pg = PG.read().await;
    let db = Db::fresh().await;
    let s = server(&db, |_| {}).await;
    let mut p = s.pusher().await;
    p.subscribe("c").await;
    db.wait_schema().await;
    let before = metric(
        &s,
        r#"switchboard_ingest_rows_rejected_total{reason="too_large"}"#,
    )
    .await;

    // One statement, so the bad rows sit in one batch between good ones.
    let sql = r#"INSERT INTO switchboard.outbox (app_id, channel, user_id, event, data) VALUES
        ('app-id', 'c',        NULL,  'good-1', '{}'),
        ('nope',   'c',        NULL,  'e',      '{}'),
        ('app-id', 'bad name', NULL,  'e',      '{}'),
        ('app-id', 'c',        NULL,  'e',      to_jsonb(repeat('x', 20000))),
        ('app-id', 'c',        NULL,  'e',      to_jsonb(repeat('y', 500000))),
        ('app-id', NULL,       'bob', 'notification', '{"message":"no type"}'),
        ('app-id', NULL,       NULL,  'e',      '{}'),
        ('app-id', 'c',        NULL,  'pusher:x', '{}'),
        ('app-id', 'c',        NULL,  'good-2', '{}')"#;
    db.sql.batch_execute(sql).await.unwrap();
    assert_eq!(pusher_event(&mut p, LONG).await["event"], "good-1");
    assert_eq!(pusher_event(&mut p, LONG).await["event"], "good-2");
    expect_nothing_more(&db, &mut p, "c").await;
    // Marks are written after the batch is published.
    db.wait_for("SELECT bool_and(processed_at IS NOT NULL) FROM switchboard.outbox")
        .await;

    let rows = db
        .sql
        .query(
            "SELECT processed_at IS NOT NULL, error FROM switchboard.outbox ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(bool, Option<String>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let want = [
        None,
        Some("unknown_app"),
        Some("invalid_channel"),
        Some("too_large"),
        Some("too_large"),
        Some("invalid_data"),
        Some("invalid_target"),
        Some("invalid_event"),
        None,
        None,
    ];
    assert_eq!(got.len(), want.len());
    for ((processed, error), want) in got.iter().zip(want) {
        assert!(processed, "every row is marked: {got:?}");
        match want {
            None => assert_eq!(error, &None, "{got:?}"),
            Some(reason) => assert!(
                error
                    .as_deref()
                    .is_some_and(|e| e.starts_with(&format!("{reason}: "))),
                "expected {reason}, got {error:?}"
            ),
        }
    }
    for reason in [
        "unknown_app",
        "invalid_channel",
        "invalid_data",
        "invalid_target",
        "invalid_event",
    ] {
        let series = format!(r#"switchboard_ingest_rows_rejected_total{{reason="{reason}"}}"#);
        assert!(metric(&s, &series).await >= 1.0, "{series}");
    }
    let after = metric(
        &s,
        r#"switchboard_ingest_rows_rejected_total{reason="too_large"}"#,
    )
    .await;
    assert!(after - before >= 2.0);
    s.stop().await;
}

#[tokio::test]
async fn processed_rows_are_deleted_after_the_retention_period() {
    let _pg = PG.read().await;
    let db = Db::fresh().await;
    let s = server(&db, |c| {
        c.database.retention_secs = 2;
        c.database.cleanup_interval_secs = 1;
    })
    .await;
    let mut p = s.pusher().await;
    p.subscribe("seq").await;
    db.wait_schema().await;
    db.seq_rows("seq", 0..=2499).await;
    expect_seq(&mut p, 0..=2499).await;
    // Just processed: still kept. Then gone within the period plus a pass or two.
    assert!(db.count("SELECT count(*) FROM switchboard.outbox").await > 0);
    db.wait_for("SELECT count(*) = 0 FROM switchboard.outbox")
        .await;
    assert!(metric(&s, "switchboard_ingest_rows_deleted_total").await >= 2500.0);
    s.stop().await;
}

#[tokio::test]
async fn throughput_and_latency() {
    let _pg = PG.read().await;
    let db = Db::fresh().await;
    let s = server(&db, |c| c.database.poll_interval_ms = 600_000).await;
    let mut p = s.pusher().await;
    p.subscribe("seq").await;
    db.wait_schema().await;

    const N: i32 = 20_000;
    let started = Instant::now();
    db.seq_rows("seq", 0..=N - 1).await;
    expect_seq(&mut p, 0..=N - 1).await;
    let rate = f64::from(N) / started.elapsed().as_secs_f64();

    let mut took = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        db.seq_rows("seq", i..=i).await;
        expect_seq(&mut p, i..=i).await;
        took.push(t.elapsed());
    }
    took.sort();
    let (p50, p99) = (took[100], took[198]);
    println!("ingest: {rate:.0} rows/s end to end; insert-to-delivery p50 {p50:?} p99 {p99:?}");
    assert!(rate > 1_000.0, "{rate:.0} rows/s");
    // Polling is off: these numbers are NOTIFY's.
    assert!(p50 < Duration::from_millis(250), "p50 {p50:?}");
    s.stop().await;
}
