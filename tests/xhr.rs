//! pusher-js's HTTP transports at the wire: the SockJS framing, a session bound to the
//! address that opened it, and bad input. (tests in e2e/ run the real pusher-js over them.)

mod support;

use std::net::{IpAddr, Ipv4Addr};

use support::*;

fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::from(ip)))
        .build()
        .unwrap()
}

async fn post(
    http: &reqwest::Client,
    server: &TestServer,
    path: &str,
    body: &str,
) -> (u16, String) {
    let res = http
        .post(format!("http://{}/pusher/app/{KEY}/{path}", server.addr))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test]
async fn a_polling_session_speaks_sockjs_framing_and_belongs_to_its_address() {
    let server = TestServer::start().await;
    let mine = client_from([127, 0, 0, 1]);
    let other = client_from([127, 0, 0, 2]);
    let q = "?protocol=7&client=js&version=8.6.0";
    let (status, body) = post(&mine, &server, &format!("123/abcdefgh/xhr{q}"), "").await;
    assert_eq!((status, body.as_str()), (200, "o\n"));
    let (status, body) = post(&mine, &server, &format!("123/abcdefgh/xhr{q}"), "").await;
    assert_eq!(status, 200);
    assert!(
        body.starts_with("a[\"{\\\"event\\\":\\\"pusher:connection_established\\\""),
        "{body}"
    );
    // A send from the address that opened the session is taken...
    let ping = r#"["{\"event\":\"pusher:ping\",\"data\":{}}"]"#;
    assert_eq!(
        post(&mine, &server, "123/abcdefgh/xhr_send", ping).await.0,
        204
    );
    let (_, body) = post(&mine, &server, &format!("123/abcdefgh/xhr{q}"), "").await;
    assert!(body.contains("pusher:pong"), "{body}");
    // ...from another address the session does not exist, for sends and receives alike.
    assert_eq!(
        post(&other, &server, "123/abcdefgh/xhr_send", ping).await.0,
        404
    );
    assert_eq!(
        post(&other, &server, &format!("123/abcdefgh/xhr{q}"), "")
            .await
            .0,
        404
    );
    // Bad input.
    assert_eq!(
        post(&mine, &server, "999/nosuchid/xhr_send", ping).await.0,
        404
    );
    assert_eq!(
        post(&mine, &server, "123/abcdefgh/xhr_send", "{not json")
            .await
            .0,
        400
    );
    assert_eq!(
        post(&mine, &server, "123/abcdefgh/xhr_send", r#"[1,2]"#)
            .await
            .0,
        400
    );
    assert_eq!(post(&mine, &server, "12-3/abc/xhr", "").await.0, 404);
    // A malformed Pusher message inside a valid send: pusher:error 4300, the session stays.
    assert_eq!(
        post(&mine, &server, "123/abcdefgh/xhr_send", r#"["nope"]"#)
            .await
            .0,
        204
    );
    let (_, body) = post(&mine, &server, &format!("123/abcdefgh/xhr{q}"), "").await;
    assert!(body.contains("4300"), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_app_gets_its_close_code_over_http_too() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let url = format!(
        "http://{}/pusher/app/no-such-key/1/session1/xhr_streaming?protocol=7",
        server.addr
    );
    let res = http.post(url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body = tokio::time::timeout(WAIT, res.text())
        .await
        .unwrap()
        .unwrap();
    assert!(body.starts_with("o\n"), "{body}");
    assert!(body.contains("c[4001,"), "{body}");
    server.stop().await;
}

/// At shutdown a polling client between two polls still gets its close (4200: pusher-js
/// reconnects at once, elsewhere) on its next poll: the node counts as drained only once
/// the close line was taken (or the close's wait passed), as a WebSocket's close frame.
#[tokio::test]
async fn a_polling_client_between_polls_gets_the_shutdown_close() {
    let mut server = TestServer::start().await;
    let http = reqwest::Client::new();
    let q = "?protocol=7&client=js&version=8.6.0";
    let path = format!("123/pollshut/xhr{q}");
    assert_eq!(post(&http, &server, &path, "").await.1, "o\n");
    let (_, body) = post(&http, &server, &path, "").await;
    assert!(body.contains("pusher:connection_established"), "{body}");
    // No poll attached: the close waits in the session's queue.
    server.begin_stop();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (status, body) = post(&http, &server, &path, "").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("c[4200,"), "{body}");
    server.stop().await;
}
