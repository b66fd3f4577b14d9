//! Error codes sent to clients in `{"type":"error","code":…}`.

use serde::Serialize;

/// A machine-readable error code. The first seven are the collaborative-spreadsheet profile's;
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
    /// Every code, in declaration order (`ALL[code.index()] == code`).
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::AuthenticationFailed,
        ErrorCode::PermissionDenied,
        ErrorCode::RateLimitExceeded,
        ErrorCode::InvalidJson,
        ErrorCode::UnknownMessageType,
        ErrorCode::RoomNotFound,
        ErrorCode::InternalError,
        ErrorCode::MessageTooLarge,
        ErrorCode::InvalidMessage,
        ErrorCode::InvalidName,
        ErrorCode::UnsupportedFrame,
        ErrorCode::LimitExceeded,
        ErrorCode::VersionConflict,
        ErrorCode::Unavailable,
    ];

    /// The code's position in [`ErrorCode::ALL`], for counters kept per code.
    pub fn index(self) -> usize {
        self as usize
    }

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

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    /// Counters per code are indexed by `index()`: every code sits at its own position in `ALL`,
    /// each spelled differently.
    #[test]
    fn all_lists_every_code_at_its_index() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code.index(), i, "{code}");
        }
        let spellings: std::collections::HashSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(spellings.len(), ErrorCode::ALL.len());
        // The last variant is the last entry: a variant added after it must be added to ALL.
        assert_eq!(ErrorCode::Unavailable.index(), ErrorCode::ALL.len() - 1);
    }
}
