//! Herald: a real-time gateway. Backends publish events; Herald pushes each one over WebSocket
//! to exactly the connections that should see it.
//!
//! The crate is laid out by part (see `ARCHITECTURE.md`):
//!
//! - [`config`]: one typed configuration from file, environment and flags.
//! - [`transport`]: listener, HTTP serving, WebSocket handshake and framing, sockets.
//! - [`session`]: one connection: identity, subscriptions, rooms, outbound queue, reader.
//! - [`hub`]: which connections an event reaches; shards that fan it out.
//! - [`broker`]: moving events between nodes.
//! - [`auth`]: identities and access.
//! - [`api`]: the HTTP surface: publish, admin, stats, health, metrics.
//! - [`protocol`]: the JSON wire protocol.
//! - [`stats`]: counters and rates.
//! - [`node`] and [`server`]: assembling and running a node.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod audit;
pub mod auth;
pub mod broker;
pub mod build_info;
pub mod cells;
pub mod config;
pub mod gateway;
pub mod hub;
pub mod limits;
pub mod node;
pub mod presence;
pub mod protocol;
pub mod publish;
pub mod pusher;
pub mod reload;
pub mod report;
pub mod server;
pub mod session;
pub mod stats;
pub mod store;
pub mod streams;
pub mod transport;
pub mod upstream;
pub mod web;
