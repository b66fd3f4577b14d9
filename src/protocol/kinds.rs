//! The client message types Herald handles itself: one table that the dispatcher matches on and
//! that configuration checks (an alias or a forwarded type may not take one of these names), so
//! the two cannot drift apart.

/// A message type with a handler of Herald's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// `ping`
    Ping,
    /// `refresh_token`
    RefreshToken,
    /// `chat_message`
    ChatMessage,
    /// `mark_read` or `read_receipt`
    MarkRead,
    /// `subscribe`
    Subscribe,
    /// `unsubscribe`
    Unsubscribe,
    /// `join_room`
    JoinRoom,
    /// `leave_room`
    LeaveRoom,
    /// `status_update`
    StatusUpdate,
    /// `typing_start`
    TypingStart,
    /// `typing_stop`
    TypingStop,
    /// `cursor_move`
    CursorMove,
    /// `cell_update`
    CellUpdate,
    /// `subscribe_notifications`
    SubscribeNotifications,
    /// `history`
    History,
    /// `notification_read`
    NotificationRead,
}

/// Every name of a built-in type and what it means. The dispatcher finds a message's handler
/// here and nowhere else.
pub const BUILT_IN: &[(&str, Builtin)] = &[
    ("ping", Builtin::Ping),
    ("refresh_token", Builtin::RefreshToken),
    ("chat_message", Builtin::ChatMessage),
    ("mark_read", Builtin::MarkRead),
    ("read_receipt", Builtin::MarkRead),
    ("subscribe", Builtin::Subscribe),
    ("unsubscribe", Builtin::Unsubscribe),
    ("join_room", Builtin::JoinRoom),
    ("leave_room", Builtin::LeaveRoom),
    ("status_update", Builtin::StatusUpdate),
    ("typing_start", Builtin::TypingStart),
    ("typing_stop", Builtin::TypingStop),
    ("cursor_move", Builtin::CursorMove),
    ("cell_update", Builtin::CellUpdate),
    ("subscribe_notifications", Builtin::SubscribeNotifications),
    ("history", Builtin::History),
    ("notification_read", Builtin::NotificationRead),
];

/// Labels of the per-type message counters beyond the built-in names: an application alias, a
/// type forwarded to the backend, a type nobody handles, and a frame that is not a message. With
/// the built-in names they are a closed set, so a client cannot grow the metrics.
pub const OTHER_LABELS: [&str; 4] = ["alias", "forwarded", "unknown", "invalid"];

/// How many `type` labels there are.
pub const LABELS: usize = BUILT_IN.len() + OTHER_LABELS.len();

/// Index of the `type` label "alias".
pub const ALIAS: usize = BUILT_IN.len();
/// Index of the `type` label "forwarded".
pub const FORWARDED: usize = BUILT_IN.len() + 1;
/// Index of the `type` label "unknown".
pub const UNKNOWN: usize = BUILT_IN.len() + 2;
/// Index of the `type` label "invalid".
pub const INVALID: usize = BUILT_IN.len() + 3;

/// The `type` label at `index` (see [`LABELS`]).
pub fn label(index: usize) -> &'static str {
    match BUILT_IN.get(index) {
        Some((name, _)) => name,
        None => OTHER_LABELS.get(index - BUILT_IN.len()).copied().unwrap_or("unknown"),
    }
}

/// The label index of a built-in name.
pub fn built_in_index(kind: &str) -> Option<usize> {
    BUILT_IN.iter().position(|(name, _)| *name == kind)
}

impl Builtin {
    /// The built-in type called `kind`, if there is one.
    pub fn parse(kind: &str) -> Option<Builtin> {
        BUILT_IN.iter().find(|(name, _)| *name == kind).map(|(_, builtin)| *builtin)
    }
}

/// Whether `kind` is handled by Herald itself.
pub fn is_built_in(kind: &str) -> bool {
    Builtin::parse(kind).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_name_once_and_history_among_them() {
        let mut names: Vec<&str> = BUILT_IN.iter().map(|(name, _)| *name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), BUILT_IN.len(), "a name appears twice");
        assert_eq!(Builtin::parse("history"), Some(Builtin::History));
        assert_eq!(Builtin::parse("read_receipt"), Some(Builtin::MarkRead));
        assert_eq!(Builtin::parse("ai_request"), None);
    }
}
