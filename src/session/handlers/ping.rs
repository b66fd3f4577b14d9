//! `ping` → `pong`.

use std::rc::Rc;

use serde_json::json;

use crate::protocol::{Inbound, ProtocolError, outbound};
use crate::session::Session;
use crate::session::Shard;

pub(crate) fn handle(shard: &Rc<Shard>, session: &Rc<Session>, message: &Inbound) -> Result<(), ProtocolError> {
    session.reply(shard, &outbound::reply("pong", json!({}), message.id.as_ref()));
    Ok(())
}
