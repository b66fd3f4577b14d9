//! Routes a client's text message to its handler by `type`.

use std::rc::Rc;

use bytes::Bytes;

use super::{Session, handlers};
use crate::hub::shard::Shard;
use crate::protocol::{ErrorCode, Inbound, ProtocolError};

/// Parses and handles one text message; every refusal becomes an error reply.
pub(crate) async fn handle_text(shard: &Rc<Shard>, session: &Rc<Session>, text: Bytes) {
    let message = match Inbound::parse(&text) {
        Ok(message) => message,
        Err(e) => {
            session.send_error(shard, &e, None);
            return;
        }
    };
    let result = match message.kind.as_str() {
        "ping" => handlers::ping::handle(shard, session, &message),
        "subscribe" => handlers::channels::subscribe(shard, session, &message).await,
        "unsubscribe" => handlers::channels::unsubscribe(shard, session, &message),
        "join_room" => handlers::rooms::join(shard, session, &message).await,
        "leave_room" => handlers::rooms::leave(shard, session, &message),
        other => Err(ProtocolError::new(ErrorCode::UnknownMessageType, format!("unknown message type {other:?}"))),
    };
    if let Err(e) = result {
        session.send_error(shard, &e, message.id.as_ref());
    }
}
