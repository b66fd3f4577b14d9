//! Streams with history on Redis: a Redis Stream and a meta hash per stream, appended to and read
//! by the scripts of [`super::scripts`].

use std::sync::Arc;

use bytes::Bytes;
use redis::Value as RedisValue;

use super::{RedisBroker, bytes_of, envelope};
use crate::broker::BrokerError;
use crate::hub::Event;

impl RedisBroker {
    pub(super) fn history_keys(&self, stream: &str) -> (String, String) {
        crate::broker::keys::stream(&self.config.key_prefix, stream)
    }

    /// Sequences, records and publishes an event of a stream with history (see [`super::scripts::APPEND_LUA`]).
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
        let (key, meta) = self.history_keys(stream);
        let mut script = self.append_script.key(key);
        script
            .key(meta)
            .arg(crate::broker::stream::new_epoch())
            .arg(settings.size)
            .arg(settings.max_age.as_millis() as u64)
            .arg(record)
            .arg(head);
        for (kind, name) in envelope::copies(&event.target) {
            let mut tail = Vec::with_capacity(event.payload.len() + 16);
            envelope::push_tail(&mut tail, kind, &event.payload);
            script.arg(self.copy_channel(kind, name)).arg(tail);
        }
        match self.commands.script(&script).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.mark_down(&e.to_string());
                Err(BrokerError::Unavailable(e.to_string()))
            }
        }
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
