//! Consuming events in batches.
//!
//! A consumer registered on a queue receives every event inserted after its registration,
//! in batches: each batch is the set of events committed between two ticks. The cycle is
//! *next batch → read its events → tag failures for retry → finish*. Finishing commits the
//! consumer's position; a batch that is not finished (the process crashed, or the [`Batch`]
//! was dropped) is handed out again by the next `next_batch` call.
//!
//! ```no_run
//! # fn main() -> pgq::Result<()> {
//! use std::time::Duration;
//!
//! let client = pgq::Client::connect("host=localhost dbname=app")?;
//! let consumer = pgq::Consumer::new(&client, "orders", "mailer")?;
//! consumer.register()?;
//! while let Some(batch) = consumer.next_batch()? {
//!     for ev in batch.events() {
//!         let ev = ev?;
//!         if ev.data.as_deref() == Some("") {
//!             batch.retry(ev.id, Duration::from_secs(30)); // try again later
//!         }
//!     }
//!     batch.finish()?;
//! }
//! # Ok(()) }
//! ```
//!
//! The free functions ([`next_batch`], [`get_batch_events`], [`event_retry`], [`batch_retry`],
//! [`finish_batch`]) are the SQL API one to one, for callers who manage connections and
//! transactions themselves.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam_channel::Receiver;

use postgres::types::{ToSql, Type};
use postgres::{GenericClient, Row};

use crate::admin::interval_text;
use crate::client::{check_name, pooled_query_one, Client, PooledConnection};
use crate::error::{Error, ErrorKind, Result};
use crate::event::{Event, EventColumns};
use crate::look_ahead::LookAhead;

/// Events fetched per round trip by [`Batch::events`] unless set with
/// [`Consumer::fetch_size`] (or [`WorkerBuilder::fetch_size`](crate::worker::WorkerBuilder::fetch_size)).
///
/// At most this many events are held in memory at once, so the bound is this times the
/// largest event. 1000 keeps a consumer of small events (~100 bytes) at a few MiB while
/// making the per-FETCH round trip negligible; for large payloads (say 1 MiB each) choose a
/// smaller size, down to 1.
///
/// ```
/// assert_eq!(pgq::consumer::DEFAULT_FETCH_SIZE, 1000);
/// ```
pub const DEFAULT_FETCH_SIZE: usize = 1000;

pub(crate) const CURSOR_NAME: &str = "pgq_batch_events";

/// The result of `pgq.next_batch_info`: a batch id and the two ticks it spans.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let mut conn = postgres::Client::connect("dbname=app", postgres::NoTls)?;
/// if let Some(b) = pgq::consumer::next_batch(&mut conn, "orders", "mailer")? {
///     println!("batch {} covers ticks {:?}..{}", b.batch_id, b.prev_tick_id, b.cur_tick_id);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextBatch {
    /// `batch_id`.
    pub batch_id: i64,
    /// `cur_tick_id`: the tick that ends the batch.
    pub cur_tick_id: i64,
    /// `prev_tick_id`: the tick the batch starts after.
    pub prev_tick_id: Option<i64>,
    /// `cur_tick_time`.
    pub cur_tick_time: SystemTime,
    /// `prev_tick_time`.
    pub prev_tick_time: Option<SystemTime>,
    /// `cur_tick_event_seq`: the queue's event sequence at the end tick.
    pub cur_tick_event_seq: i64,
    /// `prev_tick_event_seq`: the queue's event sequence at the start tick.
    pub prev_tick_event_seq: Option<i64>,
}

impl NextBatch {
    pub(crate) fn from_row(row: &Row) -> Result<Option<NextBatch>> {
        let batch_id: Option<i64> = row.try_get("batch_id")?;
        let batch_id = match batch_id {
            Some(b) => b,
            None => return Ok(None),
        };
        let missing = |col: &str| {
            Error::new(
                ErrorKind::Other,
                format!("pgq.next_batch_info returned batch {batch_id} with NULL {col}"),
            )
        };
        Ok(Some(NextBatch {
            batch_id,
            cur_tick_id: row
                .try_get::<_, Option<i64>>("cur_tick_id")?
                .ok_or_else(|| missing("cur_tick_id"))?,
            prev_tick_id: row.try_get("prev_tick_id")?,
            cur_tick_time: row
                .try_get::<_, Option<SystemTime>>("cur_tick_time")?
                .ok_or_else(|| missing("cur_tick_time"))?,
            prev_tick_time: row.try_get("prev_tick_time")?,
            cur_tick_event_seq: row
                .try_get::<_, Option<i64>>("cur_tick_event_seq")?
                .ok_or_else(|| missing("cur_tick_event_seq"))?,
            prev_tick_event_seq: row.try_get("prev_tick_event_seq")?,
        }))
    }
}

/// `pgq.next_batch_info`: opens (or re-opens) the consumer's next batch; `None` when there is
/// no newer tick yet. (It runs `pgq.next_batch_custom` with no limits, which is what
/// `next_batch_info` does.)
///
/// The batch is recorded when the calling transaction commits; run it in its own transaction
/// (a plain connection does that) so that a crash later re-delivers the same batch.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// let mut conn = postgres::Client::connect("host=localhost dbname=app", postgres::NoTls)?;
/// if let Some(b) = pgq::consumer::next_batch(&mut conn, "orders", "mailer")? {
///     let events = pgq::consumer::get_batch_events(&mut conn, b.batch_id)?;
///     pgq::consumer::finish_batch(&mut conn, b.batch_id)?;
/// }
/// # Ok(()) }
/// ```
pub fn next_batch(
    conn: &mut impl GenericClient,
    queue: &str,
    consumer: &str,
) -> Result<Option<NextBatch>> {
    // Parameter types given (query_typed): one round trip, no separate prepare.
    next_batch_with(queue, consumer, |params| {
        conn.query_typed_one(
            NEXT_BATCH_SQL,
            &[(params[0], Type::TEXT), (params[1], Type::TEXT)],
        )
    })
}

/// `pgq.next_batch_info` is `pgq.next_batch_custom` without limits, on both backends; calling
/// the latter directly saves a function call per batch.
const NEXT_BATCH_SQL: &str = "select * from pgq.next_batch_custom($1, $2, null, null, null)";

/// [`next_batch`] with the way to run [`NEXT_BATCH_SQL`] given.
fn next_batch_with(
    queue: &str,
    consumer: &str,
    run: impl FnOnce(&[&(dyn ToSql + Sync); 2]) -> std::result::Result<Row, postgres::Error>,
) -> Result<Option<NextBatch>> {
    check_name("queue", queue)?;
    check_name("consumer", consumer)?;
    let row = run(&[&queue, &consumer])
        .map_err(|e| Error::from(e).context(format_args!("next batch for {queue}/{consumer}")))?;
    NextBatch::from_row(&row)
}

/// `pgq.next_batch_custom`: like [`next_batch`], but waits until the next tick is at least
/// `min_lag` old, and may merge ticks until the batch holds `min_count` events or spans
/// `min_interval`. `None` for a limit means no limit.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let mut conn = postgres::Client::connect("dbname=app", postgres::NoTls)?;
/// use std::time::Duration;
/// let b = pgq::consumer::next_batch_custom(
///     &mut conn, "orders", "reporter", None, Some(1000), Some(Duration::from_secs(60)))?;
/// # Ok(()) }
/// ```
pub fn next_batch_custom(
    conn: &mut impl GenericClient,
    queue: &str,
    consumer: &str,
    min_lag: Option<Duration>,
    min_count: Option<i32>,
    min_interval: Option<Duration>,
) -> Result<Option<NextBatch>> {
    check_name("queue", queue)?;
    check_name("consumer", consumer)?;
    let min_lag = min_lag.map(interval_text);
    let min_interval = min_interval.map(interval_text);
    let row = conn
        .query_typed_one(
            "select * from pgq.next_batch_custom($1, $2, $3::text::interval, $4, \
             $5::text::interval)",
            &[
                (&queue, Type::TEXT),
                (&consumer, Type::TEXT),
                (&min_lag, Type::TEXT),
                (&min_count, Type::INT4),
                (&min_interval, Type::TEXT),
            ],
        )
        .map_err(|e| Error::from(e).context(format_args!("next batch for {queue}/{consumer}")))?;
    NextBatch::from_row(&row)
}

/// `pgq.get_batch_events`: every event of the batch at once, ordered by id.
///
/// Holds the whole batch in memory; [`Batch::events`] streams instead.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let mut conn = postgres::Client::connect("dbname=app", postgres::NoTls)?;
/// for ev in pgq::consumer::get_batch_events(&mut conn, 17)? {
///     println!("{} {:?}", ev.id, ev.data);
/// }
/// # Ok(()) }
/// ```
pub fn get_batch_events(conn: &mut impl GenericClient, batch_id: i64) -> Result<Vec<Event>> {
    let rows = conn
        .query_typed(
            "select * from pgq.get_batch_events($1)",
            &[(&batch_id, Type::INT8)],
        )
        .map_err(|e| Error::from(e).context(format_args!("events of batch {batch_id}")))?;
    let Some(first) = rows.first() else {
        return Ok(Vec::new());
    };
    let at = EventColumns::find(first.columns())?;
    rows.iter()
        .map(|row| Event::from_row_at(row, &at))
        .collect()
}

/// `pgq.event_retry`: puts the event into the retry queue, to come back to this consumer only
/// after `delay`; `true` if queued now, `false` if it already was.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let mut conn = postgres::Client::connect("dbname=app", postgres::NoTls)?;
/// use std::time::Duration;
/// pgq::consumer::event_retry(&mut conn, 17, 1234, Duration::from_secs(60))?;
/// # Ok(()) }
/// ```
pub fn event_retry(
    conn: &mut impl GenericClient,
    batch_id: i64,
    ev_id: i64,
    delay: Duration,
) -> Result<bool> {
    let row = if delay.subsec_nanos() == 0 && delay.as_secs() <= i32::MAX as u64 {
        // Parameter types given (query_typed): one round trip, no separate prepare.
        let secs = delay.as_secs() as i32;
        conn.query_typed_one(
            "select pgq.event_retry($1, $2, $3::int4)",
            &[
                (&batch_id, Type::INT8),
                (&ev_id, Type::INT8),
                (&secs, Type::INT4),
            ],
        )
    } else {
        let delay = interval_text(delay);
        conn.query_typed_one(
            "select pgq.event_retry($1, $2, now() + $3::text::interval)",
            &[
                (&batch_id, Type::INT8),
                (&ev_id, Type::INT8),
                (&delay, Type::TEXT),
            ],
        )
    }
    .map_err(|e| Error::from(e).context(format_args!("retry event {ev_id} of batch {batch_id}")))?;
    Ok(row.get::<_, Option<i32>>(0).unwrap_or(0) > 0)
}

/// `pgq.event_retry` with an absolute time: the event comes back at or after `at`.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let mut conn = postgres::Client::connect("dbname=app", postgres::NoTls)?;
/// use std::time::{Duration, SystemTime};
/// let at = SystemTime::now() + Duration::from_secs(3600);
/// pgq::consumer::event_retry_at(&mut conn, 17, 1234, at)?;
/// # Ok(()) }
/// ```
pub fn event_retry_at(
    conn: &mut impl GenericClient,
    batch_id: i64,
    ev_id: i64,
    at: SystemTime,
) -> Result<bool> {
    let row = conn
        .query_typed_one(
            "select pgq.event_retry($1, $2, $3::timestamptz)",
            &[
                (&batch_id, Type::INT8),
                (&ev_id, Type::INT8),
                (&at, Type::TIMESTAMPTZ),
            ],
        )
        .map_err(|e| {
            Error::from(e).context(format_args!("retry event {ev_id} of batch {batch_id}"))
        })?;
    Ok(row.get::<_, Option<i32>>(0).unwrap_or(0) > 0)
}

/// `pgq.batch_retry`: puts every event of the batch into the retry queue; returns how many.
/// `delay` is rounded up to whole seconds.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let mut conn = postgres::Client::connect("dbname=app", postgres::NoTls)?;
/// use std::time::Duration;
/// let n = pgq::consumer::batch_retry(&mut conn, 17, Duration::from_secs(60))?;
/// pgq::consumer::finish_batch(&mut conn, 17)?;
/// # Ok(()) }
/// ```
pub fn batch_retry(conn: &mut impl GenericClient, batch_id: i64, delay: Duration) -> Result<u64> {
    let secs = whole_seconds(delay);
    let row = conn
        .query_typed_one(
            "select pgq.batch_retry($1, $2)",
            &[(&batch_id, Type::INT8), (&secs, Type::INT4)],
        )
        .map_err(|e| Error::from(e).context(format_args!("retry batch {batch_id}")))?;
    Ok(row.get::<_, Option<i32>>(0).unwrap_or(0).max(0) as u64)
}

fn whole_seconds(d: Duration) -> i32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

/// `pgq.finish_batch`: closes the batch, moving the consumer past it; `false` if the batch
/// was not open (unknown or already finished).
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let mut conn = postgres::Client::connect("dbname=app", postgres::NoTls)?;
/// pgq::consumer::finish_batch(&mut conn, 17)?;
/// # Ok(()) }
/// ```
pub fn finish_batch(conn: &mut impl GenericClient, batch_id: i64) -> Result<bool> {
    // Parameter type given (query_typed): one round trip, no separate prepare.
    let row = conn
        .query_typed_one("select pgq.finish_batch($1)", &[(&batch_id, Type::INT8)])
        .map_err(|e| Error::from(e).context(format_args!("finish batch {batch_id}")))?;
    Ok(row.get::<_, Option<i32>>(0).unwrap_or(0) > 0)
}

/// A consumer of one queue, pulling batches through a [`Client`].
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// let client = pgq::Client::connect("host=localhost dbname=app")?;
/// let consumer = pgq::Consumer::new(&client, "orders", "mailer")?.fetch_size(500);
/// consumer.register()?;
/// if let Some(batch) = consumer.next_batch()? {
///     let n = batch.events().count();
///     batch.finish()?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Consumer {
    pub(crate) client: Client,
    /// Coop mode (`pgq_coop`), set by [`Consumer::subconsumer`].
    pub(crate) coop: Option<crate::coop::Subconsumer>,
    queue: String,
    name: String,
    fetch_size: usize,
    read_ahead: bool,
    wait: crate::wakeup::WaitState,
}

impl Consumer {
    /// A consumer named `consumer` on `queue`. Names are checked here; registration is
    /// separate (see [`register`](Consumer::register)).
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let c = pgq::Consumer::new(&client, "orders", "mailer")?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn new(client: &Client, queue: &str, consumer: &str) -> Result<Consumer> {
        check_name("queue", queue)?;
        check_name("consumer", consumer)?;
        Ok(Consumer {
            coop: None,
            client: client.clone(),
            queue: queue.to_string(),
            name: consumer.to_string(),
            fetch_size: DEFAULT_FETCH_SIZE,
            read_ahead: true,
            wait: crate::wakeup::WaitState {
                poll_only: client.transaction_pooling(),
                ..Default::default()
            },
        })
    }

    /// Events fetched per round trip while streaming a batch (default
    /// [`DEFAULT_FETCH_SIZE`], at least 1). Memory use is bounded by twice this many
    /// events (plus the first 100 of the next batch, see [`read_ahead`](Consumer::read_ahead)):
    /// in a batch bigger than one fetch, the next chunk is read ahead (on a thread of the
    /// batch's own) while one is handled.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let c = pgq::Consumer::new(&client, "blobs", "archiver")?.fetch_size(1);
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn fetch_size(mut self, n: usize) -> Consumer {
        self.fetch_size = n.clamp(1, i32::MAX as usize);
        self
    }

    /// Whether to read ahead while the caller handles events (default on). It matters only
    /// for batches bigger than one [`fetch_size`](Consumer::fetch_size):
    /// - in such a batch, a thread of the batch's own runs the next FETCH while the caller
    ///   handles the chunk before;
    /// - on libpgq's schema (revision 7), when the batch was taken with
    ///   [`Batch::finish_and_next`], the server also reads and sorts the *next* batch
    ///   meanwhile, in a transaction on another pooled connection (when the pool has one
    ///   idle or may open one), and the next `finish_and_next` takes that over. Otherwise
    ///   opening a big batch waits for that sort.
    ///
    /// Off, every FETCH runs on the caller's thread when the caller needs it, and only the
    /// batch's own connection is used.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let c = pgq::Consumer::new(&client, "orders", "mailer")?.read_ahead(false);
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn read_ahead(mut self, on: bool) -> Consumer {
        self.read_ahead = on;
        self
    }

    /// The queue name.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// assert_eq!(pgq::Consumer::new(&client, "orders", "mailer")?.queue(), "orders");
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The consumer name.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// assert_eq!(pgq::Consumer::new(&client, "orders", "mailer")?.name(), "mailer");
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Registers this consumer on its queue (starting at the newest tick); `true` if new.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// pgq::Consumer::new(&client, "orders", "mailer")?.register()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn register(&self) -> Result<bool> {
        self.client.register_consumer(&self.queue, &self.name)
    }

    /// Unregisters this consumer, dropping its pending retries; returns subscriptions removed.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// pgq::Consumer::new(&client, "orders", "mailer")?.unregister()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn unregister(&self) -> Result<u64> {
        self.client.unregister_consumer(&self.queue, &self.name)
    }

    /// The next batch, or `None` when there is no newer tick yet.
    ///
    /// The batch id is committed at once (so an unfinished batch is re-delivered); then a
    /// transaction is opened on a pooled connection, with a cursor over the batch's events
    /// declared in it, in which the events are read and the batch finished. Opening the
    /// transaction, declaring the cursor and reading the first 100 events (at most
    /// `fetch_size`) take one round trip, so a small batch needs no FETCH. The connection is
    /// held until the [`Batch`] is finished or dropped.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let consumer = pgq::Consumer::new(&client, "orders", "mailer")?;
    /// match consumer.next_batch()? {
    ///     Some(batch) => { batch.finish()?; }
    ///     None => std::thread::sleep(std::time::Duration::from_millis(100)),
    /// }
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn next_batch(&self) -> Result<Option<Batch>> {
        self.next_batch_chained(false)
    }

    /// [`next_batch`](Consumer::next_batch); `chained`: the caller will take the batch
    /// after it with [`Batch::finish_and_next`] (the worker does), so it is worth reading
    /// ahead.
    pub(crate) fn next_batch_chained(&self, chained: bool) -> Result<Option<Batch>> {
        let mut conn = self.client.get()?;
        let info = match &self.coop {
            Some(sub) => sub.next_batch(&mut *conn, &self.queue, &self.name)?,
            None => next_batch_with(&self.queue, &self.name, |params| {
                pooled_query_one(
                    &mut conn,
                    NEXT_BATCH_SQL,
                    &[(params[0], Type::TEXT), (params[1], Type::TEXT)],
                )
            })?,
        };
        match info {
            Some(info) => self.open_on(conn, info, chained).map(Some),
            None => Ok(None),
        }
    }

    /// Opens a batch that `pgq.next_batch_custom` already returned (see
    /// [`Batch::finish_and_next`]): from the previous batch's look-ahead when that read
    /// this very batch, else on a pooled connection.
    pub(crate) fn open_batch(&self, next: Upcoming) -> Result<Batch> {
        let Upcoming { info, look_ahead } = next;
        if let Some(ready) = look_ahead.and_then(|la| la.take(&info)) {
            let crate::look_ahead::Ready { conn, first, .. } = ready;
            let mut batch = self.batch(conn, info, first, true);
            batch.looked_ahead = true;
            return Ok(batch);
        }
        let conn = self.client.get()?;
        self.open_on(conn, info, true)
    }

    /// Opens batch `info` on `conn`; `chained`: taken by [`Batch::finish_and_next`], so
    /// its successor is worth reading ahead.
    fn open_on(&self, mut conn: PooledConnection, info: NextBatch, chained: bool) -> Result<Batch> {
        // The batch's transaction, and in it the cursor over its events (declared, not yet
        // run), in one round trip. The cursor is a server-side portal of the transaction, so
        // the connection stays free for other statements between fetches (with_client).
        let batch_id = info.batch_id;
        // The first events come in the same round trip (a small batch is then read whole),
        // as text: the rest of a bigger one is FETCHed in binary.
        let quick = QUICK_ROWS.min(self.fetch_size);
        let opened = conn
            .simple_query(&format!(
                "begin; select ev_id, (extract(epoch from ev_time) * 1000000)::int8, ev_txid, \
                 ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4 \
                 from pgq.get_batch_cursor({batch_id}, '{CURSOR_NAME}', {quick}, null)"
            ))
            .map_err(Error::from)
            .and_then(|messages| {
                messages
                    .iter()
                    .filter_map(|m| match m {
                        postgres::SimpleQueryMessage::Row(r) => Some(Event::from_text_row(r)),
                        _ => None,
                    })
                    .collect::<Result<Vec<Event>>>()
            });
        let first = match opened {
            Ok(first) => first,
            Err(e) => {
                // Leave the pooled connection outside any transaction; the batch stays open
                // and is delivered again.
                let _ = conn.batch_execute("rollback");
                return Err(e.context(format_args!("open batch {batch_id}")));
            }
        };
        Ok(self.batch(conn, info, (first, quick), chained))
    }

    /// The batch `info`, whose transaction is open on `conn` with the cursor declared and
    /// `first` read from it.
    fn batch(
        &self,
        conn: PooledConnection,
        info: NextBatch,
        first: (Vec<Event>, usize),
        chained: bool,
    ) -> Batch {
        Batch {
            first: RefCell::new(Some(first)),
            conn: Box::new(RefCell::new(conn)),
            info,
            queue: self.queue.clone(),
            consumer: self.name.clone(),
            fetch_sql: format!("fetch forward {} from {CURSOR_NAME}", self.fetch_size),
            fetch_size: self.fetch_size,
            retries: RefCell::new(Vec::new()),
            cursor_used: Cell::new(false),
            read_ahead_on: self.read_ahead,
            read_ahead: RefCell::new(None),
            look_ahead: RefCell::new(None),
            look_ahead_wanted: Cell::new(chained && self.read_ahead && self.coop.is_none()),
            client: self.client.clone(),
            looked_ahead: false,
            stash: RefCell::new(VecDeque::new()),
            finished: false,
            coop: self.coop.clone(),
        }
    }
}

/// The next batch as [`Batch::finish_and_next`] learnt it, with the look-ahead that may
/// have read it already; open it with [`Consumer::open_batch`].
pub(crate) struct Upcoming {
    info: NextBatch,
    look_ahead: Option<LookAhead>,
}

/// One batch of events for one consumer, read inside one transaction.
///
/// [`finish`](Batch::finish) queues the tagged retries, finishes the batch and commits.
/// Dropping the batch without finishing rolls the transaction back; the same batch is then
/// delivered again by the next [`Consumer::next_batch`].
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let client = pgq::Client::connect("dbname=app")?;
/// # let consumer = pgq::Consumer::new(&client, "orders", "mailer")?;
/// if let Some(batch) = consumer.next_batch()? {
///     println!("batch {} (ticks {:?}..{})", batch.id(), batch.prev_tick_id(), batch.tick_id());
///     for ev in batch.events() {
///         let ev = ev?;
///         // handle ev ...
///     }
///     batch.finish()?;
/// }
/// # Ok(()) }
/// ```
pub struct Batch {
    /// Boxed: the read-ahead thread uses it through a pointer, which must stay valid when
    /// the batch moves.
    conn: Box<RefCell<PooledConnection>>,
    info: NextBatch,
    queue: String,
    consumer: String,
    /// `FETCH FORWARD fetch_size FROM` the batch's cursor.
    fetch_sql: String,
    fetch_size: usize,
    retries: RefCell<Vec<(i64, Duration)>>,
    /// Rows have been fetched from the cursor: a new [`Batch::events`] declares it again.
    cursor_used: Cell<bool>,
    /// [`Consumer::read_ahead`].
    read_ahead_on: bool,
    /// The read-ahead thread, while one runs (see [`ReadAhead`]).
    read_ahead: RefCell<Option<ReadAhead>>,
    /// The next batch, read ahead on another connection (see [`crate::look_ahead`]).
    look_ahead: RefCell<Option<LookAhead>>,
    /// A look-ahead is still to be started once the batch proves bigger than one fetch.
    look_ahead_wanted: Cell<bool>,
    /// Where the look-ahead takes its connection from.
    client: Client,
    /// This batch was opened from the previous one's look-ahead.
    looked_ahead: bool,
    /// Chunks a stopped read-ahead had fetched already, in cursor order.
    stash: RefCell<VecDeque<FetchResult>>,
    /// The batch's first events, read when it was opened, and how many were asked for
    /// (fewer means that was all); taken by the first [`Batch::events`].
    first: RefCell<Option<(Vec<Event>, usize)>>,
    finished: bool,
    /// Coop mode: finished through `pgq_coop.finish_batch`.
    pub(crate) coop: Option<crate::coop::Subconsumer>,
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("queue", &self.queue)
            .field("consumer", &self.consumer)
            .field("info", &self.info)
            .field("retries", &self.retries.borrow().len())
            .finish()
    }
}

impl Batch {
    /// The batch id.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// # let batch = pgq::Consumer::new(&client, "q", "c")?.next_batch()?.unwrap();
    /// println!("{}", batch.id());
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn id(&self) -> i64 {
        self.info.batch_id
    }

    /// The tick that ends the batch.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// # let batch = pgq::Consumer::new(&client, "q", "c")?.next_batch()?.unwrap();
    /// println!("{}", batch.tick_id());
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn tick_id(&self) -> i64 {
        self.info.cur_tick_id
    }

    /// The tick the batch starts after.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// # let batch = pgq::Consumer::new(&client, "q", "c")?.next_batch()?.unwrap();
    /// println!("{:?}", batch.prev_tick_id());
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn prev_tick_id(&self) -> Option<i64> {
        self.info.prev_tick_id
    }

    /// Whether the server read and sorted this batch while the batch before it was being
    /// handled, so that opening it did not wait for that (see [`Consumer::read_ahead`]).
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// # let batch = pgq::Consumer::new(&client, "q", "c")?.next_batch()?.unwrap();
    /// println!("read ahead: {}", batch.looked_ahead());
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn looked_ahead(&self) -> bool {
        self.looked_ahead
    }

    /// Everything `pgq.next_batch_info` returned.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// # let batch = pgq::Consumer::new(&client, "q", "c")?.next_batch()?.unwrap();
    /// println!("{:?}", batch.info().cur_tick_time);
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn info(&self) -> &NextBatch {
        &self.info
    }

    /// The queue name.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// # let batch = pgq::Consumer::new(&client, "q", "c")?.next_batch()?.unwrap();
    /// assert_eq!(batch.queue(), "q");
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The consumer name.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// # let batch = pgq::Consumer::new(&client, "q", "c")?.next_batch()?.unwrap();
    /// assert_eq!(batch.consumer(), "c");
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Streams the batch's events in id order, fetching a bounded number per round trip
    /// through a cursor. Calling it again restarts from the first event.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// # let batch = pgq::Consumer::new(&client, "q", "c")?.next_batch()?.unwrap();
    /// let events: Vec<pgq::Event> = batch.events().collect::<pgq::Result<_>>()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn events(&self) -> Events<'_> {
        Events {
            batch: self,
            buf: VecDeque::new(),
            rows: Vec::new(),
            next_row: 0,
            at: None,
            started: false,
            exhausted: false,
        }
    }

    /// Tags an event for retry: when the batch is finished, the event goes to the retry queue
    /// and comes back to this consumer only, after `delay`, with `retry` incremented.
    /// Untagged events count as done.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// # let batch = pgq::Consumer::new(&client, "q", "c")?.next_batch()?.unwrap();
    /// for ev in batch.events() {
    ///     let ev = ev?;
    ///     batch.retry(ev.id, std::time::Duration::from_secs(10));
    /// }
    /// batch.finish()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn retry(&self, ev_id: i64, delay: Duration) {
        self.retries.borrow_mut().push((ev_id, delay));
    }

    /// Runs `f` on the batch's connection, inside the batch's transaction: work done there
    /// commits together with [`finish`](Batch::finish), or rolls back with the batch.
    ///
    /// Do not run `BEGIN`, `COMMIT` or `ROLLBACK` in `f` (use savepoints if you need them),
    /// and do not call it from inside an [`events`](Batch::events) loop's `next()`. If the
    /// next chunk of events is being read ahead, that FETCH completes first (its events are
    /// kept for the loop).
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// # let batch = pgq::Consumer::new(&client, "q", "c")?.next_batch()?.unwrap();
    /// for ev in batch.events() {
    ///     let ev = ev?;
    ///     batch.with_client(|c| c.execute("insert into seen (id) values ($1)", &[&ev.id]))?;
    /// }
    /// batch.finish()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn with_client<R>(&self, f: impl FnOnce(&mut postgres::Client) -> R) -> R {
        self.stop_read_ahead();
        let mut conn = self.conn.borrow_mut();
        f(&mut conn)
    }

    /// Queues the tagged retries, finishes the batch and commits, all in one transaction.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// # let batch = pgq::Consumer::new(&client, "q", "c")?.next_batch()?.unwrap();
    /// batch.finish()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn finish(mut self) -> Result<()> {
        self.stop_read_ahead();
        let batch_id = self.info.batch_id;
        let retries = std::mem::take(&mut *self.retries.borrow_mut());
        let conn = self.conn.get_mut();
        retry_all(conn, batch_id, &retries)?;
        let client: &mut postgres::Client = conn;
        match &self.coop {
            Some(sub) => {
                sub.finish_batch(client, batch_id, &self.queue, &self.consumer)?;
                // Mark finished before COMMIT: if COMMIT itself fails the transaction is
                // gone anyway and there is nothing left to roll back.
                self.finished = true;
                client
                    .batch_execute("commit")
                    .map_err(|e| Error::from(e).context(format_args!("commit batch {batch_id}")))?;
            }
            None => {
                // finish_batch and COMMIT in one round trip (a simple query of two
                // statements: an error in the first skips the second). Its result (0 when
                // the batch was already finished) is not needed. On any error the batch
                // stays unfinished and Drop rolls back what may be left.
                client
                    .batch_execute(&format!("select pgq.finish_batch({batch_id}); commit"))
                    .map_err(|e| Error::from(e).context(format_args!("finish batch {batch_id}")))?;
                self.finished = true;
            }
        }
        Ok(())
    }
}

impl Batch {
    /// [`finish`](Batch::finish), then [`consumer.next_batch()`](Consumer::next_batch), in one
    /// round trip and one commit fewer: the next batch is taken in the transaction that
    /// finishes this one (on libpgq's schema with one write of the subscription row,
    /// `pgq.finish_and_next_batch`). `consumer` must be the one this batch came from.
    ///
    /// Should taking the next batch fail, the finish is rolled back with it and this batch
    /// comes again (at least once). A sub-consumer's batch is finished and the next one
    /// asked for separately.
    ///
    /// ```no_run
    /// # fn main() -> pgq::Result<()> {
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let consumer = pgq::Consumer::new(&client, "orders", "mailer")?;
    /// let mut next = consumer.next_batch()?;
    /// while let Some(batch) = next {
    ///     for ev in batch.events() {
    ///         let ev = ev?;
    ///         // handle ev ...
    ///     }
    ///     next = batch.finish_and_next(&consumer)?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn finish_and_next(self, consumer: &Consumer) -> Result<Option<Batch>> {
        if consumer.queue != self.queue || consumer.name != self.consumer {
            return Err(Error::invalid_input(format!(
                "batch {} is {}/{}'s, not {}/{}'s",
                self.info.batch_id, self.queue, self.consumer, consumer.queue, consumer.name
            )));
        }
        if self.coop.is_some() || consumer.coop.is_some() {
            self.finish()?;
            return consumer.next_batch();
        }
        match self.finish_and_next_info()? {
            Some(next) => consumer.open_batch(next).map(Some),
            None => Ok(None),
        }
    }

    /// [`finish_and_next`](Batch::finish_and_next) up to the next batch's id and ticks; open
    /// it with [`Consumer::open_batch`]. Not for sub-consumers.
    pub(crate) fn finish_and_next_info(mut self) -> Result<Option<Upcoming>> {
        debug_assert!(
            self.coop.is_none(),
            "finish_and_next_info is not for sub-consumers"
        );
        self.stop_read_ahead();
        let batch_id = self.info.batch_id;
        let retries = std::mem::take(&mut *self.retries.borrow_mut());
        let conn = self.conn.get_mut();
        retry_all(conn, batch_id, &retries)?;
        let (queue, consumer) = (sql_literal(&self.queue), sql_literal(&self.consumer));
        // Revision 5 of our schema does both in one function, with one UPDATE.
        let (finish, next) = if crate::direct::schema_revision(conn)?.is_some_and(|r| r >= 5) {
            (
                String::new(),
                format!("pgq.finish_and_next_batch({batch_id}, {queue}, {consumer})"),
            )
        } else {
            (
                format!("select pgq.finish_batch({batch_id}); "),
                format!("pgq.next_batch_custom({queue}, {consumer}, null, null, null)"),
            )
        };
        let sql = format!(
            "{finish}select batch_id, cur_tick_id, prev_tick_id, \
                    (extract(epoch from cur_tick_time) * 1000000)::int8, \
                    (extract(epoch from prev_tick_time) * 1000000)::int8, \
                    cur_tick_event_seq, prev_tick_event_seq \
               from {next}; \
             commit"
        );
        let client: &mut postgres::Client = conn;
        // A simple query of two or three statements: an error in one skips the rest, and Drop then
        // rolls back what is left (this batch stays unfinished).
        let messages = client
            .simple_query(&sql)
            .map_err(|e| Error::from(e).context(format_args!("finish batch {batch_id}")))?;
        self.finished = true;
        let row = messages.iter().find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) if r.len() == 7 => Some(r),
            _ => None,
        });
        let Some(row) = row else {
            return Err(Error::new(
                ErrorKind::Other,
                "pgq.next_batch_custom returned no row",
            ));
        };
        let info = next_batch_from_text(row).map_err(|e| {
            e.context(format_args!(
                "next batch for {}/{}",
                self.queue, self.consumer
            ))
        })?;
        Ok(info.map(|info| Upcoming {
            info,
            look_ahead: self.look_ahead.get_mut().take(),
        }))
    }
}

/// Queues a batch's tagged retries (`pgq.event_retry` for each, in the order tagged) in one
/// round trip. On our schema (revision 4) that is one `pgq.event_retry_many` call, which
/// reads the batch once: a batch sent back whole in a downstream outage costs one read of
/// it, not one per event. Elsewhere the one statement calls `pgq.event_retry` per event.
/// Any one that fails fails them all, as with one call each.
fn retry_all(
    conn: &mut PooledConnection,
    batch_id: i64,
    retries: &[(i64, Duration)],
) -> Result<()> {
    let client: &mut postgres::Client = conn;
    match retries {
        [] => return Ok(()),
        [(ev_id, delay)] => return event_retry(client, batch_id, *ev_id, *delay).map(|_| ()),
        _ => {}
    }
    let ids: Vec<i64> = retries.iter().map(|r| r.0).collect();
    let delays: Vec<String> = retries.iter().map(|r| interval_text(r.1)).collect();
    let sql = if crate::direct::schema_revision(conn)?.is_some_and(|rev| rev >= 4) {
        "select pgq.event_retry_many($1, $2::int8[], \
                (select pg_catalog.array_agg(now() + u.delay::interval order by u.n) \
                   from unnest($3::text[]) with ordinality as u(delay, n)))"
    } else {
        "select pgq.event_retry($1, u.id, now() + u.delay::interval) \
           from unnest($2::int8[], $3::text[]) with ordinality as u(id, delay, n) \
          order by u.n"
    };
    let client: &mut postgres::Client = conn;
    client
        .query_typed(
            sql,
            &[
                (&batch_id, Type::INT8),
                (&ids, Type::INT8_ARRAY),
                (&delays, Type::TEXT_ARRAY),
            ],
        )
        .map_err(|e| {
            Error::from(e).context(format_args!(
                "retry {} events of batch {batch_id}",
                retries.len()
            ))
        })?;
    Ok(())
}

/// `s` as an SQL string literal that reads the same whatever `standard_conforming_strings`
/// is (an `E''` literal when it has a backslash).
pub(crate) fn sql_literal(s: &str) -> String {
    let quoted = s.replace('\'', "''");
    if s.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// The row of [`Batch::finish_and_next`]'s look-up (text: batch id, tick ids, tick times in
/// microseconds since the epoch, event sequences); `None` when there is no batch.
fn next_batch_from_text(row: &postgres::SimpleQueryRow) -> Result<Option<NextBatch>> {
    let int = |i: usize| -> Result<Option<i64>> {
        row.get(i)
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    Error::new(
                        ErrorKind::Other,
                        format!("pgq.next_batch_custom returned {v:?} in column {i}"),
                    )
                })
            })
            .transpose()
    };
    let time = crate::event::time_from_micros;
    let Some(batch_id) = int(0)? else {
        return Ok(None);
    };
    let missing = |col: &str| {
        Error::new(
            ErrorKind::Other,
            format!("pgq.next_batch_custom returned batch {batch_id} with NULL {col}"),
        )
    };
    Ok(Some(NextBatch {
        batch_id,
        cur_tick_id: int(1)?.ok_or_else(|| missing("cur_tick_id"))?,
        prev_tick_id: int(2)?,
        cur_tick_time: time(int(3)?.ok_or_else(|| missing("cur_tick_time"))?),
        prev_tick_time: int(4)?.map(time),
        cur_tick_event_seq: int(5)?.ok_or_else(|| missing("cur_tick_event_seq"))?,
        prev_tick_event_seq: int(6)?,
    }))
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.stop_read_ahead();
        if self.finished {
            return;
        }
        let conn = self.conn.get_mut();
        if let Err(e) = conn.batch_execute("rollback") {
            log::warn!(
                "rolling back unfinished batch {} of {}/{} failed: {e}",
                self.info.batch_id,
                self.queue,
                self.consumer
            );
        }
    }
}

/// One FETCH's rows, or its error.
type FetchResult = std::result::Result<Vec<Row>, postgres::Error>;

/// Reading ahead: once a batch turns out bigger than one fetch, a thread of its own runs the
/// next FETCH on the batch's connection while the caller decodes and handles the chunk
/// before, so the server produces rows while the client works (PGQ lets one consumer have
/// one batch at a time, so this is the only overlap there is). The thread hands each chunk
/// over a rendezvous channel and fetches the next one only after that: at most two chunks
/// (2 × fetch_size events) exist at once.
///
/// While it runs the thread alone uses the connection, through a pointer into the boxed
/// [`Batch::conn`] (which stays put when the batch moves): every other use of the connection
/// first calls [`Batch::stop_read_ahead`], which waits for the thread to end and keeps what
/// it fetched (in [`Batch::stash`]); so do `finish` and the batch's drop. An abandoned
/// [`Events`] leaves the thread waiting to hand over its chunk until then.
struct ReadAhead {
    stop: Arc<AtomicBool>,
    rx: Receiver<FetchResult>,
    handle: JoinHandle<()>,
}

/// The batch's connection, sent to the read-ahead thread.
struct ConnPtr(*mut PooledConnection);

// SAFETY: the connection itself is Send; the pointer is used only by the read-ahead thread,
// and only while nothing else touches the connection (see ReadAhead).
unsafe impl Send for ConnPtr {}

impl Batch {
    /// Starts reading ahead on the batch's connection (no other borrow of it may be live),
    /// unless [`Consumer::read_ahead`] is off; the first time, also the look-ahead of the
    /// next batch when wanted.
    fn start_read_ahead(&self) {
        if !self.read_ahead_on {
            return;
        }
        // Only where pgq.look_ahead_cursor is known to exist (the revision is usually known
        // for the connection by now; if not, this batch is not read ahead).
        if self.look_ahead_wanted.replace(false)
            && crate::direct::known_schema_revision(&self.conn.borrow())
                .flatten()
                .is_some_and(|r| r >= crate::look_ahead::REVISION)
        {
            *self.look_ahead.borrow_mut() = LookAhead::start(
                &self.client,
                &self.queue,
                &self.consumer,
                self.info.cur_tick_id,
                QUICK_ROWS.min(self.fetch_size),
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = crossbeam_channel::bounded::<FetchResult>(0);
        let conn = ConnPtr(self.conn.as_ptr());
        let sql = self.fetch_sql.clone();
        let full = self.fetch_size;
        let thread_stop = Arc::clone(&stop);
        let spawned = std::thread::Builder::new()
            .name("pgq-read-ahead".into())
            .spawn(move || {
                let conn = conn;
                // SAFETY: see ReadAhead: nothing else uses the connection until this thread
                // has ended (stop_read_ahead joins it, before any other use and before the
                // box is freed), and the box does not move.
                let client: &mut PooledConnection = unsafe { &mut *conn.0 };
                loop {
                    let res = client.query_typed(&sql, &[]);
                    let last = res.as_ref().map_or(true, |rows| rows.len() < full);
                    if tx.send(res).is_err() || last || thread_stop.load(Ordering::SeqCst) {
                        break;
                    }
                }
            });
        match spawned {
            Ok(handle) => *self.read_ahead.borrow_mut() = Some(ReadAhead { stop, rx, handle }),
            // No thread: the next fetches simply run on the caller's thread.
            Err(e) => log::debug!("no read-ahead thread for batch {}: {e}", self.info.batch_id),
        }
    }

    /// Stops the read-ahead thread, if one runs, keeping the chunks it fetched; afterwards
    /// the connection is the caller's again.
    fn stop_read_ahead(&self) {
        let Some(ra) = self.read_ahead.borrow_mut().take() else {
            return;
        };
        ra.stop.store(true, Ordering::SeqCst);
        // Ends when the thread has ended (its sender is gone).
        for res in ra.rx.iter() {
            self.stash.borrow_mut().push_back(res);
        }
        if ra.handle.join().is_err() {
            log::warn!(
                "the read-ahead thread of batch {} panicked",
                self.info.batch_id
            );
        }
    }

    /// The next chunk of the cursor: kept from a stopped read-ahead, from the running one,
    /// or fetched here.
    fn next_chunk(&self) -> FetchResult {
        if let Some(res) = self.stash.borrow_mut().pop_front() {
            return res;
        }
        let from_thread = self.read_ahead.borrow().as_ref().map(|ra| ra.rx.recv());
        match from_thread {
            Some(Ok(res)) => res,
            // The thread ended without a chunk (it only ends after the last one, or when
            // stopped): read on here.
            Some(Err(_)) => {
                self.stop_read_ahead();
                self.next_chunk()
            }
            None => self.conn.borrow_mut().query_typed(&self.fetch_sql, &[]),
        }
    }
}

/// Iterator over a batch's events; made by [`Batch::events`].
///
/// Yields `Err` once if fetching fails (the batch's transaction is then aborted; drop the
/// batch and it will be delivered again), then ends.
pub struct Events<'a> {
    batch: &'a Batch,
    /// Events decoded already (those read with the batch), yielded first.
    buf: VecDeque<Event>,
    /// The current chunk, decoded one row per [`next`](Iterator::next) from `next_row` on:
    /// each event is built just before it is handed out, so a handler that drops each event
    /// before taking the next reuses the same few allocations instead of a whole chunk's.
    rows: Vec<Row>,
    next_row: usize,
    /// Where the event columns are in `rows`.
    at: Option<EventColumns>,
    started: bool,
    exhausted: bool,
}

impl fmt::Debug for Events<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("batch_id", &self.batch.info.batch_id)
            .field("buffered", &self.buffered())
            .field("exhausted", &self.exhausted)
            .finish()
    }
}

/// Events read in the round trip that opens a batch, at most (and at most `fetch_size`):
/// a batch this small needs no FETCH. They come as text (the rest in binary), hence few.
const QUICK_ROWS: usize = 100;

/// Declares the batch's cursor without reading from it (`pgq.get_batch_cursor` with no
/// quick rows, on both backends); the rows come from [`Events::fetch`]. The 4-argument form
/// (no extra condition) directly: the 3-argument one only wraps it, at the cost of one more
/// function call per batch.
fn declare_sql(batch_id: i64) -> String {
    format!("select from pgq.get_batch_cursor({batch_id}, '{CURSOR_NAME}', 0, null)")
}

impl Events<'_> {
    /// Takes the next `fetch_size` rows of the cursor (one FETCH, maybe already read ahead),
    /// so at most two chunks are held.
    fn fetch(&mut self) -> Result<()> {
        let batch = self.batch;
        let batch_id = batch.info.batch_id;
        let read_err =
            |e: postgres::Error| Error::from(e).context(format_args!("read batch {batch_id}"));
        if !self.started {
            batch.stop_read_ahead();
            batch.stash.borrow_mut().clear();
            let first = batch.first.borrow_mut().take();
            if let (Some((events, asked)), false) = (first, batch.cursor_used.get()) {
                // The events read with the batch: the cursor is past them.
                batch.cursor_used.set(true);
                self.started = true;
                if events.len() < asked {
                    self.exhausted = true;
                } else {
                    batch.start_read_ahead();
                }
                self.buf.extend(events);
                return Ok(());
            }
            if batch.cursor_used.get() {
                // A restarted events(): a fresh cursor from the first event.
                batch
                    .conn
                    .borrow_mut()
                    .batch_execute(&format!("close {CURSOR_NAME}; {}", declare_sql(batch_id)))
                    .map_err(read_err)?;
            }
            batch.cursor_used.set(true);
            self.started = true;
        }
        // The spent chunk is freed first: at most two chunks exist at once.
        self.rows = Vec::new();
        self.next_row = 0;
        // Unnamed statements (one round trip, nothing left prepared on the server). A chunk
        // is collected in one go: driving the connection once per row costs more.
        let rows = batch.next_chunk().map_err(read_err)?;
        let n = rows.len();
        if n < batch.fetch_size {
            self.exhausted = true;
        } else if batch.read_ahead.borrow().is_none() && batch.stash.borrow().is_empty() {
            // A full chunk: there may be more. Fetch the next one while this one is decoded
            // and handled.
            batch.start_read_ahead();
        }
        if let Some(first) = rows.first() {
            self.at = Some(EventColumns::find(first.columns())?);
        }
        self.rows = rows;
        Ok(())
    }

    /// Ends the iteration after an error.
    fn fail(&mut self) {
        self.exhausted = true;
        self.buf.clear();
        self.rows = Vec::new();
        self.next_row = 0;
    }
}

impl Iterator for Events<'_> {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Result<Event>> {
        loop {
            if let Some(ev) = self.buf.pop_front() {
                return Some(Ok(ev));
            }
            if let (Some(row), Some(at)) = (self.rows.get(self.next_row), &self.at) {
                self.next_row += 1;
                let res = Event::from_row_at(row, at);
                if res.is_err() {
                    self.fail();
                }
                return Some(res);
            }
            if self.exhausted {
                return None;
            }
            if let Err(e) = self.fetch() {
                self.fail();
                return Some(Err(e));
            }
        }
    }
}

impl Client {
    /// Opens the next batch for `consumer` on `queue`; see [`Consumer::next_batch`].
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// if let Some(batch) = client.next_batch("orders", "mailer")? {
    ///     batch.finish()?;
    /// }
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn next_batch(&self, queue: &str, consumer: &str) -> Result<Option<Batch>> {
        Consumer::new(self, queue, consumer)?.next_batch()
    }
}

// ---- waiting for batches (wake-ups) ------------------------------------------------------

impl Consumer {
    /// How often [`wait_batch`](Consumer::wait_batch) asks for a batch while it waits
    /// (default [`DEFAULT_POLL_INTERVAL`](crate::wakeup::DEFAULT_POLL_INTERVAL) while
    /// listening for notifications, [`DEFAULT_POLL_ONLY_INTERVAL`](crate::wakeup::DEFAULT_POLL_ONLY_INTERVAL)
    /// in poll-only mode; at least 1 ms).
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// use std::time::Duration;
    /// let c = pgq::Consumer::new(&client, "orders", "mailer")?
    ///     .poll_interval(Duration::from_millis(200));
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn poll_interval(mut self, interval: Duration) -> Consumer {
        self.wait.poll_interval = Some(interval.max(Duration::from_millis(1)));
        self
    }

    /// Poll-only mode: [`wait_batch`](Consumer::wait_batch) never runs `LISTEN` and only
    /// polls, as needed behind PgBouncer in transaction pooling mode. A client built with
    /// [`transaction_pooling(true)`](crate::ClientBuilder::transaction_pooling) always polls
    /// only, whatever is set here.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let c = pgq::Consumer::new(&client, "orders", "mailer")?.poll_only(true);
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn poll_only(mut self, poll_only: bool) -> Consumer {
        self.wait.poll_only = poll_only || self.client.transaction_pooling();
        self
    }

    /// The next batch, waiting up to `timeout` for one; `None` when none came in time.
    ///
    /// While there is no batch it waits for a `pgq_tick` notification naming this queue on a
    /// dedicated `LISTEN` connection (opened on first use and kept by this `Consumer`; clones
    /// get their own), and polls every [`poll_interval`](Consumer::poll_interval), so a batch
    /// is found even when no notification is sent. If the listening connection fails, the
    /// wait falls back to polling and reconnects on the next call. Errors of the batch query
    /// itself are returned.
    ///
    /// ```no_run
    /// # fn main() -> pgq::Result<()> {
    /// use std::time::Duration;
    /// let client = pgq::Client::connect("host=localhost dbname=app")?;
    /// let consumer = pgq::Consumer::new(&client, "orders", "mailer")?;
    /// loop {
    ///     if let Some(batch) = consumer.wait_batch(Duration::from_secs(10))? {
    ///         for ev in batch.events() {
    ///             println!("{:?}", ev?.data);
    ///         }
    ///         batch.finish()?;
    ///     }
    /// }
    /// # }
    /// ```
    pub fn wait_batch(&self, timeout: Duration) -> Result<Option<Batch>> {
        let deadline = crate::wakeup::deadline_after(timeout);
        // Another thread waiting on this same Consumer holds the listener: poll instead.
        let mut slot = if self.wait.poll_only || self.client.transaction_pooling() {
            None
        } else {
            self.wait.listener.try_lock()
        };
        loop {
            if let Some(batch) = self.next_batch()? {
                return Ok(Some(batch));
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let pause = self.wait.interval().min(deadline - now);
            let Some(listener) = slot.as_deref_mut() else {
                std::thread::sleep(pause);
                continue;
            };
            if listener.is_none() {
                match crate::wakeup::Listener::connect(self.client.config()) {
                    // Ticks that came before LISTEN took effect are found by asking again.
                    Ok(l) => {
                        *listener = Some(l);
                        continue;
                    }
                    Err(e) => {
                        log::warn!("{}/{}: polling only: {e}", self.queue, self.name);
                        std::thread::sleep(pause);
                        continue;
                    }
                }
            }
            if let Some(l) = listener.as_mut() {
                if let Err(e) = l.wait(pause, Some(&self.queue)) {
                    log::warn!("{}/{}: {e}; will reconnect", self.queue, self.name);
                    *listener = None;
                }
            }
        }
    }
}

impl Events<'_> {
    /// Events fetched from the server but not yet returned: never more than the fetch size.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// # let batch = pgq::Consumer::new(&client, "q", "c")?.fetch_size(10).next_batch()?.unwrap();
    /// let mut events = batch.events();
    /// while let Some(ev) = events.next() {
    ///     assert!(events.buffered() < 10);
    /// }
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.rows.len() - self.next_row
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_up() {
        assert_eq!(whole_seconds(Duration::ZERO), 0);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_secs(5)), 5);
        assert_eq!(whole_seconds(Duration::from_secs(u64::MAX)), i32::MAX);
    }

    #[test]
    fn sql_literals() {
        assert_eq!(sql_literal("q"), "'q'");
        assert_eq!(sql_literal("it's"), "'it''s'");
        assert_eq!(sql_literal(r"a\b'c"), r"E'a\\b''c'");
        assert_eq!(sql_literal(""), "''");
    }
}
