//! [`Ticker`]: the ticker and maintenance service on its own OS threads (a `pgqd` in your
//! process).
//!
//! One named thread per database (`pgq-ticker <name>`) owns one dedicated connection (never a
//! pooled one: it holds a session lock) and runs three schedules on it:
//!
//! * every `ticker_period`, one round: `pgq.ticker(queue)` for every queue that is neither
//!   paused nor externally ticked, and `pg_notify('pgq_tick', queue)` for each queue that got
//!   a tick, in one transaction, so a notification arrives only for a committed tick. Whether
//!   a queue is due is PGQ's own rule (PGQ-SPEC section 4): an idle queue gets no more ticks
//!   than its idle back-off allows, however short the period;
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
//! still being cleaned up.
//!
//! **Failures are never fatal.** A lost connection or a server restart is logged through
//! [`log`], counted, and followed by reconnect attempts with capped exponential back-off and
//! jitter. The connection always asks for `target_session_attrs=read-write`, so with a
//! multi-host DSN (`host=db1,db2`) the ticker follows a promoted standby. Other errors (e.g.
//! PGQ not installed yet) are logged, counted and retried with the same back-off.
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

/// Default pause between ticker rounds (pgqd: 1 s). A round when nothing is due is one short
/// statement, so this can be small; it bounds how late a due queue gets its tick.
pub const DEFAULT_TICKER_PERIOD: Duration = Duration::from_millis(20);

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
pub const TICK_CHANNEL: &str = "pgq_tick";

/// A round's cost is kept below this share of wall time: the pause after a round is at least
/// this many times the round's duration. With thousands of queues a round takes milliseconds,
/// and ticking them back to back would keep a server backend busy.
const PAUSE_PER_ROUND_COST: u32 = 9;

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
pub struct TickerDatabaseStats {
    /// `host:port/dbname` (never the password).
    pub target: String,
    /// What the thread is doing now.
    pub state: TickerState,
    /// Ticks created (one per queue ticked).
    pub ticks: u64,
    /// Ticker rounds run while active (most create no tick).
    pub rounds: u64,
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
pub struct TickerStats {
    /// Ticks created (one per queue ticked).
    pub ticks: u64,
    /// Ticker rounds run while active.
    pub rounds: u64,
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
    databases: Vec<std::result::Result<postgres::Config, String>>,
    ticker_period: Duration,
    retry_period: Duration,
    maint_period: Duration,
    takeover_period: Duration,
    backoff: (Duration, Duration),
    notify: bool,
    name: Option<String>,
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
            retry_period: DEFAULT_RETRY_PERIOD,
            maint_period: DEFAULT_MAINT_PERIOD,
            takeover_period: DEFAULT_TAKEOVER_PERIOD,
            backoff: DEFAULT_RECONNECT_BACKOFF,
            notify: true,
            name: None,
        }
    }

    /// Adds the database `client` connects to. The ticker opens its own connection with the
    /// client's settings; it does not use the client's pool.
    ///
    /// ```no_run
    /// # let a = pgq::Client::connect("dbname=a")?;
    /// # let b = pgq::Client::connect("dbname=b")?;
    /// let ticker = pgq::Ticker::builder(&a).database(&b).start()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn database(mut self, client: &Client) -> TickerBuilder {
        self.databases.push(Ok(client.config().clone()));
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
        self.databases.push(
            postgres::Config::from_str(dsn).map_err(|e| format!("invalid connection string: {e}")),
        );
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
    /// threads. Fails only for a builder without databases, a malformed DSN, or when the
    /// OS refuses a thread.
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
                Err(msg) => return Err(Error::new(ErrorKind::Connect, msg.clone())),
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
                    retry_period: self.retry_period,
                    maint_period: self.maint_period,
                    takeover_period: self.takeover_period,
                    backoff: self.backoff,
                    notify: self.notify,
                },
                stop: stop_rx.clone(),
                stats: Arc::clone(&shared),
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
/// follows the primary), keepalives (so a vanished server is noticed), a connect timeout.
fn ticker_config(base: &postgres::Config) -> postgres::Config {
    let mut config = base.clone();
    config.target_session_attrs(TargetSessionAttrs::ReadWrite);
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
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
    retry_period: Duration,
    maint_period: Duration,
    takeover_period: Duration,
    backoff: (Duration, Duration),
    notify: bool,
}

/// One database's thread.
struct DbWorker {
    label: String,
    target: String,
    config: postgres::Config,
    settings: Settings,
    stop: Receiver<()>,
    stats: Arc<Mutex<TickerDatabaseStats>>,
}

/// Why a session on one connection ended.
enum SessionEnd {
    Stop,
    Lost(Error),
}

impl DbWorker {
    fn run(self) {
        log::debug!("pgq ticker {}: started for {}", self.label, self.target);
        let mut backoff = Backoff::new(self.settings.backoff.0, self.settings.backoff.1);
        let mut connected_before = false;
        loop {
            self.set_state(TickerState::Connecting);
            match self.config.connect(NoTls) {
                Ok(conn) => {
                    if connected_before {
                        self.stats.lock().reconnects += 1;
                        log::info!("pgq ticker {}: reconnected to {}", self.label, self.target);
                    }
                    connected_before = true;
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
        let mut s = self.stats.lock();
        s.state = TickerState::Stopped;
        s.active_since = None;
        drop(s);
        log::debug!("pgq ticker {}: stopped", self.label);
    }

    /// Runs on one connection until it breaks or a stop is asked.
    fn session(&self, mut conn: postgres::Client) -> SessionEnd {
        let st = self.settings;
        let mut error_backoff = Backoff::new(st.backoff.0, st.backoff.1);
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
        let (mut next_tick, mut next_retry, mut next_maint) = (now, now, now);
        loop {
            let now = Instant::now();
            if now >= next_retry {
                match retry_events(&mut conn) {
                    Ok(moved) => {
                        next_retry = Instant::now() + st.retry_period;
                        if moved > 0 {
                            self.stats.lock().retry_events_moved += moved;
                            log::debug!("pgq ticker {}: moved {moved} retry events", self.label);
                            // The moved events become visible with the next tick.
                            next_tick = Instant::now();
                        }
                    }
                    Err(e) => match self.step_failed(&conn, e, "retry events") {
                        Some(end) => return end,
                        None => next_retry = Instant::now() + error_backoff.next(),
                    },
                }
            }
            let now = Instant::now();
            if now >= next_maint {
                match super::maintenance(&mut conn) {
                    Ok(report) => {
                        next_maint = Instant::now() + st.maint_period;
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
                    Err(e) => match self.step_failed(&conn, e, "maintenance") {
                        Some(end) => return end,
                        None => next_maint = Instant::now() + error_backoff.next(),
                    },
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                match tick_round(&mut conn, st.notify) {
                    Ok(ticked) => {
                        let cost = now.elapsed();
                        next_tick = now + st.ticker_period.max(cost * PAUSE_PER_ROUND_COST);
                        error_backoff.reset();
                        let mut s = self.stats.lock();
                        s.rounds += 1;
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
                        None => next_tick = Instant::now() + error_backoff.next(),
                    },
                }
            }
            let due = next_tick.min(next_retry).min(next_maint);
            if self.wait(due.saturating_duration_since(Instant::now())) {
                return SessionEnd::Stop;
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

// One ticker round in one transaction (one round trip): a multi-statement simple query runs
// as one implicit transaction, and each statement takes its own snapshot, so the ticks'
// snapshots are taken after the tick lock is held. The CTE calls the volatile
// pgq.ticker(queue) exactly once per queue; pg_notify runs only for the queues it ticked.
const TICK_ROUND_SQL: &str =
    "select pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('pgq'), 1); \
     with t as (select q.queue_name, pgq.ticker(q.queue_name) as tick_id from pgq.queue q \
     where not q.queue_external_ticker and not q.queue_ticker_paused order by q.queue_id) \
     select t.queue_name, pg_catalog.pg_notify('pgq_tick', t.queue_name) \
     from t where t.tick_id is not null";

/// [`TICK_ROUND_SQL`] without notifications.
const TICK_ROUND_QUIET_SQL: &str =
    "select pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('pgq'), 1); \
     with t as (select q.queue_name, pgq.ticker(q.queue_name) as tick_id from pgq.queue q \
     where not q.queue_external_ticker and not q.queue_ticker_paused order by q.queue_id) \
     select t.queue_name from t where t.tick_id is not null";

/// Runs one ticker round; returns the ticked queues.
fn tick_round(conn: &mut postgres::Client, notify: bool) -> Result<Vec<String>> {
    let sql = if notify {
        TICK_ROUND_SQL
    } else {
        TICK_ROUND_QUIET_SQL
    };
    let msgs = conn
        .simple_query(sql)
        .map_err(|e| Error::from(e).context("tick"))?;
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
    Ok(ticked)
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
