//! [`Ticker`]: the ticker and maintenance service on its own OS threads (a `pgqd` in your
//! process).
//!
//! One named thread per database (`pgq-ticker <name>`) owns one dedicated connection (never a
//! pooled one: it holds a session lock) and runs three schedules on it:
//!
//! * every `ticker_period` (10 ms) while events flow, every `idle_ticker_period` (100 ms) once
//!   nothing has happened for a few seconds, one round. A round first asks a *change gate*
//!   (one prepared statement) whether anything a due check reads may have changed since the
//!   last look: while the server's WAL insert position has not moved nothing has (a few
//!   microseconds); otherwise it compares a summary of the queues' event sequences and queue
//!   rows with the last one (about 1.5 us per queue). When nothing changed and no queue is
//!   due by time alone (idle ticks, `ticker_max_lag`: the ticker remembers when the first
//!   becomes due, from the last pre-check), that is the whole round. Otherwise a prepared
//!   *pre-check* tells, from the queues' tick rows and event sequences, whether any queue
//!   may be due (PGQ-SPEC section 4; about 5 us per queue). When one may be due,
//!   `pgq.ticker(queue)` (with eager ticking `pgq.ticker_eager(queue, min_lag)` for a queue
//!   with new events) runs for those queues and `pg_notify('pgq_tick', queue)` for each
//!   queue that got a tick, in one transaction, so a notification arrives only for a
//!   committed tick. The SQL function still decides, so an idle queue gets no more ticks
//!   than its idle back-off allows. After a round that ticked, the next one skips the gate
//!   and the pre-check (under traffic they would say "due" anyway). Every 5 s a round calls
//!   the function for every queue, as a safety net (for ticks or changes the gate and the
//!   pre-check do not foresee); while no event arrives and no queue changes, at doubling
//!   gaps up to 1 min, and with thousands of queues at least 9 times its own duration
//!   apart. The pause after a round is at least 9 times the time it spent finding due
//!   queues (plus the time spent ticking), 49 times while idle for a round that found
//!   nothing to do, so thousands of queues never keep a server backend busy. A gate or
//!   pre-check that keeps failing (e.g. no privilege on the sequences) is counted as one
//!   error and replaced by full rounds (counted in `full_rounds`); it is tried again every
//!   12 full-round periods (1 min by default), so a privilege granted later is picked up;
//! * every `retry_period`, `pgq.maint_retry_events()` until it returns 0;
//! * every `maint_period`, every operation `pgq.maint_operations()` lists, each in its own
//!   transaction (rotation step 1 and step 2 separately), `VACUUM` outside a transaction.
//!
//! **One active ticker per database.** Each database thread first takes a session advisory
//! lock; whoever holds it is *active*, every other ticker on that database (in this process or
//! another) is a hot *standby* that retries the lock every `takeover_period` and so takes over
//! within about that time after the active one stops, dies or loses its connection. Every
//! round also takes a transaction advisory lock before ticking, so two tickers can never
//! interleave ticks (tick order follows snapshot order) even while a dead peer's session is
//! still being cleaned up. `pgqd` knows nothing of these locks: run it or libpgq tickers on a
//! database, not both.
//!
//! **Failures are never fatal.** A lost connection or a server restart is logged through
//! [`log`], counted, and followed by reconnect attempts with capped exponential back-off and
//! jitter. The connection always asks for `target_session_attrs=read-write`, so with a
//! multi-host DSN (`host=db1,db2`) the ticker follows a promoted standby (and leaves a
//! server that turned read-only). Other errors (e.g. PGQ not installed yet) are logged,
//! counted and retried: ticks and retry moves with the same back-off, a failed maintenance
//! operation at the next `maint_period` (the other operations still run). A ticker whose host
//! vanishes without closing its connection is dropped by the server within about 25 s (the
//! ticker sets TCP keepalives for its session), and a standby takes over then.
//!
//! **Latency.** By default the ticker ticks *eagerly* ([`TickerBuilder::eager`]): a queue
//! with new events gets a tick on the first round after them (once its last tick is at
//! least [`DEFAULT_MIN_TICK_LAG`] old), so consumers woken by the notification see an event
//! about one `ticker_period` after its commit, without waiting for PGQ's
//! `ticker_max_count` (500 events) or `ticker_max_lag` (3 s). Idle queues keep PGQ's idle
//! back-off. This needs libpgq's schema (`pgq.ticker_eager`); on the official extension
//! the ticker follows the queue's settings only: lower the queue's `ticker_max_lag` there
//! (e.g. `'10 ms'`). `eager(None)` turns it off, for fewer and larger batches.
//!
//! Behind PgBouncer in transaction mode session locks do not work: point the ticker at the
//! server directly.
//!
//! ```no_run
//! use std::time::Duration;
//! # fn main() -> pgq::Result<()> {
//! let client = pgq::Client::connect("host=localhost dbname=app")?;
//! let ticker = pgq::Ticker::builder(&client)
//!     .ticker_period(Duration::from_millis(20))
//!     .start()?;
//! // ... produce and consume ...
//! println!("{} ticks so far", ticker.stats().ticks);
//! drop(ticker); // stops and joins its threads
//! # Ok(()) }
//! ```

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use postgres::config::TargetSessionAttrs;
use postgres::{NoTls, SimpleQueryMessage};

use crate::client::{describe_target, Client};
use crate::error::{Error, ErrorKind, Result};

/// Default pause between ticker rounds while events flow (pgqd: 1 s). A round when nothing is
/// due is one short prepared statement, so this can be small; it bounds how late a due
/// queue gets its tick.
pub const DEFAULT_TICKER_PERIOD: Duration = Duration::from_millis(10);

/// Default pause between ticker rounds once no queue has had new events for a while
/// ([`IDLE_AFTER`]): an idle ticker costs next to nothing, and the first event after a quiet
/// spell waits at most this long for the ticker to notice it.
pub const DEFAULT_IDLE_TICKER_PERIOD: Duration = Duration::from_millis(100);

/// How long without new events before the ticker slows to its idle period.
pub const IDLE_AFTER: Duration = Duration::from_secs(5);

/// Default pause between moves of due retry events back into their queues (pgqd: 30 s).
/// Moving nothing costs one indexed lookup.
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(1);

/// Default pause between maintenance runs (pgqd's `maint_period`: 120 s).
pub const DEFAULT_MAINT_PERIOD: Duration = Duration::from_secs(120);

/// Default pause between a standby's attempts to become the active ticker.
pub const DEFAULT_TAKEOVER_PERIOD: Duration = Duration::from_millis(500);

/// Default first and longest pause between reconnect attempts.
pub const DEFAULT_RECONNECT_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(10));

/// The notification channel the ticker signals after a round that created ticks; the payload
/// is the queue name. Consumers `LISTEN` on it to fetch at once instead of at their next poll.
/// The same constant as [`crate::wakeup::NOTIFY_CHANNEL`].
///
/// ```
/// assert_eq!(pgq::ticker::TICK_CHANNEL, pgq::wakeup::NOTIFY_CHANNEL);
/// ```
pub const TICK_CHANNEL: &str = crate::wakeup::NOTIFY_CHANNEL;

/// Default minimum age of a queue's last tick before the ticker ticks it again because it
/// has new events (eager ticking, see [`TickerBuilder::eager`]). With the default
/// [`DEFAULT_TICKER_PERIOD`] the round period is the real bound (one tick per busy queue per
/// round); this only caps ticks at 200 per second per queue when the period is set lower.
pub const DEFAULT_MIN_TICK_LAG: Duration = Duration::from_millis(5);

/// Looking for due queues is kept below this share of wall time: the pause after a round is
/// at least this many times the time the round spent deciding which queues are due (the
/// pre-check, or a full round), plus the time spent ticking. With thousands of queues the
/// check takes milliseconds, and running it back to back would keep a server backend busy;
/// ticks that are due are held back by no more than their own cost. (Only the wall time is
/// known, which on a CPU-starved host includes waiting for a CPU: stretching every round by
/// 9 times that halved the tick rate on a loaded 2-core test machine.)
const PAUSE_PER_ROUND_COST: u32 = 9;

/// The same while idle, for rounds that found nothing to do: an idle ticker spends at most
/// about 2% of the time looking. This matters with thousands of queues on a server that is
/// busy with other work: its WAL moves all the time, so every round reads every event
/// sequence (1 to 7 ms of server time for 1000 queues, more when the caches are cold);
/// the first event after a quiet spell then waits a little longer than
/// `idle_ticker_period` for its tick.
const IDLE_PAUSE_PER_ROUND_COST: u32 = 49;

/// Connect timeout for the ticker's connection when the DSN gives none: short, since a
/// stopping ticker may have to wait for it.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

// Advisory lock keys: (hashtext('pgq'), n). Key 1 is the tick lock (taken by every round;
// our schema's ticker() takes it too); key 2 is the active-ticker election.
const LEADER_LOCK_SQL: &str =
    "select pg_catalog.pg_try_advisory_lock(pg_catalog.hashtext('pgq'), 2)";

/// What one database's ticker thread is doing.
///
/// ```no_run
/// # let client = pgq::Client::connect("dbname=app")?;
/// let ticker = pgq::Ticker::builder(&client).start()?;
/// for db in ticker.stats().databases {
///     println!("{}: {}", db.target, db.state);
/// }
/// # Ok::<(), pgq::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TickerState {
    /// Opening the connection (at start, or after losing it).
    Connecting,
    /// Connected, waiting for the active ticker of this database to go away.
    Standby,
    /// Connected and ticking this database.
    Active,
    /// The thread has ended.
    Stopped,
}

impl TickerState {
    /// Lower-case name: `connecting`, `standby`, `active`, `stopped`.
    ///
    /// ```
    /// assert_eq!(pgq::TickerState::Active.as_str(), "active");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            TickerState::Connecting => "connecting",
            TickerState::Standby => "standby",
            TickerState::Active => "active",
            TickerState::Stopped => "stopped",
        }
    }
}

impl fmt::Display for TickerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counters and state of one database served by a [`Ticker`]; part of [`TickerStats`].
///
/// ```no_run
/// # let client = pgq::Client::connect("dbname=app")?;
/// # let ticker = pgq::Ticker::builder(&client).start()?;
/// let db = &ticker.stats().databases[0];
/// println!("{} is {}, {} ticks, {} errors", db.target, db.state, db.ticks, db.errors);
/// # Ok::<(), pgq::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TickerDatabaseStats {
    /// `host:port/dbname` (never the password).
    pub target: String,
    /// What the thread is doing now.
    pub state: TickerState,
    /// Ticks created (one per queue ticked).
    pub ticks: u64,
    /// Ticker rounds run while active (most create no tick).
    pub rounds: u64,
    /// Of those, full rounds: `pgq.ticker` called for every queue, not only for those the
    /// cheap checks found due (a safety net every few seconds to a minute, or every round
    /// while those checks are unavailable).
    pub full_rounds: u64,
    /// Retry events moved back into their queues.
    pub retry_events_moved: u64,
    /// Completed maintenance runs.
    pub maintenance_runs: u64,
    /// Maintenance function calls made.
    pub maintenance_calls: u64,
    /// Tables vacuumed by maintenance.
    pub tables_vacuumed: u64,
    /// Errors (failed connects, lost connections, failed statements).
    pub errors: u64,
    /// Connections opened after the first one.
    pub reconnects: u64,
    /// Times this ticker became the active one.
    pub takeovers: u64,
    /// When the last tick was created.
    pub last_tick: Option<SystemTime>,
    /// When this ticker last became active (None while not active).
    pub active_since: Option<SystemTime>,
    /// The last error's message.
    pub last_error: Option<String>,
}

impl TickerDatabaseStats {
    fn new(target: String) -> TickerDatabaseStats {
        TickerDatabaseStats {
            target,
            state: TickerState::Connecting,
            ticks: 0,
            rounds: 0,
            full_rounds: 0,
            retry_events_moved: 0,
            maintenance_runs: 0,
            maintenance_calls: 0,
            tables_vacuumed: 0,
            errors: 0,
            reconnects: 0,
            takeovers: 0,
            last_tick: None,
            active_since: None,
            last_error: None,
        }
    }
}

/// A snapshot of a [`Ticker`]'s counters: totals over its databases, and each database's.
///
/// ```no_run
/// # let client = pgq::Client::connect("dbname=app")?;
/// # let ticker = pgq::Ticker::builder(&client).start()?;
/// let s = ticker.stats();
/// println!(
///     "{} ticks, {} retry events moved, {} maintenance runs, {} errors; active on {} of {}",
///     s.ticks, s.retry_events_moved, s.maintenance_runs, s.errors, s.active, s.databases.len()
/// );
/// # Ok::<(), pgq::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TickerStats {
    /// Ticks created (one per queue ticked).
    pub ticks: u64,
    /// Ticker rounds run while active.
    pub rounds: u64,
    /// Of those, full rounds (see [`TickerDatabaseStats::full_rounds`]).
    pub full_rounds: u64,
    /// Retry events moved back into their queues.
    pub retry_events_moved: u64,
    /// Completed maintenance runs.
    pub maintenance_runs: u64,
    /// Maintenance function calls made.
    pub maintenance_calls: u64,
    /// Tables vacuumed by maintenance.
    pub tables_vacuumed: u64,
    /// Errors, all databases together.
    pub errors: u64,
    /// Reconnections, all databases together.
    pub reconnects: u64,
    /// Databases on which this ticker is the active one.
    pub active: usize,
    /// Databases on which this ticker is a standby.
    pub standby: usize,
    /// When the last tick was created, on any database.
    pub last_tick: Option<SystemTime>,
    /// Per database, in the order they were added to the builder.
    pub databases: Vec<TickerDatabaseStats>,
}

/// Configures and starts a [`Ticker`]; made by [`Ticker::builder`].
///
/// ```no_run
/// use std::time::Duration;
/// # let orders = pgq::Client::connect("dbname=orders")?;
/// # let billing = pgq::Client::connect("dbname=billing")?;
/// let ticker = pgq::Ticker::builder(&orders)
///     .database(&billing)
///     .dsn("host=db3 dbname=audit")
///     .ticker_period(Duration::from_millis(50))
///     .retry_period(Duration::from_secs(5))
///     .maint_period(Duration::from_secs(60))
///     .name("main")
///     .start()?;
/// # Ok::<(), pgq::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "call start() to run the ticker"]
pub struct TickerBuilder {
    /// Each database's settings, or why it cannot be ticked (reported by `start`).
    databases: Vec<std::result::Result<postgres::Config, (ErrorKind, String)>>,
    ticker_period: Duration,
    idle_ticker_period: Duration,
    retry_period: Duration,
    maint_period: Duration,
    takeover_period: Duration,
    backoff: (Duration, Duration),
    notify: bool,
    name: Option<String>,
    full_round_every: Duration,
    min_tick_lag: Option<Duration>,
}

impl TickerBuilder {
    /// A builder with no database yet; add them with [`database`](Self::database) or
    /// [`dsn`](Self::dsn).
    ///
    /// ```no_run
    /// let ticker = pgq::TickerBuilder::new()
    ///     .dsn("host=db1 dbname=app")
    ///     .dsn("host=db1 dbname=app2")
    ///     .start()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn new() -> TickerBuilder {
        TickerBuilder {
            databases: Vec::new(),
            ticker_period: DEFAULT_TICKER_PERIOD,
            idle_ticker_period: DEFAULT_IDLE_TICKER_PERIOD,
            retry_period: DEFAULT_RETRY_PERIOD,
            maint_period: DEFAULT_MAINT_PERIOD,
            takeover_period: DEFAULT_TAKEOVER_PERIOD,
            backoff: DEFAULT_RECONNECT_BACKOFF,
            notify: true,
            name: None,
            full_round_every: FULL_ROUND_EVERY,
            min_tick_lag: Some(DEFAULT_MIN_TICK_LAG),
        }
    }

    /// Adds the database `client` connects to. The ticker opens its own connection with the
    /// client's settings; it does not use the client's pool. A client built with
    /// [`transaction_pooling(true)`](crate::ClientBuilder::transaction_pooling) makes
    /// [`start`](Self::start) fail with [`ErrorKind::InvalidInput`]: the ticker needs a
    /// direct connection (a session advisory lock keeps it the only active one).
    ///
    /// ```no_run
    /// # let a = pgq::Client::connect("dbname=a")?;
    /// # let b = pgq::Client::connect("dbname=b")?;
    /// let ticker = pgq::Ticker::builder(&a).database(&b).start()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn database(mut self, client: &Client) -> TickerBuilder {
        if client.transaction_pooling() {
            self.databases.push(Err((
                ErrorKind::InvalidInput,
                format!(
                    "the ticker cannot run through {}: that client is set for a pooler in \
                     transaction pooling mode, and the ticker needs a direct connection (it \
                     holds a session advisory lock to stay the only active ticker); give it \
                     a client or DSN that reaches PostgreSQL directly",
                    describe_target(client.config())
                ),
            )));
        } else {
            self.databases.push(Ok(client.config().clone()));
        }
        self
    }

    /// Adds a database by connection string. Nothing is opened here: a database that is
    /// down at start is retried like a lost connection. A malformed DSN makes
    /// [`start`](Self::start) fail.
    ///
    /// ```no_run
    /// let ticker = pgq::TickerBuilder::new()
    ///     .dsn("host=db1,db2 dbname=app target_session_attrs=read-write")
    ///     .start()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn dsn(mut self, dsn: &str) -> TickerBuilder {
        self.databases
            .push(postgres::Config::from_str(dsn).map_err(|e| {
                (
                    ErrorKind::Connect,
                    format!("invalid connection string: {e}"),
                )
            }));
        self
    }

    /// Adds a database by parsed settings; see [`dsn`](Self::dsn).
    ///
    /// ```no_run
    /// let mut cfg = postgres::Config::new();
    /// cfg.host("localhost").user("app").dbname("app");
    /// let ticker = pgq::TickerBuilder::new().config(cfg).start()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn config(mut self, config: postgres::Config) -> TickerBuilder {
        self.databases.push(Ok(config));
        self
    }

    /// Pause between ticker rounds (default [`DEFAULT_TICKER_PERIOD`]; pgqd's
    /// `ticker_period`). At least 1 ms. The pause also grows with a round's cost, so a
    /// database with very many queues is checked less often.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let ticker = pgq::Ticker::builder(&client)
    ///     .ticker_period(std::time::Duration::from_millis(10))
    ///     .start()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn ticker_period(mut self, period: Duration) -> TickerBuilder {
        self.ticker_period = period.max(Duration::from_millis(1));
        self
    }

    /// Pause between ticker rounds once no queue has had new events for [`IDLE_AFTER`]
    /// (default [`DEFAULT_IDLE_TICKER_PERIOD`]); never shorter than the ticker period. The
    /// ticker returns to `ticker_period` as soon as it sees new events.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let ticker = pgq::Ticker::builder(&client)
    ///     .idle_ticker_period(std::time::Duration::from_millis(200))
    ///     .start()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn idle_ticker_period(mut self, period: Duration) -> TickerBuilder {
        self.idle_ticker_period = period.max(Duration::from_millis(1));
        self
    }

    /// Pause between moving due retry events back into their queues (default
    /// [`DEFAULT_RETRY_PERIOD`]; pgqd's `retry_period`). At least 1 ms.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let ticker = pgq::Ticker::builder(&client)
    ///     .retry_period(std::time::Duration::from_secs(30))
    ///     .start()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn retry_period(mut self, period: Duration) -> TickerBuilder {
        self.retry_period = period.max(Duration::from_millis(1));
        self
    }

    /// Pause between maintenance runs (default [`DEFAULT_MAINT_PERIOD`]; pgqd's
    /// `maint_period`). At least 1 ms.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let ticker = pgq::Ticker::builder(&client)
    ///     .maint_period(std::time::Duration::from_secs(600))
    ///     .start()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn maint_period(mut self, period: Duration) -> TickerBuilder {
        self.maint_period = period.max(Duration::from_millis(1));
        self
    }

    /// How often a standby tries to become the active ticker (default
    /// [`DEFAULT_TAKEOVER_PERIOD`]); a standby takes over about this long after the active
    /// ticker is gone. At least 1 ms.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let ticker = pgq::Ticker::builder(&client)
    ///     .takeover_period(std::time::Duration::from_millis(100))
    ///     .start()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn takeover_period(mut self, period: Duration) -> TickerBuilder {
        self.takeover_period = period.max(Duration::from_millis(1));
        self
    }

    /// First and longest pause between reconnect attempts (default
    /// [`DEFAULT_RECONNECT_BACKOFF`]). The pause doubles after each failure up to `max`, with
    /// random jitter, so many clients do not reconnect in step after a server restart.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let ticker = pgq::Ticker::builder(&client)
    ///     .reconnect_backoff(Duration::from_millis(50), Duration::from_secs(2))
    ///     .start()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> TickerBuilder {
        let min = min.max(Duration::from_millis(1));
        self.backoff = (min, max.max(min));
        self
    }

    /// Whether to `NOTIFY` [`TICK_CHANNEL`] after a round that created ticks (default on).
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let ticker = pgq::Ticker::builder(&client).notify(false).start()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn notify(mut self, on: bool) -> TickerBuilder {
        self.notify = on;
        self
    }

    /// How often a round calls `pgq.ticker(queue)` for every queue rather than only for the
    /// queues the cheap pre-check lists (default 5 s; while no event arrives and no queue
    /// changes the gap doubles, up to 1 min or this period if longer). For tests, which set
    /// it very long to show that the pre-check alone never misses a due queue.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let ticker = pgq::Ticker::builder(&client)
    ///     .full_round_every(std::time::Duration::from_secs(3600))
    ///     .start()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    #[doc(hidden)]
    pub fn full_round_every(mut self, period: Duration) -> TickerBuilder {
        self.full_round_every = period;
        self
    }

    /// Eager ticking (default on, `Some(`[`DEFAULT_MIN_TICK_LAG`]`)`): tick a queue as soon as
    /// it has new events and its last tick is at least `min_lag` old, instead of waiting
    /// for the queue's `ticker_max_count` events or `ticker_max_lag` (500 and 3 s by
    /// default). Consumers then see an event about one round after its commit, without
    /// changing the queue's settings. Idle queues are unaffected: they get exactly the ticks
    /// PGQ's rules give them. `None` turns it off and ticks by the queue's rules only.
    ///
    /// The cost: a queue with steady traffic gets up to one tick per round (100 per second
    /// with the default period) rather than one per 500 events or 3 s. Each tick is a row in
    /// `pgq.tick` (about 80 bytes) kept until table rotation (every `rotation_period`, 2 h
    /// by default) deletes the ticks behind all consumers: 100 ticks/s for 2 h is about
    /// 720 000 rows, 80 MB, which rotation deletes in well under a second. Each tick also
    /// lets consumers take a (smaller) batch, so more batches for the same events. Raise
    /// `min_lag` (e.g. 100 ms: at most 10 ticks/s per queue) or turn eager ticking off for
    /// fewer, larger batches.
    ///
    /// Needs libpgq's schema (its `pgq.ticker_eager` function). On the official extension the
    /// ticker logs this once at info level and ticks by the queue's rules; to get low latency
    /// there lower the queue's `ticker_max_lag` instead (`pgq.set_queue_config(queue,
    /// 'ticker_max_lag', '10 ms')`).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// // At most one tick per 100 ms per busy queue:
    /// let ticker = pgq::Ticker::builder(&client)
    ///     .eager(Some(Duration::from_millis(100)))
    ///     .start()?;
    /// // Only PGQ's rules (like pgqd):
    /// let classic = pgq::Ticker::builder(&client).eager(None).start()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn eager(mut self, min_lag: Option<Duration>) -> TickerBuilder {
        self.min_tick_lag = min_lag;
        self
    }

    /// A label for thread names (`pgq-ticker <name>`) and log lines; defaults to the
    /// database name.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let ticker = pgq::Ticker::builder(&client).name("app").start()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> TickerBuilder {
        self.name = Some(name.into());
        self
    }

    /// Starts one thread per database and returns at once; connecting happens on the
    /// threads. Fails only for a builder without databases, a malformed DSN, a client in
    /// transaction pooling mode, or when the OS refuses a thread.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let ticker = pgq::Ticker::builder(&client).start()?;
    /// assert!(!ticker.stats().databases.is_empty());
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn start(self) -> Result<Ticker> {
        if self.databases.is_empty() {
            return Err(Error::invalid_input("the ticker has no database to tick"));
        }
        let mut configs = Vec::with_capacity(self.databases.len());
        for db in &self.databases {
            match db {
                Ok(c) => configs.push(ticker_config(c)),
                Err((kind, msg)) => return Err(Error::new(*kind, msg.clone())),
            }
        }
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let several = configs.len() > 1;
        let mut ticker = Ticker {
            stop: Mutex::new(Some(stop_tx)),
            threads: Vec::new(),
            shared: Vec::new(),
        };
        for config in configs {
            let target = describe_target(&config);
            let dbname = config.get_dbname().unwrap_or("postgres").to_string();
            let label = match (&self.name, several) {
                (Some(n), false) => n.clone(),
                (Some(n), true) => format!("{n}/{dbname}"),
                (None, _) => dbname,
            };
            let shared = Arc::new(Mutex::new(TickerDatabaseStats::new(target.clone())));
            let worker = DbWorker {
                label: label.clone(),
                target,
                config,
                settings: Settings {
                    ticker_period: self.ticker_period,
                    idle_ticker_period: self.idle_ticker_period.max(self.ticker_period),
                    retry_period: self.retry_period,
                    maint_period: self.maint_period,
                    takeover_period: self.takeover_period,
                    backoff: self.backoff,
                    notify: self.notify,
                    full_round_every: self.full_round_every,
                    min_tick_lag: self.min_tick_lag,
                },
                stop: stop_rx.clone(),
                stats: Arc::clone(&shared),
                eager_note_logged: Cell::new(false),
            };
            let handle = thread::Builder::new()
                .name(format!("pgq-ticker {label}"))
                .spawn(move || worker.run())
                .map_err(|e| {
                    Error::new(
                        ErrorKind::Other,
                        format!("cannot start a ticker thread: {e}"),
                    )
                    .with_source(e)
                });
            match handle {
                Ok(h) => {
                    ticker.threads.push(h);
                    ticker.shared.push(shared);
                }
                // Dropping `ticker` stops and joins the threads already started.
                Err(e) => return Err(e),
            }
        }
        Ok(ticker)
    }
}

impl Default for TickerBuilder {
    fn default() -> TickerBuilder {
        TickerBuilder::new()
    }
}

/// The settings for the ticker's own connection: read-write only (so a multi-host DSN
/// follows the primary), keepalives and a TCP user timeout (so a vanished server is noticed
/// in seconds, not when the kernel gives up after many minutes), a connect timeout.
fn ticker_config(base: &postgres::Config) -> postgres::Config {
    let mut config = base.clone();
    config.target_session_attrs(TargetSessionAttrs::ReadWrite);
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(10));
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(Duration::from_secs(5));
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(3);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(Duration::from_secs(20));
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    match config.get_application_name() {
        None | Some("libpgq") => {
            config.application_name("libpgq ticker");
        }
        Some(_) => {}
    }
    config
}

/// A running ticker service: ticks, retry-event moves and maintenance for one or more
/// databases, on its own threads, until stopped.
///
/// `Ticker` is `Send + Sync`: [`stop`](Self::stop) and [`stats`](Self::stats) may be called
/// from any thread. Dropping it stops and joins the threads.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// let client = pgq::Client::connect("host=localhost dbname=app")?;
/// let mut ticker = pgq::Ticker::builder(&client).start()?;
/// // ...
/// ticker.stop();      // returns at once
/// ticker.join()?;     // waits for the threads
/// # Ok(()) }
/// ```
pub struct Ticker {
    /// Dropping the sender is the stop signal: every thread's receiver disconnects.
    stop: Mutex<Option<Sender<()>>>,
    threads: Vec<JoinHandle<()>>,
    shared: Vec<Arc<Mutex<TickerDatabaseStats>>>,
}

impl fmt::Debug for Ticker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticker")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Ticker {
    /// Starts configuring a ticker for the database `client` connects to; see
    /// [`TickerBuilder`].
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let ticker = pgq::Ticker::builder(&client).start()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn builder(client: &Client) -> TickerBuilder {
        TickerBuilder::new().database(client)
    }

    /// Asks every thread to stop and returns at once. Idempotent. A thread in the middle of a
    /// statement finishes it first (a tick round takes milliseconds; a connect attempt gives
    /// up after its timeout). Standbys and the active ticker release their locks by closing
    /// their connections, so another ticker takes over.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let ticker = pgq::Ticker::builder(&client).start()?;
    /// ticker.stop();
    /// ticker.stop(); // no effect
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn stop(&self) {
        self.stop.lock().take();
    }

    /// Stops (if not yet asked to) and waits until every thread has ended. Idempotent.
    /// Fails only if a thread panicked, which is a bug.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let mut ticker = pgq::Ticker::builder(&client).start()?;
    /// ticker.join()?;
    /// assert!(ticker.is_stopped());
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn join(&mut self) -> Result<()> {
        // Drop order matters: the threads only end once the sender is gone.
        self.stop();
        let mut panicked = 0;
        for handle in self.threads.drain(..) {
            if handle.join().is_err() {
                panicked += 1;
            }
        }
        if panicked > 0 {
            return Err(Error::new(
                ErrorKind::Other,
                format!("{panicked} ticker thread(s) panicked"),
            ));
        }
        Ok(())
    }

    /// A snapshot of the counters; see [`TickerStats`].
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let ticker = pgq::Ticker::builder(&client).start()?;
    /// let s = ticker.stats();
    /// println!("{} ticks, {} errors", s.ticks, s.errors);
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn stats(&self) -> TickerStats {
        let mut total = TickerStats::default();
        for shared in &self.shared {
            let db = shared.lock().clone();
            total.ticks += db.ticks;
            total.rounds += db.rounds;
            total.full_rounds += db.full_rounds;
            total.retry_events_moved += db.retry_events_moved;
            total.maintenance_runs += db.maintenance_runs;
            total.maintenance_calls += db.maintenance_calls;
            total.tables_vacuumed += db.tables_vacuumed;
            total.errors += db.errors;
            total.reconnects += db.reconnects;
            match db.state {
                TickerState::Active => total.active += 1,
                TickerState::Standby => total.standby += 1,
                TickerState::Connecting | TickerState::Stopped => {}
            }
            total.last_tick = total.last_tick.max(db.last_tick);
            total.databases.push(db);
        }
        total
    }

    /// True when this ticker is the active one on every database it serves (false while it
    /// is a standby or connecting on any of them).
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let ticker = pgq::Ticker::builder(&client).start()?;
    /// if !ticker.is_active() {
    ///     println!("another ticker is active; this one is a standby");
    /// }
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn is_active(&self) -> bool {
        self.shared
            .iter()
            .all(|s| s.lock().state == TickerState::Active)
    }

    /// True when every thread has ended (after [`stop`](Self::stop) they end shortly).
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let ticker = pgq::Ticker::builder(&client).start()?;
    /// ticker.stop();
    /// while !ticker.is_stopped() {
    ///     std::thread::sleep(std::time::Duration::from_millis(10));
    /// }
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn is_stopped(&self) -> bool {
        self.shared
            .iter()
            .all(|s| s.lock().state == TickerState::Stopped)
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        // A panicked thread was already logged by the panic hook; nothing else to do here.
        let _ = self.join();
    }
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    ticker_period: Duration,
    idle_ticker_period: Duration,
    retry_period: Duration,
    maint_period: Duration,
    takeover_period: Duration,
    backoff: (Duration, Duration),
    notify: bool,
    full_round_every: Duration,
    min_tick_lag: Option<Duration>,
}

/// One database's thread.
struct DbWorker {
    label: String,
    target: String,
    config: postgres::Config,
    settings: Settings,
    stop: Receiver<()>,
    stats: Arc<Mutex<TickerDatabaseStats>>,
    /// Whether the "eager ticking needs libpgq's schema" note was logged.
    eager_note_logged: Cell<bool>,
}

/// Why a session on one connection ended.
enum SessionEnd {
    Stop,
    Lost(Error),
}

impl DbWorker {
    fn run(self) {
        // Marks the database stopped however the thread ends, a panic included.
        struct MarkStopped(Arc<Mutex<TickerDatabaseStats>>);
        impl Drop for MarkStopped {
            fn drop(&mut self) {
                let mut s = self.0.lock();
                s.state = TickerState::Stopped;
                s.active_since = None;
            }
        }
        let _mark = MarkStopped(Arc::clone(&self.stats));
        log::debug!("pgq ticker {}: started for {}", self.label, self.target);
        let mut backoff = Backoff::new(self.settings.backoff.0, self.settings.backoff.1);
        let mut connected_before = false;
        loop {
            self.set_state(TickerState::Connecting);
            match self.config.connect(NoTls) {
                Ok(mut conn) => {
                    if connected_before {
                        self.stats.lock().reconnects += 1;
                        log::info!("pgq ticker {}: reconnected to {}", self.label, self.target);
                    }
                    connected_before = true;
                    self.tune_server_keepalives(&mut conn);
                    let since = Instant::now();
                    match self.session(conn) {
                        SessionEnd::Stop => break,
                        SessionEnd::Lost(e) => {
                            self.record_error(&e, "lost the connection");
                            // A connection that lasted is no sign of a flapping server.
                            if since.elapsed() >= self.settings.backoff.1 {
                                backoff.reset();
                            }
                        }
                    }
                }
                Err(e) => {
                    let e = Error::from(e);
                    self.record_error(&e, "cannot connect");
                }
            }
            if self.wait(backoff.next()) {
                break;
            }
        }
        log::debug!("pgq ticker {}: stopped", self.label);
    }

    /// Runs on one connection until it breaks or a stop is asked.
    fn session(&self, mut conn: postgres::Client) -> SessionEnd {
        let st = self.settings;
        // Per step, so one step failing for good does not hurry another's retries.
        let mut tick_backoff = Backoff::new(st.backoff.0, st.backoff.1);
        let mut retry_backoff = Backoff::new(st.backoff.0, st.backoff.1);
        loop {
            // Standby until the election lock is ours.
            match try_leader_lock(&mut conn) {
                Ok(true) => break,
                Ok(false) => {
                    self.set_state(TickerState::Standby);
                    if self.wait(st.takeover_period) {
                        return SessionEnd::Stop;
                    }
                }
                Err(e) => return SessionEnd::Lost(e),
            }
        }
        {
            let mut s = self.stats.lock();
            s.state = TickerState::Active;
            s.takeovers += 1;
            s.active_since = Some(SystemTime::now());
        }
        log::info!("pgq ticker {}: active on {}", self.label, self.target);

        let now = Instant::now();
        // Maintenance (perhaps a VACUUM) waits for the first tick round.
        let (mut next_tick, mut next_retry) = (now, now);
        let mut next_maint = now + st.ticker_period;
        let mut planner = RoundPlanner::new(st.full_round_every, st.min_tick_lag);
        let mut last_activity = now;
        loop {
            let now = Instant::now();
            if now >= next_retry {
                match retry_events(&mut conn) {
                    Ok(moved) => {
                        next_retry = Instant::now() + st.retry_period;
                        retry_backoff.reset();
                        if moved > 0 {
                            self.stats.lock().retry_events_moved += moved;
                            log::debug!("pgq ticker {}: moved {moved} retry events", self.label);
                            // The moved events become visible with the next tick.
                            next_tick = Instant::now();
                            last_activity = next_tick;
                        }
                    }
                    Err(e) => match self.step_failed(&conn, e, "retry events") {
                        Some(end) => return end,
                        None => next_retry = Instant::now() + retry_backoff.next(),
                    },
                }
            }
            let now = Instant::now();
            if now >= next_maint {
                // A failed operation waits for the next run: maintenance is never urgent.
                next_maint = now + st.maint_period;
                match super::maintenance_keep_going(&mut conn) {
                    Ok((report, errors)) => {
                        for e in &errors {
                            self.record_error(e, "maintenance");
                        }
                        let mut s = self.stats.lock();
                        s.maintenance_runs += 1;
                        s.maintenance_calls += report.function_calls;
                        s.tables_vacuumed += report.tables_vacuumed;
                        drop(s);
                        log::debug!(
                            "pgq ticker {}: maintenance: {} calls, {} tables vacuumed",
                            self.label,
                            report.function_calls,
                            report.tables_vacuumed
                        );
                    }
                    Err(e) => {
                        if let Some(end) = self.step_failed(&conn, e, "maintenance") {
                            return end;
                        }
                    }
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                let result =
                    planner.round(&mut conn, st.notify, &self.label, &self.eager_note_logged);
                // A pre-check given up on: counted and logged, the ticker goes on.
                if let Some(e) = planner.degraded.take() {
                    self.record_error(&e, "tick");
                }
                match result {
                    Ok(Round {
                        ticked,
                        full,
                        activity,
                        min_pause,
                        quiet_check,
                    }) => {
                        if activity {
                            last_activity = now;
                        }
                        let idle = last_activity.elapsed() >= IDLE_AFTER;
                        let mut pause = if idle {
                            st.idle_ticker_period
                        } else {
                            st.ticker_period
                        }
                        .max(min_pause);
                        if let (true, Some(check)) = (idle, quiet_check) {
                            pause = pause.max(check * IDLE_PAUSE_PER_ROUND_COST);
                        }
                        next_tick = now + pause;
                        tick_backoff.reset();
                        let mut s = self.stats.lock();
                        s.rounds += 1;
                        s.full_rounds += u64::from(full);
                        if !ticked.is_empty() {
                            s.ticks += ticked.len() as u64;
                            s.last_tick = Some(SystemTime::now());
                        }
                        drop(s);
                        if !ticked.is_empty() {
                            log::trace!("pgq ticker {}: ticked {:?}", self.label, ticked);
                        }
                    }
                    Err(e) => match self.step_failed(&conn, e, "tick") {
                        Some(end) => return end,
                        None => next_tick = Instant::now() + tick_backoff.next(),
                    },
                }
            }
            let due = next_tick.min(next_retry).min(next_maint);
            if self.wait(due.saturating_duration_since(Instant::now())) {
                return SessionEnd::Stop;
            }
        }
    }

    /// Asks the server to notice within about 25 s when this ticker's host vanishes without
    /// closing the connection (power loss, network partition), so the session and its
    /// election lock go away and a standby takes over; the server's defaults wait two hours.
    /// Only affects TCP connections; failures (an old server) are harmless. Also turns off
    /// synchronous commit for this session (see below).
    fn tune_server_keepalives(&self, conn: &mut postgres::Client) {
        for sql in [
            "set tcp_keepalives_idle = 10; set tcp_keepalives_interval = 5; \
             set tcp_keepalives_count = 3",
            "set tcp_user_timeout = 20000",
            // A tick round does not wait for its WAL flush (an fsync, often milliseconds,
            // which would delay every tick and, through the round-cost pause, the next
            // round). Nothing is lost by that: whatever builds on a tick (a consumer's
            // next_batch) commits synchronously, and flushing its WAL flushes the earlier
            // tick too; after a crash a tick no one used may be missing, as if the ticker
            // had been a moment late. Retry moves and maintenance are redone likewise.
            "set synchronous_commit = off",
        ] {
            if let Err(e) = conn.batch_execute(sql) {
                log::debug!("pgq ticker {}: {sql}: {e}", self.label);
            }
        }
    }

    /// Decides what a failed step means: a broken connection (or one that went read-only,
    /// e.g. a demoted primary) ends the session so it is reopened; anything else is recorded
    /// and the step retried later on the same connection.
    fn step_failed(&self, conn: &postgres::Client, e: Error, what: &str) -> Option<SessionEnd> {
        let read_only = e.sqlstate() == Some("25006");
        if conn.is_closed() || e.kind() == ErrorKind::ConnectionLost || read_only {
            return Some(SessionEnd::Lost(e));
        }
        self.record_error(&e, what);
        None
    }

    fn record_error(&self, e: &Error, what: &str) {
        let mut s = self.stats.lock();
        s.errors += 1;
        s.last_error = Some(format!("{what}: {e}"));
        drop(s);
        log::warn!(
            "pgq ticker {}: {} on {}: {}",
            self.label,
            what,
            self.target,
            e
        );
    }

    fn set_state(&self, state: TickerState) {
        let mut s = self.stats.lock();
        if s.state != state {
            s.state = state;
            if state != TickerState::Active {
                s.active_since = None;
            }
        }
    }

    /// Waits `d` or until stop is asked; true means stop.
    fn wait(&self, d: Duration) -> bool {
        match self.stop.recv_timeout(d) {
            Err(RecvTimeoutError::Timeout) => false,
            // Nothing is ever sent: a message or a disconnect both mean stop.
            Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
        }
    }
}

fn try_leader_lock(conn: &mut postgres::Client) -> Result<bool> {
    let row = conn
        .query_one(LEADER_LOCK_SQL, &[])
        .map_err(|e| Error::from(e).context("take the ticker lock"))?;
    Ok(row.try_get(0)?)
}

/// The queues the ticker handles that may be due for a tick now, as `(queue_id, queue_name)`.
///
/// This mirrors PGQ's rule (PGQ-SPEC section 4) in plain SQL, which the planner runs in
/// microseconds per queue, while calling the PL/pgSQL `pgq.ticker(queue)` costs about 0.1 ms
/// per queue. It must never leave out a due queue, so where our schema and the official
/// extension differ it takes the union: the official one ticks an idle queue that has a
/// single tick at once, ours waits for `max_lag / 2`. `new` is read as both do, from the
/// event sequence's `last_value` (NULL until the first event: nothing new).
macro_rules! queue_state_sql {
    () => {
        " from pgq.queue q \
           left join lateral (select t.tick_id, t.tick_time, t.tick_event_seq, t.tick_snapshot, \
                                      t.xmin::text::int8 as tick_xid \
                               from pgq.tick t \
                               where t.tick_queue = q.queue_id \
                               order by t.tick_id desc limit 1) lt on true \
           left join lateral (select t.tick_time from pgq.tick t \
                               where t.tick_queue = q.queue_id and t.tick_id < lt.tick_id \
                               order by t.tick_id desc limit 1) pt on true \
           cross join lateral (select coalesce(pg_catalog.pg_sequence_last_value( \
                                         q.queue_event_seq::pg_catalog.regclass), \
                                       lt.tick_event_seq) - lt.tick_event_seq as new, \
                                      pg_catalog.now() - lt.tick_time as lag) s \
          where not q.queue_external_ticker and not q.queue_ticker_paused "
    };
}

macro_rules! due_sql {
    () => {
        "(lt.tick_id is null \
          or s.new < 0 \
          or (s.new > 0 and (s.new >= q.queue_ticker_max_count \
                             or s.lag >= q.queue_ticker_max_lag)) \
          or (s.new = 0 and (pt.tick_time is null \
               or (s.lag >= q.queue_ticker_max_lag / 2 \
                   and (s.lag >= (lt.tick_time - pt.tick_time) * 2 \
                        or s.lag >= q.queue_ticker_idle_period)))))"
    };
}

/// The extra due condition of eager ticking, `{min_lag}` being an interval literal: new
/// events by the sequence, or two cases the sequence cannot show, where only
/// `pgq.ticker_eager` can tell (it reads the event table), so the pre-check lists the queue
/// and the function decides: in the first second after the tick, a transaction that was
/// running at the tick (listed in its snapshot, or see [`LATE_GAP_SQL`]) has ended since (it
/// may have written events the tick did not see);
/// and a queue whose sequence has moved exactly once (the sequence reads the same before and
/// after a queue's first event). That last case stays true until the queue's second event,
/// so the pre-check counts it only when `{first_event}` (a parameter: the sequences moved
/// within the last second) says it may just have happened.
const EAGER_DUE_SQL: &str = "(lt.tick_id is not null and s.lag >= {min_lag} \
      and (s.new > 0 \
           or (lt.tick_event_seq = 1 and s.new = 0 and {first_event} \
               and pg_catalog.pg_sequence_last_value( \
                       q.queue_event_seq::pg_catalog.regclass) is not null) \
           or (s.lag < interval '1 second' \
               and (exists (select 1 from pg_catalog.txid_snapshot_xip(lt.tick_snapshot) x \
                             where pg_catalog.txid_visible_in_snapshot(x, \
                                       pg_catalog.txid_current_snapshot())) \
                    or exists (select 1 from pg_catalog.generate_series( \
                                   pg_catalog.txid_snapshot_xmax(lt.tick_snapshot), \
                                   pg_catalog.txid_snapshot_xmax(lt.tick_snapshot) \
                                       + {late_gap} - 1) x \
                                where pg_catalog.txid_visible_in_snapshot(x, \
                                          pg_catalog.txid_current_snapshot()))))))";

/// How many transactions got their id after the last tick's snapshot was taken but before
/// the tick's own transaction (`lt.tick_xid`, the tick row's 32-bit xmin; compared modulo
/// 2^32, so an xid epoch wrap does not matter), capped at 100. The newest transaction
/// running when the tick was taken is one of those, not in the snapshot's list of running
/// transactions (its id is not below the snapshot's xmax): when it commits, its events are
/// new to the next tick. Usually 0: the tick's transaction takes the next id.
const LATE_GAP_SQL: &str = "least((lt.tick_xid \
      - pg_catalog.txid_snapshot_xmax(lt.tick_snapshot) % 4294967296 + 4294967296) \
      % 4294967296, 100)";

/// For a queue that is not due: how long until PGQ's rules make it due by time alone if no
/// event arrives (an interval; the due rules of [`due_sql`] solved for the lag).
macro_rules! due_in_sql {
    () => {
        "(case when s.new > 0 then q.queue_ticker_max_lag - s.lag \
               when pt.tick_time is null then interval '0' \
               else greatest(q.queue_ticker_max_lag / 2, \
                        least((lt.tick_time - pt.tick_time) * 2, \
                                         q.queue_ticker_idle_period)) - s.lag end)"
    };
}

/// The same for eager ticking (`{min_lag}` as in [`EAGER_DUE_SQL`]): a queue with new
/// events is due after `min_lag`, and in the first second after a tick taken while
/// transactions were running, or after the sequences moved while a queue may have had its
/// first event, the pre-check must look again every round (a commit moves no sequence).
const EAGER_DUE_IN_SQL: &str = "(case when lt.tick_id is null then null \
      when s.new > 0 then {min_lag} - s.lag \
      when lt.tick_event_seq = 1 and s.new = 0 and {first_event} \
           and pg_catalog.pg_sequence_last_value( \
                   q.queue_event_seq::pg_catalog.regclass) is not null \
           then greatest({min_lag} - s.lag, interval '0') \
      when s.lag < interval '1 second' \
           and (exists (select 1 from pg_catalog.txid_snapshot_xip(lt.tick_snapshot)) \
                or {late_gap} > 0) \
           then interval '0' end)";

/// Whether anything a pre-check looks at may have changed since the ticker last looked, in
/// two steps so that the usual answer costs next to nothing. `$1` is the WAL insert position
/// of the last look (text): while it has not moved, nothing was written anywhere in the
/// cluster, so no event was inserted or committed and no queue changed, and the statement
/// returns only the position. Otherwise it also returns a summary of what the pre-check
/// reads besides time: every event sequence (sequences only move forward, so an unchanged
/// sum means none moved), and the set of queues and their settings (count, ids, and each
/// row's xmin, which an update changes). The summary costs about 1.5 us per queue, the
/// full pre-check about 5 us.
const GATE_SQL: &str = "select l::text, case when l::text is distinct from $1 then \
      (select coalesce(sum(coalesce(pg_catalog.pg_sequence_last_value( \
                  q.queue_event_seq::pg_catalog.regclass), 0)), 0)::text \
              || ' ' || count(*)::text || ' ' || coalesce(sum(q.queue_id), 0)::text \
              || ' ' || coalesce(sum(q.xmin::text::int8), 0)::text \
         from pgq.queue q \
        where not q.queue_external_ticker and not q.queue_ticker_paused) end \
      from pg_catalog.pg_current_wal_insert_lsn() l";

const ALL_QUEUES_SQL: &str = "select q.queue_id, q.queue_name from pgq.queue q \
      where not q.queue_external_ticker and not q.queue_ticker_paused";

/// The SQL of one ticker configuration: the pre-check, and the rounds.
#[derive(Debug, Clone)]
struct RoundSql {
    /// The whole of a round when nothing is due, as one prepared statement (after
    /// [`GATE_SQL`] said something may have changed): whether any queue may be due, whether
    /// any has events not yet covered by a tick (activity, which keeps the ticker at its
    /// fast period), and in how many seconds the first one becomes due by time alone (NULL:
    /// no queue). `$1` (bool): whether the sequences moved since the last look.
    precheck: String,
    /// Round SQL by (only possibly due queues?, notify?).
    rounds: [[String; 2]; 2],
}

impl RoundSql {
    /// `min_lag`: eager ticking through `pgq.ticker_eager` (our schema only).
    fn new(min_lag: Option<Duration>) -> RoundSql {
        // Per queue: whether it is due (`due`, with `{first_event}` still to fill in),
        // whether it is due for an eager tick (then `pgq.ticker_eager` is called for it,
        // otherwise `pgq.ticker`, which costs less: the eager function reads the event table
        // of a queue whose sequence shows nothing new), and when it becomes due.
        let (due, eager, due_in) = match min_lag {
            Some(lag) => {
                let lit = format!("interval '{} microseconds'", lag.as_micros());
                let eager = EAGER_DUE_SQL
                    .replace("{min_lag}", &lit)
                    .replace("{late_gap}", LATE_GAP_SQL);
                (
                    format!("({} or {eager})", due_sql!()),
                    eager,
                    format!(
                        "least({}, {})",
                        due_in_sql!(),
                        EAGER_DUE_IN_SQL
                            .replace("{min_lag}", &lit)
                            .replace("{late_gap}", LATE_GAP_SQL)
                    ),
                )
            }
            None => (
                due_sql!().to_string(),
                "false".to_string(),
                due_in_sql!().to_string(),
            ),
        };
        let tick_call = match min_lag {
            Some(lag) => format!(
                "case when d.eager then pgq.ticker_eager(d.queue_name, \
                 interval '{} microseconds') else pgq.ticker(d.queue_name) end",
                lag.as_micros()
            ),
            None => "pgq.ticker(d.queue_name)".to_string(),
        };
        let precheck = format!(
            "select coalesce(bool_or({due}), false), coalesce(bool_or(s.new <> 0), false), \
                    extract(epoch from min(case when not {due} then {due_in} end))::float8{}",
            queue_state_sql!()
        )
        .replace("{first_event}", "$1::bool");
        // The rounds list the first-event case always: they run after a pre-check that said
        // "due", or right after a round that ticked.
        let due_queues = format!(
            "select q.queue_id, q.queue_name, {eager} as eager{} and {due}",
            queue_state_sql!()
        )
        .replace("{first_event}", "true");
        let all_queues = if min_lag.is_some() {
            format!(
                "select q.queue_id, q.queue_name, {eager} as eager{}",
                queue_state_sql!()
            )
            .replace("{first_event}", "true")
        } else {
            ALL_QUEUES_SQL.to_string()
        };
        // A round in one transaction and one round trip: a multi-statement simple query runs
        // as one implicit transaction, and each statement takes its own snapshot, so the
        // ticks' snapshots are taken after the tick lock is held (tick order follows
        // snapshot order). The CTE calls the volatile tick function exactly once per queue
        // it lists; `pg_notify` runs only for the queues that got a tick, and is delivered
        // only if the round commits.
        let round = |queues: &str, notify: bool| {
            let notify = if notify {
                format!(", pg_catalog.pg_notify('{TICK_CHANNEL}', t.queue_name)")
            } else {
                String::new()
            };
            format!(
                "select pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('pgq'), 1); \
                 with t as (select d.queue_name, {tick_call} as tick_id from ({queues}) d \
                 order by d.queue_id) select t.queue_name{notify} from t \
                 where t.tick_id is not null"
            )
        };
        RoundSql {
            rounds: [
                [round(&all_queues, false), round(&all_queues, true)],
                [round(&due_queues, false), round(&due_queues, true)],
            ],
            precheck,
        }
    }
}

/// By default, every this often a round calls `pgq.ticker(queue)` (or `pgq.ticker_eager`)
/// for every queue, not only those the pre-check lists: a safety net should a PGQ variant
/// decide due-ness in a way the gate and the pre-check do not foresee. While nothing
/// changes, the gap doubles up to [`MAX_FULL_GAP`].
const FULL_ROUND_EVERY: Duration = Duration::from_secs(5);

/// Whether the connected database has libpgq's `pgq.ticker_eager` and we may call it.
const HAS_EAGER_SQL: &str = "select coalesce(pg_catalog.has_function_privilege( \
      pg_catalog.to_regprocedure('pgq.ticker_eager(text,interval)'), 'execute'), false)";

/// Decides, per round, between doing nothing (the gate saw no change and no queue is due by
/// time), the pre-check, and a full round.
struct RoundPlanner {
    /// False once the pre-check failed on this connection (e.g. no privilege on the event
    /// sequences): then every round is a full one.
    precheck: bool,
    full_every: Duration,
    /// The pre-check, prepared once per connection so the server plans it once.
    statement: Option<postgres::Statement>,
    /// The gate ([`GATE_SQL`]), prepared once per connection; `gate` is false once it
    /// failed on this connection, and then every round runs the pre-check.
    gate_statement: Option<postgres::Statement>,
    gate: bool,
    /// What the gate saw last: the WAL insert position and the summary. The pre-check
    /// runs after the gate, so whatever the gate saw, the pre-check saw too.
    lsn: Option<String>,
    summary: Option<String>,
    /// When the first queue becomes due by time alone (idle ticks, `ticker_max_lag`), as
    /// the last pre-check found; None: unknown, the next round runs the pre-check.
    next_due: Option<Instant>,
    /// Whether the last pre-check saw events not yet covered by a tick.
    waiting: bool,
    /// When the gate last saw the sequences (or the queues) change.
    moved_at: Option<Instant>,
    /// Consecutive server errors of the gate and of the pre-check (see [`GIVE_UP_AFTER`]).
    gate_failures: u32,
    precheck_failures: u32,
    /// Why the gate or the pre-check was just given up on this connection, to be reported
    /// (once) as an error: the ticker still works, at a higher cost.
    degraded: Option<Error>,
    /// Since when the gate / the pre-check has been given up on; after
    /// [`RETRY_GIVEN_UP_AFTER`] full-round periods it is tried again (a privilege granted
    /// since, a passing cause), and given up on again at its first failure.
    gate_off_at: Option<Instant>,
    precheck_off_at: Option<Instant>,
    /// Whether giving up on the gate / the pre-check was reported already (later give-ups
    /// on the same connection are only logged).
    gate_reported: bool,
    precheck_reported: bool,
    last_full: Option<Instant>,
    /// How long the last full round took: the next one waits at least
    /// [`PAUSE_PER_ROUND_COST`] times that, so that with thousands of queues full rounds
    /// stay a bounded share of the time without holding up the rounds between them.
    last_full_cost: Duration,
    /// How many `full_every` periods apart full rounds are: doubles (up to
    /// [`MAX_FULL_GAP`]) at each full round when the gate saw no change and no pre-check saw
    /// waiting events since the previous one, back to 1 otherwise.
    full_factor: u32,
    /// Whether nothing changed since the last full round (see `full_factor`).
    quiet_since_full: bool,
    /// Whether the last round made ticks: under steady traffic the next one most likely
    /// will too, so it skips the pre-check (one round trip less) and runs the round over
    /// the due queues directly, which costs little more than the pre-check when none is.
    last_ticked: bool,
    /// The wanted eager min lag (None: off).
    min_lag: Option<Duration>,
    /// Whether eager ticking is in use: wanted, and the database has `pgq.ticker_eager`.
    /// None until checked; checked again at each full round while unavailable, so a schema
    /// installed later is picked up.
    eager: Option<bool>,
    sql: RoundSql,
}

/// How long after the sequences moved the pre-check still counts the first-event case of
/// [`EAGER_DUE_SQL`].
const FIRST_EVENT_WINDOW: Duration = Duration::from_secs(1);

/// The longest gap between full rounds while nothing changes (see
/// `RoundPlanner::full_factor`), unless `full_round_every` is longer.
const MAX_FULL_GAP: Duration = Duration::from_secs(60);

/// After this many server errors in a row, the gate or the pre-check is given up on for the
/// connection (e.g. no privilege on the event sequences); fewer are counted and retried
/// (e.g. a queue dropped while they read its sequence).
const GIVE_UP_AFTER: u32 = 3;

/// A gate or pre-check given up on is tried again after this many full-round periods
/// (1 min by default).
const RETRY_GIVEN_UP_AFTER: u32 = 12;

/// The longest a ticker goes without a pre-check when no queue is due by time (no queues
/// at all, or a very long `ticker_max_lag`).
const MAX_QUIET: Duration = Duration::from_secs(3600);

impl RoundPlanner {
    fn new(full_every: Duration, min_lag: Option<Duration>) -> RoundPlanner {
        RoundPlanner {
            full_every,
            precheck: true,
            statement: None,
            gate_statement: None,
            gate: true,
            lsn: None,
            summary: None,
            next_due: None,
            waiting: false,
            moved_at: None,
            gate_failures: 0,
            precheck_failures: 0,
            degraded: None,
            gate_off_at: None,
            precheck_off_at: None,
            gate_reported: false,
            precheck_reported: false,
            last_full: None,
            last_full_cost: Duration::ZERO,
            full_factor: 1,
            quiet_since_full: false,
            last_ticked: false,
            min_lag,
            eager: None,
            sql: RoundSql::new(None),
        }
    }

    /// Decides whether eager ticking can be used on this connection; on the first "no" logs
    /// (once per ticker thread) that it needs libpgq's schema.
    fn check_eager(&mut self, conn: &mut postgres::Client, label: &str, logged: &Cell<bool>) {
        if self.min_lag.is_none() || self.eager == Some(true) {
            return;
        }
        let available = match conn.query_one(HAS_EAGER_SQL, &[]) {
            Ok(row) => row.try_get::<_, bool>(0).unwrap_or(false),
            Err(e) => {
                log::debug!("pgq ticker {label}: cannot look for pgq.ticker_eager: {e}");
                false
            }
        };
        if available {
            self.sql = RoundSql::new(self.min_lag);
            self.statement = None;
            log::debug!("pgq ticker {label}: eager ticking on");
        } else if !logged.replace(true) {
            log::info!(
                "pgq ticker {label}: eager ticking needs libpgq's schema (pgq.ticker_eager); \
                 ticking by each queue's ticker_max_count / ticker_max_lag (lower a queue's \
                 ticker_max_lag for lower latency)"
            );
        }
        self.eager = Some(available);
    }

    /// Runs the gate: whether the event sequences or the queues may have changed since the
    /// last look (true when unknown).
    fn gate(&mut self, conn: &mut postgres::Client) -> Result<bool> {
        if !self.gate {
            return Ok(true);
        }
        let prepared = match self.gate_statement.take() {
            Some(st) => Ok(st),
            None => conn.prepare(GATE_SQL),
        };
        let result = prepared.and_then(|st| {
            let row = conn.query_one(&st, &[&self.lsn]);
            self.gate_statement = Some(st);
            row
        });
        match result {
            Ok(row) => {
                self.gate_failures = 0;
                let lsn: String = row.try_get(0)?;
                let summary: Option<String> = row.try_get(1)?;
                self.lsn = Some(lsn);
                Ok(match summary {
                    // No WAL written since the last look: nothing changed.
                    None => self.summary.is_none(),
                    Some(s) => {
                        let changed = self.summary.as_deref() != Some(s.as_str());
                        self.summary = Some(s);
                        changed
                    }
                })
            }
            Err(e) if e.is_closed() || e.as_db_error().is_none() => {
                Err(Error::from(e).context("tick"))
            }
            Err(e) => {
                // Once may be a race (a queue dropped while the gate reads its sequence):
                // an error, retried. Every time: given up on for this connection.
                self.gate_failures += 1;
                self.lsn = None;
                self.summary = None;
                if self.gate_failures < GIVE_UP_AFTER {
                    return Err(Error::from(e).context("tick: change gate"));
                }
                self.gate = false;
                self.gate_off_at = Some(Instant::now());
                let e = Error::from(e)
                    .context("change gate unavailable, running the due pre-check every round");
                if std::mem::replace(&mut self.gate_reported, true) {
                    log::debug!("{e}");
                } else {
                    self.degraded = Some(e);
                }
                Ok(true)
            }
        }
    }

    /// Tries a gate or pre-check that was given up on again, once it has been off for
    /// [`RETRY_GIVEN_UP_AFTER`] full-round periods: one more failure gives it up again.
    fn retry_given_up(&mut self) {
        let after = self.full_every * RETRY_GIVEN_UP_AFTER;
        if self.gate_off_at.is_some_and(|t| t.elapsed() >= after) {
            self.gate = true;
            self.gate_off_at = None;
            self.gate_failures = GIVE_UP_AFTER - 1;
            self.gate_statement = None;
            self.lsn = None;
            self.summary = None;
        }
        if self.precheck_off_at.is_some_and(|t| t.elapsed() >= after) {
            self.precheck = true;
            self.precheck_off_at = None;
            self.precheck_failures = GIVE_UP_AFTER - 1;
            self.statement = None;
            self.next_due = None;
        }
    }

    /// Runs one round.
    fn round(
        &mut self,
        conn: &mut postgres::Client,
        notify: bool,
        label: &str,
        eager_note_logged: &Cell<bool>,
    ) -> Result<Round> {
        let result = self.round_inner(conn, notify, label, eager_note_logged);
        if result.is_err() {
            // Whatever the gate saw may not have been acted on: look again next time.
            self.next_due = None;
        }
        result
    }

    fn round_inner(
        &mut self,
        conn: &mut postgres::Client,
        notify: bool,
        label: &str,
        eager_note_logged: &Cell<bool>,
    ) -> Result<Round> {
        let started = Instant::now();
        self.retry_given_up();
        let full_gap = (self.full_every * self.full_factor)
            .min(MAX_FULL_GAP.max(self.full_every))
            .max(self.last_full_cost * PAUSE_PER_ROUND_COST);
        let recheck = self.last_full.map_or(true, |t| t.elapsed() >= full_gap);
        let mut full = !self.precheck || recheck;
        if self.eager.is_none() || (recheck && self.eager == Some(false)) {
            self.check_eager(conn, label, eager_note_logged);
        }
        // Whether events were waiting, as the pre-check saw it (idle ticks are no activity).
        let mut pending = None;
        if !full && !self.last_ticked {
            let first_look = self.summary.is_none();
            let changed = self.gate(conn)?;
            if changed {
                self.moved_at = Some(Instant::now());
                if !first_look {
                    self.quiet_since_full = false;
                }
            }
            // A queue's first event is told by the sequence moving (the pre-check cannot
            // see it afterwards), and its transaction may commit a moment after the round
            // that noticed it: the pre-check counts that case for a second.
            let moved = self
                .moved_at
                .is_some_and(|t| t.elapsed() < FIRST_EVENT_WINDOW);
            let time_due = self.next_due.map_or(true, |t| Instant::now() >= t);
            if !changed && !time_due {
                return Ok(Round {
                    ticked: Vec::new(),
                    full: false,
                    activity: self.waiting,
                    min_pause: started.elapsed() * PAUSE_PER_ROUND_COST,
                    quiet_check: Some(started.elapsed()),
                });
            }
            let prepared = match self.statement.take() {
                Some(st) => Ok(st),
                None => conn.prepare(&self.sql.precheck),
            };
            let checked_at = Instant::now();
            let result = prepared.and_then(|st| {
                let row = if st.params().is_empty() {
                    conn.query_one(&st, &[])
                } else {
                    conn.query_one(&st, &[&moved])
                };
                self.statement = Some(st);
                row
            });
            match result {
                Ok(row) => {
                    self.precheck_failures = 0;
                    let due: bool = row.try_get(0)?;
                    let waiting: bool = row.try_get(1)?;
                    let due_in: Option<f64> = row.try_get(2)?;
                    self.waiting = waiting;
                    if waiting {
                        self.quiet_since_full = false;
                    }
                    if !due {
                        let quiet = due_in.map_or(MAX_QUIET, |s| {
                            Duration::try_from_secs_f64(s.max(0.0))
                                .unwrap_or(MAX_QUIET)
                                .min(MAX_QUIET)
                        });
                        self.next_due = Some(checked_at + quiet);
                        return Ok(Round {
                            ticked: Vec::new(),
                            full: false,
                            activity: waiting,
                            min_pause: started.elapsed() * PAUSE_PER_ROUND_COST,
                            quiet_check: Some(started.elapsed()),
                        });
                    }
                    pending = Some(waiting);
                }
                Err(e) if e.is_closed() || e.as_db_error().is_none() => {
                    return Err(Error::from(e).context("tick"))
                }
                Err(e) => {
                    self.precheck_failures += 1;
                    if self.precheck_failures < GIVE_UP_AFTER {
                        return Err(Error::from(e).context("tick: due pre-check"));
                    }
                    self.precheck = false;
                    self.precheck_off_at = Some(Instant::now());
                    let e = Error::from(e).context(
                        "cheap due check unavailable, calling pgq.ticker() for every queue \
                         every round",
                    );
                    if std::mem::replace(&mut self.precheck_reported, true) {
                        log::debug!("{e}");
                    } else {
                        self.degraded = Some(e);
                    }
                    // The round over the due queues reads what the pre-check could not.
                    full = true;
                }
            }
        }
        // After ticking, the next round that does not tick runs the pre-check. (A full round
        // that ticks nothing changes nothing the last pre-check saw.)
        let next_due = self.next_due.take();
        self.last_ticked = false;
        let checked = started.elapsed();
        let sql = &self.sql.rounds[usize::from(!full)][usize::from(notify)];
        let msgs = match conn.simple_query(sql) {
            Ok(msgs) => msgs,
            Err(e) => {
                // A schema downgraded under us: look again before the next round.
                if self.eager == Some(true) {
                    self.eager = None;
                    self.sql = RoundSql::new(None);
                    self.statement = None;
                }
                return Err(Error::from(e).context("tick"));
            }
        };
        if full {
            self.last_full = Some(Instant::now());
            self.last_full_cost = started.elapsed();
            self.full_factor = if self.quiet_since_full {
                self.full_factor.saturating_mul(2).min(64)
            } else {
                1
            };
            self.quiet_since_full = true;
        }
        let mut ticked = Vec::new();
        let mut statement = 0;
        for m in msgs {
            match m {
                SimpleQueryMessage::CommandComplete(_) => statement += 1,
                SimpleQueryMessage::Row(row) if statement == 1 => {
                    if let Some(q) = row.get(0) {
                        ticked.push(q.to_string());
                    }
                }
                _ => {}
            }
        }
        self.last_ticked = !ticked.is_empty();
        if full && ticked.is_empty() {
            self.next_due = next_due;
        }
        let min_pause = if full && self.precheck {
            // Paid for by the gap to the next full round (see `last_full_cost`).
            started.elapsed()
        } else if full {
            started.elapsed() * PAUSE_PER_ROUND_COST
        } else {
            checked * PAUSE_PER_ROUND_COST + (started.elapsed() - checked)
        };
        // A full round's ticks may all be idle ones: the pre-check's view stands.
        let activity = match pending {
            Some(waiting) => waiting,
            None if full && self.precheck => self.waiting,
            None => !ticked.is_empty(),
        };
        if pending.is_none() && !full && !ticked.is_empty() {
            // Ticks straight after ticks: traffic.
            self.quiet_since_full = false;
        }
        Ok(Round {
            activity,
            ticked,
            full,
            min_pause,
            quiet_check: None,
        })
    }
}

/// What a round did.
struct Round {
    /// Queues that got a tick.
    ticked: Vec<String>,
    /// Whether it was a full round (every queue).
    full: bool,
    /// Whether events were waiting for a tick (by the pre-check; without one, whether a
    /// tick was made). Keeps the ticker at its fast period.
    activity: bool,
    /// The shortest pause before the next round, from this round's cost (see
    /// [`PAUSE_PER_ROUND_COST`]).
    min_pause: Duration,
    /// For a round that found nothing to do: what finding that cost (see
    /// [`IDLE_PAUSE_PER_ROUND_COST`]).
    quiet_check: Option<Duration>,
}

/// [`super::retry_events`] with each call in its own implicit transaction.
fn retry_events(conn: &mut postgres::Client) -> Result<u64> {
    super::retry_events(conn)
}

/// Capped exponential back-off with "equal jitter": the pause is between half and all of
/// the current step, so it never collapses to zero but clients still spread out.
struct Backoff {
    min: Duration,
    max: Duration,
    cur: Duration,
    rng: u64,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Backoff {
        // Seed from the clock and a stack address: different per thread and per process.
        let local = 0u8;
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let seed = nanos ^ ((&local as *const u8 as u64).rotate_left(32)) | 1;
        Backoff {
            min,
            max,
            cur: min,
            rng: seed,
        }
    }

    fn reset(&mut self) {
        self.cur = self.min;
    }

    fn next(&mut self) -> Duration {
        let step = self.cur;
        self.cur = (self.cur * 2).min(self.max);
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let half = step / 2;
        let jitter_nanos = (half.as_nanos() as u64).checked_add(1).map_or(0, |n| r % n);
        half + Duration::from_nanos(jitter_nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_cap_and_jitters() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let mut b = Backoff::new(min, max);
        let mut step = min;
        for _ in 0..10 {
            let d = b.next();
            assert!(
                d >= step / 2 && d <= step,
                "{d:?} outside [{:?}, {step:?}]",
                step / 2
            );
            step = (step * 2).min(max);
        }
        assert!(b.next() <= max);
        b.reset();
        assert!(b.next() <= min);
    }

    #[test]
    fn handles_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Ticker>();
        check::<TickerBuilder>();
        check::<TickerStats>();
    }

    #[test]
    fn builder_needs_a_database() {
        let e = TickerBuilder::new().start().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let e = TickerBuilder::new()
            .dsn("port=notaport")
            .start()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connect);
    }

    #[test]
    fn ticker_connection_settings() {
        let base = postgres::Config::from_str("host=a,b dbname=x").unwrap();
        let c = ticker_config(&base);
        assert_eq!(c.get_target_session_attrs(), TargetSessionAttrs::ReadWrite);
        assert_eq!(c.get_connect_timeout(), Some(&DEFAULT_CONNECT_TIMEOUT));
        assert_eq!(c.get_application_name(), Some("libpgq ticker"));
        let mut named = base.clone();
        named.application_name("mine");
        assert_eq!(ticker_config(&named).get_application_name(), Some("mine"));
    }
}
