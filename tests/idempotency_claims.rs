//! A claimed idempotency key whose publish never settles (the node was killed mid-publish, or
//! the call was cancelled) must not hold back the retry for the whole window: the retry goes
//! through within the claim's lifetime and the event is delivered once.
//!
//! Its own test binary: it pauses the test Redis's writes (as Redis does during a failover),
//! which would disturb the other cluster tests if they ran alongside.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;
use tokio::time::Instant;

#[tokio::test]
async fn a_claim_left_by_a_vanished_publisher_expires_long_before_the_window() {
    let prefix = format!("claims-{}", std::process::id());
    let node = TestServer::start_with(move |c| {
        c.redis.url = Some(redis_url());
        c.redis.prefix = prefix;
    })
    .await;
    let api = node.api();
    let mut sub = node.pusher().await;
    sub.subscribe("pay").await;
    let body = json!({"name":"charged","channel":"pay","data":"{}","idempotency_key":"charge-1"})
        .to_string();

    // Redis stops taking writes for a moment; the publisher gives up on its call meanwhile
    // and goes away. The node's claim on the key lands when the writes resume, and nothing
    // settles it.
    let mut redis = redis_conn(&redis_url()).await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("WRITE")
        .query_async(&mut redis)
        .await
        .unwrap();
    let path = format!("/apps/{APP_ID}/events");
    let url = format!(
        "{}{path}?{}",
        api.base,
        api.signed_query("POST", &path, &[], &body, now())
    );
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let first = quick
        .post(url)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await;
    assert!(first.is_err(), "the first call should time out: {first:?}");
    tokio::time::sleep(Duration::from_millis(1600)).await;

    // The retry: 409 while the claim lives, then published, within seconds (the window is
    // 120 s).
    let started = Instant::now();
    loop {
        let (status, v) = api.post("/events", &body).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 409, "{v}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the key is still in flight after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, _) = api
        .trigger(json!({"name":"marker","channel":"pay","data":"{}"}))
        .await;
    assert_eq!(status, 200);
    let mut names = Vec::new();
    loop {
        let v = sub.recv().await;
        let name = v["event"].as_str().unwrap_or_default().to_owned();
        if name == "marker" {
            break;
        }
        if !name.starts_with("pusher") {
            names.push(name);
        }
    }
    assert_eq!(names, ["charged"], "delivered once");
    node.stop().await;
}
