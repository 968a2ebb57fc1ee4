//! A raw WebSocket client on a raw socket: hand-made frames, the server's frames parsed
//! byte by byte, for what a well-behaved client library cannot send or would hide.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::WAIT;

pub const KEY_HEADER: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Sends an upgrade request with `key` to `path`; returns the socket and the status.
pub async fn handshake(addr: SocketAddr, path: &str, key: Option<&str>) -> (TcpStream, u16) {
    upgrade(TcpStream::connect(addr).await.unwrap(), path, key).await
}

/// Sends an upgrade request on `tcp` and reads the answer's head (and nothing after it).
pub async fn upgrade(mut tcp: TcpStream, path: &str, key: Option<&str>) -> (TcpStream, u16) {
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

pub async fn pusher_socket(addr: SocketAddr) -> TcpStream {
    let (tcp, status) = handshake(addr, "/app/app-key?protocol=7", Some(KEY_HEADER)).await;
    assert_eq!(status, 101);
    tcp
}

/// One masked client frame with the first byte `b0` (FIN, RSV, opcode) and `payload`.
pub fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
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
pub async fn close_code(tcp: &mut TcpStream) -> Option<u16> {
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

/// A Pusher connection from a socket with a 4 KiB receive buffer that the test then
/// leaves unread: a slow consumer whose queue fills at once. Subscribed to `channel`.
pub async fn stalled_pusher(addr: SocketAddr, channel: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let (mut tcp, status) = upgrade(tcp, "/app/app-key?protocol=7", Some(KEY_HEADER)).await;
    assert_eq!(status, 101);
    let subscribe = serde_json::json!({"event":"pusher:subscribe","data":{"channel":channel}});
    tcp.write_all(&frame(0x81, subscribe.to_string().as_bytes()))
        .await
        .unwrap();
    tcp
}
