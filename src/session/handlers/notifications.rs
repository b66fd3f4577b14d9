//! `subscribe_notifications` and `notification_read`.

use std::rc::Rc;

use serde_json::{Value, json};

use crate::hub::event::NotificationTags;
use crate::hub::{Event, Target};
use crate::protocol::{ErrorCode, Inbound, ProtocolError, outbound};
use crate::session::Session;
use crate::session::Shard;
use crate::session::handlers::chat::store_error;
use crate::session::live::NotificationFilter;
use crate::store::now_ms;

fn user_of(session: &Session, what: &str) -> Result<std::sync::Arc<str>, ProtocolError> {
    session.user_id().ok_or_else(|| {
        ProtocolError::new(ErrorCode::AuthenticationFailed, format!("{what} needs a user: connect with a token"))
    })
}

/// The tags of a notification object (`category`, `module_name`, `priority`).
pub fn tags_of(notification: &Value) -> NotificationTags {
    let text = |field: &str| notification.get(field).and_then(Value::as_str).map(String::from);
    NotificationTags { category: text("category"), module: text("module_name"), priority: text("priority") }
}

/// The `notification_event` a client receives.
pub fn notification_event(event_type: &str, user: &str, notification: &Value) -> Value {
    json!({
        "type": "notification_event",
        "event_type": event_type,
        "notification": notification,
        "user_id": user,
        "timestamp": outbound::now(),
    })
}

/// `{"type":"subscribe_notifications","categories":[…],"modules":[…],"priorities":[…]}`: sets the
/// connection's filter, acknowledges with `notifications_subscribed`, then sends the user's
/// unread notifications that pass it, oldest first, marked `replayed`.
pub(crate) async fn subscribe(
    shard: &Rc<Shard>,
    session: &Rc<Session>,
    message: &Inbound,
) -> Result<(), ProtocolError> {
    let user = user_of(session, "subscribe_notifications")?;
    let filter = NotificationFilter::parse(&message.body)?;
    let node = shard.node();
    let limit = i64::from(node.config.notifications.max_unread_on_subscribe);
    let unread = node.store.notifications(&user, true, limit).await.map_err(store_error)?;
    let passing: Vec<Value> = unread.iter().rev().map(|n| n.json()).filter(|n| filter.accepts(&tags_of(n))).collect();
    let ack = json!({ "filters": filter.json(), "unread_count": passing.len() });
    session.with_live(|live| live.notifications = Some(filter));
    session.reply(shard, &outbound::reply("notifications_subscribed", ack, message.id.as_ref()));
    for notification in passing {
        let mut event = notification_event("notification_created", &user, &notification);
        if let Some(map) = event.as_object_mut() {
            map.insert("replayed".into(), true.into());
        }
        session.reply(shard, &outbound::to_bytes(&event));
    }
    Ok(())
}

/// `{"type":"notification_read","notification_id":…}`: marks it read and tells every connection
/// of the user, on every node. An id Herald does not store is refused, or handed to the backend
/// when `notification_read` is in `upstream.types`.
pub(crate) async fn read(shard: &Rc<Shard>, session: &Rc<Session>, message: &Inbound) -> Result<(), ProtocolError> {
    let user = user_of(session, "notification_read")?;
    let id = message
        .opt_id("notification_id")?
        .ok_or_else(|| ProtocolError::new(ErrorCode::InvalidMessage, "missing field \"notification_id\""))?;
    let node = shard.node();
    let at = now_ms();
    if !node.store.read_notification(&user, &id, at).await.map_err(store_error)? {
        // A notification Herald does not store (the application created and delivered it itself)
        // is the application's to mark read, when it asked for these reads in `upstream.types`.
        if !node.config.upstream.types.iter().any(|t| t == "notification_read") {
            return Err(ProtocolError::new(ErrorCode::InvalidMessage, format!("no notification {id:?} for this user")));
        }
        let request = super::upstream::request_for(shard, session, message);
        if let Err(e) = node.upstream.forward(&request).await {
            tracing::warn!(error = %e, "a notification_read did not reach the backend");
            return Err(ProtocolError::new(ErrorCode::InternalError, "the read could not be handed to the backend"));
        }
    }
    let payload = json!({
        "type": "notification_event",
        "event_type": "notification_read",
        "notification_id": id,
        "user_id": &*user,
        "read_at": outbound::rfc3339_ms(at),
        "timestamp": outbound::now(),
    });
    let target = Target { user: Some(user), ..Target::default() };
    let event = Event::new(target, bytes::Bytes::from(payload.to_string()));
    if let Err(e) = node.publisher().publish_event(event).await {
        tracing::warn!(error = %e, "notification_read not published");
    }
    Ok(())
}
