//! The batching writer: every persisted message goes through one task with a bounded queue.
//!
//! It takes the first waiting row at once and everything that queued meanwhile (up to
//! `database.batch_size`; with `database.batch_linger` it first waits that long for a batch to
//! fill, as the dashboard document's worker does), commits them in one transaction, delivers the
//! committed messages to their rooms in commit order, and only then acknowledges each sender. A
//! message is therefore acknowledged only once durable, and delivery never waits for a disk that
//! a busy shard would otherwise wait for. On shutdown the queue is drained before the process
//! exits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{NewMessage, Row, Store, StoreError, StoredMessage, Written};
use crate::broker::BurstLog;
use crate::hub::{Event, Target};
use crate::node::Node;

/// How long a sender waits for room in a full queue before its write fails.
const QUEUE_WAIT: Duration = Duration::from_secs(5);

/// The outcome a sender waits for.
pub type Ack = oneshot::Receiver<Result<StoredMessage, StoreError>>;

enum Job {
    Message { message: NewMessage, ack: Option<oneshot::Sender<Result<StoredMessage, StoreError>>> },
    Member { room: String, user_id: String, at: i64 },
}

/// The sending side of the writer, held by the node.
pub struct Writer {
    tx: mpsc::Sender<Job>,
    closing: CancellationToken,
    healthy: AtomicBool,
    failures: Mutex<BurstLog>,
}

/// The receiving side, consumed by [`run`].
pub struct Queue(mpsc::Receiver<Job>);

impl Writer {
    /// A writer with a queue of `capacity` rows.
    pub fn new(capacity: usize) -> (Writer, Queue) {
        let (tx, rx) = mpsc::channel(capacity);
        let writer = Writer {
            tx,
            closing: CancellationToken::new(),
            healthy: AtomicBool::new(true),
            failures: Mutex::new(BurstLog::default()),
        };
        (writer, Queue(rx))
    }

    /// Queues a message; the returned receiver resolves once it is durable and delivered (or
    /// failed). Waits up to a few seconds for room in a full queue (back-pressure on the sender).
    pub async fn submit(&self, message: NewMessage) -> Result<Ack, StoreError> {
        let (ack, done) = oneshot::channel();
        let job = Job::Message { message, ack: Some(ack) };
        match tokio::time::timeout(QUEUE_WAIT, self.tx.send(job)).await {
            Ok(Ok(())) => Ok(done),
            Ok(Err(_)) => Err(StoreError::Unavailable("the writer has stopped".into())),
            Err(_) => Err(StoreError::Unavailable("the write queue is full; try again".into())),
        }
    }

    /// Queues messages without waiting for their commit: all of them, or none when the queue
    /// has no room for all at once (refused at once, never waited for).
    pub fn enqueue(&self, messages: Vec<NewMessage>) -> Result<(), StoreError> {
        let permits = match self.tx.try_reserve_many(messages.len()) {
            Ok(permits) => permits,
            Err(mpsc::error::TrySendError::Full(())) => {
                return Err(StoreError::Unavailable("the write queue is full; try again".into()));
            }
            Err(mpsc::error::TrySendError::Closed(())) => {
                return Err(StoreError::Unavailable("the writer has stopped".into()));
            }
        };
        for (permit, message) in permits.zip(messages) {
            permit.send(Job::Message { message, ack: None });
        }
        Ok(())
    }

    /// Records that a user joined a room (for "my rooms"); dropped rather than waited for when
    /// the queue is full, since the next message in the room records it too.
    pub fn record_member(&self, room: &str, user_id: &str, at: i64) {
        let _ = self.tx.try_send(Job::Member { room: room.to_string(), user_id: user_id.to_string(), at });
    }

    /// Rows waiting.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Whether the last write succeeded (or the database answered since).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub(crate) fn set_healthy(&self, healthy: bool) {
        if self.healthy.swap(healthy, Ordering::Relaxed) != healthy {
            if healthy {
                tracing::info!("database writes succeed again");
            } else {
                tracing::warn!("database writes are failing; senders get errors until it recovers");
            }
        }
    }

    /// Stops taking rows; the writer drains what is queued and ends.
    pub fn close(&self) {
        self.closing.cancel();
    }
}

/// Runs the writer until it is closed and drained.
pub async fn run(node: Arc<Node>, store: Arc<Store>, Queue(mut rx): Queue) {
    let size = store.config.batch_size.max(1);
    let linger = store.config.batch_linger;
    let mut batch: Vec<Job> = Vec::with_capacity(size);
    loop {
        let first = tokio::select! {
            job = rx.recv() => job,
            _ = node.writer.closing.cancelled() => {
                rx.close();
                rx.recv().await
            }
        };
        let Some(first) = first else { break };
        batch.push(first);
        while batch.len() < size {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if !linger.is_zero() && batch.len() < size && !node.writer.closing.is_cancelled() {
            let deadline = tokio::time::Instant::now() + linger;
            while batch.len() < size {
                tokio::select! {
                    job = rx.recv() => match job {
                        Some(job) => batch.push(job),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = node.writer.closing.cancelled() => break,
                }
            }
        }
        node.stats.node.writer_queue_depth.store(rx.len() as u64, Ordering::Relaxed);
        commit(&node, &store, &mut batch).await;
    }
    node.stats.node.writer_queue_depth.store(0, Ordering::Relaxed);
    tracing::info!("message writer drained and stopped");
}

async fn commit(node: &Arc<Node>, store: &Store, batch: &mut Vec<Job>) {
    let mut rows = Vec::with_capacity(batch.len());
    let mut waiting = Vec::with_capacity(batch.len());
    for job in batch.drain(..) {
        match job {
            Job::Message { message, ack } => match store.prepare(&message) {
                Ok(row) => {
                    let encrypted = row.encrypted.is_some();
                    rows.push(Row::Message(row));
                    waiting.push((message, ack, encrypted));
                }
                Err(e) => {
                    if let Some(ack) = ack {
                        let _ = ack.send(Err(e));
                    }
                }
            },
            Job::Member { room, user_id, at } => rows.push(Row::Member { room, user_id, at }),
        }
    }
    if rows.is_empty() {
        return;
    }
    let ids = match store.write(&rows).await {
        Ok(ids) => {
            node.writer.set_healthy(true);
            ids
        }
        Err(e) => {
            node.writer.set_healthy(false);
            node.writer.failures.lock().warn("a batch of messages could not be written", &e.to_string());
            let reason = e.to_string();
            for (_, ack, _) in waiting {
                if let Some(ack) = ack {
                    let _ = ack.send(Err(StoreError::Unavailable(reason.clone())));
                }
            }
            return;
        }
    };
    let inserted = ids.iter().filter(|w| matches!(w, Written::New(_))).count();
    node.stats.node.stored_messages.fetch_add(inserted as u64, Ordering::Relaxed);
    node.stats.node.stored_batches.fetch_add(1, Ordering::Relaxed);
    metrics::histogram!("herald_writer_batch_rows").record(rows.len() as f64);

    let mut events = Vec::with_capacity(waiting.len());
    let mut acks = Vec::with_capacity(waiting.len());
    for ((message, ack, encrypted), written) in waiting.into_iter().zip(ids) {
        let id = match written {
            Written::New(id) => id,
            // A retry: the original was stored (and delivered) before; answer with it, once.
            Written::Existing(raw) => {
                let outcome = store.open_row(raw).map(|original| StoredMessage { duplicate: true, ..original });
                if let Some(ack) = ack {
                    let _ = ack.send(outcome);
                }
                continue;
            }
        };
        let stored = StoredMessage {
            id,
            room: message.room.to_string(),
            user_id: message.user_id,
            user_name: message.user_name,
            message_type: message.message_type.as_str().to_string(),
            content: message.content,
            metadata: message.metadata,
            encrypted,
            created_at: message.created_at,
            duplicate: false,
        };
        let payload = Bytes::from(stored.to_json().to_string());
        let target = Target { channel: message.channel, room: Some(message.room), user: None, broadcast: false };
        events.push(if encrypted { Event::sensitive(target, payload) } else { Event::new(target, payload) });
        acks.push((ack, stored));
    }
    // Delivery in commit order, in one broker round trip for the whole batch.
    node.publish_events(events).await;
    for (ack, stored) in acks {
        if let Some(ack) = ack {
            let _ = ack.send(Ok(stored));
        }
    }
}
