//! Per-connection state of the interactive features (typing, cursors, notification filters).
//!
//! Most connections never type, move a cursor or filter notifications, so the state is allocated
//! on first use and a plain connection pays one pointer for it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use crate::hub::event::NotificationTags;
use crate::protocol::{ErrorCode, ProtocolError};

/// What one connection is doing right now.
#[derive(Debug, Default)]
pub struct LiveState {
    /// (room, cell) → when the typing state expires without a stop.
    pub typing: HashMap<(Arc<str>, Option<String>), Instant>,
    /// room → cursor coalescing state.
    pub cursors: HashMap<Arc<str>, CursorState>,
    /// room → (start of the current second, typing starts announced in it).
    pub typing_starts: HashMap<Arc<str>, (Instant, u32)>,
    /// Which notifications this connection wants; `None` means all of them.
    pub notifications: Option<NotificationFilter>,
}

/// Coalescing of one connection's cursor in one room.
#[derive(Debug)]
pub struct CursorState {
    /// When the last `cursor_moved` went out.
    pub last_sent: Instant,
    /// The newest position not sent yet, and whether a flush is scheduled for it.
    pub pending: Option<Value>,
    /// A flush task is waiting for the interval to pass.
    pub flush_scheduled: bool,
}

/// Most values one list of a notification filter may hold (the filter lives as long as the
/// connection).
const MAX_FILTER_VALUES: usize = 100;

/// A `subscribe_notifications` filter: each list, when given, must contain the notification's
/// value. A notification without a value for a filtered field passes (nothing to refuse it on).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotificationFilter {
    /// Accepted categories.
    pub categories: Option<HashSet<String>>,
    /// Accepted modules (`module_name`).
    pub modules: Option<HashSet<String>>,
    /// Accepted priorities.
    pub priorities: Option<HashSet<String>>,
}

impl NotificationFilter {
    /// Reads the filter of a `subscribe_notifications` message.
    pub fn parse(body: &serde_json::Map<String, Value>) -> Result<NotificationFilter, ProtocolError> {
        let list = |field: &str| -> Result<Option<HashSet<String>>, ProtocolError> {
            match body.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Array(items)) if items.len() > MAX_FILTER_VALUES => Err(ProtocolError::new(
                    ErrorCode::InvalidMessage,
                    format!("field {field:?} may list at most {MAX_FILTER_VALUES} values"),
                )),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|item| match item {
                        Value::String(s) if s.len() <= 100 => Ok(s.clone()),
                        _ => Err(ProtocolError::new(
                            ErrorCode::InvalidMessage,
                            format!("field {field:?} must be a list of strings of at most 100 characters"),
                        )),
                    })
                    .collect::<Result<HashSet<_>, _>>()
                    .map(Some),
                Some(_) => Err(ProtocolError::new(
                    ErrorCode::InvalidMessage,
                    format!("field {field:?} must be a list of strings"),
                )),
            }
        };
        Ok(NotificationFilter {
            categories: list("categories")?,
            modules: list("modules")?,
            priorities: list("priorities")?,
        })
    }

    /// Whether a notification with these tags passes.
    pub fn accepts(&self, tags: &NotificationTags) -> bool {
        fn passes(allowed: &Option<HashSet<String>>, value: &Option<String>) -> bool {
            match (allowed, value) {
                (Some(allowed), Some(value)) => allowed.contains(value),
                _ => true,
            }
        }
        passes(&self.categories, &tags.category)
            && passes(&self.modules, &tags.module)
            && passes(&self.priorities, &tags.priority)
    }

    /// The filter as the acknowledgement shows it.
    pub fn json(&self) -> Value {
        let sorted = |set: &Option<HashSet<String>>| {
            set.as_ref().map(|s| {
                let mut v: Vec<&String> = s.iter().collect();
                v.sort();
                Value::from(v.into_iter().cloned().collect::<Vec<_>>())
            })
        };
        serde_json::json!({
            "categories": sorted(&self.categories),
            "modules": sorted(&self.modules),
            "priorities": sorted(&self.priorities),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tags(c: &str, m: &str, p: &str) -> NotificationTags {
        NotificationTags { category: Some(c.into()), module: Some(m.into()), priority: Some(p.into()) }
    }

    #[test]
    fn every_given_list_must_match() {
        let Value::Object(body) = json!({"categories": ["system", "workspace"], "priorities": ["high"]}) else {
            unreachable!()
        };
        let filter = NotificationFilter::parse(&body).unwrap();
        assert!(filter.accepts(&tags("system", "ai", "high")));
        assert!(!filter.accepts(&tags("tasks", "ai", "high")));
        assert!(!filter.accepts(&tags("system", "ai", "normal")));
        assert!(filter.accepts(&NotificationTags::default()));
    }

    #[test]
    fn wrong_types_are_refused() {
        let many: Vec<String> = (0..=MAX_FILTER_VALUES).map(|i| i.to_string()).collect();
        for body in [json!({"categories": "system"}), json!({"modules": [1]}), json!({"priorities": many})] {
            let Value::Object(body) = body else { unreachable!() };
            assert_eq!(NotificationFilter::parse(&body).unwrap_err().code, ErrorCode::InvalidMessage);
        }
    }
}
