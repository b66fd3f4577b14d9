//! A connection's socket after the upgrade, usable from the shard's fan-out and from the
//! connection's own reader without splitting it: everything on a shard runs on one thread, so
//! writes from the fan-out and reads from the reader never overlap.

use std::cell::RefCell;
use std::io::{self, IoSlice, Read, Write};
use std::task::{Context, Poll};

use tokio::net::TcpStream;
use tokio_rustls::rustls::ServerConnection;

/// The socket of one WebSocket connection.
pub enum ConnIo {
    /// Plain TCP: written directly with non-blocking `writev` from the fan-out.
    Tcp(TcpStream),
    /// TLS: rustls driven by hand over the shard's own socket (sans-IO), so reads and writes stay
    /// non-blocking calls exactly as for plain TCP.
    Tls(Box<TlsIo>),
    /// An HTTP fallback (SSE, NDJSON): frames go into a bounded channel that the response body
    /// drains; there is nothing to read (commands arrive by POST).
    Stream(Box<StreamIo>),
}

/// The shard's end of a fallback session's response body: a bounded channel of shared frames.
///
/// The queue bound is the WebSocket one (`websocket.outbound_queue` frames,
/// `websocket.outbound_queue_bytes` bytes); a frame that does not fit makes the session a slow
/// consumer, exactly as a full WebSocket queue does.
pub struct StreamIo {
    tx: RefCell<Option<tokio::sync::mpsc::Sender<bytes::Bytes>>>,
    shared: std::sync::Arc<StreamShared>,
    /// The last SSE `id:` sent (a position vector), so it is repeated only when it changes.
    pub(crate) last_id: RefCell<Option<String>>,
}

/// What the shard and the response body share besides the channel.
#[derive(Default)]
pub struct StreamShared {
    /// Bytes in the channel, not yet taken by the body.
    pub queued_bytes: std::sync::atomic::AtomicUsize,
    /// The last message (why the session closed), written after everything queued.
    pub last: parking_lot::Mutex<Option<bytes::Bytes>>,
    /// Cuts the HTTP connection carrying the response.
    pub cut: Option<super::http::ConnectionCut>,
}

/// Why a frame could not be queued on a fallback session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFull {
    /// The queue is at its bound.
    Full,
    /// The body is gone (the client left) or the session ended.
    Closed,
}

impl StreamIo {
    /// The shard's end of a channel whose receiver feeds the response body.
    pub fn new(tx: tokio::sync::mpsc::Sender<bytes::Bytes>, shared: std::sync::Arc<StreamShared>) -> Self {
        StreamIo { tx: RefCell::new(Some(tx)), shared, last_id: RefCell::new(None) }
    }

    /// Queues `frame` if the channel has room for it and the bytes stay within `max_bytes`.
    pub fn push(&self, frame: bytes::Bytes, max_bytes: usize) -> Result<(), StreamFull> {
        use std::sync::atomic::Ordering;
        let tx = self.tx.borrow();
        let Some(tx) = tx.as_ref() else { return Err(StreamFull::Closed) };
        let len = frame.len();
        if self.shared.queued_bytes.load(Ordering::Relaxed) + len > max_bytes {
            return Err(StreamFull::Full);
        }
        self.shared.queued_bytes.fetch_add(len, Ordering::Relaxed);
        match tx.try_send(frame) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.shared.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                match e {
                    tokio::sync::mpsc::error::TrySendError::Full(_) => Err(StreamFull::Full),
                    tokio::sync::mpsc::error::TrySendError::Closed(_) => Err(StreamFull::Closed),
                }
            }
        }
    }

    /// Ends the body after what is queued, with `last` as its final message.
    pub fn end(&self, last: Option<bytes::Bytes>) {
        if let Some(last) = last {
            *self.shared.last.lock() = Some(last);
        }
        self.tx.borrow_mut().take();
    }

    /// Ends the response at once by closing its connection: for a client that does not read,
    /// whose queued frames and socket buffers would otherwise stay until TCP gives up.
    pub fn cut(&self) {
        self.tx.borrow_mut().take();
        if let Some(cut) = &self.shared.cut {
            cut.cut();
        }
    }

    /// Frames in the channel, not yet taken by the body.
    pub fn queued(&self) -> usize {
        self.tx.borrow().as_ref().map_or(0, |tx| tx.max_capacity() - tx.capacity())
    }

    /// A handle whose `closed()` resolves when the body is dropped (the client went away).
    pub fn watch(&self) -> Option<tokio::sync::mpsc::Sender<bytes::Bytes>> {
        self.tx.borrow().clone()
    }
}

/// A TLS session and its socket.
pub struct TlsIo {
    tcp: TcpStream,
    tls: RefCell<ServerConnection>,
}

impl TlsIo {
    /// Wraps a session handed over after its handshake and HTTP upgrade.
    pub fn new(tcp: TcpStream, tls: ServerConnection) -> Self {
        TlsIo { tcp, tls: RefCell::new(tls) }
    }

    /// Sends whatever encrypted records rustls holds until the socket refuses more.
    fn flush_records(&self, tls: &mut ServerConnection) -> io::Result<()> {
        while tls.wants_write() {
            match tls.write_tls(&mut SocketWriter(&self.tcp)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            let mut tls = self.tls.borrow_mut();
            match tls.reader().read(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            match tls.read_tls(&mut SocketReader(&self.tcp)) {
                Ok(0) => return Poll::Ready(Ok(0)),
                Ok(_) => {
                    if let Err(e) = tls.process_new_packets() {
                        // Tell the peer why (an alert), best effort, then fail the read.
                        let _ = self.flush_records(&mut tls);
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                    }
                    // Key updates and alerts produce records of their own.
                    self.flush_records(&mut tls)?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drop(tls);
                    if self.tcp.poll_read_ready(cx)?.is_pending() {
                        return Poll::Pending;
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut tls = self.tls.borrow_mut();
        self.flush_records(&mut tls)?;
        // rustls accepts plaintext up to its buffer limit and encrypts it at once.
        let accepted = tls.writer().write_vectored(bufs)?;
        self.flush_records(&mut tls)?;
        if accepted == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(accepted)
    }
}

/// `io::Read` over a non-blocking tokio socket, for rustls.
struct SocketReader<'a>(&'a TcpStream);

impl io::Read for SocketReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

/// `io::Write` over a non-blocking tokio socket, for rustls.
struct SocketWriter<'a>(&'a TcpStream);

impl io::Write for SocketWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ConnIo {
    /// Reads into `buf`, registering the waker when nothing is available.
    pub fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self {
            ConnIo::Tcp(stream) => loop {
                match stream.try_read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if stream.poll_read_ready(cx)?.is_pending() {
                            return Poll::Pending;
                        }
                    }
                    other => return Poll::Ready(other),
                }
            },
            ConnIo::Tls(tls) => tls.poll_read(cx, buf),
            ConnIo::Stream(_) => Poll::Pending,
        }
    }

    /// Plain TCP: what is written is on the wire, nothing stays buffered in user space.
    pub fn is_plain(&self) -> bool {
        matches!(self, ConnIo::Tcp(_))
    }

    /// Writes what the socket takes now without waiting; `WouldBlock` when it takes nothing.
    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            ConnIo::Tcp(stream) => stream.try_write_vectored(bufs),
            ConnIo::Tls(tls) => tls.try_write_vectored(bufs),
            // Fallback sessions queue through `StreamIo::push`, never through here.
            ConnIo::Stream(_) => Err(io::ErrorKind::Unsupported.into()),
        }
    }

    /// Writes, registering the waker when the socket takes nothing.
    pub fn poll_write_vectored(&self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match self {
            ConnIo::Tcp(stream) => loop {
                match stream.try_write_vectored(bufs) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if stream.poll_write_ready(cx)?.is_pending() {
                            return Poll::Pending;
                        }
                    }
                    other => return Poll::Ready(other),
                }
            },
            ConnIo::Tls(tls) => loop {
                match tls.try_write_vectored(bufs) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if tls.tcp.poll_write_ready(cx)?.is_pending() {
                            return Poll::Pending;
                        }
                    }
                    other => return Poll::Ready(other),
                }
            },
            ConnIo::Stream(_) => Poll::Ready(Err(io::ErrorKind::Unsupported.into())),
        }
    }

    /// Flushes data buffered below Herald (TLS records); a no-op for TCP.
    pub fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            ConnIo::Tcp(_) | ConnIo::Stream(_) => Poll::Ready(Ok(())),
            ConnIo::Tls(tls) => loop {
                tls.flush_records(&mut tls.tls.borrow_mut())?;
                if !tls.tls.borrow().wants_write() {
                    return Poll::Ready(Ok(()));
                }
                if tls.tcp.poll_write_ready(cx)?.is_pending() {
                    return Poll::Pending;
                }
            },
        }
    }

    /// Whether encrypted bytes are still waiting below Herald's queue.
    pub fn has_buffered_output(&self) -> bool {
        match self {
            ConnIo::Tcp(_) | ConnIo::Stream(_) => false,
            ConnIo::Tls(tls) => tls.tls.borrow().wants_write(),
        }
    }

    /// Sends FIN after the close frame (and TLS close_notify); the peer may still answer with its
    /// own close frame.
    pub fn shutdown_write(&self) {
        if let ConnIo::Tls(tls) = self {
            let mut session = tls.tls.borrow_mut();
            session.send_close_notify();
            let _ = tls.flush_records(&mut session);
        }
        self.shutdown(std::net::Shutdown::Write);
    }

    /// Ends both directions at once; the reader sees end-of-stream.
    pub fn shutdown_both(&self) {
        self.shutdown(std::net::Shutdown::Both);
    }

    fn shutdown(&self, how: std::net::Shutdown) {
        // Errors mean the socket is already gone, which is what was asked for.
        let _ = match self {
            ConnIo::Tcp(stream) => socket2::SockRef::from(stream).shutdown(how),
            ConnIo::Tls(tls) => socket2::SockRef::from(&tls.tcp).shutdown(how),
            ConnIo::Stream(stream) => {
                stream.end(None);
                Ok(())
            }
        };
    }
}
