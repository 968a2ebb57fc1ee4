//! Switchboard: a self-hosted real-time event server speaking Pusher Channels protocol v7 and
//! a native JSON bus protocol.
//!
//! # Layout
//!
//! From the bottom up (ARCHITECTURE.md has each module's dependencies; `tests/architecture.rs`
//! checks they form a DAG):
//!
//! - [`ids`], [`clock`], [`filter`], [`metrics`], [`config`]: identifiers (one parse rule
//!   each), time, tag filters, every metric, settings. [`tap`]: the live console's copy
//!   of deliveries.
//! - [`event`]: the protocol-neutral [`event::Event`]; [`frame`]: neutral output (frames,
//!   encoders, close reasons).
//! - [`protocol`]: wire formats. Every type that appears on a socket, or between nodes,
//!   lives here.
//! - [`hub`]: this node's registry of channels, users and watchers; delivers an event by
//!   encoding it once per wire format and queueing the bytes on each connection's bounded
//!   outbox. It knows no protocol.
//! - [`store`] (redb under `data.dir`), [`redis_base`] (connection, scripts) and [`pg`]
//!   (connection settings, migrations): what the embedded, Redis and PostgreSQL
//!   implementations of the seams build on.
//! - [`offline`], [`presence`], [`idempotency`]: offline queues, presence and user status,
//!   publishers' idempotency keys; memory/embedded and Redis each.
//! - [`broker`]: orders, stores and delivers an event (`Broker::publish` → `Hub::deliver`).
//! - [`push`]: push notifications for offline users.
//! - [`publish`]: the one way to publish (`Publisher`) and the checks on what publishers
//!   send (`publish::input`).
//! - [`apps`], [`auth`], [`contacts`]: applications (`AppStore`), signatures and tokens, who
//!   may see whose presence.
//! - [`status`], [`webhooks`]: status announcements to watchers; Pusher webhooks.
//! - [`session`]: the neutral session core (outbox, writer, heartbeat, close) over a
//!   transport, and the Pusher and bus protocols on it.
//! - [`tls`]: the listener's certificate, reloaded while the node runs.
//! - [`http`]: the one router (WebSocket endpoints, signed HTTP APIs, health) and the
//!   accept loop that guards the door.
//! - [`ingest`]: PostgreSQL outbox rows become events, on one node at a time; [`cluster`]:
//!   leases, the reaper of dead nodes, the count sync.
//! - [`server`]: the wiring, `server::run(listener, metrics_listener, config, shutdown)`.

pub mod apps;
pub mod auth;
pub mod broker;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod contacts;
pub mod event;
pub mod filter;
pub mod frame;
pub mod http;
pub mod hub;
pub mod idempotency;
pub mod ids;
pub mod ingest;
pub mod metrics;
pub mod offline;
pub mod pg;
pub mod presence;
pub mod protocol;
pub mod publish;
pub mod push;
pub mod redis_base;
pub mod server;
pub mod session;
pub mod status;
pub mod store;
pub mod tap;
pub mod tls;
pub mod webhooks;
