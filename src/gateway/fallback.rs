//! The HTTP fallbacks for clients whose proxies refuse WebSocket: Server-Sent Events and NDJSON
//! streaming on the same URL as each WebSocket endpoint, commands by POST, one-time tickets for
//! `EventSource` (which cannot send headers), and resume from `Last-Event-ID`.
//!
//! A fallback session is an ordinary session on a shard (same plan, identity, limits, index,
//! handlers and slow-consumer policy as a WebSocket one); only its I/O differs. Its frames go
//! into a bounded channel (`transport::io::StreamIo`) whose receiver is the response body, and
//! its input is a channel of POSTed commands, found by session id in [`Fallback`]. The wire
//! contract is `docs/fallback-transports.md`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::upgrade::{self, Credential, Endpoint, refuse};
use crate::auth::{self, TokenError};
use crate::config::{EndpointKind, NameKind};
use crate::hub::event::Transport;
use crate::node::Node;
use crate::protocol::{ErrorCode, outbound};
use crate::transport::fallback::{COMMAND_QUEUE, Lookup, parse_commands, random_token};
pub use crate::transport::fallback::{Command, Fallback, Forwarded, ResumePoint, SESSION_KEY_HEADER, Start, Verdict};
use crate::transport::io::{self, StreamIo, StreamShared};

/// Most streams a resume position (`Last-Event-ID`) may name.
const MAX_RESUME_STREAMS: usize = 256;

/// Which fallback a plain GET asks for: `?transport=sse|stream`, or its `Accept` header.
pub fn wanted(headers: &HeaderMap, params: &HashMap<String, String>) -> Option<Transport> {
    match params.get("transport").map(String::as_str) {
        Some("sse") => return Some(Transport::Sse),
        Some("stream") => return Some(Transport::Stream),
        _ => {}
    }
    let accept = headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
    let accept = accept.to_ascii_lowercase();
    if accept.contains("text/event-stream") {
        Some(Transport::Sse)
    } else if accept.contains("application/x-ndjson") {
        Some(Transport::Stream)
    } else {
        None
    }
}

/// Whether an endpoint offers the fallbacks (events and echo endpoints do; the statistics
/// stream answers a plain GET with a snapshot instead).
pub fn offered(endpoint: &Endpoint) -> bool {
    matches!(endpoint.kind, EndpointKind::Events | EndpointKind::Echo)
}

/// `GET <endpoint>` as SSE or NDJSON: plans the session as a WebSocket upgrade would, starts it
/// on the least-loaded shard and answers with its stream.
pub async fn open(
    node: Arc<Node>,
    fallback: Arc<Fallback>,
    endpoint: Arc<Endpoint>,
    request: Request,
    transport: Transport,
) -> Response {
    let params = upgrade::query_params(&request);
    let credential = match params.get("ticket").filter(|t| !t.is_empty()) {
        Some(ticket) => Credential::Ticket(fallback.redeem(ticket)),
        None => Credential::Token(auth::presented(request.headers(), &params, &[]).token),
    };
    let resume = match last_event_id(request.headers(), &params).map(|id| parse_position_id(&id)).transpose() {
        Ok(resume) => resume.unwrap_or_default(),
        Err(message) => return refuse(StatusCode::BAD_REQUEST, "INVALID_MESSAGE", &message),
    };
    let (parts, _body) = request.into_parts();
    let cut = parts.extensions.get::<crate::transport::http::ConnectionCut>().cloned();
    let mut plan = match upgrade::prepare(&node, &endpoint, &parts, &params, credential).await {
        Ok(plan) => plan,
        Err(response) => return response,
    };
    plan.wire.transport = transport;
    // Positions are what `Last-Event-ID` carries, so a fallback session always follows its
    // streams with them (`?seq=0` turns that off).
    plan.seq = !matches!(params.get("seq").map(String::as_str), Some("0" | "false"));
    // The node's id first: a POST that reaches another node is forwarded here.
    let id = format!("{}.{}", node.id, random_token());
    let key = format!("{}{}", random_token(), random_token());
    let opening = json!({ "type": "session", "id": &id, "key": &key, "transport": transport.as_str() });
    plan.fallback = Some(Box::new(Start { opening: Bytes::from(opening.to_string()), resume }));

    let limits = &node.config.websocket;
    let (tx, rx) = mpsc::channel(limits.outbound_queue.max(1));
    let shared = Arc::new(StreamShared { cut, ..Default::default() });
    let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
    let registration = fallback.register(id, key, &endpoint.path, endpoint.max_message, commands_tx);
    let stream = StreamIo::new(tx, shared.clone());
    let shard = node.hub.pick_shard(|i| node.stats.shards[i].connections.load(Ordering::Relaxed));
    node.hub
        .run_on(shard, move |shard: &std::rc::Rc<crate::session::Shard>| {
            if shard.is_shutting_down() {
                return;
            }
            let input = crate::session::connect::Input::Commands(commands, registration);
            let io = io::ConnIo::Stream(Box::new(stream));
            shard.spawn(crate::session::connect::run(shard.clone(), io, input, plan));
        })
        .await;

    let content_type = match transport {
        Transport::Sse => "text/event-stream",
        _ => "application/x-ndjson",
    };
    let body = Body::from_stream(body_stream(rx, shared));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The response body: every frame the session queues, then its last message (why it closed).
fn body_stream(
    rx: mpsc::Receiver<Bytes>,
    shared: Arc<StreamShared>,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send {
    futures_util::stream::unfold(Some(rx), move |rx| {
        let shared = shared.clone();
        async move {
            let mut rx = rx?;
            match rx.recv().await {
                Some(frame) => {
                    shared.queued_bytes.fetch_sub(frame.len(), Ordering::Relaxed);
                    Some((Ok(frame), Some(rx)))
                }
                None => shared.last.lock().take().map(|last| (Ok(last), None)),
            }
        }
    })
}

fn last_event_id(headers: &HeaderMap, params: &HashMap<String, String>) -> Option<String> {
    let header = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    header.or_else(|| params.get("last_event_id").cloned()).filter(|id| !id.trim().is_empty())
}

/// Reads a position (`session::position_id`) back.
pub fn parse_position_id(id: &str) -> Result<Vec<ResumePoint>, String> {
    let bad = |why: &str| format!("Last-Event-ID / last_event_id is not a Herald position ({why})");
    let mut out = Vec::new();
    for part in id.trim().split(',').filter(|p| !p.is_empty()) {
        if out.len() == MAX_RESUME_STREAMS {
            return Err(bad("too many streams"));
        }
        let mut fields = part.split('~');
        let (Some(stream), Some(epoch), Some(seq), None) = (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(bad("expected stream~epoch~seq"));
        };
        let decode = |s: &str| {
            form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
        };
        let (stream, epoch) = (decode(stream), decode(epoch));
        let seq = seq.parse::<u64>().map_err(|_| bad("seq is not a number"))?;
        let (kind, name) = match stream.split_once(':') {
            Some(("c", name)) => (NameKind::Channel, name),
            Some(("r", name)) => (NameKind::Room, name),
            _ => return Err(bad("unknown stream kind")),
        };
        crate::protocol::validate_name(kind.as_str(), name).map_err(|e| bad(&e.message))?;
        if epoch.len() > 64 {
            return Err(bad("epoch too long"));
        }
        out.push(ResumePoint { kind, name: name.to_string(), seq, epoch });
    }
    Ok(out)
}

/// `POST <endpoint>/tickets` with `Authorization: Bearer <token>`: a one-time ticket for `GET
/// <endpoint>?ticket=…`, so a token never has to be in a URL.
pub async fn ticket(node: Arc<Node>, fallback: Arc<Fallback>, endpoint: Arc<Endpoint>, request: Request) -> Response {
    let token = auth::presented(request.headers(), &HashMap::new(), &[]).token;
    let verified = match token.ok_or(TokenError::Missing).and_then(|t| node.auth.verify(&t)) {
        Ok(verified) => verified,
        Err(e) => {
            let ip = upgrade::peer_ip(&node, &request);
            crate::audit::authentication_failed(&ip, &endpoint.path, &e.to_string());
            return refuse(StatusCode::UNAUTHORIZED, "AUTHENTICATION_FAILED", &e.to_string());
        }
    };
    match fallback.issue(verified) {
        Some((ticket, expires_in)) => {
            (StatusCode::OK, axum::Json(json!({ "ticket": ticket, "expires_in": expires_in }))).into_response()
        }
        None => {
            let mut response = refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "TOO_MANY_TICKETS",
                "too many tickets outstanding; retry shortly",
            );
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
    }
}

/// `POST <endpoint>/sessions/<id>` with `X-Herald-Session-Key`: one JSON command, or several as
/// NDJSON, handed to the session; `202` once admitted (replies come on the stream). A session of
/// another node is forwarded to it through Redis (`202` with `"forwarded": true`: its key and
/// rate limits are then checked there, and refusals arrive on the stream or not at all).
pub async fn command(
    node: Arc<Node>,
    fallback: Arc<Fallback>,
    endpoint: Arc<Endpoint>,
    id: String,
    request: Request,
) -> Response {
    let key = request.headers().get(SESSION_KEY_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body = match axum::body::to_bytes(request.into_body(), usize::MAX).await {
        Ok(body) => body,
        Err(_) => return refuse(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "the request body could not be read"),
    };
    let local = fallback.lookup(&id, &endpoint.path, &key);
    let (commands, max_message) = match local {
        Lookup::Found(commands, max_message) => (commands, max_message),
        Lookup::WrongKey => {
            return refuse(StatusCode::FORBIDDEN, "PERMISSION_DENIED", "wrong or missing X-Herald-Session-Key");
        }
        Lookup::Missing => return forward(&node, &endpoint, id, key, &body).await,
    };
    let messages = match parse_commands(&body, max_message) {
        Ok(messages) => messages,
        Err(response) => return response,
    };
    let (verdict_tx, verdict) = oneshot::channel();
    match commands.try_send(Command { messages, verdict: verdict_tx }) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => return rate_limited("too many commands waiting for this session"),
        Err(mpsc::error::TrySendError::Closed(_)) => return session_gone(),
    }
    match verdict.await {
        Ok(Verdict::Accepted) => (StatusCode::ACCEPTED, axum::Json(json!({ "success": true }))).into_response(),
        Ok(Verdict::RateLimited) => rate_limited("Rate limit exceeded"),
        Ok(Verdict::Closed) | Err(_) => session_gone(),
    }
}

fn session_gone() -> Response {
    refuse(StatusCode::NOT_FOUND, "SESSION_NOT_FOUND", "no such session (closed, or never opened)")
}

/// A session this node does not hold: to its node through Redis, if the id names a live one.
async fn forward(node: &Node, endpoint: &Endpoint, id: String, key: String, body: &[u8]) -> Response {
    let owner = id.rsplit_once('.').map(|(owner, _)| owner.to_string()).filter(|owner| owner.as_str() != &*node.id);
    let (Some(owner), crate::broker::Broker::Redis(redis)) = (owner, &node.broker) else {
        return session_gone();
    };
    // Checked here too, so that a malformed body gets its 400 / 413 wherever it lands.
    if let Err(response) = parse_commands(body, endpoint.max_message) {
        return response;
    }
    let Ok(body) = String::from_utf8(body.to_vec()) else {
        return refuse(StatusCode::BAD_REQUEST, "INVALID_JSON", "the body is not UTF-8");
    };
    let forwarded = Forwarded::new(id, key, endpoint.path.clone(), body);
    match redis.send_control(&owner, &json!({ "fallback_command": forwarded })).await {
        Ok(true) => (StatusCode::ACCEPTED, axum::Json(json!({ "success": true, "forwarded": true }))).into_response(),
        _ => session_gone(),
    }
}

fn rate_limited(message: &str) -> Response {
    let body = outbound::error(ErrorCode::RateLimitExceeded, message, None);
    let mut response = (StatusCode::TOO_MANY_REQUESTS, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Follow, position_id};

    #[test]
    fn position_ids_round_trip() {
        let mut follows = HashMap::new();
        assert_eq!(position_id(&follows), None);
        follows.insert(Arc::from("r:a~b,c"), Follow { last: 3, epoch: Some(Arc::from("e1")), held: None });
        follows.insert(Arc::from("c:jobs"), Follow { last: 7, epoch: Some(Arc::from("ab")), held: None });
        follows.insert(Arc::from("c:new"), Follow::default());
        let id = position_id(&follows).unwrap();
        assert_eq!(id, "c%3Ajobs~ab~7,r%3Aa%7Eb%2Cc~e1~3");
        let points = parse_position_id(&id).unwrap();
        assert_eq!(
            points,
            vec![
                ResumePoint { kind: NameKind::Channel, name: "jobs".into(), seq: 7, epoch: "ab".into() },
                ResumePoint { kind: NameKind::Room, name: "a~b,c".into(), seq: 3, epoch: "e1".into() },
            ]
        );
    }

    #[test]
    fn bad_position_ids_are_refused() {
        for bad in ["x", "c%3Aa~e", "c%3Aa~e~x", "q%3Aa~e~1", "c%3Aa~e~1~2"] {
            assert!(parse_position_id(bad).is_err(), "{bad}");
        }
        let many = vec!["c%3Aa~e~1"; MAX_RESUME_STREAMS + 1].join(",");
        assert!(parse_position_id(&many).is_err());
    }
}
