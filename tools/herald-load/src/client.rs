//! The subscribers' WebSocket client, chosen with `--client`: the load tool's own light client
//! (`ws.rs`: raw socket, Herald's frame decoder, no buffer between reads) or a third-party one,
//! tokio-tungstenite with its default configuration, as an application would use it. A server
//! tuned only against a client it wrote itself could favour that client's reading pattern; the
//! second client keeps every fan-out comparison honest.

use std::io;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use herald::transport::frame::Message;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message as TMessage};

use crate::ws;

/// Which WebSocket implementation the subscribers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientKind {
    /// The load tool's own client: raw socket and Herald's frame decoder in client mode.
    Light,
    /// tokio-tungstenite (default configuration), one reader task per connection.
    Tungstenite,
}

/// An open subscriber connection of either kind.
// The tungstenite stream is larger than the light client, but a connection lives as long as the
// run and there is one per subscriber; boxing it would only add an indirection to every read.
#[allow(clippy::large_enum_variant)]
pub enum Client {
    /// The light client.
    Light(ws::WsClient),
    /// tokio-tungstenite.
    Tungstenite(WebSocketStream<TcpStream>),
}

/// Opens a connection from `source` (any port) and performs the WebSocket handshake.
pub async fn connect(
    kind: ClientKind,
    server: SocketAddr,
    source: Option<IpAddr>,
    path_and_query: &str,
    deflate: bool,
) -> io::Result<Client> {
    match kind {
        ClientKind::Light => Ok(Client::Light(ws::connect_with(server, source, path_and_query, deflate).await?)),
        ClientKind::Tungstenite => {
            if deflate {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "tokio-tungstenite has no permessage-deflate; use --client light with --deflate",
                ));
            }
            let stream = ws::connect_tcp(server, source).await?;
            let url = format!("ws://{server}{path_and_query}");
            let (socket, _) = tokio_tungstenite::client_async_with_config(url, stream, None).await.map_err(to_io)?;
            Ok(Client::Tungstenite(socket))
        }
    }
}

fn to_io(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        other => io::Error::other(other),
    }
}

impl Client {
    /// Reads whatever arrives next into `out` (the light client: everything one read brings;
    /// tungstenite: one message); `Ok(false)` at end of stream.
    pub async fn read_into(&mut self, scratch: &mut [u8], out: &mut Vec<Message>) -> io::Result<bool> {
        match self {
            Client::Light(client) => client.read_into(scratch, out).await,
            Client::Tungstenite(socket) => {
                let message = match socket.next().await {
                    None => return Ok(false),
                    Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)) => {
                        return Ok(false);
                    }
                    Some(message) => message.map_err(to_io)?,
                };
                out.push(match message {
                    TMessage::Text(text) => Message::Text(Bytes::from(text)),
                    TMessage::Binary(data) => Message::Binary(data),
                    TMessage::Ping(data) => Message::Ping(data),
                    TMessage::Pong(data) => Message::Pong(data),
                    TMessage::Close(frame) => Message::Close(frame.map(|f| (u16::from(f.code), f.reason.to_string()))),
                    TMessage::Frame(_) => return Ok(true),
                });
                Ok(true)
            }
        }
    }

    /// Sends a text message.
    pub async fn send_text(&mut self, text: &str) -> io::Result<()> {
        match self {
            Client::Light(client) => client.send_text(text).await,
            Client::Tungstenite(socket) => socket.send(TMessage::text(text)).await.map_err(to_io),
        }
    }

    /// Answers a ping (tungstenite queues its own pong on reading the ping).
    pub async fn pong(&mut self, payload: &[u8]) -> io::Result<()> {
        match self {
            Client::Light(client) => client.pong(payload).await,
            Client::Tungstenite(_) => Ok(()),
        }
    }
}

/// Something that reads decoded messages: either client, or the light client alone (the
/// connections and soak modes use only that one).
pub(crate) trait ReadMessages {
    /// Reads what arrives next into `out`; `Ok(false)` at end of stream.
    async fn read_messages(&mut self, scratch: &mut [u8], out: &mut Vec<Message>) -> io::Result<bool>;
}

impl ReadMessages for Client {
    async fn read_messages(&mut self, scratch: &mut [u8], out: &mut Vec<Message>) -> io::Result<bool> {
        self.read_into(scratch, out).await
    }
}

impl ReadMessages for ws::WsClient {
    async fn read_messages(&mut self, scratch: &mut [u8], out: &mut Vec<Message>) -> io::Result<bool> {
        self.read_into(scratch, out).await
    }
}
