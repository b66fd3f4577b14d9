//! `subscribe` / `unsubscribe` with their `subscribed` / `unsubscribed` acknowledgements.

use std::rc::Rc;

use serde_json::{Value, json};

use crate::auth::Action;
use crate::config::NameKind;
use crate::hub::shard::Shard;
use crate::hub::{Hub, InterestReady};
use crate::protocol::{ErrorCode, Inbound, ProtocolError, outbound, validate_name};
use crate::session::Session;
use crate::session::handlers::denied;

/// Subscribes to one channel, within the per-connection limit.
/// Subscribes to one channel after the access check. The future, if any, resolves once the
/// broker listens for the channel.
pub(crate) async fn subscribe_one(
    shard: &Shard,
    session: &Session,
    channel: &str,
) -> Result<Option<InterestReady>, ProtocolError> {
    validate_name("channel", channel)?;
    let user = session.user();
    shard.node().auth.check(user.as_deref(), NameKind::Channel, channel, Action::Subscribe).await.map_err(denied)?;
    let limit = shard.node().config.limits.max_channels_per_connection;
    if limit > 0 && session.state.borrow().channels.len() >= limit && !session.state.borrow().channels.contains(channel)
    {
        return Err(ProtocolError::new(
            ErrorCode::LimitExceeded,
            format!("a connection may subscribe to at most {limit} channels"),
        ));
    }
    Ok(shard.subscribe(session, channel))
}

/// Acknowledges only once every channel is live across the cluster, so that an event published
/// anywhere after the acknowledgement reaches the client.
pub(crate) async fn subscribe(
    shard: &Rc<Shard>,
    session: &Rc<Session>,
    message: &Inbound,
) -> Result<(), ProtocolError> {
    subscribe_names(shard, session, &message.channels()?, message.id.as_ref()).await
}

/// Subscribes to channels and acknowledges with `subscribed` once they are live.
pub(crate) async fn subscribe_names(
    shard: &Rc<Shard>,
    session: &Rc<Session>,
    channels: &[&str],
    id: Option<&Value>,
) -> Result<(), ProtocolError> {
    let mut waits = Vec::new();
    for channel in channels {
        waits.extend(subscribe_one(shard, session, channel).await?);
    }
    Hub::ready(waits, shard.node().config.redis.timeout).await;
    session.reply(shard, &outbound::reply("subscribed", json!({ "channels": channels }), id));
    Ok(())
}

pub(crate) fn unsubscribe(shard: &Rc<Shard>, session: &Rc<Session>, message: &Inbound) -> Result<(), ProtocolError> {
    unsubscribe_names(shard, session, &message.channels()?, message.id.as_ref())
}

/// Unsubscribes from channels and acknowledges with `unsubscribed`.
pub(crate) fn unsubscribe_names(
    shard: &Rc<Shard>,
    session: &Rc<Session>,
    channels: &[&str],
    id: Option<&Value>,
) -> Result<(), ProtocolError> {
    for channel in channels {
        validate_name("channel", channel)?;
    }
    for channel in channels {
        shard.unsubscribe(session, channel);
    }
    session.reply(shard, &outbound::reply("unsubscribed", json!({ "channels": channels }), id));
    Ok(())
}
