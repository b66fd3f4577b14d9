//! Bytes on the wire: the listener, HTTP serving, TLS, the WebSocket handshake, framing and
//! compression, the socket abstraction that lets a shard write to many connections in one pass,
//! and the fallback transports' session map. What takes a connection in (the upgrade and
//! fallback handlers) is `gateway`'s.

pub mod deflate;
pub mod fallback;
pub mod frame;
pub mod handshake;
pub mod http;
pub mod io;
pub(crate) mod listener;
pub mod tls;
