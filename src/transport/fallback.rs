//! The plumbing of the HTTP fallbacks (Server-Sent Events, NDJSON streaming): the node's map of
//! fallback sessions and one-time tickets ([`Fallback`]), the commands POSTed to a session and
//! their verdicts, and the parsing of a POST body. The HTTP handlers that open sessions and take
//! POSTs are the gateway's (`gateway::fallback`); the sessions themselves are ordinary sessions
//! on a shard whose frames go into a bounded channel ([`super::io::StreamIo`]). The wire contract
//! is `docs/fallback-transports.md`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::auth::{TokenError, Verified};
use crate::config::NameKind;
use crate::protocol::{ErrorCode, Inbound, outbound};

/// How long a ticket lives.
pub const TICKET_LIFETIME: Duration = Duration::from_secs(30);
/// Most tickets outstanding on a node; beyond it (after expired ones are dropped) new ones are
/// refused, so that nobody can grow the map without bound.
pub const MAX_TICKETS: usize = 10_000;
/// Most commands one POST may carry.
pub const MAX_COMMANDS_PER_POST: usize = 32;
/// POSTed batches waiting for a session's shard; beyond it a POST is answered 429.
pub(crate) const COMMAND_QUEUE: usize = 16;
/// The header carrying a session's key on its POSTs.
pub const SESSION_KEY_HEADER: &str = "x-herald-session-key";

/// A batch of commands POSTed to a session, and where its verdict goes.
pub struct Command {
    /// Parsed client messages, in order.
    pub messages: Vec<Inbound>,
    /// Whether the rate limits admitted them.
    pub verdict: oneshot::Sender<Verdict>,
}

/// What became of a POSTed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted; replies arrive on the stream.
    Accepted,
    /// A message was refused by the rate limits (it and those after it were not handled).
    RateLimited,
    /// The session is closing.
    Closed,
}

/// A stream to resume, from a `Last-Event-ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    /// Channel or room.
    pub kind: NameKind,
    /// Its name.
    pub name: String,
    /// The last position the client saw.
    pub seq: u64,
    /// Its epoch.
    pub epoch: String,
}

/// What a fallback session starts with (the `fallback` of the session's plan).
pub struct Start {
    /// The `session` message, sent before anything else.
    pub opening: Bytes,
    /// Streams to resume.
    pub resume: Vec<ResumePoint>,
}

struct Handle {
    key: String,
    path: Arc<str>,
    max_message: usize,
    commands: mpsc::Sender<Command>,
}

/// The node's fallback sessions (by id) and outstanding tickets.
#[derive(Default)]
pub struct Fallback {
    sessions: Mutex<HashMap<String, Handle>>,
    tickets: Mutex<HashMap<String, (Verified, Instant)>>,
}

/// A session's entry in [`Fallback`]; dropping it (when the session ends) removes it, so POSTs
/// to it answer 404 from then on.
pub struct Registration {
    fallback: Arc<Fallback>,
    id: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.fallback.sessions.lock().remove(&self.id);
    }
}

impl Fallback {
    /// Issues a ticket for a verified token: random, single use, expiring with the token or
    /// after [`TICKET_LIFETIME`], whichever is first. `None` when [`MAX_TICKETS`] are out.
    pub(crate) fn issue(&self, verified: Verified) -> Option<(String, u64)> {
        let now = Instant::now();
        let left = verified.expires_at.duration_since(SystemTime::now()).unwrap_or_default();
        let lifetime = TICKET_LIFETIME.min(left);
        let mut tickets = self.tickets.lock();
        if tickets.len() >= MAX_TICKETS {
            tickets.retain(|_, (_, expires)| *expires > now);
            if tickets.len() >= MAX_TICKETS {
                return None;
            }
        }
        let ticket = random_token();
        tickets.insert(ticket.clone(), (verified, now + lifetime));
        Some((ticket, lifetime.as_secs()))
    }

    /// Takes a ticket (it never works twice).
    pub(crate) fn redeem(&self, ticket: &str) -> Result<Verified, TokenError> {
        match self.tickets.lock().remove(ticket) {
            Some((verified, expires)) if expires > Instant::now() => Ok(verified),
            _ => Err(TokenError::Ticket),
        }
    }

    /// Number of live sessions (for tests and figures).
    pub fn sessions(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Enters a session under `id`, reachable with `key` on the endpoint `path`, its POSTs
    /// parsed within `max_message` and queued on `commands`. Dropping the registration removes it.
    pub(crate) fn register(
        self: Arc<Self>,
        id: String,
        key: String,
        path: &str,
        max_message: usize,
        commands: mpsc::Sender<Command>,
    ) -> Registration {
        self.sessions.lock().insert(id.clone(), Handle { key, path: Arc::from(path), max_message, commands });
        Registration { fallback: self, id }
    }

    /// The session `id` of the endpoint `path`, if `key` is its key.
    pub(crate) fn lookup(&self, id: &str, path: &str, key: &str) -> Lookup {
        let sessions = self.sessions.lock();
        let Some(handle) = sessions.get(id).filter(|h| *h.path == *path) else { return Lookup::Missing };
        if !bool::from(subtle::ConstantTimeEq::ct_eq(key.as_bytes(), handle.key.as_bytes())) {
            return Lookup::WrongKey;
        }
        Lookup::Found(handle.commands.clone(), handle.max_message)
    }

    /// Hands commands forwarded by another node to the session here; whatever is wrong with
    /// them (no such session, wrong key, a full queue) drops them, as the POST was answered.
    pub fn deliver_forwarded(&self, forwarded: Forwarded) {
        let Lookup::Found(commands, max_message) = self.lookup(&forwarded.id, &forwarded.path, &forwarded.key) else {
            tracing::debug!(session = %forwarded.id, "forwarded commands for no session here (or a wrong key)");
            return;
        };
        let Ok(messages) = parse_commands(forwarded.body.as_bytes(), max_message) else { return };
        let (verdict, _) = oneshot::channel();
        let _ = commands.try_send(Command { messages, verdict });
    }
}

/// What a session id and key find.
pub(crate) enum Lookup {
    /// The session's command queue and message size limit.
    Found(mpsc::Sender<Command>, usize),
    /// The session exists; the key is wrong.
    WrongKey,
    /// No such session on this node.
    Missing,
}

/// 128 random bits, hex.
pub(crate) fn random_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Commands POSTed on one node for a session on another, carried by the broker's control
/// channel.
#[derive(Debug, Serialize, Deserialize)]
pub struct Forwarded {
    id: String,
    key: String,
    path: String,
    body: String,
}

impl Forwarded {
    /// The POST `body` for the session `id` (key `key`) of the endpoint `path`.
    pub(crate) fn new(id: String, key: String, path: String, body: String) -> Self {
        Forwarded { id, key, path, body }
    }
}

/// Splits a POST body into commands (one JSON object, or NDJSON lines), each within the
/// endpoint's message size; the first bad one refuses the whole POST.
#[allow(clippy::result_large_err)]
pub(crate) fn parse_commands(body: &[u8], max_message: usize) -> Result<Vec<Inbound>, Response> {
    let protocol_error = |status: StatusCode, code: ErrorCode, message: &str| {
        let mut response = (status, outbound::error(code, message, None)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    };
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').filter(|l| !l.trim_ascii().is_empty()).collect();
    if lines.is_empty() {
        return Err(protocol_error(StatusCode::BAD_REQUEST, ErrorCode::InvalidJson, "the body holds no command"));
    }
    if lines.len() > MAX_COMMANDS_PER_POST {
        return Err(protocol_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::MessageTooLarge,
            &format!("at most {MAX_COMMANDS_PER_POST} commands per request"),
        ));
    }
    let mut out = Vec::with_capacity(lines.len());
    for line in lines {
        if line.len() > max_message {
            return Err(protocol_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::MessageTooLarge,
                &format!("a command is larger than {max_message} bytes"),
            ));
        }
        match Inbound::parse(line) {
            Ok(message) => out.push(message),
            Err(e) => return Err(protocol_error(StatusCode::BAD_REQUEST, e.code, &e.message)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_single_use_and_bounded() {
        let fallback = Fallback::default();
        let verified = Verified {
            identity: Arc::new(crate::auth::Identity::unverified("u")),
            expires_at: SystemTime::now() + Duration::from_secs(3600),
        };
        let (ticket, expires_in) = fallback.issue(verified.clone()).unwrap();
        assert_eq!(expires_in, TICKET_LIFETIME.as_secs());
        assert!(fallback.redeem(&ticket).is_ok());
        assert!(matches!(fallback.redeem(&ticket), Err(TokenError::Ticket)));
        for _ in 0..MAX_TICKETS {
            fallback.issue(verified.clone()).unwrap();
        }
        assert!(fallback.issue(verified.clone()).is_none(), "the map is bounded");
        // A token about to expire gets a ticket that expires with it.
        let dying = Verified { expires_at: SystemTime::now(), ..verified };
        let fallback = Fallback::default();
        let (ticket, expires_in) = fallback.issue(dying).unwrap();
        assert_eq!(expires_in, 0);
        assert!(fallback.redeem(&ticket).is_err());
    }

    #[test]
    fn commands_parse_one_or_many() {
        assert_eq!(parse_commands(br#"{"type":"ping"}"#, 100).unwrap().len(), 1);
        assert_eq!(parse_commands(b"{\"type\":\"ping\"}\n{\"type\":\"ping\"}\n", 100).unwrap().len(), 2);
        assert_eq!(parse_commands(b"{nope", 100).unwrap_err().status(), StatusCode::BAD_REQUEST);
        assert_eq!(parse_commands(b"", 100).unwrap_err().status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            parse_commands(br#"{"type":"ping","pad":"xxxxxxxx"}"#, 10).unwrap_err().status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
