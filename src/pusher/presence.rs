//! Members of presence channels on this node: one member per user id however many sockets it
//! has in the channel, with the `user_info` of its first socket.
//!
//! Herald's own presence (`crate::presence`) tracks rooms of verified or self-asserted Herald
//! users and announces `user_joined`/`user_left` in Herald's format with statuses and cursors;
//! a Pusher member is a different thing (an id and an opaque `user_info` signed by the app's
//! backend per subscription), so the Pusher face keeps its own small map. A node-wide lock guards
//! it; it is taken on subscribe, unsubscribe and disconnect of presence channels only, never on
//! the delivery path.
//!
//! With Redis, each node also records its members of a channel in the hash
//! `<key_prefix>:pp:<hub channel>`, one field `<user> <incarnation>` per member per node (value:
//! the `user_info`), written when the member's first socket on the node arrives and deleted when
//! its last leaves. A node announces `member_added` only when no other live incarnation has a
//! field for the user, and `member_removed` only when none is left, so a user with sockets on two
//! nodes is one member; the member list merges the live incarnations' fields (the node registry
//! says which are live), so a dead node's members drop out of lists and counts at once. Every
//! node sweeps the presence channels its own members are in for fields of dead incarnations;
//! `HDEL` answers 1 to exactly one node, which announces `member_removed` for a user no live node
//! still has.

use std::collections::HashMap;
use std::sync::Arc;

use indexmap::IndexMap;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

use super::PusherOf;
use crate::node::Node;

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
}

fn field(user: &str, incarnation: &str) -> String {
    format!("{user} {incarnation}")
}

fn key(redis: &crate::broker::redis::RedisBroker, channel: &str) -> String {
    crate::broker::keys::trailing(redis.key_prefix(), "pp", channel)
}

/// The fields of `channel` recorded by other live nodes: user → `user_info`.
async fn elsewhere(node: &Node, channel: &str) -> Option<HashMap<String, Value>> {
    let redis = node.pusher().shared()?;
    let fields: redis::RedisResult<HashMap<String, String>> =
        redis.query_as(redis::cmd("HGETALL").arg(key(redis, channel))).await;
    let (Ok(fields), Ok(live)) = (fields, redis.live_incarnations().await) else { return None };
    let mut out = HashMap::new();
    for (field, info) in fields {
        if let Some((user, incarnation)) = field.rsplit_once(' ')
            && incarnation != redis.incarnation()
            && live.contains(incarnation)
        {
            out.insert(user.to_string(), serde_json::from_str(&info).unwrap_or(Value::Null));
        }
    }
    Some(out)
}

/// Adds a socket's member on this node and, with Redis, records it for the cluster. `New` only
/// when the user is a new member of the channel cluster-wide.
pub async fn join(node: &Node, channel: &Arc<str>, user: &str, info: Value, max: usize) -> Added {
    let added = node.pusher().presence.add(channel, user, info.clone(), max);
    if added != Added::New {
        return added;
    }
    let Some(redis) = node.pusher().shared() else { return added };
    let others = elsewhere(node, channel).await;
    let write =
        redis::cmd("HSET").arg(key(redis, channel)).arg(field(user, redis.incarnation())).arg(info.to_string()).clone();
    if let Err(e) = redis.query_as::<()>(&write).await {
        tracing::debug!(error = %e, "could not record a presence member in Redis");
    }
    if others.is_some_and(|o| o.contains_key(user)) { Added::Again } else { Added::New }
}

/// Removes a socket's member on this node; `true` when the user has left the channel
/// cluster-wide (announce `member_removed`).
pub async fn leave(node: &Node, channel: &str, user: &str) -> bool {
    if !node.pusher().presence.remove(channel, user) {
        return false;
    }
    let Some(redis) = node.pusher().shared() else { return true };
    let delete = redis::cmd("HDEL").arg(key(redis, channel)).arg(field(user, redis.incarnation())).clone();
    if let Err(e) = redis.query_as::<()>(&delete).await {
        tracing::debug!(error = %e, "could not remove a presence member from Redis");
    }
    !elsewhere(node, channel).await.is_some_and(|o| o.contains_key(user))
}

/// The members of `channel` across the cluster: user → `user_info`, this node's first.
pub async fn members(node: &Node, channel: &str) -> IndexMap<String, Value> {
    let mut out: IndexMap<String, Value> = {
        let channels = node.pusher().presence.channels.lock();
        channels
            .get(channel)
            .map(|m| m.iter().map(|(id, member)| (id.clone(), member.info.clone())).collect())
            .unwrap_or_default()
    };
    if let Some(others) = elsewhere(node, channel).await {
        for (user, info) in others {
            out.entry(user).or_insert(info);
        }
    }
    out
}

/// Writes this node's members again (a Redis restart or flush loses them), removes the fields of
/// dead nodes from the presence channels this node has members in, and announces the departures
/// no live node covers (once: `HDEL` answers 1 to one sweeping node).
pub async fn sweep(node: &Node) {
    let Some(redis) = node.pusher().shared() else { return };
    let own: Vec<(Arc<str>, String, String)> = {
        let channels = node.pusher().presence.channels.lock();
        channels
            .iter()
            .flat_map(|(channel, members)| {
                members.iter().map(|(user, m)| (channel.clone(), user.clone(), m.info.to_string()))
            })
            .collect()
    };
    if own.is_empty() {
        return;
    }
    let mut pipe = redis::pipe();
    for (channel, user, info) in &own {
        pipe.cmd("HSET").arg(key(redis, channel)).arg(field(user, redis.incarnation())).arg(info).ignore();
    }
    if let Err(e) = redis.pipeline_as::<()>(&pipe).await {
        tracing::debug!(error = %e, "could not refresh Pusher presence in Redis");
    }
    let mut channels: Vec<Arc<str>> = own.into_iter().map(|(channel, _, _)| channel).collect();
    channels.dedup();
    let Ok(live) = redis.live_incarnations().await else { return };
    for channel in channels {
        let Some((app, name)) = node.pusher().app_of_hub(&channel) else { continue };
        let fields: redis::RedisResult<HashMap<String, String>> =
            redis.query_as(redis::cmd("HGETALL").arg(key(redis, &channel))).await;
        let Ok(fields) = fields else { continue };
        let present: std::collections::HashSet<&str> = fields
            .keys()
            .filter_map(|f| f.rsplit_once(' '))
            .filter(|(_, incarnation)| live.contains(*incarnation))
            .map(|(user, _)| user)
            .collect();
        for field in fields.keys() {
            let Some((user, incarnation)) = field.rsplit_once(' ') else { continue };
            if live.contains(incarnation) {
                continue;
            }
            let removed: redis::RedisResult<i64> =
                redis.query_as(redis::cmd("HDEL").arg(key(redis, &channel)).arg(field)).await;
            let local = node.pusher().presence.channels.lock().get(&channel).is_some_and(|m| m.contains_key(user));
            if removed == Ok(1) && !present.contains(user) && !local {
                let gone = json!({ "user_id": user });
                let payload = super::protocol::message_json("pusher_internal:member_removed", Some(name), &gone);
                let target = crate::hub::Target { channel: Some(channel.clone()), ..Default::default() };
                super::publish_internal(node, crate::hub::Event::new(target, payload)).await;
                let hook = json!({ "name": "member_removed", "channel": name, "user_id": user });
                node.pusher().webhooks.send(app, hook);
            }
        }
    }
}

/// The `presence` object of `pusher_internal:subscription_succeeded`, cluster-wide.
pub async fn snapshot(node: &Node, channel: &str) -> Value {
    let members = members(node, channel).await;
    let ids: Vec<&String> = members.keys().collect();
    let hash: Map<String, Value> = members.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    json!({ "presence": { "count": ids.len(), "ids": ids, "hash": hash } })
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
        assert_eq!(members.channels.lock()["presence-x"]["u1"].info["name"], "A");
        assert!(!members.remove("presence-x", "u1"));
        assert!(members.remove("presence-x", "u1"));
        assert!(!members.remove("presence-x", "u1"));
        assert_eq!(members.ids("presence-x"), vec!["u2"]);
        assert!(members.remove("presence-x", "u2"));
        assert_eq!(members.count("presence-x"), 0);
    }
}
