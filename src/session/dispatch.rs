//! Routes a client's text message to its handler by `type`.

use std::rc::Rc;

use std::time::Duration;

use bytes::Bytes;

use super::{Session, handlers};
use crate::audit;
use crate::limits::RateDecision;
use crate::protocol::kinds::{self, Builtin};
use crate::protocol::{ErrorCode, Inbound, ProtocolError, outbound};
use crate::session::Shard;
use crate::stats;
use crate::transport::frame::close_code;

/// Parses and handles one text message; every refusal becomes an error reply.
///
/// Every frame is counted before it is handled: ordinary types (and frames that are not valid
/// messages at all) by the rate limits, rate-exempt types by their own per-second budget. A
/// handler's own `RATE_LIMIT_EXCEEDED` (typing changes per room, …) counts as a refusal too, so
/// every kind of flood ends in the same abuse disconnection.
pub(crate) async fn handle_text(shard: &Rc<Shard>, session: &Rc<Session>, text: Bytes) {
    let parsed = Inbound::parse(&text);
    let kind = parsed.as_ref().ok().map(|m| m.kind.as_str());
    let id = parsed.as_ref().ok().and_then(|m| m.id.as_ref());
    if !admit(shard, session, kind, id).await {
        stats::count_message_type(shard.counters(), type_label(shard.node(), kind), true);
        return;
    }
    match parsed {
        Ok(message) => handle_admitted(shard, session, message).await,
        Err(e) => {
            stats::count_message_type(shard.counters(), kinds::INVALID, true);
            session.send_error(shard, &e, None);
        }
    }
}

/// Handles a message the rate limits have already admitted (see [`admit`]).
pub(crate) async fn handle_admitted(shard: &Rc<Shard>, session: &Rc<Session>, message: Inbound) {
    let node = shard.node();
    let label = type_label(node, Some(&message.kind));
    // The label's index is the built-in's place in the table: one lookup serves both.
    let builtin = kinds::BUILT_IN.get(label).map(|(_, builtin)| *builtin);
    let result = match builtin {
        Some(Builtin::Ping) => handlers::ping::handle(shard, session, &message),
        Some(Builtin::RefreshToken) => handlers::auth::refresh(shard, session, &message).await,
        Some(Builtin::ChatMessage) => handlers::chat::chat(shard, session, &message).await,
        Some(Builtin::MarkRead) => handlers::chat::mark_read(shard, session, &message).await,
        Some(Builtin::Subscribe) => handlers::channels::subscribe(shard, session, &message).await,
        Some(Builtin::Unsubscribe) => handlers::channels::unsubscribe(shard, session, &message),
        Some(Builtin::JoinRoom) => handlers::rooms::join(shard, session, &message).await,
        Some(Builtin::LeaveRoom) => handlers::rooms::leave(shard, session, &message),
        Some(Builtin::StatusUpdate) => handlers::presence::status_update(shard, session, &message).await,
        Some(Builtin::TypingStart) => handlers::presence::typing_start(shard, session, &message).await,
        Some(Builtin::TypingStop) => handlers::presence::typing_stop(shard, session, &message).await,
        Some(Builtin::CursorMove) => handlers::presence::cursor_move(shard, session, &message).await,
        Some(Builtin::CellUpdate) => handlers::cells::update(shard, session, &message).await,
        Some(Builtin::SubscribeNotifications) => handlers::notifications::subscribe(shard, session, &message).await,
        Some(Builtin::History) => handlers::streams::history(shard, session, &message).await,
        Some(Builtin::NotificationRead) => handlers::notifications::read(shard, session, &message).await,
        None => {
            let other = message.kind.as_str();
            if let Some(alias) = node.config.aliases.iter().find(|a| a.kind == other) {
                handlers::upstream::alias(shard, session, &message, alias).await
            } else if node.config.upstream.types.iter().any(|t| t == other) {
                handlers::upstream::forward(shard, session, &message).await
            } else {
                Err(ProtocolError::new(ErrorCode::UnknownMessageType, format!("unknown message type {other:?}")))
            }
        }
    };
    stats::count_message_type(shard.counters(), label, result.is_err());
    if let Err(e) = result {
        session.send_error(shard, &e, message.id.as_ref());
        if e.code == ErrorCode::RateLimitExceeded && node.limits.note_refusal(&mut session.rate.borrow_mut()) {
            abuse(shard, session);
        }
    }
}

/// The metrics label of a message of type `kind` (`None`: not a valid message): its built-in
/// name, or `alias`, `forwarded`, `unknown`, `invalid`; never the client's own text.
fn type_label(node: &crate::node::Node, kind: Option<&str>) -> usize {
    let Some(kind) = kind else { return kinds::INVALID };
    if let Some(index) = kinds::built_in_index(kind) {
        index
    } else if node.config.aliases.iter().any(|a| a.kind == kind) {
        kinds::ALIAS
    } else if node.config.upstream.types.iter().any(|t| t == kind) {
        kinds::FORWARDED
    } else {
        kinds::UNKNOWN
    }
}

/// Counts one client frame of type `kind` (`None`: not a valid message) against the limits that
/// apply to it; false (after answering the refusal) when it must not be handled.
pub(crate) async fn admit(
    shard: &Rc<Shard>,
    session: &Rc<Session>,
    kind: Option<&str>,
    id: Option<&serde_json::Value>,
) -> bool {
    let node = shard.node();
    let decision = if let Some(exempt) = kind.filter(|k| node.limits.is_exempt(k)) {
        node.limits.check_exempt(&mut session.rate.borrow_mut(), exempt)
    } else if kind.map_or_else(|| node.limits.counts_invalid(), |k| node.limits.counts(k)) {
        // Take the state out: no RefCell borrow may live across the await.
        let mut rate = session.rate.borrow_mut().take();
        let user = session.user().filter(|u| u.verified).map(|u| u.id.clone());
        let decision = node.limits.check_message(&mut rate, user.as_ref()).await;
        *session.rate.borrow_mut() = rate;
        decision
    } else {
        RateDecision::Allowed
    };
    match decision {
        RateDecision::Allowed => true,
        RateDecision::Refused { retry_after, disconnect } => {
            refuse(shard, session, id, retry_after, disconnect);
            false
        }
    }
}

/// Answers a refused message, and closes the connection when it keeps pushing.
fn refuse(
    shard: &Rc<Shard>,
    session: &Rc<Session>,
    id: Option<&serde_json::Value>,
    retry_after: Duration,
    disconnect: bool,
) {
    let retry = retry_after.as_secs_f64().ceil() as u64;
    let mut extra = serde_json::Map::new();
    extra.insert("retry_after".into(), retry.into());
    extra.insert("retry_after_ms".into(), (retry_after.as_millis() as u64).into());
    stats::count_client_error(shard.counters(), ErrorCode::RateLimitExceeded);
    stats::bump(&shard.counters().rate_limited, 1);
    session.reply(
        shard,
        &outbound::error_with(
            ErrorCode::RateLimitExceeded,
            &format!("Rate limit exceeded: retry in {retry} s"),
            id,
            extra,
        ),
    );
    if disconnect {
        abuse(shard, session);
    }
}

fn abuse(shard: &Rc<Shard>, session: &Rc<Session>) {
    let user = session.user().map(|u| u.id.clone());
    audit::forced_disconnect(&session.connection_id, user.as_deref(), close_code::POLICY_VIOLATION, "rate limit abuse");
    session.close(shard, close_code::POLICY_VIOLATION, "rate limit exceeded repeatedly");
}
