//! The batching writer: every persisted message goes through one writer with a bounded queue.
//!
//! It takes the first waiting row at once and everything that queued meanwhile (up to
//! `database.batch_size`; with `database.batch_linger` it first waits that long for a batch to
//! fill, as the dashboard profile's worker does), commits them in one transaction, delivers the
//! committed messages to their rooms in commit order, and only then acknowledges each sender. A
//! message is therefore acknowledged only once durable, and delivery never waits for a disk that
//! a busy shard would otherwise wait for. On shutdown the queue is drained before the process
//! exits.
//!
//! On SQLite the batches are written by a thread of their own holding its own connection
//! (statements are function calls there, not hand-offs to a database thread); each committed
//! batch crosses back to the async side once, to be delivered and acknowledged. On PostgreSQL
//! one task writes through the pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::postgres::PgStore;
use super::sqlite::SqliteWriter;
use super::{BatchWriter, NewMessage, Row, Store, StoreError, StoredMessage, Written};
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
    match store.batch_writer() {
        BatchWriter::Sqlite(_) => run_sqlite(out.clone(), store.clone(), queue).await,
        BatchWriter::Postgres(pg) => run_async(&*out, &store, pg, queue).await,
    }
    out.counters().writer_queue_depth.store(0, Ordering::Relaxed);
    tracing::info!("message writer drained and stopped");
}

/// Committed batches waiting between the SQLite writer's thread and their delivery: enough for
/// the next transaction to run while the last batch is delivered, few enough that the thread
/// waits (and the queue holds senders back) when delivery falls behind.
const IN_DELIVERY: usize = 4;

/// SQLite: a thread of its own owns the writer's connection, takes batches from the queue,
/// encrypts, writes and commits each with no hand-off per statement, and passes the committed
/// batch here (one hand-off per batch) to be delivered and acknowledged in commit order.
async fn run_sqlite<D: Deliver>(out: Arc<D>, store: Arc<Store>, queue: Queue) {
    let (done_tx, mut done_rx) = mpsc::channel::<Done>(IN_DELIVERY);
    let handle = tokio::runtime::Handle::current();
    let thread_out = out.clone();
    let spawned = std::thread::Builder::new()
        .name("herald-sqlite-writer".into())
        .spawn(move || write_on_thread(&*thread_out, &store, queue, &handle, done_tx));
    if let Err(e) = spawned {
        // The queue went with the closure: senders get "the writer has stopped".
        tracing::error!(error = %e, "the SQLite writer thread could not start; messages cannot be stored");
        return;
    }
    while let Some(done) = done_rx.recv().await {
        done.deliver(&*out).await;
    }
}

fn write_on_thread(
    out: &impl Deliver,
    store: &Store,
    queue: Queue,
    handle: &tokio::runtime::Handle,
    done: mpsc::Sender<Done>,
) {
    let Queue { mut rx, state } = queue;
    let BatchWriter::Sqlite(sqlite) = store.batch_writer() else { return };
    let size = store.config.batch_size.max(1);
    let linger = store.config.batch_linger;
    let mut batch: Vec<Job> = Vec::with_capacity(size);
    // Opened with the first batch, and again after a batch that found it unusable.
    let mut connection: Option<SqliteWriter> = None;
    while handle.block_on(collect(&mut rx, &state, size, linger, &mut batch)) {
        out.counters().writer_queue_depth.store(rx.len() as u64, Ordering::Relaxed);
        let prepared = prepare(store, &mut batch);
        let result = if prepared.rows.is_empty() {
            Ok(Vec::new())
        } else {
            let opened = match connection.take() {
                Some(open) => Ok(open),
                None => sqlite.open_writer(),
            };
            opened.and_then(|mut open| {
                let written = open.write(&prepared.rows);
                connection = Some(open);
                written
            })
        };
        if done.blocking_send(finish(out, &state, store, prepared, result)).is_err() {
            break;
        }
    }
}

/// PostgreSQL: one task, one transaction (a few statements) per batch through the pool.
async fn run_async(out: &impl Deliver, store: &Store, pg: &PgStore, queue: Queue) {
    let Queue { mut rx, state } = queue;
    let size = store.config.batch_size.max(1);
    let linger = store.config.batch_linger;
    let mut batch: Vec<Job> = Vec::with_capacity(size);
    while collect(&mut rx, &state, size, linger, &mut batch).await {
        out.counters().writer_queue_depth.store(rx.len() as u64, Ordering::Relaxed);
        let prepared = prepare(store, &mut batch);
        let result = if prepared.rows.is_empty() { Ok(Vec::new()) } else { pg.write(&prepared.rows).await };
        finish(out, &state, store, prepared, result).deliver(out).await;
    }
}

/// Waits for the next batch: the first job, everything queued meanwhile (up to `size`) and,
/// with a linger, what arrives within it. False once the writer is closed and drained.
async fn collect(
    rx: &mut mpsc::Receiver<Job>,
    state: &State,
    size: usize,
    linger: Duration,
    batch: &mut Vec<Job>,
) -> bool {
    let first = tokio::select! {
        job = rx.recv() => job,
        _ = state.closing.cancelled() => {
            rx.close();
            rx.recv().await
        }
    };
    let Some(first) = first else { return false };
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
    true
}

/// Where a sender waits for its message's outcome.
type Reply = oneshot::Sender<Result<StoredMessage, StoreError>>;

type Answer = (Reply, Result<StoredMessage, StoreError>);

/// A batch turned into rows (sensitive ones encrypted), with who waits for each.
struct Prepared {
    rows: Vec<Row>,
    /// The message rows' messages in order, each with its sender's acknowledgement and
    /// whether it is stored encrypted.
    waiting: Vec<(NewMessage, Option<Reply>, bool)>,
    /// Messages refused before the database (encryption failed): their answers.
    answers: Vec<Answer>,
}

fn prepare(store: &Store, batch: &mut Vec<Job>) -> Prepared {
    let mut prepared = Prepared {
        rows: Vec::with_capacity(batch.len()),
        waiting: Vec::with_capacity(batch.len()),
        answers: Vec::new(),
    };
    for job in batch.drain(..) {
        match job {
            Job::Message { message, ack } => match store.prepare(&message) {
                Ok(row) => {
                    let encrypted = row.encrypted.is_some();
                    prepared.rows.push(Row::Message(row));
                    prepared.waiting.push((message, ack, encrypted));
                }
                Err(e) => prepared.answers.extend(ack.map(|ack| (ack, Err(e)))),
            },
            Job::Member { room, user_id, at } => prepared.rows.push(Row::Member { room, user_id, at }),
        }
    }
    prepared
}

/// A batch after its transaction: the events to deliver in commit order, then every sender's
/// answer (sent only after the delivery, so an acknowledgement means committed and delivered).
struct Done {
    events: Vec<Arc<Event>>,
    answers: Vec<Answer>,
}

impl Done {
    /// Delivers in commit order, in one broker round trip for the whole batch, then answers.
    async fn deliver(self, out: &impl Deliver) {
        if !self.events.is_empty() {
            out.deliver_committed(self.events).await;
        }
        for (ack, answer) in self.answers {
            let _ = ack.send(answer);
        }
    }
}

/// Turns a batch's outcome into what goes out: for a failed transaction an error to every
/// sender and nothing delivered (nothing of it was committed).
fn finish(
    out: &impl Deliver,
    state: &State,
    store: &Store,
    prepared: Prepared,
    result: Result<Vec<Written>, StoreError>,
) -> Done {
    let Prepared { rows, waiting, mut answers } = prepared;
    if rows.is_empty() {
        return Done { events: Vec::new(), answers };
    }
    let ids = match result {
        Ok(ids) => {
            state.set_healthy(true);
            ids
        }
        Err(e) => {
            state.set_healthy(false);
            state.failures.lock().warn("a batch of messages could not be written", &e.to_string());
            let reason = e.to_string();
            answers.extend(
                waiting
                    .into_iter()
                    .filter_map(|(_, ack, _)| ack.map(|ack| (ack, Err(StoreError::Unavailable(reason.clone()))))),
            );
            return Done { events: Vec::new(), answers };
        }
    };
    let inserted = ids.iter().filter(|w| matches!(w, Written::New(_))).count();
    out.counters().stored_messages.fetch_add(inserted as u64, Ordering::Relaxed);
    out.counters().stored_batches.fetch_add(1, Ordering::Relaxed);
    metrics::histogram!("herald_writer_batch_rows").record(rows.len() as f64);

    let mut events = Vec::with_capacity(waiting.len());
    answers.reserve(waiting.len());
    for ((message, ack, encrypted), written) in waiting.into_iter().zip(ids) {
        let id = match written {
            Written::New(id) => id,
            // A retry: the original was stored (and delivered) before; answer with it, once.
            Written::Existing(raw) => {
                let outcome = store.open_row(raw).map(|original| StoredMessage { duplicate: true, ..original });
                answers.extend(ack.map(|ack| (ack, outcome)));
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
        answers.extend(ack.map(|ack| (ack, Ok(stored))));
    }
    Done { events, answers }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseConfig;
    use crate::store::{Backend, MessageType, Page};

    /// Records what the writer delivers.
    #[derive(Default)]
    struct Recorder {
        delivered: Mutex<Vec<Arc<Event>>>,
        counters: NodeCounters,
    }

    impl Deliver for Recorder {
        async fn deliver_committed(&self, events: Vec<Arc<Event>>) {
            self.delivered.lock().extend(events);
        }
        fn counters(&self) -> &NodeCounters {
            &self.counters
        }
    }

    fn message(room: &str, content: &str) -> NewMessage {
        NewMessage {
            room: room.into(),
            user_id: Some("ann".into()),
            user_name: None,
            message_type: MessageType::Text,
            content: content.into(),
            metadata: None,
            sensitive: false,
            created_at: 1,
            channel: None,
            idempotency_key: None,
        }
    }

    async fn sqlite_store(dir: &tempfile::TempDir) -> Arc<Store> {
        let config = DatabaseConfig {
            url: Some(format!("sqlite://{}", dir.path().join("w.db").display())),
            ..DatabaseConfig::default()
        };
        Arc::new(Store::open(&config).await.unwrap())
    }

    /// A statement that fails in the middle of a batch fails the whole transaction: every
    /// sender of that batch gets an error, nothing of it is delivered or found in history, and
    /// the writer carries on with the next batch.
    #[tokio::test]
    async fn a_batch_that_fails_midway_acknowledges_and_delivers_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        if let Backend::Sqlite(s) = &store.backend {
            sqlx::query(
                "CREATE TRIGGER refuse BEFORE INSERT ON messages WHEN new.content = 'boom' \
                 BEGIN SELECT RAISE(ABORT, 'refused'); END",
            )
            .execute(s.pool())
            .await
            .unwrap();
        }
        let (writer, queue) = Writer::new(100);
        // Queued before the writer runs, so the three are one batch.
        let acks = [
            writer.submit(message("r", "one")).await.unwrap(),
            writer.submit(message("r", "boom")).await.unwrap(),
            writer.submit(message("r", "three")).await.unwrap(),
        ];
        let out = Arc::new(Recorder::default());
        let running = tokio::spawn(run(out.clone(), store.clone(), queue));
        for ack in acks {
            assert!(matches!(ack.await.unwrap(), Err(StoreError::Unavailable(_))));
        }
        assert!(out.delivered.lock().is_empty());
        assert!(!writer.is_healthy());
        assert!(store.history("r", Page::Offset { limit: 10, offset: 0 }).await.unwrap().is_empty());
        assert!(store.search("one", None, 10).await.unwrap().is_empty());

        let stored = writer.submit(message("r", "four")).await.unwrap().await.unwrap().unwrap();
        assert!(writer.is_healthy());
        assert_eq!(out.delivered.lock().len(), 1);
        let history = store.history("r", Page::Offset { limit: 10, offset: 0 }).await.unwrap();
        assert_eq!(history.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(), ["four"]);
        assert_eq!(history[0].id, stored.id);
        assert_eq!(out.counters.stored_messages.load(Ordering::Relaxed), 1);

        writer.close();
        running.await.unwrap();
    }

    /// Acknowledged means committed and searchable; a retry with the same key is answered with
    /// the original and delivered once; closing drains what was queued.
    #[tokio::test]
    async fn acknowledged_messages_are_stored_once_and_the_queue_drains_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        let (writer, queue) = Writer::new(100);
        let out = Arc::new(Recorder::default());
        let running = tokio::spawn(run(out.clone(), store.clone(), queue));
        let keyed = NewMessage { idempotency_key: Some("k".into()), ..message("r", "apple") };
        let first = writer.submit(keyed.clone()).await.unwrap().await.unwrap().unwrap();
        let again = writer.submit(keyed).await.unwrap().await.unwrap().unwrap();
        assert!(!first.duplicate);
        assert!(again.duplicate);
        assert_eq!(again.id, first.id);
        assert_eq!(store.search("apple", None, 10).await.unwrap().len(), 1);

        let pending: Vec<Ack> = {
            let mut acks = Vec::new();
            for n in 0..20 {
                acks.push(writer.submit(message("r", &format!("m{n}"))).await.unwrap());
            }
            acks
        };
        writer.close();
        running.await.unwrap();
        for ack in pending {
            ack.await.unwrap().unwrap();
        }
        assert_eq!(out.delivered.lock().len(), 21);
        assert_eq!(store.history("r", Page::Offset { limit: 100, offset: 0 }).await.unwrap().len(), 21);
    }
}
