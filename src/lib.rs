//! Switchboard: a self-hosted real-time event server speaking Pusher Channels protocol v7 and
//! a native JSON bus protocol.
//!
//! # Layout
//!
//! - [`ids`], [`event`]: identifiers and the protocol-neutral [`event::Event`]. No async.
//! - [`filter`]: tag filters (an extension): publisher `tags`, subscriber `filter`.
//! - [`protocol`]: wire formats. Every type that appears on a socket lives here.
//! - [`hub`]: this node's registry of channels, users and watchers; delivers an event by
//!   encoding it once per wire and queueing the bytes on each connection's bounded outbox.
//! - [`broker`]: the one publish path (`Broker::publish` → `Hub::deliver`).
//! - [`presence`]: presence-channel membership keyed by user id.
//! - [`apps`]: applications and the `AppStore` seam; [`auth`]: HMAC signatures.
//! - [`status`]: user status (online/away/busy/offline) across both protocols, announced to
//!   watchers; [`contacts`]: who may see whose presence, set by the app.
//! - [`session`]: one reader loop and one writer task per WebSocket (Pusher and bus).
//! - [`http`]: the router (WebSocket endpoints, signed HTTP API, health).
//! - [`webhooks`]: Pusher webhooks, debounced, batched, signed and retried.
//! - [`cluster`]: several nodes as one over Redis (leases, the reaper, count sync);
//!   `broker::RedisBroker`, `presence::RedisPresence` and `status::RedisStatus` are the
//!   Redis implementations of the seams.
//! - [`ingest`]: PostgreSQL outbox ingest (`database.url`): rows of `switchboard.outbox`
//!   become events through the broker, on one node at a time.
//! - [`push`]: push notifications for offline users (decision tree, providers, store).
//! - [`idempotency`]: publishers' idempotency keys (memory, or Redis on a cluster).
//! - [`store`]: the embedded store (redb under `data.dir`) for durable single-node state.
//! - [`config`], [`metrics`], [`context`], [`server`]: settings, metrics, shared handles,
//!   and the wiring with `server::run(listener, metrics_listener, config, shutdown)`.
//!
//! Dependencies point one way: `ids`/`event` ← `protocol` ← `hub` ← `broker`/`presence` ←
//! `session` ← `http` ← `server`. The hub never calls the broker.

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
pub mod presence;
pub mod protocol;
pub mod publish;
pub mod push;
pub mod redis_base;
pub mod server;
pub mod session;
pub mod status;
pub mod store;
pub mod webhooks;
