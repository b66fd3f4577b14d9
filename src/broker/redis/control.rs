//! The control channel between nodes: `<prefix>:ctl:<node>`, one per node, on which another node
//! sends a command for connections that live here (cross-node admin).

use redis::Value as RedisValue;
use serde::Deserialize;

use super::RedisBroker;
use crate::broker::BrokerError;

/// A command for one node (cross-node admin), sent with [`RedisBroker::send_control`].
#[derive(Debug, Default, Deserialize)]
pub struct Control {
    /// Close this connection of the node.
    #[serde(default)]
    pub disconnect: Option<String>,
    /// A user id: close all of that user's connections on this node.
    #[serde(default)]
    pub disconnect_user: Option<String>,
    /// `[app id, user id]`: close that Pusher user's connections on this node.
    #[serde(default)]
    pub pusher_terminate: Option<(String, String)>,
    /// A Pusher event to publish here, where its excluded socket lives.
    #[serde(default)]
    pub pusher_publish: Option<serde_json::Value>,
    /// Commands POSTed on another node to a fallback session that lives here.
    #[serde(default)]
    pub fallback_command: Option<crate::transport::fallback::Forwarded>,
}

impl RedisBroker {
    pub(super) fn control_key(&self) -> String {
        crate::broker::keys::trailing(&self.config.key_prefix, "ctl", &self.node_id)
    }

    /// Sends a command to another node (cross-node admin); returns whether a node listened.
    pub async fn send_control(&self, node: &str, body: &serde_json::Value) -> Result<bool, BrokerError> {
        let channel = crate::broker::keys::trailing(&self.config.key_prefix, "ctl", node);
        let cmd = redis::cmd("PUBLISH").arg(channel).arg(body.to_string()).to_owned();
        match self.commands.query(&cmd).await {
            Ok(RedisValue::Int(n)) => Ok(n > 0),
            Ok(_) => Ok(false),
            Err(e) => Err(BrokerError::Unavailable(e.to_string())),
        }
    }
}
