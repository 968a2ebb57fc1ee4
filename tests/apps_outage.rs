//! The app store down: with PostgreSQL stopped for real (`pg_ctl stop`), a node keeps
//! serving the apps it has, answers 4001 for keys it does not know (it never asks the
//! database on the connect path), refuses admin writes with 503, and picks up again once
//! PostgreSQL is back, without a restart. Its own test binary: it stops the PostgreSQL the
//! other tests use, and test binaries run one after another.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::pg::{fresh_database, pg_connect, pg_ctl, pg_dirs};
use support::*;
use tokio::time::Instant;

const TOKEN: &str = "admin-token-for-tests";

async fn admin(s: &TestServer, method: &str, path: &str, body: Option<Value>) -> u16 {
    let url = format!("http://{}{path}", s.metrics_addr.unwrap());
    let mut req = reqwest::Client::new()
        .request(method.parse().unwrap(), url)
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(15));
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap().status().as_u16()
}

/// `Ok` when a connection with `key` is established, else its close code.
async fn connect(s: &TestServer, key: &str) -> Result<(), u16> {
    let mut ws = PusherClient::connect_raw(&s.ws_url(key)).await;
    let first = recv_json(&mut ws).await;
    if first["event"] == "pusher:connection_established" {
        return Ok(());
    }
    Err(expect_close(&mut ws).await)
}

fn app(id: &str) -> Value {
    json!({ "id": id, "key": format!("{id}-key"), "secret": format!("{id}-secret") })
}

#[tokio::test]
async fn a_node_keeps_its_apps_while_postgresql_is_down_and_recovers_without_a_restart() {
    let url = fresh_database().await;
    let (bindir, datadir, opts) = pg_dirs(&pg_connect(&url).await).await;
    let u = url.clone();
    let s = TestServer::start_full(
        |c| {
            c.database.url = Some(u);
            c.admin.token = Some(TOKEN.into());
        },
        true,
    )
    .await;
    assert_eq!(
        admin(&s, "POST", "/admin/apps", Some(app("kept"))).await,
        201
    );
    assert_eq!(connect(&s, "kept-key").await, Ok(()));

    let (b, d) = (bindir.clone(), datadir.clone());
    tokio::task::spawn_blocking(move || pg_ctl(&b, &d, "stop", ""))
        .await
        .unwrap();
    let outage = async {
        // Served from memory: connections and signed calls of the stored app.
        assert_eq!(connect(&s, "kept-key").await, Ok(()));
        let api = Api {
            app_id: "kept".into(),
            key: "kept-key".into(),
            secret: "kept-secret".into(),
            ..s.api()
        };
        let event = json!({ "name": "e", "channel": "c", "data": "{}" });
        assert_eq!(api.trigger(event).await.0, 200);
        // An unknown key is unknown at once, not a wait on the database.
        let started = Instant::now();
        assert_eq!(connect(&s, "nobody-key").await, Err(4001));
        assert!(started.elapsed() < Duration::from_secs(1));
        // Writes need the store.
        assert_eq!(
            admin(&s, "POST", "/admin/apps", Some(app("late"))).await,
            503
        );
        assert_eq!(admin(&s, "GET", "/admin/apps/kept", None).await, 200);
    };
    // PostgreSQL comes back whatever the checks found: the next test binaries need it.
    let checked = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(outage)).await;
    tokio::task::spawn_blocking(move || pg_ctl(&bindir, &datadir, "start", &opts))
        .await
        .unwrap();
    if let Err(panic) = checked {
        std::panic::resume_unwind(panic);
    }

    // Recovery: the next write goes through (the connection is made again) and serves.
    let deadline = Instant::now() + Duration::from_secs(20);
    while admin(&s, "POST", "/admin/apps", Some(app("late"))).await != 201 {
        assert!(Instant::now() < deadline, "store not usable again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(connect(&s, "late-key").await, Ok(()));
    assert_eq!(connect(&s, "kept-key").await, Ok(()));
    s.stop().await;
}
