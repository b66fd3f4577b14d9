//! A lean WebSocket client: raw TCP, a hand-written opening handshake, and Herald's own frame
//! decoder in client mode. One task per connection, no per-frame allocation beyond the payload.

use std::io;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use herald::transport::frame::{self, Decoder, Message, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Masking key for client frames; the server does not care which.
const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x9e];

/// An open WebSocket connection.
pub struct WsClient {
    pub stream: TcpStream,
    decoder: Decoder,
    leftover: Bytes,
}

/// Opens a TCP connection (no delay) from `source`, its port chosen at connect time.
pub async fn connect_tcp(server: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = if server.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(ip) = source {
        // Choose the port at connect time, so ports are per (source, destination) pair and
        // tens of thousands of connections fit on one source address.
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::IpBindAddressNoPort, &true)
            .map_err(io::Error::from)?;
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Opens a TCP connection from `source` (any port) and performs the WebSocket handshake.
pub async fn connect(server: SocketAddr, source: Option<IpAddr>, path_and_query: &str) -> io::Result<WsClient> {
    connect_with(server, source, path_and_query, false).await
}

/// The same, offering permessage-deflate when `deflate` (inflating with Herald's own inflater).
pub async fn connect_with(
    server: SocketAddr,
    source: Option<IpAddr>,
    path_and_query: &str,
    deflate: bool,
) -> io::Result<WsClient> {
    let mut stream = connect_tcp(server, source).await?;
    let request = format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{}\r\n",
        if deflate { "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n" } else { "" }
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    let end = loop {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed during handshake"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > 16 * 1024 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "oversized handshake response"));
        }
    };
    if !buf.starts_with(b"HTTP/1.1 101") {
        let line =
            String::from_utf8_lossy(&buf[..buf.iter().position(|b| *b == b'\r').unwrap_or(buf.len())]).to_string();
        return Err(io::Error::new(io::ErrorKind::ConnectionRefused, format!("upgrade refused: {line}")));
    }
    let mut decoder = Decoder::new(Role::Client, 16 << 20);
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    if deflate && head.contains("sec-websocket-extensions: permessage-deflate") {
        decoder.set_inflate(Box::new(herald::transport::deflate::Inflater::new(
            !head.contains("server_no_context_takeover"),
        )));
    }
    Ok(WsClient { stream, decoder, leftover: Bytes::copy_from_slice(&buf[end..]) })
}

impl WsClient {
    /// Reads and decodes whatever is available into `out`; `Ok(false)` at end of stream.
    pub async fn read_into(&mut self, scratch: &mut [u8], out: &mut Vec<Message>) -> io::Result<bool> {
        if !self.leftover.is_empty() {
            let leftover = std::mem::take(&mut self.leftover);
            self.decoder.feed(&leftover, out).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            return Ok(true);
        }
        let n = self.stream.read(scratch).await?;
        if n == 0 {
            return Ok(false);
        }
        self.decoder.feed(&scratch[..n], out).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(true)
    }

    /// Reads and decodes what is available without waiting (call after `stream.readable()`):
    /// `Ok(None)` when nothing was, `Ok(Some(false))` at end of stream. Lets an idle holder keep
    /// its scratch buffer per thread instead of per connection.
    pub fn try_read_into(&mut self, scratch: &mut [u8], out: &mut Vec<Message>) -> io::Result<Option<bool>> {
        if !self.leftover.is_empty() {
            let leftover = std::mem::take(&mut self.leftover);
            self.decoder.feed(&leftover, out).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            return Ok(Some(true));
        }
        match self.stream.try_read(scratch) {
            Ok(0) => Ok(Some(false)),
            Ok(n) => {
                self.decoder.feed(&scratch[..n], out).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                Ok(Some(true))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.stream.write_all(&frame::encode_masked(frame::OP_TEXT, text.as_bytes(), MASK)).await
    }

    /// Answers a ping.
    pub async fn pong(&mut self, payload: &[u8]) -> io::Result<()> {
        self.stream.write_all(&frame::encode_masked(frame::OP_PONG, payload, MASK)).await
    }
}

/// Extracts an unsigned integer field from a flat JSON object without parsing the whole of it.
///
/// Called twice for every message received, so it allocates nothing: the load tool's cost per
/// message is part of every figure it prints.
pub fn json_u64(text: &[u8], field: &str) -> Option<u64> {
    // Also inside a JSON-encoded string (the `data` of a Pusher message): `\"t\":123`.
    let mut buf = [0u8; 64];
    let start = find_after(text, &mut buf, b"\"", field.as_bytes(), b"\":")
        .or_else(|| find_after(text, &mut buf, b"\\\"", field.as_bytes(), b"\\\":"))?;
    let digits = text[start..].iter().skip_while(|b| **b == b' ').take_while(|b| b.is_ascii_digit());
    let mut value: u64 = 0;
    let mut any = false;
    for d in digits {
        value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        any = true;
    }
    any.then_some(value)
}

/// Where the text after `open field close` starts in `text`, the needle built in `buf`.
fn find_after(text: &[u8], buf: &mut [u8; 64], open: &[u8], field: &[u8], close: &[u8]) -> Option<usize> {
    let len = open.len() + field.len() + close.len();
    let needle = buf.get_mut(..len)?;
    needle[..open.len()].copy_from_slice(open);
    needle[open.len()..open.len() + field.len()].copy_from_slice(field);
    needle[open.len() + field.len()..].copy_from_slice(close);
    memchr::memmem::find(text, needle).map(|p| p + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_fields() {
        let text = br#"{"type":"bench","t":123456789,"seq": 42,"pad":"x"}"#;
        assert_eq!(json_u64(text, "t"), Some(123456789));
        let pusher = br#"{"event":"bench","channel":"c","data":"{\"t\":77,\"seq\":3}"}"#;
        assert_eq!((json_u64(pusher, "t"), json_u64(pusher, "seq")), (Some(77), Some(3)));
        assert_eq!(json_u64(text, "seq"), Some(42));
        assert_eq!(json_u64(text, "missing"), None);
    }
}
