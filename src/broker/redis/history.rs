//! Streams with history on Redis: a Redis Stream and a meta hash per stream, appended to and read
//! by the scripts of [`super::scripts`].

use std::sync::Arc;

use bytes::Bytes;
use redis::Value as RedisValue;

use super::{RedisBroker, bytes_of, envelope};
use crate::broker::BrokerError;
use crate::config::RedisMode;
use crate::hub::Event;

impl RedisBroker {
    pub(super) fn history_keys(&self, stream: &str) -> (String, String) {
        crate::broker::keys::stream(&self.config.key_prefix, stream)
    }

    /// Sequences, records and publishes an event of a stream with history (see `APPEND_LUA` in `scripts.rs`).
    /// `record` is what the stream keeps: the payload, or its sealed form for a sensitive one.
    pub async fn append_and_publish(
        &self,
        node_id: &str,
        event: &Event,
        record: &[u8],
        stream: &str,
        settings: crate::broker::stream::Settings,
    ) -> Result<(), BrokerError> {
        self.ensure_subscribed()?;
        let head = envelope::stream_head(node_id, event, stream);
        let copies = envelope::copies(&event.target, envelope::room_first(&event.target, stream));
        // A script may publish only in its own slot on a Redis Cluster: there it publishes the
        // copy on the stream's own key (first in delivery order, so every follower of the
        // stream gets the stream's events through it, in seq order), and the other copies
        // follow with the seq it gave. With a single Redis it publishes every copy.
        let inside = match self.mode() {
            RedisMode::Standalone => copies.len(),
            RedisMode::Cluster => {
                usize::from(copies.first().is_some_and(|(kind, name)| name.is_some_and(|n| is_stream(stream, kind, n))))
            }
        };
        let (key, meta) = self.history_keys(stream);
        let mut script = self.append_script.key(key);
        script
            .key(meta)
            .arg(crate::broker::stream::new_epoch())
            .arg(settings.size)
            .arg(settings.max_age.as_millis() as u64)
            .arg(record)
            .arg(&head)
            .arg(self.publish_cmd());
        for (kind, name) in &copies[..inside] {
            let mut tail = Vec::with_capacity(event.payload.len() + 16);
            envelope::push_tail(&mut tail, kind, &event.payload);
            script.arg(self.copy_channel(kind, *name)).arg(tail);
        }
        let reply = match self.commands.script(&script).await {
            Ok(reply) => reply,
            Err(e) => {
                self.mark_down(&e.to_string());
                return Err(BrokerError::Unavailable(e.to_string()));
            }
        };
        if inside == copies.len() {
            return Ok(());
        }
        let (seq, epoch): (u64, String) = redis::from_redis_value(reply)
            .map_err(|e| BrokerError::Unavailable(format!("unexpected append reply: {e}")))?;
        let head = format!("{head}{seq},\"p\":{}", serde_json::Value::from(epoch));
        let mut pipe = redis::pipe();
        for (kind, name) in &copies[inside..] {
            pipe.cmd(self.publish_cmd())
                .arg(self.copy_channel(kind, *name))
                .arg(envelope::encode(&head, kind, &event.payload))
                .ignore();
        }
        // The event is recorded and on its stream's key: an error here must not make the caller
        // deliver it again locally. The other keys' recipients miss it, as after any outage.
        if let Err(e) = self.commands.pipeline(&pipe).await {
            tracing::warn!(stream, error = %e, "an event's copies beside its stream's key were not published");
            self.mark_down(&e.to_string());
        }
        Ok(())
    }

    /// A stream's history as Redis holds it.
    pub async fn read_history(
        &self,
        stream: &str,
        settings: crate::broker::stream::Settings,
    ) -> Result<crate::broker::stream::Snapshot, BrokerError> {
        let (key, meta) = self.history_keys(stream);
        let mut script = self.read_script.key(key);
        script.key(meta).arg(settings.size);
        let value = self.commands.script(&script).await.map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let RedisValue::Array(parts) = value else {
            return Err(BrokerError::Unavailable("unexpected history reply".into()));
        };
        let text = |v: &RedisValue| bytes_of(v).and_then(|b| std::str::from_utf8(b).ok()).map(String::from);
        let epoch = parts.first().and_then(text).unwrap_or_default();
        let top = match parts.get(1) {
            Some(RedisValue::Int(n)) => *n as u64,
            Some(other) => text(other).and_then(|t| t.parse().ok()).unwrap_or(0),
            None => 0,
        };
        let mut events = Vec::new();
        if let Some(RedisValue::Array(entries)) = parts.get(2) {
            for entry in entries {
                let RedisValue::Array(entry) = entry else { continue };
                let fields: Vec<&RedisValue> = match entry.get(1) {
                    Some(RedisValue::Array(fields)) => fields.iter().collect(),
                    Some(RedisValue::Map(pairs)) => pairs.iter().flat_map(|(k, v)| [k, v]).collect(),
                    _ => continue,
                };
                let (mut seq, mut payload) = (None, None);
                for pair in fields.chunks(2) {
                    match (pair.first().and_then(|k| bytes_of(k)), pair.get(1)) {
                        (Some(b"s"), Some(v)) => seq = text(v).and_then(|t| t.parse::<u64>().ok()),
                        (Some(b"e"), Some(v)) => payload = bytes_of(v).map(Bytes::copy_from_slice),
                        _ => {}
                    }
                }
                if let (Some(seq), Some(payload)) = (seq, payload) {
                    events.push((seq, payload));
                }
            }
        }
        events.reverse();
        Ok(crate::broker::stream::Snapshot { epoch: Arc::from(epoch), top, events })
    }
}

/// Whether a copy's key (`kind`, `name`) is the stream's own (`c:<channel>`, `r:<room>`).
fn is_stream(stream: &str, kind: &str, name: &str) -> bool {
    stream.strip_prefix(kind).and_then(|rest| rest.strip_prefix(':')) == Some(name)
}

#[cfg(test)]
mod tests {
    use super::is_stream;

    #[test]
    fn a_copy_is_the_streams_own_only_for_its_kind_and_name() {
        assert!(is_stream("c:jobs:1", "c", "jobs:1"));
        assert!(is_stream("r:order_7", "r", "order_7"));
        assert!(!is_stream("c:order_7", "r", "order_7"));
        assert!(!is_stream("c:jobs", "c", "jobs:1"));
        assert!(!is_stream("cx:jobs", "c", "x:jobs"));
    }
}
