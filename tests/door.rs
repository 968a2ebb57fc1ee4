//! The front door under hostile clients: unfinished request heads, trickled bytes, slow
//! bodies and idle keep-alive sockets are closed within their timeouts; oversized heads and
//! non-JSON bodies get their status; one address cannot hold more than
//! `server.max_connections_per_ip` sockets, while other addresses and `/up` still get in.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;

/// Door timeouts short enough for a test: 500 ms for heads and bodies.
async fn strict_server(per_ip: usize) -> TestServer {
    TestServer::start_with(|c| {
        c.server.header_timeout_ms = 500;
        c.server.body_timeout_ms = 500;
        c.server.max_header_bytes = 16 * 1024;
        c.server.max_connections_per_ip = per_ip;
    })
    .await
}

/// Reads until the server closes the socket; returns what it sent. Panics if the socket is
/// still open after `within`.
async fn read_to_close(tcp: &mut TcpStream, within: Duration) -> String {
    let mut got = Vec::new();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => panic!(
                "socket still open after {within:?}; received {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&got).into_owned(),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A complete `GET /up` on a new socket answers 200: the positive control of every check.
async fn up_answers(addr: SocketAddr) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /up HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut tcp, WAIT).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn an_unfinished_request_head_is_closed_after_the_header_timeout() {
    let server = strict_server(0).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    read_to_close(&mut tcp, Duration::from_secs(3)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed before the timeout"
    );
    up_answers(server.addr).await;
    server.stop().await;
}

#[tokio::test]
async fn a_head_trickled_byte_by_byte_is_closed_after_the_header_timeout() {
    let server = strict_server(0).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let head =
        b"GET /up HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let deadline = Instant::now() + Duration::from_secs(3);
    for b in head.iter() {
        if tcp.write_all(&[*b]).await.is_err() {
            break; // closed by the server: what is under test
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            Instant::now() < deadline,
            "a trickled head kept its socket open"
        );
    }
    read_to_close(&mut tcp, Duration::from_secs(3)).await;
    up_answers(server.addr).await;
    server.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_socket_is_closed() {
    let server = strict_server(0).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /up HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut tcp, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn a_body_that_never_arrives_is_answered_408() {
    let server = strict_server(0).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(
        b"POST /apps/app-id/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    )
    .await
    .unwrap();
    let answer = read_to_close(&mut tcp, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""error":"#), "{answer}");
    up_answers(server.addr).await;
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_request_head_is_refused() {
    let server = strict_server(0).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let big = "a".repeat(40 * 1024);
    let req = format!("GET /up HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n");
    let _ = tcp.write_all(req.as_bytes()).await;
    let answer = read_to_close(&mut tcp, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.100}");
    up_answers(server.addr).await;
    server.stop().await;
}

#[tokio::test]
async fn the_api_takes_only_json_bodies() {
    let server = strict_server(0).await;
    let api = server.api();
    let body = r#"{"name":"e","channel":"c","data":"x"}"#;
    let path = "/apps/app-id/events";
    for (kind, want) in [
        ("text/plain", 415),
        ("application/x-www-form-urlencoded", 415),
        ("application/json", 200),
        ("application/json; charset=utf-8", 200),
    ] {
        let q = api.signed_query("POST", path, &[], body, now());
        let res = reqwest::Client::new()
            .post(format!("http://{}{path}?{q}", server.addr))
            .header("content-type", kind)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        assert_eq!(status, want, "{kind}: {text}");
        if want != 200 {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(v["error"].is_string(), "{text}");
        }
    }
    server.stop().await;
}

/// A WebSocket handshake from `local` (an address of 127.0.0.0/8) to `url`.
async fn ws_from(
    local: &str,
    addr: SocketAddr,
    url: &str,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, tungstenite::Error> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    tokio_tungstenite::client_async(url, tcp)
        .await
        .map(|(ws, _)| ws)
}

fn http_status(
    r: &Result<tokio_tungstenite::WebSocketStream<TcpStream>, tungstenite::Error>,
) -> u16 {
    match r {
        Ok(_) => 101,
        Err(tungstenite::Error::Http(res)) => res.status().as_u16(),
        Err(e) => panic!("handshake failed without a status: {e}"),
    }
}

#[tokio::test]
async fn one_address_holds_at_most_max_connections_per_ip() {
    let server = strict_server(3).await;
    let pusher = server.ws_url(KEY);
    let bus = server.bus_url(&bus_token(&bus_claims("ivy")));
    let mut open = Vec::new();
    for url in [&pusher, &pusher, &bus] {
        let ws = ws_from("127.0.0.1", server.addr, url).await;
        assert_eq!(http_status(&ws), 101);
        open.push(ws.unwrap());
    }
    // The fourth socket from the same address: 429 before the upgrade, on both protocols.
    for url in [&pusher, &bus] {
        let ws = ws_from("127.0.0.1", server.addr, url).await;
        assert_eq!(http_status(&ws), 429, "{url}");
    }
    // Another address is not affected, and /up still answers for the crowded one.
    let other = ws_from("127.0.0.2", server.addr, &pusher).await;
    assert_eq!(http_status(&other), 101);
    up_answers(server.addr).await;
    // A closed socket gives its slot back.
    let mut first = open.remove(0);
    first.close(None).await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let ws = ws_from("127.0.0.1", server.addr, &pusher).await;
        if http_status(&ws) == 101 {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was not given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

/// After the node drained, the door keeps answering 503 (not refusing connections) until
/// the process is done with it, so a load balancer tells draining from dead.
#[tokio::test]
async fn after_draining_the_door_answers_503_until_it_is_finished() {
    use axum::routing::get;
    use switchboard::http::{serve, DoorLimits};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new().route("/up", get(|| async { "ok" }));
    let limits = DoorLimits {
        header_timeout: Duration::from_secs(2),
        max_header_bytes: 16 * 1024,
        max_connections_per_ip: 0,
        tls: None,
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let door = tokio::spawn(serve(
        listener,
        router,
        limits,
        stop.clone(),
        std::future::ready(()),
        Duration::from_secs(2),
    ));
    let get_up = || async move {
        reqwest::get(format!("http://{addr}/up"))
            .await
            .map(|r| r.status().as_u16())
    };
    // The positive control: a running door answers 200.
    assert_eq!(get_up().await.unwrap(), 200);
    stop.cancel();
    let closing = tokio::time::timeout(WAIT, door)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    for _ in 0..3 {
        assert_eq!(get_up().await.unwrap(), 503);
    }
    closing.finish().await;
    assert!(
        get_up().await.is_err(),
        "the listener is closed once finished"
    );
}
