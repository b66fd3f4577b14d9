//! Per-room activity for the bare rooms list (`api.bare_room_list`): events sent to the room,
//! the last of them, and distinct users per hour, as this node saw them. Recorded only when that
//! list is configured, so other deployments pay one branch per room event.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;

/// Rooms tracked at most; past it, rooms quiet for an hour are forgotten first.
const MAX_ROOMS: usize = 10_000;
/// Distinct users remembered per room (for `avg_users_per_hour`).
const MAX_USERS: usize = 10_000;
const HOUR_MS: i64 = 3_600_000;

#[derive(Debug, Default)]
struct Activity {
    messages: u64,
    last: i64,
    since: i64,
    users: HashSet<Arc<str>>,
}

/// What the rooms list shows of one room.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Events sent to the room.
    pub messages_sent: u64,
    /// Unix milliseconds of the last event or join.
    pub last_activity: i64,
    /// Distinct users who joined, per hour since the room was first seen (at least one hour).
    pub avg_users_per_hour: f64,
}

/// The activity of every room this node saw.
#[derive(Debug, Default)]
pub struct RoomActivity {
    rooms: Mutex<HashMap<Arc<str>, Activity>>,
}

impl RoomActivity {
    fn with(&self, room: &Arc<str>, at: i64, change: impl FnOnce(&mut Activity)) {
        let mut rooms = self.rooms.lock();
        if rooms.len() >= MAX_ROOMS && !rooms.contains_key(room) {
            rooms.retain(|_, a| at - a.last < HOUR_MS);
            if rooms.len() >= MAX_ROOMS {
                return;
            }
        }
        let activity = rooms.entry(room.clone()).or_insert_with(|| Activity { since: at, ..Activity::default() });
        activity.last = activity.last.max(at);
        change(activity);
    }

    /// An event was sent to `room`.
    pub fn message(&self, room: &Arc<str>, at: i64) {
        self.with(room, at, |a| a.messages += 1);
    }

    /// `user` joined `room`.
    pub fn joined(&self, room: &Arc<str>, user: &Arc<str>, at: i64) {
        self.with(room, at, |a| {
            if a.users.len() < MAX_USERS {
                a.users.insert(user.clone());
            }
        });
    }

    /// The figures of `room` at `now`.
    pub fn summary(&self, room: &str, now: i64) -> Option<Summary> {
        let rooms = self.rooms.lock();
        let activity = rooms.get(room)?;
        let hours = ((now - activity.since) as f64 / HOUR_MS as f64).max(1.0);
        Some(Summary {
            messages_sent: activity.messages,
            last_activity: activity.last,
            avg_users_per_hour: (activity.users.len() as f64 / hours * 10.0).round() / 10.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_messages_and_users_per_hour() {
        let activity = RoomActivity::default();
        let room: Arc<str> = Arc::from("workspace_1");
        activity.joined(&room, &Arc::from("a"), 0);
        activity.joined(&room, &Arc::from("b"), 10);
        activity.joined(&room, &Arc::from("a"), 20);
        activity.message(&room, 30);
        activity.message(&room, 40);
        let now = activity.summary("workspace_1", 50).unwrap();
        assert_eq!((now.messages_sent, now.last_activity, now.avg_users_per_hour), (2, 40, 2.0));
        let later = activity.summary("workspace_1", 4 * HOUR_MS).unwrap();
        assert_eq!(later.avg_users_per_hour, 0.5);
        assert!(activity.summary("other", 0).is_none());
    }
}
