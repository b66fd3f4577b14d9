//! A raw-socket WebSocket client for misbehaving on purpose: unread sockets, hand-made frames,
//! protocol violations. Frames are decoded with Herald's own decoder in client mode.

use std::collections::VecDeque;
use std::net::SocketAddr;

use herald::transport::frame::{self, Decoder, Message, Role};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::WAIT;

const KEY: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

pub struct RawClient {
    pub stream: TcpStream,
    decoder: Decoder,
    pending: VecDeque<Message>,
}

impl RawClient {
    /// Vanishes with a TCP reset: no close frame, no FIN (SO_LINGER 0, then close).
    pub fn reset(self) {
        let _ = socket2::SockRef::from(&self.stream).set_linger(Some(std::time::Duration::ZERO));
        drop(self);
    }

    /// Opens a TCP connection and performs the opening handshake by hand.
    pub async fn connect(addr: SocketAddr, path: &str) -> RawClient {
        Self::connect_with_headers(addr, path, &[]).await.expect("handshake refused")
    }

    /// The same with extra headers; returns the status line and body on a non-101 answer.
    pub async fn connect_with_headers(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<RawClient, String> {
        let mut stream = TcpStream::connect(addr).await.expect("tcp connect");
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.expect("write handshake");
        let mut buf = Vec::new();
        let header_end = loop {
            let mut chunk = [0u8; 4096];
            let n =
                tokio::time::timeout(WAIT, stream.read(&mut chunk)).await.expect("handshake timed out").expect("read");
            if n == 0 {
                return Err(format!("closed during handshake: {}", String::from_utf8_lossy(&buf)));
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
        if !head.starts_with("HTTP/1.1 101") {
            // Read the body for the caller's assertions.
            let mut rest = buf[header_end..].to_vec();
            let _ = tokio::time::timeout(std::time::Duration::from_millis(500), stream.read_to_end(&mut rest)).await;
            return Err(format!("{}\n{}", head.lines().next().unwrap_or_default(), String::from_utf8_lossy(&rest)));
        }
        let mut client = RawClient { stream, decoder: Decoder::new(Role::Client, 64 << 20), pending: VecDeque::new() };
        let mut out = Vec::new();
        client.decoder.feed(&buf[header_end..], &mut out).expect("server frames decode");
        client.pending.extend(out);
        Ok(client)
    }

    /// Sends one masked frame.
    pub async fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        self.send_raw(&frame::encode_masked(opcode, payload, KEY)).await;
    }

    /// Sends a masked frame with explicit first byte (FIN, RSV bits, opcode).
    pub async fn send_frame_bits(&mut self, first_byte: u8, payload: &[u8]) {
        let mut bytes = frame::encode_masked(first_byte & 0x0F, payload, KEY).to_vec();
        bytes[0] = first_byte;
        self.send_raw(&bytes).await;
    }

    /// Sends bytes as they are. A peer that already closed may reset; that is not a failure here.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// The next message, or `None` at end of stream.
    pub async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(message) = self.pending.pop_front() {
                return Some(message);
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let n =
                match tokio::time::timeout(WAIT, self.stream.read(&mut chunk)).await.expect("no frame arrived in time")
                {
                    Ok(n) => n,
                    Err(_) => return None,
                };
            if n == 0 {
                return None;
            }
            let mut out = Vec::new();
            self.decoder.feed(&chunk[..n], &mut out).expect("server frames decode");
            self.pending.extend(out);
        }
    }

    /// The next text message as JSON, skipping pings and heartbeats.
    pub async fn next_json(&mut self) -> Value {
        loop {
            match self.next().await {
                Some(Message::Text(text)) => {
                    let value: Value = serde_json::from_slice(&text).expect("JSON");
                    if value["type"] != "heartbeat" {
                        return value;
                    }
                }
                Some(Message::Ping(_) | Message::Pong(_)) => continue,
                other => panic!("expected text, got {other:?}"),
            }
        }
    }

    /// The next binary MessagePack message (a `herald.msgpack` session) as JSON, skipping pings
    /// and heartbeats.
    pub async fn next_msgpack(&mut self) -> Value {
        loop {
            match self.next().await {
                Some(Message::Binary(data)) => {
                    let value: Value = rmp_serde::from_slice(&data).expect("MessagePack");
                    if value["type"] != "heartbeat" {
                        return value;
                    }
                }
                Some(Message::Ping(_) | Message::Pong(_)) => continue,
                other => panic!("expected a MessagePack message, got {other:?}"),
            }
        }
    }

    /// Reads until the close frame; returns its code (1005 without one, 1006 on a bare end of stream).
    pub async fn expect_close(&mut self) -> u16 {
        loop {
            match self.next().await {
                Some(Message::Close(Some((code, _)))) => return code,
                Some(Message::Close(None)) => return 1005,
                Some(_) => continue,
                None => return 1006,
            }
        }
    }
}
