//! One file per client message type (or family of types).

pub(crate) mod auth;
pub(crate) mod cells;
pub(crate) mod channels;
pub mod chat;
pub mod notifications;
pub(crate) mod ping;
pub(crate) mod presence;
pub(crate) mod rooms;
pub mod streams;
pub(crate) mod upstream;

use crate::protocol::{ErrorCode, ProtocolError};

/// An access refusal as a client error.
pub(crate) fn denied(denied: crate::auth::Denied) -> ProtocolError {
    ProtocolError::new(ErrorCode::PermissionDenied, denied.reason)
}
