//! A shard's own index from channel, room and user to its connections' slots.
//!
//! Each shard indexes only the connections it owns and is the only thread touching its index,
//! so subscribing, joining and fan-out take no lock at all.

use std::collections::HashMap;
use std::sync::Arc;

use indexmap::IndexSet;

use super::event::{Route, Target};

/// Slots of one key's connections; `swap_remove` keeps removal O(1).
pub(crate) type Members = IndexSet<usize>;

/// One map of the index.
#[derive(Default)]
pub(crate) struct KeyIndex {
    map: HashMap<Arc<str>, Members>,
}

impl KeyIndex {
    /// Adds `slot` under `key`; returns the interned key and whether the key is new on this shard.
    pub(crate) fn add(&mut self, key: &str, slot: usize) -> (Arc<str>, bool) {
        if let Some((name, members)) = self.map.get_key_value(key) {
            let name = name.clone();
            let first = members.is_empty();
            if let Some(members) = self.map.get_mut(key) {
                members.insert(slot);
            }
            return (name, first);
        }
        let name: Arc<str> = Arc::from(key);
        let mut members = Members::default();
        members.insert(slot);
        self.map.insert(name.clone(), members);
        (name, true)
    }

    /// Removes `slot` from `key`; returns whether the key is now empty on this shard.
    pub(crate) fn remove(&mut self, key: &str, slot: usize) -> bool {
        let Some(members) = self.map.get_mut(key) else {
            return false;
        };
        members.swap_remove(&slot);
        if members.is_empty() {
            self.map.remove(key);
            true
        } else {
            false
        }
    }

    /// Connections under `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&Members> {
        self.map.get(key)
    }

    /// Every key with its member count.
    pub(crate) fn counts(&self) -> impl Iterator<Item = (&Arc<str>, usize)> {
        self.map.iter().map(|(k, v)| (k, v.len()))
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// The three maps of a shard.
#[derive(Default)]
pub(crate) struct LocalIndex {
    pub(crate) channels: KeyIndex,
    pub(crate) rooms: KeyIndex,
    pub(crate) users: KeyIndex,
}

impl LocalIndex {
    /// Calls `visit` once for each slot that one copy of an event reaches, by its route: the
    /// channel's subscribers, then the room's members not subscribed to the channel, then the
    /// user's connections in neither. A full route is the three together, so each connection is
    /// visited once however many of the target's keys it is under; a per-key copy from another
    /// node visits only the connections no earlier key reaches, so the copies of one event
    /// together reach each connection once. A room stream's copies put the room first
    /// ([`Route::WholeRoom`], [`Route::ChannelNotInRoom`]). Broadcasts are the shard's (every
    /// session).
    pub(crate) fn for_each_recipient(&self, target: &Target, route: Route, mut visit: impl FnMut(usize)) {
        let (by_channel, by_room, by_user, room_first) = match route {
            Route::Full => (true, true, true, false),
            Route::Channel => (true, false, false, false),
            Route::Room => (false, true, false, false),
            Route::User => (false, false, true, false),
            Route::WholeRoom => (false, true, false, true),
            Route::ChannelNotInRoom => (true, false, false, true),
            Route::Broadcast => return,
        };
        let channel = target.channel.as_deref().and_then(|c| self.channels.get(c));
        let room = target.room.as_deref().and_then(|r| self.rooms.get(r));
        let in_channel = |slot: &usize| channel.is_some_and(|m| m.contains(slot));
        let in_room = |slot: &usize| room.is_some_and(|m| m.contains(slot));
        if by_channel {
            channel.into_iter().flatten().filter(|slot| !(room_first && in_room(slot))).for_each(|slot| visit(*slot));
        }
        if by_room {
            room.into_iter().flatten().filter(|slot| room_first || !in_channel(slot)).for_each(|slot| visit(*slot));
        }
        if by_user {
            let user = target.user.as_deref().and_then(|u| self.users.get(u));
            user.into_iter().flatten().filter(|slot| !in_channel(slot) && !in_room(slot)).for_each(|slot| visit(*slot));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_and_remove_report_transitions() {
        let mut index = KeyIndex::default();
        assert!(index.add("a", 1).1);
        assert!(!index.add("a", 2).1);
        assert!(!index.remove("a", 1));
        assert!(index.remove("a", 2));
        assert!(index.get("a").is_none());
        assert!(!index.remove("a", 2));
    }

    /// Slots 1–2 subscribe to the channel, 2–4 are in the room, 1, 3, 5 and 6 are the user's.
    fn index() -> LocalIndex {
        let mut index = LocalIndex::default();
        for slot in [1, 2] {
            index.channels.add("c", slot);
        }
        for slot in [2, 3, 4] {
            index.rooms.add("r", slot);
        }
        for slot in [1, 3, 5, 6] {
            index.users.add("u", slot);
        }
        index
    }

    fn visited(index: &LocalIndex, target: &Target, route: Route) -> Vec<usize> {
        let mut slots = Vec::new();
        index.for_each_recipient(target, route, |slot| slots.push(slot));
        slots
    }

    #[test]
    fn a_connection_under_several_keys_of_an_event_receives_it_once() {
        let index = index();
        let mut full = visited(&index, &Target::of(Some("c"), Some("r"), Some("u")), Route::Full);
        let len = full.len();
        full.sort();
        full.dedup();
        assert_eq!(len, full.len(), "a slot visited twice");
        assert_eq!(full, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn per_key_copies_together_reach_each_connection_once() {
        let index = index();
        let t = Target::of(Some("c"), Some("r"), Some("u"));
        assert_eq!(visited(&index, &t, Route::Channel), [1, 2]);
        assert_eq!(visited(&index, &t, Route::Room), [3, 4], "room members reached by the channel skipped");
        assert_eq!(visited(&index, &t, Route::User), [5, 6], "the user's connections reached before skipped");
        let mut copies: Vec<usize> =
            [Route::Channel, Route::Room, Route::User].into_iter().flat_map(|r| visited(&index, &t, r)).collect();
        copies.sort();
        let mut full = visited(&index, &t, Route::Full);
        full.sort();
        assert_eq!(copies, full);
    }

    #[test]
    fn a_room_streams_copies_put_the_room_first_and_still_reach_each_connection_once() {
        let index = index();
        let t = Target::of(Some("c"), Some("r"), Some("u"));
        let mut room = visited(&index, &t, Route::WholeRoom);
        room.sort();
        assert_eq!(room, [2, 3, 4], "every member, the channel's subscriber 2 too");
        assert_eq!(visited(&index, &t, Route::ChannelNotInRoom), [1], "members of the room skipped");
        assert_eq!(visited(&index, &t, Route::User), [5, 6]);
        let mut copies: Vec<usize> = [Route::WholeRoom, Route::ChannelNotInRoom, Route::User]
            .into_iter()
            .flat_map(|r| visited(&index, &t, r))
            .collect();
        copies.sort();
        let mut full = visited(&index, &t, Route::Full);
        full.sort();
        assert_eq!(copies, full);
    }

    #[test]
    fn keys_the_event_does_not_name_exclude_nobody() {
        let index = index();
        // Without a channel in the target, channel subscribers in the room are the room's.
        assert_eq!(visited(&index, &Target::of(None, Some("r"), None), Route::Room), [2, 3, 4]);
        assert_eq!(visited(&index, &Target::of(None, None, Some("u")), Route::User), [1, 3, 5, 6]);
        // Keys with no local connections, and broadcasts, visit nothing here.
        assert!(visited(&index, &Target::of(Some("other"), Some("none"), None), Route::Full).is_empty());
        assert!(visited(&index, &Target::of(Some("c"), None, None), Route::Broadcast).is_empty());
    }

    #[test]
    fn removal_keeps_the_remaining_members_reachable_once() {
        let mut index = index();
        index.channels.remove("c", 2);
        let t = Target::of(Some("c"), Some("r"), None);
        assert_eq!(visited(&index, &t, Route::Channel), [1]);
        let mut room = visited(&index, &t, Route::Room);
        room.sort();
        assert_eq!(room, [2, 3, 4], "no longer subscribed, so the room's copy reaches it");
    }
}
