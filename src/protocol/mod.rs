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

/// The app's own name of a hub channel of any Pusher app (`"\x1fp<id>\x1f<C>"` gives `C`), or
/// `None` for a name of Herald's own protocol. The namespace form lives here, beside
/// [`validate_name`] (which refuses control characters in every Herald name), so that the parts
/// below the Pusher face (history's patterns) can read it.
pub fn bare_channel(hub: &str) -> Option<&str> {
    hub.strip_prefix("\u{1f}p")?.split_once('\u{1f}').map(|(_, name)| name)
}
