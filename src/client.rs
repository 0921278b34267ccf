//! [`Client`]: a pool of connections to the database that holds the queues.
//!
//! The client is cheap to clone (all clones share one pool) and may be used from many
//! threads. The admin, producer, consumer and ticker modules add convenience methods to it;
//! each of those also exists as a free function over any [`postgres::GenericClient`], so it
//! can run inside a transaction you already hold.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use postgres::types::{ToSql, Type};
use postgres::{NoTls, Row};
use r2d2_postgres::PostgresConnectionManager;
use scheduled_thread_pool::ScheduledThreadPool;

use crate::error::{Error, ErrorKind, Result};

/// The connection pool type behind a [`Client`].
pub type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;

/// A connection checked out of a [`Client`]'s pool; it dereferences to
/// [`postgres::Client`] and returns to the pool when dropped.
///
/// Pass it to the free functions as `&mut *conn`.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// let client = pgq::Client::connect("host=localhost dbname=app")?;
/// let mut conn = client.get()?;
/// let mut tx = conn.transaction()?;
/// pgq::producer::insert_event(&mut tx, "orders", &pgq::NewEvent::new("created", "42"))?;
/// tx.commit()?;
/// # Ok(()) }
/// ```
pub type PooledConnection = r2d2::PooledConnection<PostgresConnectionManager<NoTls>>;

/// Longest queue or consumer name the library accepts, in characters.
///
/// PGQ stores names as `text`; libpgq's schema refuses names longer than this when a queue is
/// created or a consumer registered, and the library refuses them before any round trip, so
/// that a mistake (a payload passed as a name) fails early with a clear error. Every name the
/// schema accepts is accepted here too. (The official extension has no limit at all: a queue
/// it holds with a longer name cannot be used through the library.)
pub const MAX_NAME_LEN: usize = 500;

/// Default number of pooled connections.
pub const DEFAULT_POOL_SIZE: u32 = 8;

/// Default time allowed to open a connection, and to wait for a free pooled one.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A handle to one PGQ database: a pool of blocking connections.
///
/// Clones share the pool, and many threads may use one client at once. A thread that sends
/// in a loop keeps the connection of its last send for up to a second, so that it keeps
/// talking to one server backend; any other thread that needs a connection takes that one
/// first, so this never makes anyone wait (README, "How producing stays cheap").
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// let client = pgq::Client::connect("postgresql://app@localhost/app")?;
/// client.install()?;
/// client.create_queue("orders")?;
/// client.send("orders", &pgq::NewEvent::new("created", r#"{"id": 42}"#))?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pool: Pool,
    config: postgres::Config,
    transaction_pooling: bool,
    /// Connections the hot paths handed back, kept a moment for the thread that used them
    /// (see [`Client::get_sticky`]).
    parked: Arc<Mutex<Parked>>,
    /// The pool's timer threads (r2d2's), which also hand parked connections back.
    timers: Arc<ScheduledThreadPool>,
    /// Insert leases shared by the pooled connections (see `crate::direct`).
    leases: Arc<crate::direct::LeaseBook>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("target", &describe_target(&self.config))
            .field("pool_size", &self.pool.max_size())
            .field("transaction_pooling", &self.transaction_pooling)
            .finish()
    }
}

impl Client {
    /// Connects with default pool settings.
    ///
    /// `dsn` is a libpq-style connection string, either a URL
    /// (`postgresql://user:pw@host:5432/db`) or `key=value` pairs
    /// (`host=a,b port=5432 dbname=app`); several hosts are allowed. One connection is opened
    /// at once, so a wrong password or an unreachable server fails here with
    /// [`ErrorKind::Connect`].
    ///
    /// ```no_run
    /// let client = pgq::Client::connect("host=localhost user=app dbname=app")?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn connect(dsn: &str) -> Result<Client> {
        Client::builder(dsn).build()
    }

    /// Starts configuring a client for `dsn`; see [`ClientBuilder`].
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let client = pgq::Client::builder("host=localhost dbname=app")
    ///     .pool_size(4)
    ///     .connect_timeout(Duration::from_secs(3))
    ///     .build()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn builder(dsn: &str) -> ClientBuilder {
        let config = postgres::Config::from_str(dsn).map_err(|e| {
            Error::new(
                ErrorKind::Connect,
                format!("invalid connection string: {e}"),
            )
            .with_source(e)
        });
        ClientBuilder::new(config)
    }

    /// Checks a connection out of the pool, waiting up to the connect timeout for one.
    ///
    /// ```no_run
    /// # fn main() -> pgq::Result<()> {
    /// let client = pgq::Client::connect("host=localhost dbname=app")?;
    /// let mut conn = client.get()?;
    /// let n: i64 = conn.query_one("select count(*) from pgq.queue", &[])?.get(0);
    /// # Ok(()) }
    /// ```
    ///
    /// A connection that was used in the last [`IDLE_PROBE_AFTER`] is handed out without a
    /// check (the common case of a busy producer: one round trip per event, not two); one
    /// that sat idle longer is probed with an empty query first, and if the server has gone
    /// away in the meantime (restart, failover, idle timeout) it is discarded and another
    /// one taken. A connection that breaks while in use is recognised by its error
    /// ([`ErrorKind::ConnectionLost`]) and discarded when it returns to the pool.
    ///
    /// On a client in [transaction pooling](ClientBuilder::transaction_pooling) mode, use
    /// the connection the way the library does: a prepared statement (which is what
    /// `query("...", ..)` makes) only inside a transaction, dropped before it ends, or
    /// `query_typed` / `simple_query` anywhere.
    pub fn get(&self) -> Result<PooledConnection> {
        self.get_within(None)
    }

    /// [`get`](Client::get), waiting at most `wait` (instead of the connect timeout) for a
    /// connection to be handed back or opened.
    pub(crate) fn get_within(&self, wait: Option<Duration>) -> Result<PooledConnection> {
        // Each failed probe closes (and so discards) one connection: at most every pooled
        // connection can fail, and the next one is then newly opened.
        let attempts = self.pool.max_size() + 1;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut conn = self.checkout(wait).map_err(|e| {
                Error::from(e).context(format_args!("database {}", describe_target(&self.config)))
            })?;
            if self.transaction_pooling {
                PooledConnection::extensions_mut(&mut conn).insert(TransactionPooling);
            }
            let now = Instant::now();
            // One look-up reads and (for the common case, no probe) updates the stamp.
            let idle = match PooledConnection::extensions_mut(&mut conn).get_mut::<LastUsed>() {
                Some(LastUsed(Some(t))) => {
                    let idle = now.saturating_duration_since(*t);
                    if idle < IDLE_PROBE_AFTER {
                        *t = now;
                    }
                    idle
                }
                Some(LastUsed(None)) => Duration::MAX, // marked suspect
                None => Duration::ZERO,                // just opened
            };
            if idle < IDLE_PROBE_AFTER {
                if idle.is_zero() {
                    set_last_used(&mut conn, now);
                }
                return Ok(conn);
            }
            match conn.simple_query("") {
                Ok(_) => {
                    set_last_used(&mut conn, now);
                    return Ok(conn);
                }
                Err(e) => {
                    log::debug!(
                        "pooled connection to {} failed its check, discarding it: {e}",
                        describe_target(&self.config)
                    );
                    discard(&mut conn);
                    if attempt >= attempts {
                        return Err(Error::from(e)
                            .context(format_args!("database {}", describe_target(&self.config))));
                    }
                }
            }
        }
    }

    /// One connection from the pool: the one this thread parked last, else an idle one from
    /// r2d2, else one parked by another thread, else whatever r2d2 gives within `wait`
    /// (opening a new connection, or waiting for one to be handed back).
    fn checkout(
        &self,
        wait: Option<Duration>,
    ) -> std::result::Result<PooledConnection, r2d2::Error> {
        let me = current_thread_id();
        {
            let mut parked = self.parked.lock();
            if let Some(conn) = parked.take(me) {
                return Ok(conn);
            }
            if let Some(conn) = self.pool.try_get() {
                return Ok(conn);
            }
            if let Some(conn) = parked.take_any() {
                return Ok(conn);
            }
            // Nothing is parked while anyone waits in r2d2 (see `Sticky::drop`).
            parked.waiters += 1;
        }
        let got = match wait {
            Some(wait) => self.pool.get_timeout(wait),
            None => self.pool.get(),
        };
        self.parked.lock().waiters -= 1;
        got
    }

    /// [`get`](Client::get) for the library's short, hot operations (one send, one batch
    /// call): when the operation ends the connection is kept for this thread for up to
    /// [`PARK_FOR`] instead of going straight back to r2d2, so that a thread sending in a loop
    /// keeps talking to the same server backend. Any other thread that needs a connection
    /// takes a parked one before r2d2 would open or wait for another, and nothing is parked
    /// while a thread waits for the pool.
    ///
    /// (With several threads sharing a pool, r2d2 hands out whichever connection came back
    /// last; a producer thread then alternates between backends, and on a loaded machine
    /// that cost ~10% of the throughput of one event per transaction.)
    pub(crate) fn get_sticky(&self) -> Result<Sticky<'_>> {
        Ok(Sticky {
            conn: Some(self.get()?),
            client: self,
        })
    }

    /// Whether [`get`](Client::get) would not wait for another user of the pool to hand a
    /// connection back: one is idle or parked, or the pool may open another. For work worth
    /// doing only while a connection is spare (reading the next batch ahead).
    pub(crate) fn has_spare_connection(&self) -> bool {
        if !self.parked.lock().conns.is_empty() {
            return true;
        }
        let state = self.pool.state();
        state.idle_connections > 0 || state.connections < self.pool.max_size()
    }

    /// The insert leases the pooled connections share.
    pub(crate) fn leases(&self) -> &crate::direct::LeaseBook {
        &self.leases
    }

    /// The underlying r2d2 pool.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("host=localhost dbname=app")?;
    /// println!("idle connections: {}", client.pool().state().idle_connections);
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The parsed connection settings.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("host=localhost dbname=app")?;
    /// assert_eq!(client.config().get_dbname(), Some("app"));
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn config(&self) -> &postgres::Config {
        &self.config
    }

    /// Whether this client was built for a connection pooler in transaction pooling mode;
    /// see [`ClientBuilder::transaction_pooling`].
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("host=localhost dbname=app")?;
    /// assert!(!client.transaction_pooling()); // the default: direct connections
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn transaction_pooling(&self) -> bool {
        self.transaction_pooling
    }
}

/// Configures and builds a [`Client`]; made by [`Client::builder`] or
/// [`ClientBuilder::from_config`].
///
/// ```no_run
/// let client = pgq::Client::builder("postgresql://app@db1,db2/app")
///     .pool_size(16)
///     .min_idle(2)
///     .build()?;
/// # Ok::<(), pgq::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "call build() to get a Client"]
pub struct ClientBuilder {
    config: Result<postgres::Config>,
    pool_size: u32,
    min_idle: u32,
    connect_timeout: Duration,
    transaction_pooling: bool,
}

impl ClientBuilder {
    fn new(config: Result<postgres::Config>) -> ClientBuilder {
        ClientBuilder {
            config,
            pool_size: DEFAULT_POOL_SIZE,
            min_idle: 1,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            transaction_pooling: false,
        }
    }

    /// Starts from an already built [`postgres::Config`].
    ///
    /// ```no_run
    /// let mut cfg = postgres::Config::new();
    /// cfg.host("localhost").user("app").dbname("app");
    /// let client = pgq::ClientBuilder::from_config(cfg).build()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn from_config(config: postgres::Config) -> ClientBuilder {
        ClientBuilder::new(Ok(config))
    }

    /// Maximum number of connections in the pool (default [`DEFAULT_POOL_SIZE`], at least 1).
    ///
    /// ```no_run
    /// let client = pgq::Client::builder("dbname=app").pool_size(2).build()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn pool_size(mut self, size: u32) -> ClientBuilder {
        self.pool_size = size.max(1);
        self
    }

    /// Connections the pool keeps open while idle (default 1, capped at the pool size).
    ///
    /// ```no_run
    /// let client = pgq::Client::builder("dbname=app").min_idle(0).build()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn min_idle(mut self, idle: u32) -> ClientBuilder {
        self.min_idle = idle;
        self
    }

    /// How long to try to open a connection, and to wait for a free pooled connection
    /// (default [`DEFAULT_CONNECT_TIMEOUT`]). A `connect_timeout` in the DSN takes
    /// precedence for opening connections.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let client = pgq::Client::builder("dbname=app")
    ///     .connect_timeout(Duration::from_secs(2))
    ///     .build()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.connect_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Set to `true` when the DSN points at a connection pooler in *transaction pooling*
    /// mode, such as PgBouncer with `pool_mode = transaction` (default `false`: the DSN
    /// reaches PostgreSQL directly, or a pooler in session mode).
    ///
    /// Such a pooler hands the client a different server connection for every transaction,
    /// so nothing may outlive one: the library then sends every statement unnamed (parse,
    /// bind and execute in one message, never a prepared statement kept per connection) or
    /// as a simple query, and relies on no session state:
    ///
    /// - [`Worker`](crate::Worker)s and [`Consumer::wait_batch`](crate::Consumer::wait_batch)
    ///   never `LISTEN` and only poll, as with `poll_only(true)` (a `LISTEN` would stay
    ///   behind on a server connection that other clients get next);
    /// - [`Ticker::builder(..).start()`](crate::ticker::TickerBuilder::start) refuses with
    ///   [`ErrorKind::InvalidInput`]: the ticker holds a session advisory lock to stay the
    ///   single active ticker, which needs a direct connection: give it its own client with
    ///   a DSN to the server (or run `pgqctl ticker` / pgqd there).
    ///
    /// Producing, consuming (batches are read and finished in one transaction), worker
    /// handlers, cooperative consumers and the admin calls all work. The cost is a little
    /// more parsing on the server per call, as the statements are no longer prepared once
    /// per connection. Your own SQL on a borrowed connection must follow the same rules:
    /// inside a transaction anything goes, as long as prepared statements are dropped
    /// before it ends.
    ///
    /// ```no_run
    /// // PgBouncer with pool_mode = transaction listening on port 6432
    /// let client = pgq::Client::builder("host=localhost port=6432 dbname=app")
    ///     .transaction_pooling(true)
    ///     .build()?;
    /// let worker = pgq::Worker::builder(&client, "orders", "mailer") // polls only
    ///     .handler(|_batch| Ok(()))
    ///     .start()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn transaction_pooling(mut self, enabled: bool) -> ClientBuilder {
        self.transaction_pooling = enabled;
        self
    }

    /// Opens one connection to check the settings, then builds the pool.
    ///
    /// Fails with [`ErrorKind::Connect`] when the DSN is malformed or the server cannot be
    /// reached or refuses the login; the message names the target and the server's reason.
    ///
    /// ```no_run
    /// match pgq::Client::builder("host=localhost user=nobody dbname=app").build() {
    ///     Ok(_) => println!("connected"),
    ///     Err(e) => eprintln!("{e}"), // e.g. "cannot connect to localhost:5432/app: ..."
    /// }
    /// ```
    pub fn build(self) -> Result<Client> {
        let mut config = self.config?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(self.connect_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("libpgq");
        }
        // Probe first: r2d2 retries failed connects silently until its timeout and then
        // reports only "timed out", while a direct attempt tells the user why it failed.
        match config.connect(NoTls) {
            Ok(probe) => drop(probe),
            Err(e) => {
                let target = describe_target(&config);
                let err = Error::from(e);
                let msg = format!("cannot connect to {target}: {}", err.message());
                return Err(Error::new(ErrorKind::Connect, msg).with_source(err));
            }
        }
        let manager = PostgresConnectionManager::new(config.clone(), NoTls);
        // r2d2's default timer threads, made here so that parked connections can be handed
        // back on them too (see `Sticky`).
        let timers = Arc::new(
            ScheduledThreadPool::builder()
                .num_threads(3)
                .thread_name_pattern("r2d2-worker-{}")
                .build(),
        );
        let pool = r2d2::Pool::builder()
            .thread_pool(Arc::clone(&timers))
            .max_size(self.pool_size)
            // `Client::get` probes only connections that sat idle; see there.
            .test_on_check_out(false)
            .min_idle(Some(self.min_idle.min(self.pool_size)))
            .connection_timeout(self.connect_timeout)
            .build(manager)
            .map_err(|e| {
                let target = describe_target(&config);
                Error::new(
                    ErrorKind::Connect,
                    format!("cannot open connection pool to {target}: {e}"),
                )
                .with_source(e)
            })?;
        log::debug!(
            "connection pool to {} ready ({} connections at most{})",
            describe_target(&config),
            self.pool_size,
            if self.transaction_pooling {
                ", transaction pooling mode"
            } else {
                ""
            }
        );
        Ok(Client {
            pool,
            config,
            transaction_pooling: self.transaction_pooling,
            parked: Arc::default(),
            leases: Arc::default(),
            timers,
        })
    }
}

/// How long a pooled connection may sit unused before [`Client::get`] checks it with a
/// round trip before handing it out.
///
/// ```
/// assert!(pgq::client::IDLE_PROBE_AFTER <= std::time::Duration::from_secs(1));
/// ```
pub const IDLE_PROBE_AFTER: Duration = Duration::from_millis(250);

/// How long a connection handed back through [`Client::get_sticky`] stays parked for its
/// thread before it returns to r2d2's idle list (and so to r2d2's idle handling).
pub(crate) const PARK_FOR: Duration = Duration::from_secs(1);

/// Connections parked by [`Sticky`], oldest first, with the thread that used them.
#[derive(Default)]
struct Parked {
    conns: Vec<(ThreadId, Instant, PooledConnection)>,
    /// Threads waiting in r2d2 for a connection; while there are any, nothing is parked.
    waiters: usize,
    /// A timer job that hands expired connections back to r2d2 is scheduled.
    reaper_due: bool,
}

impl Parked {
    fn take_expired(&mut self) -> Vec<PooledConnection> {
        let n = self
            .conns
            .iter()
            .position(|(_, at, _)| at.elapsed() < PARK_FOR)
            .unwrap_or(self.conns.len());
        self.conns.drain(..n).map(|(_, _, c)| c).collect()
    }

    /// The connection `thread` parked last.
    fn take(&mut self, thread: ThreadId) -> Option<PooledConnection> {
        let i = self.conns.iter().rposition(|(t, _, _)| *t == thread)?;
        Some(self.conns.remove(i).2)
    }

    /// The connection parked longest ago, by any thread.
    fn take_any(&mut self) -> Option<PooledConnection> {
        (!self.conns.is_empty()).then(|| self.conns.remove(0).2)
    }
}

/// A connection from [`Client::get_sticky`]: a [`PooledConnection`] that, when dropped, is
/// parked for its thread (or returned to the pool when someone waits for one, when it is
/// closed, or when it is marked suspect).
pub(crate) struct Sticky<'a> {
    conn: Option<PooledConnection>,
    client: &'a Client,
}

impl std::ops::Deref for Sticky<'_> {
    type Target = PooledConnection;

    fn deref(&self) -> &PooledConnection {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Sticky<'_> {
    fn deref_mut(&mut self) -> &mut PooledConnection {
        self.conn.as_mut().expect("present until dropped")
    }
}

impl Drop for Sticky<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let healthy = !conn.is_closed()
            && !matches!(
                PooledConnection::extensions(&conn).get::<LastUsed>(),
                Some(LastUsed(None))
            );
        let mut parked = self.client.parked.lock();
        if healthy && parked.waiters == 0 {
            parked
                .conns
                .push((current_thread_id(), Instant::now(), conn));
            if !parked.reaper_due {
                parked.reaper_due = true;
                schedule_reaper(&self.client.parked, &self.client.timers, PARK_FOR);
            }
        } else {
            drop(parked);
            drop(conn);
        }
    }
}

/// The calling thread's id, without the reference count traffic of `thread::current()`
/// (this runs twice per event sent).
fn current_thread_id() -> ThreadId {
    thread_local!(static ID: ThreadId = thread::current().id());
    ID.with(|id| *id)
}

/// Hands the connections parked for longer than [`PARK_FOR`] back to r2d2 after `delay`,
/// on the pool's timer threads, and again for the rest until none is left: a client that
/// goes quiet then keeps none parked, and r2d2's idle handling applies to all of them. The
/// job holds only weak references, so it keeps neither the client nor the threads alive.
fn schedule_reaper(
    parked: &Arc<Mutex<Parked>>,
    timers: &Arc<ScheduledThreadPool>,
    delay: Duration,
) {
    let (parked, weak_timers) = (Arc::downgrade(parked), Arc::downgrade(timers));
    timers.execute_after(delay, move || reap(&parked, &weak_timers));
}

fn reap(parked: &Weak<Mutex<Parked>>, timers: &Weak<ScheduledThreadPool>) {
    let Some(parked) = parked.upgrade() else {
        return;
    };
    let mut guard = parked.lock();
    let expired = guard.take_expired();
    let next = guard
        .conns
        .first()
        .map(|(_, at, _)| PARK_FOR.saturating_sub(at.elapsed()));
    let timers = timers.upgrade();
    guard.reaper_due = next.is_some() && timers.is_some();
    drop(guard);
    drop(expired);
    if let (Some(delay), Some(timers)) = (next, timers) {
        schedule_reaper(&parked, &timers, delay);
    }
}

/// When a pooled connection was last checked out (kept in its r2d2 extensions); `None`:
/// suspect, check it before the next use.
struct LastUsed(Option<Instant>);

/// Records that `conn` was checked out at `now` (in place: this runs on every check-out).
fn set_last_used(conn: &mut PooledConnection, now: Instant) {
    let exts = PooledConnection::extensions_mut(conn);
    match exts.get_mut::<LastUsed>() {
        Some(last) => last.0 = Some(now),
        None => {
            exts.insert(LastUsed(Some(now)));
        }
    }
}

/// Marks a pooled connection suspect after an error that may have left it out of step with
/// the server: the next [`Client::get`] checks it with a round trip and discards it if that
/// fails.
///
/// (A COPY refused at its start, say for lack of privilege, leaves tokio-postgres expecting
/// one reply less than the server sends; every later reply on that connection would be
/// taken for the previous request's.)
pub(crate) fn mark_suspect(conn: &mut PooledConnection) {
    PooledConnection::extensions_mut(conn).insert(LastUsed(None));
}

/// Makes r2d2 drop `conn` when it returns to the pool: r2d2_postgres discards only closed
/// connections, so a live but unusable one ends its own server session first.
fn discard(conn: &mut PooledConnection) {
    mark_suspect(conn);
    if !conn.is_closed() {
        // The reply may be out of step (that is why we are here): ignore it, and wait for
        // the server to close the session so that `is_closed` sees it.
        let _ = conn
            .batch_execute("select pg_catalog.pg_terminate_backend(pg_catalog.pg_backend_pid())");
        let deadline = Instant::now() + Duration::from_secs(2);
        while !conn.is_closed() && Instant::now() < deadline {
            if conn.simple_query("").is_err() && conn.is_closed() {
                break;
            }
        }
    }
}

/// Statements prepared on one pooled connection, by SQL text (kept in its r2d2 extensions).
#[derive(Default)]
struct StatementCache(HashMap<String, postgres::Statement>);

/// `sql` prepared on `conn`, once per pooled connection: the hot paths then need one round
/// trip per call instead of a prepare plus an execute.
///
/// A statement stays valid for the connection's life; the server re-plans it by itself when
/// the objects it uses change. Never use it on a connection for which [`unnamed_only`] is
/// true (a pooler in transaction pooling mode): go through [`pooled_query_one`] instead.
pub(crate) fn cached_statement(
    conn: &mut PooledConnection,
    sql: &str,
) -> Result<postgres::Statement> {
    if let Some(stmt) = cache_lookup(conn, sql) {
        return Ok(stmt);
    }
    let stmt = conn.prepare(sql)?;
    cache_store(conn, sql, &stmt);
    Ok(stmt)
}

fn cache_lookup(conn: &PooledConnection, sql: &str) -> Option<postgres::Statement> {
    PooledConnection::extensions(conn)
        .get::<StatementCache>()
        .and_then(|c| c.0.get(sql))
        .cloned()
}

fn cache_store(conn: &mut PooledConnection, sql: &str, stmt: &postgres::Statement) {
    let exts = PooledConnection::extensions_mut(conn);
    if exts.get::<StatementCache>().is_none() {
        exts.insert(StatementCache::default());
    }
    if let Some(cache) = exts.get_mut::<StatementCache>() {
        // Bounded: the library's statements are few; only per-queue texts could pile up.
        if cache.0.len() >= 64 {
            cache.0.clear();
        }
        cache.0.insert(sql.to_string(), stmt.clone());
    }
}

/// Marks a pooled connection of a client in transaction pooling mode (kept in its r2d2
/// extensions, set by [`Client::get`]): the helpers below then send unnamed statements.
struct TransactionPooling;

/// Whether `conn` belongs to a client in transaction pooling mode, where no prepared
/// statement may outlive a transaction; see [`ClientBuilder::transaction_pooling`].
pub(crate) fn unnamed_only(conn: &PooledConnection) -> bool {
    PooledConnection::extensions(conn)
        .get::<TransactionPooling>()
        .is_some()
}

/// Runs `sql` (returning exactly one row) with typed parameters on a pooled connection, the way the client's mode
/// allows: as a statement prepared once per pooled connection ([`cached_statement`]: one
/// round trip per call after the first), or, in transaction pooling mode, as an unnamed
/// statement (parse, bind and execute in one message, nothing left on the server
/// connection). Either way the parameter types are the given ones, so both modes run the
/// very same statement.
///
/// This is the one place the library's hot paths (produce, next batch, batch reads) choose
/// how to send SQL; the free functions over [`postgres::GenericClient`] always send
/// unnamed statements instead.
pub(crate) fn pooled_query_one(
    conn: &mut PooledConnection,
    sql: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> std::result::Result<Row, postgres::Error> {
    if unnamed_only(conn) {
        return conn.query_typed_one(sql, params);
    }
    let stmt = typed_cached_statement(conn, sql, params)?;
    let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(v, _)| *v).collect();
    conn.query_one(&stmt, &values)
}

/// [`pooled_query_one`] for at most one row.
pub(crate) fn pooled_query_opt(
    conn: &mut PooledConnection,
    sql: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> std::result::Result<Option<Row>, postgres::Error> {
    if unnamed_only(conn) {
        return conn.query_typed_opt(sql, params);
    }
    let stmt = typed_cached_statement(conn, sql, params)?;
    let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(v, _)| *v).collect();
    conn.query_opt(&stmt, &values)
}

/// [`pooled_query_one`] for a statement without rows: the number of rows it affected.
pub(crate) fn pooled_execute(
    conn: &mut PooledConnection,
    sql: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> std::result::Result<u64, postgres::Error> {
    if unnamed_only(conn) {
        // query_typed sends one unnamed statement; the rows it returns (none) say nothing
        // of the count, so the statement is executed through the raw interface instead.
        let mut it = conn.query_typed_raw(sql, params.iter().map(|(v, t)| (*v, t.clone())))?;
        while postgres::fallible_iterator::FallibleIterator::next(&mut it)?.is_some() {}
        return Ok(it.rows_affected().unwrap_or(0));
    }
    let stmt = typed_cached_statement(conn, sql, params)?;
    let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(v, _)| *v).collect();
    conn.execute(&stmt, &values)
}

/// [`cached_statement`] prepared with the parameter types of `params`.
pub(crate) fn typed_cached_statement(
    conn: &mut PooledConnection,
    sql: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> std::result::Result<postgres::Statement, postgres::Error> {
    if let Some(stmt) = cache_lookup(conn, sql) {
        return Ok(stmt);
    }
    let types: Vec<Type> = params.iter().map(|(_, t)| t.clone()).collect();
    let stmt = conn.prepare_typed(sql, &types)?;
    cache_store(conn, sql, &stmt);
    Ok(stmt)
}

/// `host:port/dbname` for messages (never the password).
pub(crate) fn describe_target(config: &postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let host = if hosts.is_empty() {
        "localhost".to_string()
    } else {
        hosts.join(",")
    };
    let ports = config.get_ports();
    let port = match ports.first() {
        Some(p) => p.to_string(),
        None => "5432".to_string(),
    };
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("(default)");
    format!("{host}:{port}/{db}")
}

/// Validates a queue or consumer name before it is sent to the server.
///
/// Names may contain anything printable, including spaces and quotes (PGQ stores them as
/// data and never splices them into SQL), but must be non-empty, at most [`MAX_NAME_LEN`]
/// characters, and free of control characters (NUL cannot be stored in `text` at all).
pub(crate) fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid_input(format!(
            "{what} name must not be empty"
        )));
    }
    // Bytes bound characters from above: count them only for names that may be too long.
    if name.len() > MAX_NAME_LEN && name.chars().count() > MAX_NAME_LEN {
        return Err(Error::invalid_input(format!(
            "{what} name is {} characters long; the limit is {MAX_NAME_LEN}",
            name.chars().count()
        )));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(Error::invalid_input(format!(
            "{what} name {:?} contains the control character {:?}",
            name, c
        )));
    }
    Ok(())
}

/// Rejects NUL bytes, which PostgreSQL `text` cannot hold (`what` is formatted only then).
pub(crate) fn check_text(what: impl fmt::Display, value: Option<&str>) -> Result<()> {
    if let Some(v) = value {
        if v.contains('\0') {
            return Err(Error::invalid_input(format!(
                "{what} contains a NUL byte, which PostgreSQL text cannot store"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("queue", "orders").is_ok());
        assert!(check_name("queue", "we\"ird q").is_ok());
        assert!(check_name("queue", &"x".repeat(MAX_NAME_LEN)).is_ok());
        for bad in ["", "a\0b", "tab\there"] {
            let e = check_name("queue", bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
        }
        let e = check_name("consumer", &"x".repeat(1000)).unwrap_err();
        assert!(e.to_string().contains("1000 characters"), "{e}");
        // The limit counts characters, as the schema's check does, not bytes.
        assert!(check_name("queue", &"ü".repeat(MAX_NAME_LEN)).is_ok());
        assert!(check_name("queue", &"ü".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn bad_dsn_is_connect_error() {
        let e = Client::builder("host=localhost port=notaport")
            .build()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connect);
        assert!(e.to_string().contains("invalid connection string"), "{e}");
    }

    #[test]
    fn target_has_no_password() {
        let cfg = postgres::Config::from_str("postgresql://u:secret@h1:5433/db").unwrap();
        let t = describe_target(&cfg);
        assert_eq!(t, "h1:5433/db");
    }
}
