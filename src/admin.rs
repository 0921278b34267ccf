//! Administration: install PGQ, create, configure and drop queues, register consumers, and
//! read queue, consumer and batch status.
//!
//! Every operation is a free function over any [`postgres::GenericClient`] (a connection or a
//! transaction you hold) and a method on [`Client`] that takes a pooled connection.
//!
//! ```no_run
//! # fn main() -> pgq::Result<()> {
//! use std::time::Duration;
//! use pgq::admin::QueueParam;
//!
//! let client = pgq::Client::connect("host=localhost dbname=app")?;
//! client.install()?;
//! client.create_queue("orders")?;
//! client.set_queue_config("orders", QueueParam::TickerMaxLag(Duration::from_millis(500)))?;
//! client.register_consumer("orders", "mailer")?;
//! for q in client.queues()? {
//!     println!("{}: {} new events, last tick {:?}", q.name, q.ev_new, q.last_tick_id);
//! }
//! # Ok(()) }
//! ```

use std::time::{Duration, SystemTime};

use postgres::types::Type;
use postgres::{GenericClient, Row};

use crate::client::{check_name, check_text, Client};
use crate::error::{Error, ErrorKind, Result};
use crate::schema::InstallOutcome;

/// Installs (or upgrades) PGQ in the database; see [`crate::schema::install`].
///
/// If the official `pgq` extension is already installed it is left alone and
/// [`InstallOutcome::OfficialExtension`] is returned; the library works on it too.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// let mut conn = postgres::Client::connect("host=localhost dbname=app", postgres::NoTls)?;
/// let outcome = pgq::admin::install(&mut conn)?;
/// println!("{outcome:?}");
/// # Ok(()) }
/// ```
pub fn install(conn: &mut impl GenericClient) -> Result<InstallOutcome> {
    crate::schema::install(conn)
}

/// `pgq.version()`: the installed PGQ version, `None` when the reference extension's
/// functions were loaded without `CREATE EXTENSION`.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let mut conn = postgres::Client::connect("dbname=app", postgres::NoTls)?;
/// println!("{:?}", pgq::admin::version(&mut conn)?);
/// # Ok(()) }
/// ```
pub fn version(conn: &mut impl GenericClient) -> Result<Option<String>> {
    let row = conn.query_typed_one("select pgq.version()", &[])?;
    Ok(row.get(0))
}

/// `pgq.create_queue`: creates the queue (and its first tick); `true` if it was created,
/// `false` if it already existed.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let mut conn = postgres::Client::connect("dbname=app", postgres::NoTls)?;
/// let created = pgq::admin::create_queue(&mut conn, "orders")?;
/// # Ok(()) }
/// ```
pub fn create_queue(conn: &mut impl GenericClient, queue: &str) -> Result<bool> {
    check_name("queue", queue)?;
    let row = conn
        .query_typed_one("select pgq.create_queue($1)", &[(&queue, Type::TEXT)])
        .map_err(|e| Error::from(e).context(format_args!("create queue {queue:?}")))?;
    Ok(row.get::<_, Option<i32>>(0).unwrap_or(0) > 0)
}

/// `pgq.drop_queue`: drops the queue and all its events.
///
/// Without `force` it fails with [`ErrorKind::ConsumersAttached`] while consumers are
/// registered; with `force` they are unregistered first.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let mut conn = postgres::Client::connect("dbname=app", postgres::NoTls)?;
/// pgq::admin::drop_queue(&mut conn, "orders", false)?;
/// # Ok(()) }
/// ```
pub fn drop_queue(conn: &mut impl GenericClient, queue: &str, force: bool) -> Result<()> {
    check_name("queue", queue)?;
    conn.query_typed_one(
        "select pgq.drop_queue($1, $2)",
        &[(&queue, Type::TEXT), (&force, Type::BOOL)],
    )
    .map_err(|e| Error::from(e).context(format_args!("drop queue {queue:?}")))?;
    Ok(())
}

/// A typed queue setting for [`set_queue_config`].
///
/// ```
/// use std::time::Duration;
/// use pgq::admin::QueueParam;
/// let p = QueueParam::TickerMaxLag(Duration::from_millis(250));
/// assert_eq!(p.name(), "ticker_max_lag");
/// assert_eq!(p.value(), "0.250000 seconds");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueParam {
    /// Tick once this many events have arrived since the last tick (default 500).
    TickerMaxCount(i32),
    /// Tick at least this often while events arrive (default 3 s).
    TickerMaxLag(Duration),
    /// Tick at least this often when idle (default 1 min).
    TickerIdlePeriod(Duration),
    /// Stop ticking the queue (consumers see no new batches).
    TickerPaused(bool),
    /// How often the event tables rotate (default 2 h); zero means as soon as consumers allow.
    RotationPeriod(Duration),
    /// Ticks come from outside (`pgq.ticker(queue, tick_id, time, seq)`), not the ticker.
    ExternalTicker(bool),
}

impl QueueParam {
    /// The parameter name as `pgq.set_queue_config` expects it.
    ///
    /// ```
    /// assert_eq!(pgq::admin::QueueParam::TickerPaused(true).name(), "ticker_paused");
    /// ```
    pub fn name(&self) -> &'static str {
        match self {
            QueueParam::TickerMaxCount(_) => "ticker_max_count",
            QueueParam::TickerMaxLag(_) => "ticker_max_lag",
            QueueParam::TickerIdlePeriod(_) => "ticker_idle_period",
            QueueParam::TickerPaused(_) => "ticker_paused",
            QueueParam::RotationPeriod(_) => "rotation_period",
            QueueParam::ExternalTicker(_) => "external_ticker",
        }
    }

    /// The value as text the server casts to the column type.
    ///
    /// ```
    /// use pgq::admin::QueueParam;
    /// assert_eq!(QueueParam::TickerMaxCount(100).value(), "100");
    /// assert_eq!(QueueParam::ExternalTicker(false).value(), "false");
    /// ```
    pub fn value(&self) -> String {
        match *self {
            QueueParam::TickerMaxCount(n) => n.to_string(),
            QueueParam::TickerMaxLag(d)
            | QueueParam::TickerIdlePeriod(d)
            | QueueParam::RotationPeriod(d) => interval_text(d),
            QueueParam::TickerPaused(b) | QueueParam::ExternalTicker(b) => b.to_string(),
        }
    }
}

/// An exact interval literal (microsecond precision, like PostgreSQL's).
pub(crate) fn interval_text(d: Duration) -> String {
    format!("{}.{:06} seconds", d.as_secs(), d.subsec_micros())
}

/// Converts seconds from `extract(epoch from interval)` into a `Duration`, clamping negative
/// values (clock skew between the tick writer and `now()`) to zero.
pub(crate) fn secs_to_duration(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
}

fn opt_duration(secs: Option<f64>) -> Option<Duration> {
    secs.map(secs_to_duration)
}

/// `pgq.set_queue_config` with a typed parameter.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let mut conn = postgres::Client::connect("dbname=app", postgres::NoTls)?;
/// use pgq::admin::QueueParam;
/// pgq::admin::set_queue_config(&mut conn, "orders", QueueParam::TickerMaxCount(100))?;
/// # Ok(()) }
/// ```
pub fn set_queue_config(
    conn: &mut impl GenericClient,
    queue: &str,
    param: QueueParam,
) -> Result<()> {
    set_queue_config_raw(conn, queue, param.name(), &param.value())
}

/// `pgq.set_queue_config` with the parameter name and value as text, exactly as the SQL
/// function takes them (`ticker_max_lag`, `'5 seconds'`). Unknown names fail with
/// [`ErrorKind::InvalidInput`].
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let mut conn = postgres::Client::connect("dbname=app", postgres::NoTls)?;
/// pgq::admin::set_queue_config_raw(&mut conn, "orders", "ticker_idle_period", "30 seconds")?;
/// # Ok(()) }
/// ```
pub fn set_queue_config_raw(
    conn: &mut impl GenericClient,
    queue: &str,
    param: &str,
    value: &str,
) -> Result<()> {
    check_name("queue", queue)?;
    if param.is_empty() {
        return Err(Error::invalid_input(
            "queue parameter name must not be empty",
        ));
    }
    check_text("queue parameter name", Some(param))?;
    check_text("queue parameter value", Some(value))?;
    conn.query_typed_one(
        "select pgq.set_queue_config($1, $2, $3)",
        &[
            (&queue, Type::TEXT),
            (&param, Type::TEXT),
            (&value, Type::TEXT),
        ],
    )
    .map_err(|e| {
        Error::from(e).context(format_args!("set {param}={value:?} on queue {queue:?}"))
    })?;
    Ok(())
}

/// `pgq.register_consumer`: subscribes `consumer` to `queue`, starting at the newest tick;
/// `true` if newly registered, `false` if it already was.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let mut conn = postgres::Client::connect("dbname=app", postgres::NoTls)?;
/// pgq::admin::register_consumer(&mut conn, "orders", "mailer")?;
/// # Ok(()) }
/// ```
pub fn register_consumer(
    conn: &mut impl GenericClient,
    queue: &str,
    consumer: &str,
) -> Result<bool> {
    check_name("queue", queue)?;
    check_name("consumer", consumer)?;
    let row = conn
        .query_typed_one(
            "select pgq.register_consumer($1, $2)",
            &[(&queue, Type::TEXT), (&consumer, Type::TEXT)],
        )
        .map_err(|e| {
            Error::from(e).context(format_args!("register consumer {consumer:?} on {queue:?}"))
        })?;
    Ok(row.get::<_, Option<i32>>(0).unwrap_or(0) > 0)
}

/// `pgq.register_consumer_at`: registers `consumer`, or repositions an existing one, so its
/// next batch starts after `tick_id`; an open batch is dropped. `true` if newly registered.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let mut conn = postgres::Client::connect("dbname=app", postgres::NoTls)?;
/// // replay everything since tick 1
/// pgq::admin::register_consumer_at(&mut conn, "orders", "mailer", 1)?;
/// # Ok(()) }
/// ```
pub fn register_consumer_at(
    conn: &mut impl GenericClient,
    queue: &str,
    consumer: &str,
    tick_id: i64,
) -> Result<bool> {
    check_name("queue", queue)?;
    check_name("consumer", consumer)?;
    let row = conn
        .query_typed_one(
            "select pgq.register_consumer_at($1, $2, $3)",
            &[
                (&queue, Type::TEXT),
                (&consumer, Type::TEXT),
                (&tick_id, Type::INT8),
            ],
        )
        .map_err(|e| {
            Error::from(e).context(format_args!(
                "register consumer {consumer:?} on {queue:?} at tick {tick_id}"
            ))
        })?;
    Ok(row.get::<_, Option<i32>>(0).unwrap_or(0) > 0)
}

/// `pgq.unregister_consumer`: removes the subscription and the consumer's pending retry
/// events; returns how many subscriptions were removed (0 if it was not registered).
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let mut conn = postgres::Client::connect("dbname=app", postgres::NoTls)?;
/// pgq::admin::unregister_consumer(&mut conn, "orders", "mailer")?;
/// # Ok(()) }
/// ```
pub fn unregister_consumer(
    conn: &mut impl GenericClient,
    queue: &str,
    consumer: &str,
) -> Result<u64> {
    check_name("queue", queue)?;
    check_name("consumer", consumer)?;
    let row = conn
        .query_typed_one(
            "select pgq.unregister_consumer($1, $2)",
            &[(&queue, Type::TEXT), (&consumer, Type::TEXT)],
        )
        .map_err(|e| {
            Error::from(e).context(format_args!(
                "unregister consumer {consumer:?} from {queue:?}"
            ))
        })?;
    Ok(row.get::<_, Option<i32>>(0).unwrap_or(0).max(0) as u64)
}

/// One row of `pgq.get_queue_info()`.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let client = pgq::Client::connect("dbname=app")?;
/// let q = client.queue_info("orders")?;
/// println!("{} ticks every {:?} or {} events", q.name, q.ticker_max_lag, q.ticker_max_count);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct QueueInfo {
    /// `queue_name`.
    pub name: String,
    /// `queue_ntables`: number of rotating event tables.
    pub ntables: i32,
    /// `queue_cur_table`: the table inserts go to now.
    pub cur_table: i32,
    /// `queue_rotation_period`.
    pub rotation_period: Duration,
    /// `queue_switch_time`: when the tables last rotated.
    pub switch_time: SystemTime,
    /// `queue_external_ticker`.
    pub external_ticker: bool,
    /// `queue_ticker_paused`.
    pub ticker_paused: bool,
    /// `queue_ticker_max_count`.
    pub ticker_max_count: i32,
    /// `queue_ticker_max_lag`.
    pub ticker_max_lag: Duration,
    /// `queue_ticker_idle_period`.
    pub ticker_idle_period: Duration,
    /// `ticker_lag`: time since the last tick.
    pub ticker_lag: Option<Duration>,
    /// `ev_per_sec`: event rate over the last ticks, when known.
    pub ev_per_sec: Option<f64>,
    /// `ev_new`: events inserted since the last tick.
    pub ev_new: i64,
    /// `last_tick_id`.
    pub last_tick_id: Option<i64>,
}

const QUEUE_INFO_COLS: &str = "queue_name, queue_ntables, queue_cur_table, \
     extract(epoch from queue_rotation_period)::float8 as rotation_period, \
     queue_switch_time, queue_external_ticker, queue_ticker_paused, queue_ticker_max_count, \
     extract(epoch from queue_ticker_max_lag)::float8 as max_lag, \
     extract(epoch from queue_ticker_idle_period)::float8 as idle_period, \
     extract(epoch from ticker_lag)::float8 as ticker_lag, \
     ev_per_sec::float8 as ev_per_sec, ev_new::int8 as ev_new, last_tick_id::int8 as last_tick_id";

impl QueueInfo {
    fn from_row(row: &Row) -> Result<QueueInfo> {
        Ok(QueueInfo {
            name: row.try_get(0)?,
            ntables: row.try_get(1)?,
            cur_table: row.try_get(2)?,
            rotation_period: secs_to_duration(row.try_get(3)?),
            switch_time: row.try_get(4)?,
            external_ticker: row.try_get(5)?,
            ticker_paused: row.try_get(6)?,
            ticker_max_count: row.try_get(7)?,
            ticker_max_lag: secs_to_duration(row.try_get(8)?),
            ticker_idle_period: secs_to_duration(row.try_get(9)?),
            ticker_lag: opt_duration(row.try_get(10)?),
            ev_per_sec: row.try_get(11)?,
            ev_new: row.try_get::<_, Option<i64>>(12)?.unwrap_or(0),
            last_tick_id: row.try_get(13)?,
        })
    }
}

/// `pgq.get_queue_info()`: every queue, ordered by name.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let mut conn = postgres::Client::connect("dbname=app", postgres::NoTls)?;
/// for q in pgq::admin::queues(&mut conn)? {
///     println!("{} lag {:?}", q.name, q.ticker_lag);
/// }
/// # Ok(()) }
/// ```
pub fn queues(conn: &mut impl GenericClient) -> Result<Vec<QueueInfo>> {
    let sql = format!("select {QUEUE_INFO_COLS} from pgq.get_queue_info() order by queue_name");
    let rows = conn.query_typed(sql.as_str(), &[])?;
    rows.iter().map(QueueInfo::from_row).collect()
}

/// `pgq.get_queue_info(queue)`; fails with [`ErrorKind::NoSuchQueue`] for an unknown queue.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let mut conn = postgres::Client::connect("dbname=app", postgres::NoTls)?;
/// let q = pgq::admin::queue_info(&mut conn, "orders")?;
/// # Ok(()) }
/// ```
pub fn queue_info(conn: &mut impl GenericClient, queue: &str) -> Result<QueueInfo> {
    check_name("queue", queue)?;
    let sql = format!("select {QUEUE_INFO_COLS} from pgq.get_queue_info($1)");
    match conn.query_typed_opt(sql.as_str(), &[(&queue, Type::TEXT)])? {
        Some(row) => QueueInfo::from_row(&row),
        None => Err(no_such_queue(queue)),
    }
}

pub(crate) fn no_such_queue(queue: &str) -> Error {
    Error::new(ErrorKind::NoSuchQueue, format!("No such queue: {queue:?}"))
}

/// One row of `pgq.get_consumer_info()`.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let client = pgq::Client::connect("dbname=app")?;
/// for c in client.consumer_info(Some("orders"), None)? {
///     println!("{}/{}: lag {:?}, {:?} pending", c.queue_name, c.consumer_name, c.lag, c.pending_events);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// `queue_name`.
    pub queue_name: String,
    /// `consumer_name`.
    pub consumer_name: String,
    /// `lag`: age of the consumer's last finished tick.
    pub lag: Option<Duration>,
    /// `last_seen`: time since the consumer last asked for or finished a batch.
    pub last_seen: Option<Duration>,
    /// `last_tick`: the tick the consumer has processed up to.
    pub last_tick: Option<i64>,
    /// `current_batch`: the open batch, if any.
    pub current_batch: Option<i64>,
    /// `next_tick`: the end tick of the open batch, if any.
    pub next_tick: Option<i64>,
    /// `pending_events`: events between `last_tick` and the newest tick (an estimate from
    /// the event sequence; events not ticked yet do not count).
    pub pending_events: Option<i64>,
}

impl ConsumerInfo {
    fn from_row(row: &Row) -> Result<ConsumerInfo> {
        Ok(ConsumerInfo {
            queue_name: row.try_get(0)?,
            consumer_name: row.try_get(1)?,
            lag: opt_duration(row.try_get(2)?),
            last_seen: opt_duration(row.try_get(3)?),
            last_tick: row.try_get(4)?,
            current_batch: row.try_get(5)?,
            next_tick: row.try_get(6)?,
            pending_events: row.try_get(7)?,
        })
    }
}

/// `pgq.get_consumer_info`: all consumers, those of one queue, or one consumer (of one queue,
/// or of every queue when `queue` is `None`).
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let mut conn = postgres::Client::connect("dbname=app", postgres::NoTls)?;
/// let all = pgq::admin::consumer_info(&mut conn, None, None)?;
/// let one = pgq::admin::consumer_info(&mut conn, Some("orders"), Some("mailer"))?;
/// # Ok(()) }
/// ```
pub fn consumer_info(
    conn: &mut impl GenericClient,
    queue: Option<&str>,
    consumer: Option<&str>,
) -> Result<Vec<ConsumerInfo>> {
    const COLS: &str = "queue_name, consumer_name, extract(epoch from lag)::float8, \
         extract(epoch from last_seen)::float8, last_tick::int8, current_batch::int8, \
         next_tick::int8, pending_events::int8";
    if let Some(q) = queue {
        check_name("queue", q)?;
    }
    if let Some(c) = consumer {
        check_name("consumer", c)?;
    }
    let rows = match (queue, consumer) {
        (Some(q), Some(c)) => conn.query_typed(
            format!("select {COLS} from pgq.get_consumer_info($1, $2) order by 1, 2").as_str(),
            &[(&q, Type::TEXT), (&c, Type::TEXT)],
        )?,
        (Some(q), None) => conn.query_typed(
            format!("select {COLS} from pgq.get_consumer_info($1) order by 1, 2").as_str(),
            &[(&q, Type::TEXT)],
        )?,
        (None, Some(c)) => conn.query_typed(
            format!(
                "select {COLS} from pgq.get_consumer_info() where consumer_name = $1 order by 1, 2"
            )
            .as_str(),
            &[(&c, Type::TEXT)],
        )?,
        (None, None) => conn.query_typed(
            format!("select {COLS} from pgq.get_consumer_info() order by 1, 2").as_str(),
            &[],
        )?,
    };
    rows.iter().map(ConsumerInfo::from_row).collect()
}

/// `pgq.get_batch_info(batch_id)`: which queue, consumer and ticks a batch spans.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let mut conn = postgres::Client::connect("dbname=app", postgres::NoTls)?;
/// if let Some(b) = pgq::admin::batch_info(&mut conn, 17)? {
///     println!("batch 17: ticks {}..{} of {}", b.prev_tick_id, b.tick_id, b.queue_name);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInfo {
    /// `queue_name`.
    pub queue_name: String,
    /// `consumer_name`.
    pub consumer_name: String,
    /// `batch_start`: time of the batch's first (previous) tick.
    pub batch_start: SystemTime,
    /// `batch_end`: time of the batch's last tick.
    pub batch_end: SystemTime,
    /// `prev_tick_id`.
    pub prev_tick_id: i64,
    /// `tick_id`.
    pub tick_id: i64,
    /// `lag`: age of the batch's last tick.
    pub lag: Duration,
    /// `seq_start`: event sequence at the previous tick.
    pub seq_start: i64,
    /// `seq_end`: event sequence at the last tick.
    pub seq_end: i64,
}

/// `pgq.get_batch_info`; `None` when the batch is not open (unknown or finished).
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let mut conn = postgres::Client::connect("dbname=app", postgres::NoTls)?;
/// let info = pgq::admin::batch_info(&mut conn, 17)?;
/// # Ok(()) }
/// ```
pub fn batch_info(conn: &mut impl GenericClient, batch_id: i64) -> Result<Option<BatchInfo>> {
    let row = conn.query_typed_opt(
        "select queue_name, consumer_name, batch_start, batch_end, prev_tick_id::int8, \
         tick_id::int8, extract(epoch from lag)::float8, seq_start::int8, seq_end::int8 \
         from pgq.get_batch_info($1)",
        &[(&batch_id, Type::INT8)],
    )?;
    let row = match row {
        Some(r) => r,
        None => return Ok(None),
    };
    // The reference returns one all-NULL row for an unknown batch.
    let queue_name: Option<String> = row.try_get(0)?;
    let queue_name = match queue_name {
        Some(q) => q,
        None => return Ok(None),
    };
    let missing = |col: &str| {
        Error::new(
            ErrorKind::Other,
            format!("pgq.get_batch_info({batch_id}) returned NULL {col}"),
        )
    };
    Ok(Some(BatchInfo {
        queue_name,
        consumer_name: row
            .try_get::<_, Option<String>>(1)?
            .ok_or_else(|| missing("consumer_name"))?,
        batch_start: row
            .try_get::<_, Option<SystemTime>>(2)?
            .ok_or_else(|| missing("batch_start"))?,
        batch_end: row
            .try_get::<_, Option<SystemTime>>(3)?
            .ok_or_else(|| missing("batch_end"))?,
        prev_tick_id: row
            .try_get::<_, Option<i64>>(4)?
            .ok_or_else(|| missing("prev_tick_id"))?,
        tick_id: row
            .try_get::<_, Option<i64>>(5)?
            .ok_or_else(|| missing("tick_id"))?,
        lag: secs_to_duration(row.try_get::<_, Option<f64>>(6)?.unwrap_or(0.0)),
        seq_start: row.try_get::<_, Option<i64>>(7)?.unwrap_or(0),
        seq_end: row.try_get::<_, Option<i64>>(8)?.unwrap_or(0),
    }))
}

/// Convenience methods taking a pooled connection for each call.
impl Client {
    /// Installs or upgrades PGQ; see [`install`].
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// println!("{:?}", client.install()?);
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn install(&self) -> Result<InstallOutcome> {
        install(&mut *self.get()?)
    }

    /// The installed PGQ version; see [`version`].
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// println!("{:?}", client.version()?);
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn version(&self) -> Result<Option<String>> {
        version(&mut *self.get()?)
    }

    /// Creates a queue; see [`create_queue`].
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// client.create_queue("orders")?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn create_queue(&self, queue: &str) -> Result<bool> {
        create_queue(&mut *self.get()?, queue)
    }

    /// Drops a queue; see [`drop_queue`].
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// client.drop_queue("orders", true)?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn drop_queue(&self, queue: &str, force: bool) -> Result<()> {
        drop_queue(&mut *self.get()?, queue, force)
    }

    /// Changes a queue setting; see [`set_queue_config`].
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// client.set_queue_config("orders", pgq::admin::QueueParam::TickerPaused(true))?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn set_queue_config(&self, queue: &str, param: QueueParam) -> Result<()> {
        set_queue_config(&mut *self.get()?, queue, param)
    }

    /// Changes a queue setting given as text; see [`set_queue_config_raw`].
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// client.set_queue_config_raw("orders", "ticker_max_count", "1000")?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn set_queue_config_raw(&self, queue: &str, param: &str, value: &str) -> Result<()> {
        set_queue_config_raw(&mut *self.get()?, queue, param, value)
    }

    /// Registers a consumer; see [`register_consumer`].
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// client.register_consumer("orders", "mailer")?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn register_consumer(&self, queue: &str, consumer: &str) -> Result<bool> {
        register_consumer(&mut *self.get()?, queue, consumer)
    }

    /// Registers or repositions a consumer at a tick; see [`register_consumer_at`].
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// client.register_consumer_at("orders", "mailer", 1)?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn register_consumer_at(&self, queue: &str, consumer: &str, tick_id: i64) -> Result<bool> {
        register_consumer_at(&mut *self.get()?, queue, consumer, tick_id)
    }

    /// Unregisters a consumer; see [`unregister_consumer`].
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// client.unregister_consumer("orders", "mailer")?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn unregister_consumer(&self, queue: &str, consumer: &str) -> Result<u64> {
        unregister_consumer(&mut *self.get()?, queue, consumer)
    }

    /// Status of every queue; see [`queues`].
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// for q in client.queues()? { println!("{}", q.name); }
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn queues(&self) -> Result<Vec<QueueInfo>> {
        queues(&mut *self.get()?)
    }

    /// Status of one queue; see [`queue_info`].
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let q = client.queue_info("orders")?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn queue_info(&self, queue: &str) -> Result<QueueInfo> {
        queue_info(&mut *self.get()?, queue)
    }

    /// Status of consumers; see [`consumer_info`].
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let all = client.consumer_info(None, None)?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn consumer_info(
        &self,
        queue: Option<&str>,
        consumer: Option<&str>,
    ) -> Result<Vec<ConsumerInfo>> {
        consumer_info(&mut *self.get()?, queue, consumer)
    }

    /// Details of an open batch; see [`batch_info`].
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let info = client.batch_info(17)?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn batch_info(&self, batch_id: i64) -> Result<Option<BatchInfo>> {
        batch_info(&mut *self.get()?, batch_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_text() {
        assert_eq!(
            QueueParam::RotationPeriod(Duration::ZERO).value(),
            "0.000000 seconds"
        );
        assert_eq!(
            QueueParam::TickerIdlePeriod(Duration::from_secs(60)).value(),
            "60.000000 seconds"
        );
        assert_eq!(QueueParam::TickerPaused(true).value(), "true");
    }

    #[test]
    fn durations_clamp() {
        assert_eq!(secs_to_duration(-1.0), Duration::ZERO);
        assert_eq!(secs_to_duration(f64::NAN), Duration::ZERO);
        assert_eq!(secs_to_duration(1.5), Duration::from_millis(1500));
        assert_eq!(secs_to_duration(f64::INFINITY), Duration::MAX);
    }
}
