//! The floor: an in-process "ideal server" that does nothing but the system calls a fan-out
//! cannot avoid. It accepts the clients, answers their WebSocket handshake, and writes each event,
//! encoded once, to every socket with one `write` per socket from a few plain threads (as many as
//! Herald has shards). Run against the same clients, it shows how close Herald's latency is to
//! what this machine's loopback TCP allows.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;

use anyhow::Context;
use bytes::Bytes;
use herald::transport::frame;

/// Handle to the floor server's writer threads.
pub struct Floor {
    /// Where clients connect.
    pub addr: SocketAddr,
    writers: Vec<mpsc::Sender<Bytes>>,
}

impl Floor {
    /// Listens on loopback and accepts `clients` connections in the background, spreading them
    /// over `threads` writer threads.
    pub fn start(clients: usize, threads: usize) -> anyhow::Result<Floor> {
        // A deep backlog, as Herald's: thousands of clients connect at once.
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).context("binding the floor server")?;
        socket.listen(8192)?;
        let listener: TcpListener = socket.into();
        let addr = listener.local_addr()?;
        let threads = threads.max(1);
        let mut writers = Vec::with_capacity(threads);
        let mut adopt = Vec::with_capacity(threads);
        for _ in 0..threads {
            let (events_tx, events_rx) = mpsc::channel::<Bytes>();
            let (sockets_tx, sockets_rx) = mpsc::channel::<TcpStream>();
            writers.push(events_tx);
            adopt.push(sockets_tx);
            thread::spawn(move || write_loop(events_rx, sockets_rx));
        }
        thread::spawn(move || {
            let welcome = frame::encode(frame::OP_TEXT, br#"{"type":"connection","status":"connected"}"#);
            for i in 0..clients {
                let Ok((mut socket, _)) = listener.accept() else { return };
                if handshake(&mut socket, &welcome).is_ok() {
                    let _ = adopt[i % adopt.len()].send(socket);
                }
            }
        });
        Ok(Floor { addr, writers })
    }

    /// Writes an event (a JSON text) to every socket.
    pub fn publish(&self, json: &[u8]) {
        let encoded = frame::encode(frame::OP_TEXT, json);
        for writer in &self.writers {
            let _ = writer.send(encoded.clone());
        }
    }
}

fn handshake(socket: &mut TcpStream, welcome: &[u8]) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let mut request = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        request.extend_from_slice(&chunk[..n]);
    }
    // The light client does not check the accept key, but tokio-tungstenite (`--client
    // tungstenite`) does.
    let head = String::from_utf8_lossy(&request);
    let key = head
        .lines()
        .find_map(|line| line.split_once(':').filter(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-key")))
        .map(|(_, value)| value.trim())
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        herald::transport::handshake::accept_key(key)
    );
    socket.write_all(response.as_bytes())?;
    socket.write_all(welcome)
}

fn write_loop(events: mpsc::Receiver<Bytes>, sockets: mpsc::Receiver<TcpStream>) {
    let mut owned: Vec<TcpStream> = Vec::new();
    while let Ok(event) = events.recv() {
        owned.extend(sockets.try_iter());
        for socket in &mut owned {
            let _ = socket.write_all(&event);
        }
    }
}
