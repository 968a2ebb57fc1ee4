//! WebSocket framing as RFC 6455 wants it, checked with raw bytes on a raw socket: every
//! protocol violation closes with its code (1002, 1007, 1009) instead of 1000, a client's
//! close is echoed, a malformed handshake is refused before any upgrade, and a slow
//! consumer gets the 4100 close frame once it reads again.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const KEY_HEADER: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Sends an upgrade request with `key` to `path`; returns the socket and the status.
async fn handshake(addr: SocketAddr, path: &str, key: Option<&str>) -> (TcpStream, u16) {
    upgrade(TcpStream::connect(addr).await.unwrap(), path, key).await
}

/// Sends an upgrade request on `tcp` and reads the answer's head (and nothing after it).
async fn upgrade(mut tcp: TcpStream, path: &str, key: Option<&str>) -> (TcpStream, u16) {
    let key = key.map_or(String::new(), |k| format!("Sec-WebSocket-Key: {k}\r\n"));
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\n{key}\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    // Read the head byte by byte: nothing after it may be consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(WAIT, tcp.read(&mut b))
            .await
            .expect("handshake answered")
            .unwrap();
        assert!(
            n == 1,
            "closed during the handshake: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head[9..12].parse().unwrap();
    (tcp, status)
}

async fn pusher_socket(addr: SocketAddr) -> TcpStream {
    let (tcp, status) = handshake(addr, "/app/app-key?protocol=7", Some(KEY_HEADER)).await;
    assert_eq!(status, 101);
    tcp
}

/// One masked client frame with the first byte `b0` (FIN, RSV, opcode) and `payload`.
fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![b0];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n < 65536 => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads server frames until a close frame; returns its code (`None`: the socket ended
/// without one).
async fn close_code(tcp: &mut TcpStream) -> Option<u16> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // Parse whole frames from `buf`.
        while buf.len() >= 2 {
            let (len, at) = match buf[1] & 0x7f {
                126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                127 if buf.len() >= 10 => (
                    u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if buf.len() < at + len {
                break;
            }
            if buf[0] & 0x0f == 0x8 {
                assert!(len >= 2, "close frame without a code");
                return Some(u16::from_be_bytes([buf[at], buf[at + 1]]));
            }
            buf.drain(..at + len);
        }
        match tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut chunk)).await {
            Err(_) => panic!("no close within 20 s"),
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test]
async fn protocol_violations_close_with_their_rfc_6455_codes() {
    let server = TestServer::start_with(|c| c.server.max_message_bytes = 1024).await;
    let unmasked = vec![0x81, 0x02, b'h', b'i'];
    let mut huge_length = vec![0x82, 0x80 | 127];
    huge_length.extend_from_slice(&(1u64 << 63).to_be_bytes());
    huge_length.extend_from_slice(&[1, 2, 3, 4]);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked frame", unmasked, 1002),
        ("reserved bit", frame(0x80 | 0x40 | 0x1, b"hi"), 1002),
        ("unknown opcode", frame(0x80 | 0x3, b"hi"), 1002),
        ("126-byte ping", frame(0x80 | 0x9, &[0u8; 126]), 1002),
        ("fragmented ping", frame(0x9, b"hi"), 1002),
        ("stray continuation", frame(0x80, b"hi"), 1002),
        ("2^63 length", huge_length, 1002),
        ("message over the limit", frame(0x81, &[b'a'; 2048]), 1009),
        ("invalid UTF-8", frame(0x81, &[0xff, 0xfe, 0xfd]), 1007),
    ];
    for (what, bytes, want) in cases {
        let mut tcp = pusher_socket(server.addr).await;
        tcp.write_all(&bytes).await.unwrap();
        assert_eq!(close_code(&mut tcp).await, Some(want), "{what}");
    }
    // Positive control: a well-formed ping is answered, the connection stays.
    let mut p = server.pusher().await;
    p.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn a_client_close_is_echoed() {
    let server = TestServer::start().await;
    for path in [
        "/app/app-key?protocol=7".to_owned(),
        format!("/ws/bus?token={}", bus_token(&bus_claims("eve"))),
    ] {
        let (mut tcp, status) = handshake(server.addr, &path, Some(KEY_HEADER)).await;
        assert_eq!(status, 101);
        tcp.write_all(&frame(0x88, &3001u16.to_be_bytes()))
            .await
            .unwrap();
        assert_eq!(close_code(&mut tcp).await, Some(3001), "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_malformed_handshake_key_is_refused_before_the_upgrade() {
    let server = TestServer::start().await;
    let bus = format!("/ws/bus?token={}", bus_token(&bus_claims("kim")));
    for path in ["/app/app-key?protocol=7", bus.as_str()] {
        for key in [Some(""), Some("not base64!"), Some("c2hvcnQ="), None] {
            let (_, status) = handshake(server.addr, path, key).await;
            assert_eq!(status, 400, "{path} with key {key:?}");
        }
        let (_, status) = handshake(server.addr, path, Some(KEY_HEADER)).await;
        assert_eq!(status, 101, "{path} with a valid key");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_slow_consumer_gets_the_4100_close_frame_once_it_reads_again() {
    let server = TestServer::start_with(|c| c.server.outbox_capacity = 50).await;
    // A small receive window, so the server's socket fills up quickly.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(server.addr).await.unwrap();
    let (mut tcp, status) = upgrade(tcp, "/app/app-key?protocol=7", Some(KEY_HEADER)).await;
    assert_eq!(status, 101);
    tcp.write_all(&frame(
        0x81,
        json!({"event":"pusher:subscribe","data":{"channel":"slow"}})
            .to_string()
            .as_bytes(),
    ))
    .await
    .unwrap();
    let api = server.api();
    api.wait_subscription_count("slow", 1).await;
    // Stop reading while 5 KB events pile up far beyond what the sockets can hold.
    let data = "x".repeat(5000);
    for _ in 0..100 {
        let batch: Vec<_> = (0..10)
            .map(|_| json!({"name":"e","channel":"slow","data":data}))
            .collect();
        assert_eq!(
            api.post("/batch_events", &json!({"batch":batch}).to_string())
                .await
                .0,
            200
        );
    }
    // Longer than the old one-second close timeout before the client reads again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(close_code(&mut tcp).await, Some(4100));
    server.stop().await;
}
