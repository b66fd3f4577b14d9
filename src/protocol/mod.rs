//! The wire protocol: JSON text frames with a `type` field (DESIGN.md section 4).
//!
//! `inbound` parses what clients send, `outbound` builds what Herald itself says, `error` lists the
//! codes, and `template` fills names like `campaign:{campaign_id}` from query parameters.

mod error;
pub mod inbound;
pub mod msgpack;
pub mod outbound;
pub mod template;

pub use error::ErrorCode;
pub use inbound::{Inbound, ProtocolError, validate_name};
