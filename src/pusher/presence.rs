//! Members of presence channels on this node: one member per user id however many sockets it
//! has in the channel, with the `user_info` of its first socket.
//!
//! Herald's own presence (`crate::presence`) tracks rooms of verified or self-asserted Herald
//! users and announces `user_joined`/`user_left` in Herald's format with statuses and cursors;
//! a Pusher member is a different thing (an id and an opaque `user_info` signed by the app's
//! backend per subscription), so the Pusher face keeps its own small map. A node-wide lock guards
//! it; it is taken on subscribe, unsubscribe and disconnect of presence channels only, never on
//! the delivery path.

use std::collections::HashMap;
use std::sync::Arc;

use indexmap::IndexMap;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

#[derive(Debug, Default)]
struct Member {
    info: Value,
    sockets: usize,
}

/// Presence channels (by hub name) → members.
#[derive(Debug, Default)]
pub struct Members {
    channels: Mutex<HashMap<Arc<str>, IndexMap<String, Member>>>,
}

/// What adding a socket's member did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// A new member: announce `member_added`.
    New,
    /// Another socket of a member already present.
    Again,
    /// The channel already has `max` members.
    Full,
}

impl Members {
    /// Adds a socket of `user` to `channel`.
    pub fn add(&self, channel: &Arc<str>, user: &str, info: Value, max: usize) -> Added {
        let mut channels = self.channels.lock();
        let members = channels.entry(channel.clone()).or_default();
        if let Some(member) = members.get_mut(user) {
            member.sockets += 1;
            return Added::Again;
        }
        if members.len() >= max {
            if members.is_empty() {
                channels.remove(channel);
            }
            return Added::Full;
        }
        members.insert(user.to_string(), Member { info, sockets: 1 });
        Added::New
    }

    /// Removes a socket of `user` from `channel`; `true` when it was the member's last.
    pub fn remove(&self, channel: &str, user: &str) -> bool {
        let mut channels = self.channels.lock();
        let Some(members) = channels.get_mut(channel) else { return false };
        let Some(member) = members.get_mut(user) else { return false };
        member.sockets -= 1;
        if member.sockets > 0 {
            return false;
        }
        members.shift_remove(user);
        if members.is_empty() {
            channels.remove(channel);
        }
        true
    }

    /// The member ids of `channel`.
    pub fn ids(&self, channel: &str) -> Vec<String> {
        self.channels.lock().get(channel).map(|m| m.keys().cloned().collect()).unwrap_or_default()
    }

    /// How many members `channel` has.
    pub fn count(&self, channel: &str) -> usize {
        self.channels.lock().get(channel).map_or(0, IndexMap::len)
    }

    /// The `presence` object of `pusher_internal:subscription_succeeded`.
    pub fn snapshot(&self, channel: &str) -> Value {
        let channels = self.channels.lock();
        let mut ids = Vec::new();
        let mut hash = Map::new();
        if let Some(members) = channels.get(channel) {
            for (id, member) in members {
                ids.push(Value::from(id.as_str()));
                hash.insert(id.clone(), member.info.clone());
            }
        }
        json!({ "presence": { "count": ids.len(), "ids": ids, "hash": hash } })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_member_per_user_however_many_sockets() {
        let members = Members::default();
        let channel: Arc<str> = Arc::from("presence-x");
        assert_eq!(members.add(&channel, "u1", json!({"name": "A"}), 2), Added::New);
        assert_eq!(members.add(&channel, "u1", json!({"name": "B"}), 2), Added::Again);
        assert_eq!(members.add(&channel, "u2", Value::Null, 2), Added::New);
        assert_eq!(members.add(&channel, "u3", Value::Null, 2), Added::Full);
        assert_eq!(members.snapshot("presence-x")["presence"]["hash"]["u1"]["name"], "A");
        assert!(!members.remove("presence-x", "u1"));
        assert!(members.remove("presence-x", "u1"));
        assert!(!members.remove("presence-x", "u1"));
        assert_eq!(members.ids("presence-x"), vec!["u2"]);
        assert!(members.remove("presence-x", "u2"));
        assert_eq!(members.count("presence-x"), 0);
    }
}
