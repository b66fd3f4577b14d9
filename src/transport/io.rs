//! A connection's socket after the upgrade, usable from the shard's fan-out and from the
//! connection's own reader without splitting it: everything on a shard runs on one thread, so
//! writes from the fan-out and reads from the reader never overlap.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TLS stream served by this node.
pub type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// The socket of one WebSocket connection.
pub enum ConnIo {
    /// Plain TCP: written directly with non-blocking `writev` from the fan-out.
    Tcp(TcpStream),
    /// TLS: encrypted by rustls; writes that cannot complete at once go through the flusher.
    Tls(Box<RefCell<TlsStream>>),
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
            ConnIo::Tls(stream) => {
                let mut stream = stream.borrow_mut();
                let mut read_buf = ReadBuf::new(buf);
                match Pin::new(&mut *stream).poll_read(cx, &mut read_buf) {
                    Poll::Ready(Ok(())) => Poll::Ready(Ok(read_buf.filled().len())),
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    /// Writes what the socket takes now without waiting; `WouldBlock` when it takes nothing.
    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            ConnIo::Tcp(stream) => stream.try_write_vectored(bufs),
            ConnIo::Tls(_) => {
                let mut cx = Context::from_waker(Waker::noop());
                match self.poll_write_vectored(&mut cx, bufs) {
                    Poll::Ready(result) => result,
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
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
            ConnIo::Tls(stream) => {
                let mut stream = stream.borrow_mut();
                // rustls encrypts one record per call; feed slices until one is refused.
                let mut written = 0;
                for buf in bufs.iter().filter(|b| !b.is_empty()) {
                    match Pin::new(&mut *stream).poll_write(cx, buf) {
                        Poll::Ready(Ok(n)) => {
                            written += n;
                            if n < buf.len() {
                                break;
                            }
                        }
                        Poll::Ready(Err(e)) if written == 0 => return Poll::Ready(Err(e)),
                        Poll::Pending if written == 0 => return Poll::Pending,
                        _ => break,
                    }
                }
                if written > 0 {
                    // Push the encrypted records to the socket; what does not fit stays buffered
                    // in rustls and goes out on the next flush.
                    let _ = Pin::new(&mut *stream).poll_flush(cx);
                }
                Poll::Ready(Ok(written))
            }
        }
    }

    /// Flushes data buffered below Herald (TLS records); a no-op for TCP.
    pub fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            ConnIo::Tcp(_) => Poll::Ready(Ok(())),
            ConnIo::Tls(stream) => Pin::new(&mut *stream.borrow_mut()).poll_flush(cx),
        }
    }

    /// Whether encrypted bytes are still waiting below Herald's queue.
    pub fn has_buffered_output(&self) -> bool {
        match self {
            ConnIo::Tcp(_) => false,
            ConnIo::Tls(stream) => stream.borrow().get_ref().1.wants_write(),
        }
    }

    /// Sends FIN after the close frame; the peer may still answer with its own close frame.
    pub fn shutdown_write(&self) {
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
            ConnIo::Tls(stream) => socket2::SockRef::from(stream.borrow().get_ref().0).shutdown(how),
        };
    }
}
