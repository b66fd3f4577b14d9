//! A connection's bounded outbound queue and how it reaches the socket.
//!
//! Frames are shared `Bytes`: queuing an event for ten thousand connections copies no payload.
//! Outside a fan-out batch a frame is written at once with one non-blocking `writev`; inside a
//! batch the connection is marked dirty and written once at the end, so a burst of events leaves
//! in one system call. Only when the kernel buffer is full does a flusher task wait for the
//! socket to become writable. A queue over its limit marks a slow consumer: it is closed with
//! close code 4008 and never blocks anyone else.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Session;
use crate::hub::event::Transport;
use crate::session::Shard;
use crate::stats;
use crate::transport::frame::{self, close_code};
use crate::transport::io::{ConnIo, StreamFull, StreamIo};

/// How long a closing connection may take to flush its close frame and answer it.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Most frames handed to one `writev`.
const MAX_IOVECS: usize = 64;

/// Frames waiting for the socket.
#[derive(Default)]
pub(crate) struct Outbound {
    queue: VecDeque<Bytes>,
    queued_bytes: usize,
    /// The first frame has been partly written; it must be finished before anything else.
    head_partial: bool,
    /// A flusher task is waiting for writability.
    flusher: bool,
    /// A close frame is queued; nothing more is accepted.
    pub(crate) closing: bool,
}

impl Outbound {
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    fn push(&mut self, frame: Bytes) {
        self.queued_bytes += frame.len();
        self.queue.push_back(frame);
    }

    /// Marks `n` bytes as written.
    fn advance(&mut self, mut n: usize) {
        self.queued_bytes -= n;
        while n > 0 {
            let Some(head) = self.queue.front_mut() else {
                break;
            };
            if n >= head.len() {
                n -= head.len();
                self.queue.pop_front();
                self.head_partial = false;
            } else {
                *head = head.slice(n..);
                self.head_partial = true;
                n = 0;
            }
        }
        if self.queue.is_empty() && self.queue.capacity() > 16 {
            // A burst grew the queue; an idle connection should not keep that memory.
            self.queue = VecDeque::new();
        }
    }

    fn slices(&self) -> ([IoSlice<'_>; MAX_IOVECS], usize) {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let mut n = 0;
        for frame in self.queue.iter().take(MAX_IOVECS) {
            slices[n] = IoSlice::new(frame);
            n += 1;
        }
        (slices, n)
    }
}

/// What became of a frame handed to [`Session::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Written or queued.
    Accepted,
    /// The connection is closing; the frame was dropped.
    Closed,
    /// The queue overflowed; the connection is being closed as a slow consumer.
    SlowConsumer,
}

impl Session {
    /// Queues a frame for this connection. Inside a fan-out batch the write is deferred to the
    /// end of the batch; otherwise it is attempted at once.
    pub fn send(self: &Rc<Self>, shard: &Shard, frame: Bytes) -> SendOutcome {
        if let ConnIo::Stream(stream) = &self.io {
            return self.send_stream(shard, stream, frame);
        }
        let mut out = self.out.borrow_mut();
        if out.closing {
            return SendOutcome::Closed;
        }
        let limits = &shard.node().config.websocket;
        if out.queue.len() >= limits.outbound_queue || out.queued_bytes + frame.len() > limits.outbound_queue_bytes {
            drop(out);
            self.slow_consumer(shard);
            return SendOutcome::SlowConsumer;
        }
        let was_idle = out.queue.is_empty() && !out.flusher;
        if was_idle && !shard.in_batch() && self.io.is_plain() {
            // Nothing queued and nothing to coalesce with: write straight from the caller's
            // frame, without a trip through the queue.
            match self.io.try_write_vectored(&[IoSlice::new(&frame)]) {
                Ok(n) if n == frame.len() => return SendOutcome::Accepted,
                Ok(n) => {
                    out.push(frame.slice(n..));
                    out.head_partial = n > 0;
                }
                Err(_) => out.push(frame),
            }
            drop(out);
            // The rest (or the error) is the regular path's business.
            self.flush(shard);
            return SendOutcome::Accepted;
        }
        out.push(frame);
        // A batch defers its writes to its end, and after a write-pacing hold a batch can carry
        // hundreds of events: past half its allowance a queue is written without waiting for the
        // end, so batching never turns a busy reader into a slow consumer.
        let half_full =
            out.queue.len() * 2 >= limits.outbound_queue || out.queued_bytes * 2 >= limits.outbound_queue_bytes;
        drop(out);
        if was_idle {
            if shard.in_batch() {
                shard.mark_dirty(self);
            } else {
                self.flush(shard);
            }
        } else if half_full && shard.in_batch() {
            self.flush(shard);
        }
        SendOutcome::Accepted
    }

    fn slow_consumer(self: &Rc<Self>, shard: &Shard) {
        stats::bump(&shard.counters().slow_consumer_disconnects, 1);
        let by_transport = &shard.counters().by_transport[self.info.wire.transport.index()];
        stats::bump(&by_transport[stats::by_transport::SLOW], 1);
        crate::audit::forced_disconnect(
            &self.connection_id,
            self.user_id().as_deref(),
            close_code::SLOW_CONSUMER,
            "slow consumer: outbound queue full",
        );
        let code = crate::transport::frame::close_code::close_for(self.info.kind, close_code::SLOW_CONSUMER);
        self.close_dropping_queue(shard, code, "slow consumer: outbound queue full");
    }

    /// A fallback session's send: the frame (after an SSE `id:` line when the connection's
    /// positions moved) into the bounded channel its response body drains.
    fn send_stream(self: &Rc<Self>, shard: &Shard, stream: &StreamIo, frame: Bytes) -> SendOutcome {
        if self.out.borrow().closing {
            return SendOutcome::Closed;
        }
        let max_bytes = shard.node().config.websocket.outbound_queue_bytes;
        let mut result = Ok(());
        if self.info.wire.transport == Transport::Sse
            && let Some(id) = crate::session::position_id(&self.follows.borrow())
            && stream.last_id.borrow().as_deref() != Some(id.as_str())
        {
            result = stream.push(Bytes::from(format!("id: {id}\n")), max_bytes);
            *stream.last_id.borrow_mut() = Some(id);
        }
        match result.and_then(|()| stream.push(frame, max_bytes)) {
            Ok(()) => SendOutcome::Accepted,
            Err(StreamFull::Full) => {
                self.slow_consumer(shard);
                SendOutcome::SlowConsumer
            }
            Err(StreamFull::Closed) => {
                self.abort();
                SendOutcome::Closed
            }
        }
    }

    /// Writes as much of the queue as the socket takes now; starts a flusher for the rest.
    pub(crate) fn flush(self: &Rc<Self>, shard: &Shard) {
        let mut out = self.out.borrow_mut();
        if out.flusher || out.queue.is_empty() {
            return;
        }
        match write_now(self, &mut out) {
            Ok(true) => {
                if out.closing {
                    drop(out);
                    self.after_close_sent();
                }
            }
            Ok(false) => {
                out.flusher = true;
                drop(out);
                shard.spawn(flusher(self.clone()));
            }
            Err(e) => {
                drop(out);
                tracing::debug!(connection = %self.connection_id, error = %e, "write failed; dropping connection");
                self.abort();
            }
        }
    }

    /// Starts the closing handshake after what is already queued (an error explaining the close,
    /// say), and gives the peer [`CLOSE_GRACE`] to answer before the socket is cut.
    pub fn close(self: &Rc<Self>, shard: &Shard, code: u16, reason: &str) {
        self.close_with(shard, code, reason, false);
    }

    /// Starts the closing handshake at once, dropping queued frames not yet begun: for a
    /// consumer too slow to ever read them.
    pub fn close_dropping_queue(self: &Rc<Self>, shard: &Shard, code: u16, reason: &str) {
        self.close_with(shard, code, reason, true);
    }

    fn close_with(self: &Rc<Self>, shard: &Shard, code: u16, reason: &str, drop_queue: bool) {
        let mut out = self.out.borrow_mut();
        if out.closing {
            return;
        }
        out.closing = true;
        if let ConnIo::Stream(stream) = &self.io {
            // No closing handshake over HTTP: a last message says why, then the body ends.
            drop(out);
            if drop_queue {
                // Nothing queued will be read: free the connection rather than wait for TCP.
                stream.cut();
            } else {
                let last = serde_json::json!({ "type": "close", "code": code, "reason": reason }).to_string();
                stream.end(self.info.wire.transport.encode(last.as_bytes()));
            }
            self.abort();
            return;
        }
        let keep = if drop_queue { usize::from(out.head_partial) } else { out.queue.len() };
        while out.queue.len() > keep {
            if let Some(dropped) = out.queue.pop_back() {
                out.queued_bytes -= dropped.len();
            }
        }
        out.push(frame::close_frame(code, reason));
        drop(out);
        self.close_deadline.set(Some(Instant::now() + CLOSE_GRACE));
        self.flush(shard);
    }

    /// Cuts the connection now: both directions shut, the reader wakes to end-of-stream and
    /// cleans up.
    pub fn abort(&self) {
        self.killed.set(true);
        self.io.shutdown_both();
        if let Some(waker) = self.reader_waker.take() {
            waker.wake();
        }
    }

    /// Whether the closing handshake has begun.
    pub fn is_closing(&self) -> bool {
        self.out.borrow().closing
    }

    /// Frames waiting to be written.
    pub fn queued(&self) -> usize {
        match &self.io {
            ConnIo::Stream(stream) => stream.queued(),
            _ => self.out.borrow().len(),
        }
    }

    fn after_close_sent(&self) {
        self.io.shutdown_write();
    }

    fn poll_write_queue(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut out = self.out.borrow_mut();
        loop {
            if out.queue.is_empty() {
                return self.io.poll_flush(cx);
            }
            let (slices, n) = out.slices();
            let written = match self.io.poll_write_vectored(cx, &slices[..n]) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(written)) => written,
            };
            out.advance(written);
        }
    }
}

/// Writes until the queue is empty (`true`) or the socket is full (`false`).
fn write_now(session: &Session, out: &mut Outbound) -> io::Result<bool> {
    while !out.queue.is_empty() {
        let result = if out.queue.len() == 1 {
            // The common case at low rates: one frame, no iovec array to build.
            session.io.try_write_vectored(&[IoSlice::new(&out.queue[0])])
        } else {
            let (slices, n) = out.slices();
            session.io.try_write_vectored(&slices[..n])
        };
        match result {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => out.advance(written),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(!session.io.has_buffered_output())
}

/// Waits for the socket to drain the queue, then hands writing back to the fast path.
async fn flusher(session: Rc<Session>) {
    let result = std::future::poll_fn(|cx| session.poll_write_queue(cx)).await;
    let closing = {
        let mut out = session.out.borrow_mut();
        out.flusher = false;
        out.closing
    };
    match result {
        Ok(()) if closing => session.after_close_sent(),
        Ok(()) => {}
        Err(e) => {
            tracing::debug!(connection = %session.connection_id, error = %e, "write failed; dropping connection");
            session.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_handles_partial_frames() {
        let mut out = Outbound::default();
        out.push(Bytes::from_static(b"abcd"));
        out.push(Bytes::from_static(b"ef"));
        out.advance(3);
        assert!(out.head_partial);
        assert_eq!(out.queue[0], Bytes::from_static(b"d"));
        assert_eq!(out.queued_bytes, 3);
        out.advance(3);
        assert!(out.queue.is_empty());
        assert!(!out.head_partial);
        assert_eq!(out.queued_bytes, 0);
    }
}
