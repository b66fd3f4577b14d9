//! `subscribe` / `unsubscribe` with their `subscribed` / `unsubscribed` acknowledgements.

use std::rc::Rc;

use serde_json::{Value, json};

use crate::auth::Action;
use crate::config::NameKind;
use crate::hub::{Hub, InterestReady};
use crate::protocol::{ErrorCode, Inbound, ProtocolError, outbound, validate_name};
use crate::session::Session;
use crate::session::Shard;
use crate::session::handlers::{denied, streams};

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
    let limit = shard.node().limits.config().max_channels_per_connection;
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
    let channels = message.channels()?;
    // `seq: true` follows the channels with positions; `recover: {channel: {seq, epoch}}` also
    // replays what was missed since those positions.
    let wanted = session.info.seq || message.body.get("seq").and_then(Value::as_bool).unwrap_or(false);
    let recover = match message.body.get("recover") {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => {
            return Err(ProtocolError::new(
                ErrorCode::InvalidMessage,
                "recover must be an object {channel: {\"seq\": n, \"epoch\": \"…\"}}",
            ));
        }
    };
    subscribe_names(shard, session, &channels, message.id.as_ref(), wanted, &recover).await
}

/// Subscribes to channels and acknowledges with `subscribed` once they are live; channels with
/// history are followed with positions when `wanted`, and replayed from `recover`'s positions.
pub(crate) async fn subscribe_names(
    shard: &Rc<Shard>,
    session: &Rc<Session>,
    channels: &[&str],
    id: Option<&Value>,
    wanted: bool,
    recover: &serde_json::Map<String, Value>,
) -> Result<(), ProtocolError> {
    let mut waits = Vec::new();
    let mut pending = Vec::new();
    for channel in channels {
        let since = recover.get(*channel).map(|p| streams::parse_position(p, "recover")).transpose()?;
        let asked = since.is_some();
        waits.extend(subscribe_one(shard, session, channel).await?);
        if let Some(p) = streams::begin(shard, session, NameKind::Channel, channel, wanted, since) {
            pending.push((channel.to_string(), p, asked));
        }
    }
    Hub::ready(waits, shard.node().config.redis.timeout).await;
    let mut reports = serde_json::Map::new();
    let mut recoveries = Vec::new();
    for (channel, p, asked) in pending {
        let recovery = streams::fetch(shard, &p).await;
        reports.insert(channel, streams::report(&recovery, asked));
        recoveries.push((p, recovery));
    }
    let mut fields = json!({ "channels": channels });
    if !reports.is_empty() {
        fields["streams"] = Value::Object(reports);
    }
    session.reply(shard, &outbound::reply("subscribed", fields, id));
    for (p, recovery) in recoveries {
        streams::finish(shard, session, &p, recovery);
    }
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
        streams::end(session, NameKind::Channel, channel);
    }
    session.reply(shard, &outbound::reply("unsubscribed", json!({ "channels": channels }), id));
    Ok(())
}
