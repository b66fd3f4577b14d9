//! Error codes sent to clients in `{"type":"error","code":…}`.

use serde::Serialize;

/// A machine-readable error code. The first seven are the collaborative-spreadsheet document's;
/// the rest are Herald's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// Missing, malformed, expired or wrongly signed credentials.
    AuthenticationFailed,
    /// The identity may not do this to this room or channel.
    PermissionDenied,
    /// Too many messages; carries a retry hint.
    RateLimitExceeded,
    /// The text frame is not a JSON object.
    InvalidJson,
    /// The `type` is not one Herald handles or forwards.
    UnknownMessageType,
    /// The room does not exist (or is not visible).
    RoomNotFound,
    /// Something failed inside Herald.
    InternalError,
    /// A frame or message exceeded the configured size.
    MessageTooLarge,
    /// A required field is missing or has the wrong type.
    InvalidMessage,
    /// A channel or room name is empty, too long or contains control characters.
    InvalidName,
    /// A binary frame arrived on a connection that speaks JSON text.
    UnsupportedFrame,
    /// The connection reached its maximum number of channels or rooms.
    LimitExceeded,
    /// An edit was based on an outdated version.
    VersionConflict,
    /// A dependency (database, Redis) is unavailable; try again later.
    Unavailable,
}

impl ErrorCode {
    /// The wire spelling, e.g. `INVALID_JSON`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::AuthenticationFailed => "AUTHENTICATION_FAILED",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            ErrorCode::InvalidJson => "INVALID_JSON",
            ErrorCode::UnknownMessageType => "UNKNOWN_MESSAGE_TYPE",
            ErrorCode::RoomNotFound => "ROOM_NOT_FOUND",
            ErrorCode::InternalError => "INTERNAL_ERROR",
            ErrorCode::MessageTooLarge => "MESSAGE_TOO_LARGE",
            ErrorCode::InvalidMessage => "INVALID_MESSAGE",
            ErrorCode::InvalidName => "INVALID_NAME",
            ErrorCode::UnsupportedFrame => "UNSUPPORTED_FRAME",
            ErrorCode::LimitExceeded => "LIMIT_EXCEEDED",
            ErrorCode::VersionConflict => "VERSION_CONFLICT",
            ErrorCode::Unavailable => "UNAVAILABLE",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
