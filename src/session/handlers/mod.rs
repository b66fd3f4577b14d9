//! One file per client message type (or family of types).

pub(crate) mod channels;
pub(crate) mod ping;
pub(crate) mod rooms;
