//! `refresh_token`: a client replaces its token before it expires; and the expiry check the shard
//! runs on every tick.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::{presence, streams};
use crate::audit;
use crate::auth::{Action, Identity};
use crate::config::{EndpointKind, ExpiryPolicy, NameKind};
use crate::protocol::{ErrorCode, Inbound, ProtocolError, outbound};
use crate::session::Session;
use crate::session::Shard;
use crate::transport::frame::close_code;

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `{"type":"refresh_token","token":"…"}` → `{"type":"token_refreshed","expires_at":…}`. The new
/// token must name the same user; its claims (roles, …) replace the old ones, and every room and
/// channel the connection holds is checked again under them: what they no longer allow is left,
/// each with a `room_left` / `unsubscribed` carrying `"revoked": true` and the reason.
pub(crate) async fn refresh(shard: &Rc<Shard>, session: &Rc<Session>, message: &Inbound) -> Result<(), ProtocolError> {
    let token = message.str("token")?;
    let Some(current) = session.user().filter(|u| u.verified) else {
        return Err(ProtocolError::new(
            ErrorCode::AuthenticationFailed,
            "this connection has no token to refresh; reconnect with one",
        ));
    };
    let verified = shard
        .node()
        .auth
        .verify(token)
        .map_err(|e| ProtocolError::new(ErrorCode::AuthenticationFailed, e.to_string()))?;
    if verified.identity.id != current.id {
        audit::authentication_failed(
            &session.info.peer.to_string(),
            &session.info.path,
            "refresh token names another user",
        );
        return Err(ProtocolError::new(ErrorCode::AuthenticationFailed, "the new token names another user"));
    }
    let identity = verified.identity.clone();
    session.set_user(verified.identity);
    session.expires_at.set(Some(verified.expires_at));
    session.refresh_requested.set(false);
    session.reply(
        shard,
        &outbound::reply("token_refreshed", json!({ "expires_at": unix(verified.expires_at) }), message.id.as_ref()),
    );
    recheck(shard, session, Some(&identity)).await;
    Ok(())
}

/// After the access rules were reloaded: every Herald connection of the node is checked again
/// (each shard in a task of its own, one connection after another) and leaves what the new
/// rules refuse. Returns once every shard has started its task.
pub(crate) async fn recheck_everyone(node: &crate::node::Node) {
    node.hub
        .ask(|shard: &Rc<Shard>| {
            let sessions: Vec<Rc<Session>> =
                shard.all_sessions().into_iter().filter(|s| s.info.kind == EndpointKind::Events).collect();
            let shard = shard.clone();
            shard.clone().spawn(async move {
                for session in sessions {
                    let identity = session.user();
                    recheck(&shard, &session, identity.as_deref()).await;
                }
            });
        })
        .await;
}

/// Asks the access policy again, under `identity`, for every room and channel the connection
/// holds, and leaves those it no longer allows, telling the client why.
async fn recheck(shard: &Rc<Shard>, session: &Rc<Session>, identity: Option<&Identity>) {
    let node = shard.node();
    let (rooms, channels): (Vec<Arc<str>>, Vec<Arc<str>>) = {
        let state = session.state.borrow();
        (state.rooms.iter().cloned().collect(), state.channels.iter().cloned().collect())
    };
    for room in rooms {
        let Err(denied) = node.auth.check(identity, NameKind::Room, &room, Action::Join).await else {
            continue;
        };
        let was_member = shard.leave(session, &room);
        streams::end(session, NameKind::Room, &room);
        let body = json!({ "room": &*room, "room_id": &*room, "revoked": true, "reason": denied.reason });
        session.reply(shard, &outbound::reply("room_left", body, None));
        if was_member {
            presence::after_leave(shard, session, &room).await;
        }
    }
    for channel in channels {
        let Err(denied) = node.auth.check(identity, NameKind::Channel, &channel, Action::Subscribe).await else {
            continue;
        };
        shard.unsubscribe(session, &channel);
        streams::end(session, NameKind::Channel, &channel);
        let body = json!({ "channels": [&*channel], "revoked": true, "reason": denied.reason });
        session.reply(shard, &outbound::reply("unsubscribed", body, None));
    }
}

/// Acts on an expiring or expired token: asks for a refresh ahead of time (policy `refresh`),
/// closes with 4003 once it has expired.
pub(crate) fn check_expiry(shard: &Rc<Shard>, session: &Rc<Session>, now: SystemTime) {
    let Some(expires_at) = session.expires_at.get() else { return };
    let config = shard.node().auth.config();
    if now >= expires_at + config.leeway {
        session.send_error(shard, &ProtocolError::new(ErrorCode::AuthenticationFailed, "token expired"), None);
        audit::forced_disconnect(
            &session.connection_id,
            session.user_id().as_deref(),
            close_code::TOKEN_EXPIRED,
            "token expired",
        );
        session.close(shard, close_code::TOKEN_EXPIRED, "token expired");
        return;
    }
    let ahead = config.refresh_ahead;
    if config.on_expiry == ExpiryPolicy::Refresh && !session.refresh_requested.get() && now + ahead >= expires_at {
        session.refresh_requested.set(true);
        let expires_in = expires_at.duration_since(now).unwrap_or(Duration::ZERO).as_secs();
        session.reply(
            shard,
            &outbound::reply(
                "token_expiring",
                json!({ "expires_at": unix(expires_at), "expires_in": expires_in, "refresh_with": "refresh_token" }),
                None,
            ),
        );
    }
}
