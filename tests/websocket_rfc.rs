//! WebSocket framing as RFC 6455 wants it, checked with raw bytes on a raw socket: every
//! protocol violation closes with its code (1002, 1007, 1009) instead of 1000, a client's
//! close is echoed, a malformed handshake is refused before any upgrade, and a slow
//! consumer gets the 4100 close frame once it reads again.

mod support;

use std::time::Duration;

use serde_json::json;
use support::raw::*;
use support::*;
use tokio::io::AsyncWriteExt;

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
    let mut tcp = stalled_pusher(server.addr, "slow").await;
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
