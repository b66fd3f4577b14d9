//! Bytes on the wire: the listener, HTTP serving on shards, the WebSocket handshake and framing,
//! and the socket abstraction that lets a shard write to many connections in one pass.

pub mod deflate;
pub mod fallback;
pub mod frame;
pub mod handshake;
pub mod http;
pub mod io;
pub(crate) mod listener;
pub mod tls;
pub mod upgrade;
