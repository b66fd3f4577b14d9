//! Publishers' messages taken in: `PUBLISH <prefix>:<channel>` (and exact ingest channels), read
//! as JSON objects and handed to the node with their target.

use std::sync::Arc;

use super::RedisBroker;
use crate::broker::BrokerHandler;
use crate::hub::Target;

/// A message a publisher put on `<prefix>:<channel>` or an exact ingest channel.
pub(super) async fn ingest(broker: &RedisBroker, handler: &impl BrokerHandler, redis_channel: &str, payload: &[u8]) {
    let channel = broker
        .config
        .prefixes
        .iter()
        .find_map(|p| redis_channel.strip_prefix(p.as_str()).and_then(|r| r.strip_prefix(':')))
        .unwrap_or(redis_channel);
    let value: serde_json::Value = match serde_json::from_slice(payload) {
        Ok(value @ serde_json::Value::Object(_)) => value,
        Ok(_) => {
            handler.malformed();
            broker.malformed_log.lock().warn("dropped a published message that is not a JSON object", redis_channel);
            return;
        }
        Err(e) => {
            handler.malformed();
            broker
                .malformed_log
                .lock()
                .warn("dropped a published message that is not valid JSON", &format!("{redis_channel}: {e}"));
            return;
        }
    };
    let field = |name: &str| -> Option<Arc<str>> {
        if name.is_empty() {
            return None;
        }
        match value.get(name) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => Some(Arc::from(s.as_str())),
            Some(serde_json::Value::Number(n)) => Some(Arc::from(n.to_string())),
            _ => None,
        }
    };
    let target = Target {
        channel: Some(Arc::from(channel)),
        room: field(&broker.config.room_field),
        user: field(&broker.config.user_field),
        broadcast: false,
    };
    let owns = |stream: &str| broker.owns(stream);
    if let Err(e) = handler.ingest(target, value, &owns).await {
        handler.malformed();
        broker.malformed_log.lock().warn("dropped a published message", &format!("{redis_channel}: {e}"));
    }
}
