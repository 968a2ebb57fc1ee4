//! The bus over Server-Sent Events with a plain HTTP client: the stream carries the same
//! frames as `/ws/bus`, POSTs bring the client's messages, `Last-Event-ID` resumes, and bad
//! input gets its status.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// An SSE stream read event by event.
struct Stream {
    body: reqwest::Response,
    buf: String,
    session: String,
    token: String,
    base: String,
    http: reqwest::Client,
}

/// One event of the stream: its `id:` (if any), `event:` name (if any) and JSON data.
#[derive(Debug)]
struct Sse {
    id: Option<String>,
    event: Option<String>,
    data: Value,
}

impl Stream {
    async fn open(server: &TestServer, token: &str, last_event_id: Option<&str>) -> Self {
        let http = reqwest::Client::new();
        let mut req = http.get(format!("http://{}/ws/bus/sse?token={token}", server.addr));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        let mut s = Self {
            body: res,
            buf: String::new(),
            session: String::new(),
            token: token.to_owned(),
            base: format!("http://{}", server.addr),
            http,
        };
        let welcome = s.next().await;
        assert_eq!(welcome.data["type"], "welcome", "{welcome:?}");
        s.session = welcome.data["session_id"].as_str().unwrap().to_owned();
        s
    }

    /// The next event (comments skipped); panics after [`WAIT`].
    async fn next(&mut self) -> Sse {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, None, None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).unwrap());
                    }
                }
                if let Some(data) = data {
                    return Sse { id, event, data };
                }
                continue;
            }
            let chunk = tokio::time::timeout(WAIT, self.body.chunk())
                .await
                .expect("an event in time")
                .unwrap()
                .expect("the stream is open");
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    async fn next_of(&mut self, kind: &str) -> Sse {
        loop {
            let e = self.next().await;
            if e.data["type"] == kind {
                return e;
            }
        }
    }

    /// Whether the stream ends within `within`.
    async fn ends(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.body.chunk()).await {
                Err(_) => return false,
                Ok(Ok(None)) | Ok(Err(_)) => return true,
                Ok(Ok(Some(_))) => {}
            }
        }
    }

    async fn post(&self, session: &str, token: &str, body: &Value) -> u16 {
        self.http
            .post(format!("{}/ws/bus/send?session={session}", self.base))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn send(&self, body: Value) {
        assert_eq!(self.post(&self.session, &self.token, &body).await, 204);
    }
}

#[tokio::test]
async fn the_bus_over_sse_carries_the_same_session_as_a_websocket() {
    let server = TestServer::start().await;
    let token = bus_token(&bus_claims("alice"));
    let mut sse = Stream::open(&server, &token, None).await;
    sse.send(json!([{"type": "subscribe", "events": ["notification"]}, {"type": "ping"}]))
        .await;
    let sub = sse.next_of("subscribed").await;
    assert_eq!(sub.data["events"], json!(["notification"]));
    assert_eq!(sse.next().await.data["type"], "pong");
    server.api().notify("alice", "first", json!({})).await;
    let n = sse.next_of("notification").await;
    assert_eq!(n.data["message"], "first");
    assert_eq!(
        n.id.as_deref(),
        n.data["id"].as_str(),
        "id: is the event id"
    );
    // A WebSocket client of the same user sees the same events: one core.
    let mut ws = server.bus("alice").await;
    ws.subscribe(&["notification"], &[]).await;
    server.api().notify("alice", "second", json!({})).await;
    assert_eq!(sse.next_of("notification").await.data["message"], "second");
    assert_eq!(ws.expect("notification").await["message"], "second");
    // Bad input on the stream's own protocol: an error frame, the session goes on.
    sse.send(json!({"type": "no-such-type"})).await;
    assert_eq!(sse.next_of("error").await.data["code"], "E-WS-INVALID");
    sse.send(json!({"type": "ping"})).await;
    assert_eq!(sse.next_of("pong").await.data["type"], "pong");
    server.stop().await;
}

#[tokio::test]
async fn posts_reach_only_their_own_open_session() {
    let server = TestServer::start().await;
    let alice = bus_token(&bus_claims("alice"));
    let sse = Stream::open(&server, &alice, None).await;
    let ping = json!({"type": "ping"});
    // The positive control.
    assert_eq!(sse.post(&sse.session, &alice, &ping).await, 204);
    assert_eq!(
        sse.post("1.999999", &alice, &ping).await,
        404,
        "unknown session"
    );
    let bob = bus_token(&bus_claims("bob"));
    assert_eq!(
        sse.post(&sse.session, &bob, &ping).await,
        404,
        "another user's session"
    );
    assert_eq!(
        sse.post(&sse.session, "nonsense", &ping).await,
        401,
        "no valid token"
    );
    let many = Value::Array(vec![ping.clone(); 21]);
    assert_eq!(
        sse.post(&sse.session, &alice, &many).await,
        400,
        "too many in one POST"
    );
    let big = json!({"type": "presence", "status": "x".repeat(70_000)});
    assert_eq!(sse.post(&sse.session, &alice, &big).await, 413);
    let res = sse
        .http
        .post(format!("{}/ws/bus/send?session={}", sse.base, sse.session))
        .header("authorization", format!("Bearer {alice}"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    // A closed session is gone.
    let session = sse.session.clone();
    drop(sse);
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = http
            .post(format!(
                "http://{}/ws/bus/send?session={session}",
                server.addr
            ))
            .header("authorization", format!("Bearer {alice}"))
            .header("content-type", "application/json")
            .body(ping.to_string())
            .send()
            .await
            .unwrap()
            .status();
        if status == 404 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session outlived its stream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn last_event_id_resumes_after_a_cut_stream_with_every_event_once_in_order() {
    // No offline queue: what the new stream gets can only come from the resume.
    let server = TestServer::start_with(|c| c.offline.enabled = false).await;
    let token = bus_token(&bus_claims("carol"));
    let mut sse = Stream::open(&server, &token, None).await;
    sse.send(json!({"type": "subscribe", "events": ["notification"]}))
        .await;
    sse.next_of("subscribed").await;
    server.api().notify("carol", "m1", json!({})).await;
    let first = sse.next_of("notification").await;
    let last_id = first.id.clone().expect("an id");
    drop(sse);
    // Published while carol's stream is cut.
    server.api().notify("carol", "m2", json!({})).await;
    server.api().notify("carol", "m3", json!({})).await;
    let mut again = Stream::open(&server, &token, Some(&last_id)).await;
    again
        .send(json!({"type": "subscribe", "events": ["notification"]}))
        .await;
    let mut got = Vec::new();
    while got.len() < 2 {
        let e = again.next().await;
        if e.data["type"] == "notification" {
            got.push(e.data["message"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(got, ["m2", "m3"]);
    server.api().notify("carol", "m4", json!({})).await;
    assert_eq!(again.next_of("notification").await.data["message"], "m4");
    // The negative control: a stream without Last-Event-ID starts from now.
    let mut fresh = Stream::open(&server, &token, None).await;
    fresh
        .send(json!({"type": "subscribe", "events": ["notification"]}))
        .await;
    fresh.next_of("subscribed").await;
    server.api().notify("carol", "m5", json!({})).await;
    assert_eq!(fresh.next_of("notification").await.data["message"], "m5");
    server.stop().await;
}

#[tokio::test]
async fn an_expiring_token_ends_the_stream_with_e_ws_auth() {
    let server = TestServer::start().await;
    let mut claims = bus_claims("dave");
    claims.exp = now() + 2;
    let mut sse = Stream::open(&server, &bus_token(&claims), None).await;
    let err = sse.next_of("error").await;
    assert_eq!(err.data["code"], "E-WS-AUTH");
    let close = sse.next().await;
    assert_eq!(close.event.as_deref(), Some("close"));
    assert_eq!(close.data["code"], 4001);
    assert!(sse.ends(WAIT).await, "the stream ends after the close");
    // Refusals before any stream: a bad token is 401.
    let res = reqwest::get(format!("http://{}/ws/bus/sse?token=bad", server.addr))
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    server.stop().await;
}
