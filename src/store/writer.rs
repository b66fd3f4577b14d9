//! The batching writer: every persisted message goes through one task with a bounded queue.
//!
//! It takes the first waiting row at once and everything that queued meanwhile (up to
//! `database.batch_size`; with `database.batch_linger` it first waits that long for a batch to
//! fill, as the dashboard profile's worker does), commits them in one transaction, delivers the
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
use crate::hub::{Event, Target};
use crate::stats::BurstLog;
use crate::stats::NodeCounters;

/// How long a sender waits for room in a full queue before its write fails.
const QUEUE_WAIT: Duration = Duration::from_secs(5);

/// The outcome a sender waits for.
pub type Ack = oneshot::Receiver<Result<StoredMessage, StoreError>>;

enum Job {
    Message { message: NewMessage, ack: Option<oneshot::Sender<Result<StoredMessage, StoreError>>> },
    Member { room: String, user_id: String, at: i64 },
}

/// Where committed messages go. The writer publishes through this and counts its work on it,
/// and knows nothing else of the node.
pub trait Deliver: Send + Sync + 'static {
    /// Publishes a committed batch's events in commit order (one broker round trip).
    fn deliver_committed(&self, events: Vec<Arc<Event>>) -> impl Future<Output = ()> + Send;
    /// The node's counters: stored messages, batches, queue depth.
    fn counters(&self) -> &NodeCounters;
}

/// What the two sides of the writer share.
struct State {
    closing: CancellationToken,
    healthy: AtomicBool,
    failures: Mutex<BurstLog>,
}

/// The sending side of the writer, held by the node.
pub struct Writer {
    tx: mpsc::Sender<Job>,
    state: Arc<State>,
}

/// The receiving side, consumed by [`run`].
pub struct Queue {
    rx: mpsc::Receiver<Job>,
    state: Arc<State>,
}

impl Writer {
    /// A writer with a queue of `capacity` rows.
    pub fn new(capacity: usize) -> (Writer, Queue) {
        let (tx, rx) = mpsc::channel(capacity);
        let state = Arc::new(State {
            closing: CancellationToken::new(),
            healthy: AtomicBool::new(true),
            failures: Mutex::new(BurstLog::default()),
        });
        (Writer { tx, state: state.clone() }, Queue { rx, state })
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
        self.state.healthy.load(Ordering::Relaxed)
    }

    /// The writer's health flag alone, for the database probe (which must not hold a sender:
    /// it would keep the queue open).
    pub fn health(&self) -> Health {
        Health(self.state.clone())
    }

    /// Stops taking rows; the writer drains what is queued and ends.
    pub fn close(&self) {
        self.state.closing.cancel();
    }
}

/// The writer's health flag: read by health checks, set by the database probe.
#[derive(Clone)]
pub struct Health(Arc<State>);

impl Health {
    /// Whether the last write succeeded (or the database answered since).
    pub fn is_healthy(&self) -> bool {
        self.0.healthy.load(Ordering::Relaxed)
    }

    /// Records that the database answered outside a write.
    pub fn set_healthy(&self, healthy: bool) {
        self.0.set_healthy(healthy);
    }
}

impl State {
    fn set_healthy(&self, healthy: bool) {
        if self.healthy.swap(healthy, Ordering::Relaxed) != healthy {
            if healthy {
                tracing::info!("database writes succeed again");
            } else {
                tracing::warn!("database writes are failing; senders get errors until it recovers");
            }
        }
    }
}

/// Runs the writer until it is closed and drained, handing each committed batch to `out`.
pub async fn run<D: Deliver>(out: Arc<D>, store: Arc<Store>, queue: Queue) {
    let Queue { mut rx, state } = queue;
    let size = store.config.batch_size.max(1);
    let linger = store.config.batch_linger;
    let mut batch: Vec<Job> = Vec::with_capacity(size);
    loop {
        let first = tokio::select! {
            job = rx.recv() => job,
            _ = state.closing.cancelled() => {
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
        if !linger.is_zero() && batch.len() < size && !state.closing.is_cancelled() {
            let deadline = tokio::time::Instant::now() + linger;
            while batch.len() < size {
                tokio::select! {
                    job = rx.recv() => match job {
                        Some(job) => batch.push(job),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = state.closing.cancelled() => break,
                }
            }
        }
        out.counters().writer_queue_depth.store(rx.len() as u64, Ordering::Relaxed);
        commit(&*out, &state, &store, &mut batch).await;
    }
    out.counters().writer_queue_depth.store(0, Ordering::Relaxed);
    tracing::info!("message writer drained and stopped");
}

async fn commit(out: &impl Deliver, state: &State, store: &Store, batch: &mut Vec<Job>) {
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
            state.set_healthy(true);
            ids
        }
        Err(e) => {
            state.set_healthy(false);
            state.failures.lock().warn("a batch of messages could not be written", &e.to_string());
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
    out.counters().stored_messages.fetch_add(inserted as u64, Ordering::Relaxed);
    out.counters().stored_batches.fetch_add(1, Ordering::Relaxed);
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
    out.deliver_committed(events).await;
    for (ack, stored) in acks {
        if let Some(ack) = ack {
            let _ = ack.send(Ok(stored));
        }
    }
}
