//! A connection's reader: bytes to frames to actions, until the peer goes away.
//!
//! Reads go into one scratch buffer per shard thread and are decoded before the next await, so
//! an idle connection holds no read buffer at all (only a partial frame, while one is pending).

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;

use super::{Session, dispatch};
use crate::config::EndpointKind;
use crate::protocol::{ErrorCode, ProtocolError};
use crate::session::Shard;
use crate::stats;
use crate::transport::frame::{self, Decoder, FrameError, Message, Role, close_code};

const SCRATCH_SIZE: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; SCRATCH_SIZE].into_boxed_slice());
}

enum ReadOutcome {
    Data,
    Eof,
    Violation(FrameError),
    Failed(io::Error),
}

fn poll_read(
    session: &Session,
    cx: &mut Context<'_>,
    decoder: Option<&mut Decoder>,
    out: &mut Vec<Message>,
) -> Poll<ReadOutcome> {
    if session.killed.get() {
        return Poll::Ready(ReadOutcome::Eof);
    }
    SCRATCH.with(|scratch| {
        let mut buf = scratch.borrow_mut();
        match session.io.poll_read(cx, &mut buf) {
            Poll::Pending => {
                match session.reader_waker.take() {
                    Some(waker) if waker.will_wake(cx.waker()) => session.reader_waker.set(Some(waker)),
                    _ => session.reader_waker.set(Some(cx.waker().clone())),
                }
                Poll::Pending
            }
            Poll::Ready(Ok(0)) => Poll::Ready(ReadOutcome::Eof),
            Poll::Ready(Ok(n)) => {
                session.last_seen.set(Instant::now());
                let Some(decoder) = decoder else {
                    return Poll::Ready(ReadOutcome::Data);
                };
                match decoder.feed(&buf[..n], out) {
                    Ok(()) => Poll::Ready(ReadOutcome::Data),
                    Err(e) => Poll::Ready(ReadOutcome::Violation(e)),
                }
            }
            Poll::Ready(Err(e)) => Poll::Ready(ReadOutcome::Failed(e)),
        }
    })
}

/// Reads and handles frames until end-of-stream, an I/O error, or the connection is cut.
pub(crate) async fn run(shard: &Rc<Shard>, session: &Rc<Session>, leftover: Bytes) {
    let mut decoder = Some(Decoder::new(Role::Server, session.info.max_message));
    if let (Some(d), Some(params)) = (decoder.as_mut(), session.info.wire.deflate) {
        d.set_inflate(Box::new(crate::transport::deflate::Inflater::new(!params.client_no_context_takeover)));
    }
    let mut messages = Vec::new();
    // A violation found while decoding a read. The frames before it in the same read are valid
    // and were sent first, so they are handled before the connection is closed for it.
    let mut pending_violation = None;
    if !leftover.is_empty()
        && let Some(d) = decoder.as_mut()
        && let Err(e) = d.feed(&leftover, &mut messages)
    {
        pending_violation = Some(e);
        decoder = None;
    }
    loop {
        for message in messages.drain(..) {
            if let Message::Close(_) = message
                && session.is_closing()
            {
                // Both close frames have now been sent: the handshake is complete and the TCP
                // connection is ours to close (RFC 6455 section 7.1.1).
                return;
            }
            handle(shard, session, message).await;
        }
        // A close frame before the violation has already started the closing handshake; what
        // followed it does not count.
        if let Some(e) = pending_violation.take()
            && !session.is_closing()
        {
            violation(shard, session, &e);
        }
        if messages.capacity() > 16 {
            messages = Vec::new();
        }
        // After a protocol violation or once closing, input is read and discarded until the
        // peer closes or the close deadline cuts the socket.
        let closing = session.is_closing();
        let outcome = std::future::poll_fn(|cx| {
            let decoder = if closing { None } else { decoder.as_mut() };
            poll_read(session, cx, decoder, &mut messages)
        })
        .await;
        match outcome {
            ReadOutcome::Data => {}
            ReadOutcome::Eof => break,
            ReadOutcome::Violation(e) => {
                pending_violation = Some(e);
                decoder = None;
            }
            ReadOutcome::Failed(e) => {
                tracing::debug!(connection = %session.connection_id, error = %e, "read failed");
                break;
            }
        }
    }
}

/// A fallback session's input: the commands POSTed to it, each batch admitted by the rate
/// limits (the POST learns the verdict: 202 or 429) and then handled in order, exactly as text
/// frames are. Ends when the response body is gone (the client left) or the session is cut.
pub(crate) async fn run_commands(
    shard: &Rc<Shard>,
    session: &Rc<Session>,
    mut commands: tokio::sync::mpsc::Receiver<crate::transport::fallback::Command>,
) {
    use crate::transport::fallback::Verdict;
    let crate::transport::io::ConnIo::Stream(stream) = &session.io else { return };
    // A sender kept only to learn when the body's receiver is dropped.
    let Some(watch) = stream.watch() else { return };
    let mut gone = std::pin::pin!(watch.closed());
    loop {
        let next = std::future::poll_fn(|cx| {
            if session.killed.get() || gone.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            match session.reader_waker.take() {
                Some(waker) if waker.will_wake(cx.waker()) => session.reader_waker.set(Some(waker)),
                _ => session.reader_waker.set(Some(cx.waker().clone())),
            }
            commands.poll_recv(cx)
        })
        .await;
        let Some(command) = next else { break };
        session.last_seen.set(Instant::now());
        stats::bump(&shard.counters().messages_in, command.messages.len() as u64);
        let mut admitted = Vec::with_capacity(command.messages.len());
        let mut verdict = Verdict::Accepted;
        for message in command.messages {
            let allowed = match session.info.kind {
                EndpointKind::Events => dispatch::admit(shard, session, Some(&message.kind), message.id.as_ref()).await,
                _ => true,
            };
            if !allowed {
                verdict = Verdict::RateLimited;
                break;
            }
            admitted.push(message);
        }
        if session.is_closing() {
            verdict = Verdict::Closed;
        }
        let _ = command.verdict.send(verdict);
        for message in admitted {
            if session.is_closing() {
                break;
            }
            match session.info.kind {
                EndpointKind::Events => Box::pin(dispatch::handle_admitted(shard, session, message)).await,
                EndpointKind::Echo => {
                    let text = serde_json::Value::Object(message.body).to_string();
                    session.send(shard, session.info.wire.encode(text.as_bytes(), &shard.node().config.compression));
                }
                EndpointKind::Pusher | EndpointKind::Stats => {}
            }
        }
    }
    session.abort();
}

/// The echo of a data message as it came (never converted to MessagePack), compressed when the
/// connection negotiated permessage-deflate.
fn echo(shard: &Shard, session: &Session, opcode: u8, data: &[u8]) -> Bytes {
    let wire = crate::hub::event::Wire { msgpack: false, ..session.info.wire };
    wire.encode_data(opcode, data, &shard.node().config.compression)
}

fn violation(shard: &Rc<Shard>, session: &Rc<Session>, error: &FrameError) {
    stats::bump(&shard.counters().protocol_errors, 1);
    tracing::debug!(connection = %session.connection_id, error = %error, "closing for a WebSocket violation");
    session.close(shard, error.close_code(), &error.to_string());
}

async fn handle(shard: &Rc<Shard>, session: &Rc<Session>, message: Message) {
    if session.is_closing() {
        return;
    }
    match message {
        Message::Text(text) => {
            stats::bump(&shard.counters().messages_in, 1);
            match session.info.kind {
                EndpointKind::Events => Box::pin(dispatch::handle_text(shard, session, text)).await,
                EndpointKind::Echo => {
                    session.send(shard, echo(shard, session, frame::OP_TEXT, &text));
                }
                EndpointKind::Pusher => {
                    if let Some(face) = session.face() {
                        face.text(shard, session, text).await;
                    }
                }
                EndpointKind::Stats => {}
            }
        }
        Message::Binary(data) => {
            stats::bump(&shard.counters().messages_in, 1);
            match session.info.kind {
                EndpointKind::Echo => {
                    session.send(shard, echo(shard, session, frame::OP_BINARY, &data));
                }
                EndpointKind::Events if session.info.wire.msgpack => match crate::protocol::msgpack::to_json(&data) {
                    Ok(json) => Box::pin(dispatch::handle_text(shard, session, Bytes::from(json))).await,
                    Err(e) => {
                        if dispatch::admit(shard, session, None, None).await {
                            session.send_error(shard, &ProtocolError::new(ErrorCode::InvalidJson, e.to_string()), None)
                        }
                    }
                },
                EndpointKind::Events => {
                    if dispatch::admit(shard, session, None, None).await {
                        session.send_error(
                            shard,
                            &ProtocolError::new(
                                ErrorCode::UnsupportedFrame,
                                "binary frames are not accepted on this connection; send JSON text",
                            ),
                            None,
                        )
                    }
                }
                EndpointKind::Pusher => {
                    if let Some(face) = session.face() {
                        face.binary(shard, session);
                    }
                }
                EndpointKind::Stats => session.send_error(
                    shard,
                    &ProtocolError::new(
                        ErrorCode::UnsupportedFrame,
                        "binary frames are not accepted on this connection; send JSON text",
                    ),
                    None,
                ),
            }
        }
        Message::Ping(payload) => {
            session.send(shard, frame::encode(frame::OP_PONG, &payload));
        }
        Message::Pong(_) => {}
        Message::Close(code) => {
            let code = match code {
                Some((code, _)) => code,
                None => close_code::NORMAL,
            };
            session.close(shard, code, "");
        }
    }
}
