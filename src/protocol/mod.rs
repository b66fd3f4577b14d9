//! The wire protocol: JSON text frames with a `type` field (DESIGN.md section 4).
//!
//! `inbound` parses what clients send, `outbound` builds what Herald itself says, `error` lists the
//! codes, `kinds` the message types Herald handles itself, and `template` fills names like `campaign:{campaign_id}` from query parameters.

mod error;
pub mod inbound;
pub mod kinds;
pub mod msgpack;
pub mod outbound;
pub mod template;

pub use error::ErrorCode;
pub use inbound::{Inbound, ProtocolError, validate_name};
