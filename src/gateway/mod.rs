//! The gateway's front door: the HTTP handlers that take a connection in. `upgrade.rs` decides
//! for a WebSocket upgrade (and a fallback GET alike) whether the node takes the connection, its
//! plan and identity, and hands the socket to a shard; `fallback.rs` serves Server-Sent Events
//! and NDJSON streaming, their commands and tickets. They sit above `session` (they start
//! sessions) and below `api` (which mounts them); the codec, HTTP serving and the socket types
//! they use are `transport`'s.

pub mod fallback;
pub mod upgrade;
