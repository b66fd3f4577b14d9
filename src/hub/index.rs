//! A shard's own index from channel, room and user to its connections' slots.
//!
//! Each shard indexes only the connections it owns and is the only thread touching its index,
//! so subscribing, joining and fan-out take no lock at all.

use std::collections::HashMap;
use std::sync::Arc;

use indexmap::IndexSet;

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
}
