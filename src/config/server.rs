//! `[server]`: the listener, the door's timeouts and the node-wide limits.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Listener, timeouts and node-wide limits.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to bind (`SWITCHBOARD_HOST`).
    pub host: String,
    /// Port to bind (`SWITCHBOARD_PORT`).
    pub port: u16,
    /// Seconds of client silence before the server pings (advertised to Pusher clients).
    pub activity_timeout: u64,
    /// Seconds to wait for a pong before closing with 4201.
    pub pong_timeout: u64,
    /// Connections on this node. Breach: Pusher 4100, bus 503.
    pub max_connections: usize,
    /// Frames queued per connection before it is closed as a slow consumer.
    pub outbox_capacity: usize,
    /// Bytes queued per connection before it is closed as a slow consumer (0 = no bound).
    pub outbox_max_bytes: usize,
    /// Bytes queued for all connections of the node; past it, connections holding more
    /// than their share are closed as slow consumers (0 = no bound).
    pub outbox_total_bytes: usize,
    /// Largest WebSocket message accepted from a client, in bytes.
    pub max_message_bytes: usize,
    /// Largest HTTP API request body, in bytes.
    pub max_body_bytes: usize,
    /// Seconds to wait for connections to close on shutdown.
    pub shutdown_grace: u64,
    /// Milliseconds between the shutdown signal and closing connections, during which the
    /// node answers its readiness probes 503 (and refuses new WebSocket connections) so a
    /// load balancer can take it out first (soketi's `shutdownGracePeriod`; 0 = none).
    pub shutdown_delay_ms: u64,
    /// Seconds a cache channel keeps its last event (Pusher's maximum: 30 minutes).
    pub cache_ttl_secs: u64,
    /// Cache channels remembered per node (memory mode); beyond it the oldest is replaced.
    pub cache_max_channels: usize,
    /// Bytes a WebSocket connection reads per system call (64 to 16384); no read buffer is
    /// held while a connection is idle.
    pub ws_read_buffer: usize,
    /// Bytes of frames a WebSocket connection gathers before writing them without waiting
    /// for more (one vectored write per batch).
    pub ws_write_buffer: usize,
    /// Milliseconds a client has to send a request's headers (and, on a keep-alive
    /// connection, the next request) before the socket is closed.
    pub header_timeout_ms: u64,
    /// Milliseconds a client has to send a request's body; past it: 408.
    pub body_timeout_ms: u64,
    /// Largest request head (request line and headers), in bytes; past it: 431.
    pub max_header_bytes: usize,
    /// Sockets one client address may hold open (0 = no limit); past it: 429.
    pub max_connections_per_ip: usize,
    /// `GET /accept-traffic` answers 503 once the process's resident memory reaches this
    /// share of the machine's (or its cgroup's) memory, in percent (0 = never).
    pub accept_traffic_memory_percent: u8,
    /// `wss://` and `https://` on the same port, when a certificate is given.
    pub tls: TlsConfig,
}

/// `[server.tls]`: PEM files of the certificate (chain) and its private key. Both or neither.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// The private key of the leaf (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    /// The two files, when TLS is on.
    pub fn files(&self) -> Option<(&PathBuf, &PathBuf)> {
        self.cert_file.as_ref().zip(self.key_file.as_ref())
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 6001,
            activity_timeout: 120,
            pong_timeout: 30,
            max_connections: 10_000,
            outbox_capacity: 1_000,
            outbox_max_bytes: 4 * 1024 * 1024,
            outbox_total_bytes: 1024 * 1024 * 1024,
            max_message_bytes: 64 * 1024,
            max_body_bytes: 1024 * 1024,
            shutdown_grace: 10,
            shutdown_delay_ms: 0,
            cache_ttl_secs: 1800,
            cache_max_channels: 100_000,
            ws_read_buffer: 1024,
            ws_write_buffer: 8 * 1024,
            header_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            max_header_bytes: 64 * 1024,
            max_connections_per_ip: 1000,
            accept_traffic_memory_percent: 85,
            tls: TlsConfig::default(),
        }
    }
}

impl ServerConfig {
    /// `activity_timeout` as a duration.
    pub fn activity_timeout(&self) -> Duration {
        Duration::from_secs(self.activity_timeout)
    }
    /// `pong_timeout` as a duration.
    pub fn pong_timeout(&self) -> Duration {
        Duration::from_secs(self.pong_timeout)
    }
    /// `body_timeout_ms` as a duration.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }
}
