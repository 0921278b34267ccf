//! Consumer workers: named OS threads that take batches, call your handler once per batch,
//! and finish the batch only after the handler returned.
//!
//! ```no_run
//! # fn main() -> pgq::Result<()> {
//! use std::time::Duration;
//!
//! let client = pgq::Client::connect("host=localhost dbname=app")?;
//! client.register_consumer("orders", "mailer")?;
//! let worker = pgq::Worker::builder(&client, "orders", "mailer")
//!     .fetch_size(500)
//!     .handler(|batch| {
//!         for ev in batch.events() {
//!             let ev = ev?;
//!             if ev.data.is_none() {
//!                 batch.retry(ev.id, Duration::from_secs(60)); // comes back in a minute
//!             }
//!         }
//!         Ok(()) // untagged events are done; retries and finish commit together
//!     })
//!     .start()?;
//! // ... later
//! worker.stop();
//! worker.join()?;
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//!
//! - **At least once.** A batch is finished (its retries queued with `pgq.event_retry` and the
//!   consumer moved on with `pgq.finish_batch`, in one transaction together with whatever the
//!   handler ran through [`WorkBatch::with_client`]) only after the handler returned `Ok`.
//!   If the handler returns an error or panics, or the process dies, the batch stays open and
//!   is delivered again. (A worker that is not a sub-consumer also asks for its next batch in
//!   that transaction: one round trip and one commit per batch fewer. Should that look-up
//!   fail, the finish rolls back with it and the batch comes again.)
//! - **Bounded memory.** Events are streamed from a cursor, [`fetch_size`](WorkerBuilder::fetch_size)
//!   per round trip (the next chunk is read ahead while one is handled, so at most two
//!   chunks are in memory); a backlog or one huge transaction never sits in memory at once.
//! - **Reading ahead.** On libpgq's schema, while the handler works on a batch bigger than
//!   one fetch, the server already reads and sorts the next batch on a spare pooled
//!   connection, so a backlog drains without waiting for that at each batch
//!   ([`read_ahead`](WorkerBuilder::read_ahead), [`WorkerStats::looked_ahead`]).
//! - **Failures are not fatal.** A lost connection or a server restart is logged through
//!   `log`, counted in [`WorkerStats`], and retried with capped exponential backoff and
//!   jitter; the worker then resumes at its open batch, so nothing is lost or skipped. What a
//!   failing handler leads to is the [`ErrorPolicy`]. A batch that stopped being this
//!   worker's while its handler ran (a cooperative sibling took it over after the dead
//!   interval) is rolled back, logged and counted, and the worker goes on.
//! - **Graceful stop.** After [`stop`](Worker::stop) no new batch is taken; a handler that is
//!   running finishes and its batch is finished, or the batch is left for redelivery.
//!
//! # Threads
//!
//! A PGQ consumer reads one stream of batches, and a batch is one transaction on one
//! connection, so one consumer cannot be split between threads. [`workers(n)`](WorkerBuilder::workers)
//! with `n > 1` therefore needs cooperative mode ([`subconsumer`](WorkerBuilder::subconsumer)):
//! each thread is then its own subconsumer and pgq_coop hands each batch to one of them.
//! Besides the worker threads (`pgq-worker-N`) a worker runs one `pgq-listener` thread that
//! holds the `LISTEN pgq_tick` connection, unless it is in [poll-only](WorkerBuilder::poll_only)
//! mode (always the case on a client in
//! [transaction pooling](crate::ClientBuilder::transaction_pooling) mode).

use std::cell::Cell;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime};

use crossbeam_channel::{bounded, never, select, Receiver, Sender, TryRecvError};
use parking_lot::Mutex;

use crate::client::Client;
use crate::consumer::{Batch, Consumer, Events, NextBatch, Upcoming, DEFAULT_FETCH_SIZE};
use crate::error::{Error, ErrorKind, Result};
use crate::event::Event;
use crate::wakeup::{Backoff, Listener, DEFAULT_POLL_INTERVAL, DEFAULT_POLL_ONLY_INTERVAL};

/// What a handler returns on failure: any error type.
///
/// ```
/// let e: pgq::worker::HandlerError = "the mail server said no".into();
/// assert_eq!(e.to_string(), "the mail server said no");
/// ```
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

type HandlerFn =
    dyn for<'a, 'b> Fn(&'b mut WorkBatch<'a>) -> Result<(), HandlerError> + Send + Sync + 'static;

/// First delay before a failed batch is tried again under [`ErrorPolicy::default`].
///
/// ```
/// assert_eq!(pgq::worker::DEFAULT_RETRY_INITIAL.as_millis(), 500);
/// ```
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_millis(500);
/// Longest delay between attempts at a failing batch under [`ErrorPolicy::default`].
///
/// ```
/// assert_eq!(pgq::worker::DEFAULT_RETRY_MAX.as_secs(), 30);
/// ```
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(30);
/// First delay before reconnecting after a database error.
///
/// ```
/// assert_eq!(pgq::worker::DEFAULT_RECONNECT_INITIAL.as_millis(), 100);
/// ```
pub const DEFAULT_RECONNECT_INITIAL: Duration = Duration::from_millis(100);
/// Longest delay between reconnection attempts.
///
/// ```
/// assert_eq!(pgq::worker::DEFAULT_RECONNECT_MAX.as_secs(), 10);
/// ```
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(10);

/// How long the listener thread blocks for notifications before it checks for a stop:
/// bounds how long [`Worker::join`] waits for it.
const LISTEN_SLICE: Duration = Duration::from_millis(200);

/// Longest connect attempt of the listener thread (it retries with backoff): bounds how long
/// [`Worker::join`] waits for it while the server is unreachable.
const LISTEN_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What a worker does when its handler returns an error or panics. The batch is never
/// finished in that case; the policy decides what happens next.
///
/// ```
/// use std::time::Duration;
/// let policy = pgq::ErrorPolicy::Retry {
///     initial: Duration::from_secs(1),
///     max: Duration::from_secs(60),
/// };
/// assert_ne!(policy, pgq::ErrorPolicy::Stop);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorPolicy {
    /// Keep running: the same batch is delivered again after a delay that starts at `initial`
    /// and doubles (with jitter) up to `max` while it keeps failing. The default, with
    /// [`DEFAULT_RETRY_INITIAL`] and [`DEFAULT_RETRY_MAX`].
    Retry {
        /// Delay after the first failure.
        initial: Duration,
        /// Cap on the delay.
        max: Duration,
    },
    /// Stop the whole worker (every thread); [`Worker::join`] returns the error. The batch
    /// stays open and is delivered to the next consumer run.
    Stop,
}

impl Default for ErrorPolicy {
    fn default() -> ErrorPolicy {
        ErrorPolicy::Retry {
            initial: DEFAULT_RETRY_INITIAL,
            max: DEFAULT_RETRY_MAX,
        }
    }
}

/// Configures and starts a [`Worker`]; made by [`Worker::builder`].
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// use std::time::Duration;
/// let client = pgq::Client::connect("host=localhost dbname=app")?;
/// let worker = pgq::Worker::builder(&client, "orders", "mailer")
///     .fetch_size(1000)
///     .poll_interval(Duration::from_millis(500))
///     .error_policy(pgq::ErrorPolicy::Stop)
///     .handler(|batch| {
///         while let Some(chunk) = batch.next_chunk()? {
///             println!("{} events", chunk.len());
///         }
///         Ok(())
///     })
///     .start()?;
/// # Ok(()) }
/// ```
#[must_use = "call start() to run the worker"]
pub struct WorkerBuilder {
    client: Client,
    queue: String,
    consumer: String,
    workers: usize,
    fetch_size: usize,
    read_ahead: bool,
    max_events_per_call: Option<usize>,
    poll_interval: Option<Duration>,
    poll_only: bool,
    error_policy: ErrorPolicy,
    reconnect: (Duration, Duration),
    subconsumer: Option<(String, Option<Duration>)>,
    handler: Option<Arc<HandlerFn>>,
}

impl fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("queue", &self.queue)
            .field("consumer", &self.consumer)
            .field("workers", &self.workers)
            .field("fetch_size", &self.fetch_size)
            .field("read_ahead", &self.read_ahead)
            .field("max_events_per_call", &self.max_events_per_call)
            .field("poll_interval", &self.poll_interval)
            .field("poll_only", &self.poll_only)
            .field("error_policy", &self.error_policy)
            .field("reconnect", &self.reconnect)
            .field("subconsumer", &self.subconsumer)
            .field("handler", &self.handler.is_some())
            .finish()
    }
}

impl WorkerBuilder {
    /// Number of worker threads (default 1). More than one needs cooperative mode
    /// ([`subconsumer`](WorkerBuilder::subconsumer)); see the [module docs](crate::worker).
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let b = pgq::Worker::builder(&client, "orders", "mailer")
    ///     .subconsumer("node1", Some(std::time::Duration::from_secs(300)))
    ///     .workers(4);
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn workers(mut self, n: usize) -> WorkerBuilder {
        self.workers = n;
        self
    }

    /// Events fetched per round trip while a handler streams a batch (default
    /// [`DEFAULT_FETCH_SIZE`], at least 1). At most twice this many events are in memory
    /// at once: the chunk being handled and the next one, read ahead while it is (and the
    /// first 100 of the next batch; see [`read_ahead`](WorkerBuilder::read_ahead)).
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let b = pgq::Worker::builder(&client, "blobs", "archiver").fetch_size(10);
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn fetch_size(mut self, n: usize) -> WorkerBuilder {
        self.fetch_size = n.clamp(1, i32::MAX as usize);
        self
    }

    /// Whether to read ahead while the handler works (default on): the next chunk of a
    /// batch bigger than one fetch, and on libpgq's schema the next batch, on a spare pooled
    /// connection when one is idle; see [`Consumer::read_ahead`]. A pool of at least two
    /// connections per worker thread lets every batch be read ahead.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let b = pgq::Worker::builder(&client, "orders", "loader").read_ahead(false);
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn read_ahead(mut self, on: bool) -> WorkerBuilder {
        self.read_ahead = on;
        self
    }

    /// Most events one [`WorkBatch::next_chunk`] returns (default: the fetch size, at least
    /// 1).
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let b = pgq::Worker::builder(&client, "orders", "loader").max_events_per_call(200);
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn max_events_per_call(mut self, n: usize) -> WorkerBuilder {
        self.max_events_per_call = Some(n.max(1));
        self
    }

    /// How often an idle worker asks for a batch (default
    /// [`DEFAULT_POLL_INTERVAL`] while listening for
    /// notifications, which normally wake it at once;
    /// [`DEFAULT_POLL_ONLY_INTERVAL`] in poll-only
    /// mode; at least 1 ms).
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// use std::time::Duration;
    /// let b = pgq::Worker::builder(&client, "orders", "mailer")
    ///     .poll_interval(Duration::from_secs(5));
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn poll_interval(mut self, interval: Duration) -> WorkerBuilder {
        self.poll_interval = Some(interval.max(Duration::from_millis(1)));
        self
    }

    /// Poll-only mode: never `LISTEN`, only poll (for PgBouncer in transaction pooling mode,
    /// where a `LISTEN` would be lost with the server connection). A client built with
    /// [`transaction_pooling(true)`](crate::ClientBuilder::transaction_pooling) always polls
    /// only, whatever is set here.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let b = pgq::Worker::builder(&client, "orders", "mailer").poll_only(true);
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn poll_only(mut self, poll_only: bool) -> WorkerBuilder {
        self.poll_only = poll_only;
        self
    }

    /// What to do when the handler fails (default: [`ErrorPolicy::Retry`] with backoff).
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let b = pgq::Worker::builder(&client, "orders", "mailer")
    ///     .error_policy(pgq::ErrorPolicy::Stop);
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn error_policy(mut self, policy: ErrorPolicy) -> WorkerBuilder {
        self.error_policy = policy;
        self
    }

    /// Backoff after a database error (lost connection, server restart): the first delay and
    /// the cap (defaults [`DEFAULT_RECONNECT_INITIAL`], [`DEFAULT_RECONNECT_MAX`]).
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// use std::time::Duration;
    /// let b = pgq::Worker::builder(&client, "orders", "mailer")
    ///     .reconnect_backoff(Duration::from_millis(50), Duration::from_secs(2));
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn reconnect_backoff(mut self, initial: Duration, max: Duration) -> WorkerBuilder {
        self.reconnect = (initial, max);
        self
    }

    /// Cooperative mode: consume as subconsumer `name` of the consumer through pgq_coop, so
    /// that several threads or processes share the consumer's batches. A batch open longer
    /// than `dead_interval` by a subconsumer is taken over by another one. With
    /// [`workers(n)`](WorkerBuilder::workers), `n > 1`, thread `i` is subconsumer
    /// `name-i`. Each thread registers its sub-consumer (idempotent) before its first batch;
    /// register them yourself beforehand if the consumer must see events produced before the
    /// worker first ran. Sub-consumers stay registered when the worker stops.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// use std::time::Duration;
    /// let b = pgq::Worker::builder(&client, "orders", "mailer")
    ///     .subconsumer("host-a", Some(Duration::from_secs(600)));
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn subconsumer(mut self, name: &str, dead_interval: Option<Duration>) -> WorkerBuilder {
        self.subconsumer = Some((name.to_string(), dead_interval));
        self
    }

    /// The function called once per batch, on a worker thread. Return `Ok(())` to finish the
    /// batch (events tagged with [`WorkBatch::retry`] come back later; the rest are done), or
    /// an error to leave it unfinished (see [`ErrorPolicy`]). A panic counts as an error.
    ///
    /// It is called for every batch, also for one without events (a tick with nothing new),
    /// so a handler can rely on one call per batch. With several worker threads, calls may
    /// run at the same time on different batches.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let b = pgq::Worker::builder(&client, "orders", "mailer").handler(|batch| {
    ///     for ev in batch.events() {
    ///         let ev = ev?;
    ///         batch.with_client(|c| {
    ///             c.execute("insert into orders_seen (id) values ($1)", &[&ev.id])
    ///         })?;
    ///     }
    ///     Ok(())
    /// });
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn handler<F>(mut self, handler: F) -> WorkerBuilder
    where
        F: Fn(&mut WorkBatch<'_>) -> Result<(), HandlerError> + Send + Sync + 'static,
    {
        self.handler = Some(Arc::new(handler));
        self
    }

    /// Checks the settings and starts the threads. The database is not contacted here: a
    /// worker started while the server is down connects when it comes up.
    ///
    /// Fails with [`ErrorKind::InvalidInput`] for a bad queue or consumer name, a missing
    /// handler, `workers(0)`, or `workers(n > 1)` without cooperative mode.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let worker = pgq::Worker::builder(&client, "orders", "mailer")
    ///     .handler(|_batch| Ok(()))
    ///     .start()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn start(self) -> Result<Worker> {
        let handler = self.handler.clone().ok_or_else(|| {
            Error::invalid_input("a worker needs a handler: call .handler(..) before .start()")
        })?;
        if self.workers == 0 {
            return Err(Error::invalid_input(
                "workers(0): a worker needs at least one thread",
            ));
        }
        if self.workers > 1 && self.subconsumer.is_none() {
            return Err(Error::invalid_input(format!(
                "workers({}) needs cooperative mode: one consumer's batches form a single \
                 stream that threads cannot share; call .subconsumer(name, dead_interval) so \
                 each thread becomes its own subconsumer, or run one thread",
                self.workers
            )));
        }
        // Behind a transaction pooler a LISTEN would stay on a server connection that other
        // clients get next, and its notifications would never reach us.
        let poll_only = self.poll_only || self.client.transaction_pooling();
        let mut consumers = Vec::with_capacity(self.workers);
        for i in 0..self.workers {
            let mut c = Consumer::new(&self.client, &self.queue, &self.consumer)?
                .fetch_size(self.fetch_size)
                .read_ahead(self.read_ahead);
            if let Some((sub, dead)) = &self.subconsumer {
                let sub = if self.workers == 1 {
                    sub.clone()
                } else {
                    format!("{sub}-{i}")
                };
                c = cooperative(c, &sub, *dead)?;
            }
            consumers.push(c);
        }

        let poll_interval = self.poll_interval.unwrap_or(if poll_only {
            DEFAULT_POLL_ONLY_INTERVAL
        } else {
            DEFAULT_POLL_INTERVAL
        });
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let shared = Arc::new(Shared {
            stop: Mutex::new(Some(stop_tx)),
            counters: Counters::default(),
        });
        let ctx = Arc::new(Ctx {
            handler,
            policy: self.error_policy,
            reconnect: self.reconnect,
            poll_interval,
            chunk_size: self.max_events_per_call.unwrap_or(self.fetch_size),
            label: format!("{}/{}", self.queue, self.consumer),
            shared: shared.clone(),
        });

        let worker = Worker {
            shared,
            threads: Mutex::new(Vec::new()),
            label: ctx.label.clone(),
        };
        let mut wakers = Vec::new();
        for (i, consumer) in consumers.into_iter().enumerate() {
            let (wake_tx, wake_rx) = if poll_only {
                (None, never())
            } else {
                let (tx, rx) = bounded(1);
                (Some(tx), rx)
            };
            wakers.extend(wake_tx);
            let ctx = ctx.clone();
            let stop = stop_rx.clone();
            // Counted from here, so is_running() is true as soon as start() returns.
            let running = Running::enter(&ctx.shared);
            let spawned = thread::Builder::new()
                .name(format!("pgq-worker-{i}"))
                .spawn(move || {
                    let _running = running;
                    work_loop(&ctx, &consumer, &stop, &wake_rx)
                });
            // On failure `worker` is dropped: it stops and joins the threads started so far.
            worker.threads.lock().push(spawned.map_err(spawn_error)?);
        }
        if !poll_only {
            let mut config = self.client.config().clone();
            // A stop waits for a connect attempt in progress: keep it short.
            let timeout = config
                .get_connect_timeout()
                .copied()
                .unwrap_or(LISTEN_CONNECT_TIMEOUT)
                .min(LISTEN_CONNECT_TIMEOUT);
            config.connect_timeout(timeout);
            let queue = self.queue.clone();
            let ctx = ctx.clone();
            let stop = stop_rx;
            let running = Running::enter(&ctx.shared);
            let spawned = thread::Builder::new()
                .name("pgq-listener".to_string())
                .spawn(move || {
                    let _running = running;
                    listen_loop(&ctx, &config, &queue, &wakers, &stop);
                    Ok(())
                });
            worker.threads.lock().push(spawned.map_err(spawn_error)?);
        }
        log::debug!("{}: worker started ({} threads)", ctx.label, self.workers);
        Ok(worker)
    }
}

fn spawn_error(e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::Other,
        format!("cannot start a worker thread: {e}"),
    )
    .with_source(e)
}

/// Switches a consumer to cooperative mode (pgq_coop) as sub-consumer `sub`.
fn cooperative(c: Consumer, sub: &str, dead: Option<Duration>) -> Result<Consumer> {
    c.subconsumer(sub, dead)
}

/// Running consumer threads; made by [`Worker::builder`]. Stop with [`stop`](Worker::stop)
/// and wait with [`join`](Worker::join); dropping the handle does both.
///
/// A `Worker` is `Send + Sync`: one thread may [`join`](Worker::join) while another calls
/// [`stop`](Worker::stop) or reads [`stats`](Worker::stats).
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// let client = pgq::Client::connect("host=localhost dbname=app")?;
/// let worker = pgq::Worker::builder(&client, "orders", "mailer")
///     .handler(|batch| {
///         for ev in batch.events() {
///             println!("{:?}", ev?.data);
///         }
///         Ok(())
///     })
///     .start()?;
/// std::thread::sleep(std::time::Duration::from_secs(10));
/// println!("{:?}", worker.stats());
/// drop(worker); // stop + join
/// # Ok(()) }
/// ```
pub struct Worker {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<Result<()>>>>,
    label: String,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("consumer", &self.label)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Worker {
    /// Starts configuring a worker for `consumer` on `queue`; see [`WorkerBuilder`].
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let worker = pgq::Worker::builder(&client, "orders", "mailer")
    ///     .handler(|_batch| Ok(()))
    ///     .start()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn builder(client: &Client, queue: &str, consumer: &str) -> WorkerBuilder {
        WorkerBuilder {
            client: client.clone(),
            queue: queue.to_string(),
            consumer: consumer.to_string(),
            workers: 1,
            fetch_size: DEFAULT_FETCH_SIZE,
            read_ahead: true,
            max_events_per_call: None,
            poll_interval: None,
            poll_only: false,
            error_policy: ErrorPolicy::default(),
            reconnect: (DEFAULT_RECONNECT_INITIAL, DEFAULT_RECONNECT_MAX),
            subconsumer: None,
            handler: None,
        }
    }

    /// Asks every thread to stop and returns at once; idempotent. No new batch is taken
    /// afterwards; a handler that is running finishes (check [`WorkBatch::is_stopping`] to cut
    /// it short) and its batch is finished if it returns `Ok`.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// # let worker = pgq::Worker::builder(&client, "q", "c").handler(|_| Ok(())).start()?;
    /// worker.stop();
    /// worker.stop(); // no effect
    /// worker.join()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn stop(&self) {
        self.shared.request_stop();
    }

    /// Waits until every thread has ended (after [`stop`](Worker::stop), or after a handler
    /// failure under [`ErrorPolicy::Stop`]). Returns the error that stopped the worker, if
    /// any (once; later calls return `Ok`).
    ///
    /// A running handler is waited for. While the server is unreachable a thread may be in
    /// the middle of getting a connection, which takes up to the client's connect timeout.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// # let worker = pgq::Worker::builder(&client, "q", "c").handler(|_| Ok(())).start()?;
    /// worker.stop();
    /// if let Err(e) = worker.join() {
    ///     eprintln!("worker failed: {e}");
    /// }
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn join(&self) -> Result<()> {
        let mut threads = self.threads.lock();
        let mut result = Ok(());
        for t in threads.drain(..) {
            let name = t.thread().name().unwrap_or("pgq-worker").to_string();
            if t.thread().id() == thread::current().id() {
                // Called from a handler (e.g. the last handle dropped there): a thread cannot
                // wait for itself; it ends on its own once the worker is stopped.
                continue;
            }
            let r = match t.join() {
                Ok(r) => r,
                Err(_) => Err(Error::new(
                    ErrorKind::Other,
                    format!("{}: thread {name} panicked", self.label),
                )),
            };
            if let (Err(e), Ok(())) = (r, &result) {
                result = Err(e);
            }
        }
        result
    }

    /// Whether any thread is still running.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// # let worker = pgq::Worker::builder(&client, "q", "c").handler(|_| Ok(())).start()?;
    /// worker.stop();
    /// worker.join()?;
    /// assert!(!worker.is_running());
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn is_running(&self) -> bool {
        self.shared.counters.threads.load(Ordering::SeqCst) > 0
    }

    /// A snapshot of the counters.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// # let worker = pgq::Worker::builder(&client, "q", "c").handler(|_| Ok(())).start()?;
    /// let s = worker.stats();
    /// println!("{} events in {} batches, lag {:?}", s.events, s.batches, s.lag);
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn stats(&self) -> WorkerStats {
        self.shared.counters.snapshot()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
        if let Err(e) = self.join() {
            log::warn!("{}: worker ended with an error: {e}", self.label);
        }
    }
}

/// A snapshot of a [`Worker`]'s counters, from [`Worker::stats`]. Counters only grow.
///
/// ```no_run
/// # let client = pgq::Client::connect("dbname=app")?;
/// # let worker = pgq::Worker::builder(&client, "q", "c").handler(|_| Ok(())).start()?;
/// let s: pgq::WorkerStats = worker.stats();
/// if let Some(e) = &s.last_error {
///     eprintln!("{} errors, last: {e}", s.errors);
/// }
/// # Ok::<(), pgq::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Events read by handlers in finished batches.
    pub events: u64,
    /// Batches finished.
    pub batches: u64,
    /// Events put into the retry queue by finished batches.
    pub retries: u64,
    /// Failures of any kind: `handler_errors + handler_panics + db_errors`.
    pub errors: u64,
    /// Handler calls that returned an error (the batch was not finished).
    pub handler_errors: u64,
    /// Handler calls that panicked (the batch was not finished).
    pub handler_panics: u64,
    /// Database errors (lost connection, server restart, failed query), each retried; also
    /// batches that could not be finished because they were no longer this worker's (a
    /// cooperative sibling took one over after the dead interval).
    pub db_errors: u64,
    /// Recoveries: a thread got through to the database again after database errors.
    pub reconnects: u64,
    /// Notifications for this queue that woke the worker.
    pub wakeups: u64,
    /// Times a worker asked for a batch and there was none.
    pub empty_polls: u64,
    /// Batches the server had read and sorted while the batch before was handled (see
    /// [`WorkerBuilder::read_ahead`]); in a backlog of batches bigger than one fetch, few
    /// of these against `batches` means the pool had no spare connection.
    pub looked_ahead: u64,
    /// Consumer lag at the last finished batch: how old the batch's end tick was then
    /// (measured on this machine's clock).
    pub lag: Option<Duration>,
    /// When the last batch was finished.
    pub last_batch_time: Option<SystemTime>,
    /// The last error's message.
    pub last_error: Option<String>,
    /// Threads running now (workers and listener).
    pub threads: usize,
    /// Whether the `LISTEN` connection is up.
    pub listening: bool,
}

#[derive(Default)]
struct Counters {
    events: AtomicU64,
    batches: AtomicU64,
    retries: AtomicU64,
    handler_errors: AtomicU64,
    handler_panics: AtomicU64,
    db_errors: AtomicU64,
    reconnects: AtomicU64,
    wakeups: AtomicU64,
    empty_polls: AtomicU64,
    looked_ahead: AtomicU64,
    threads: AtomicUsize,
    listening: AtomicBool,
    last: Mutex<Last>,
}

#[derive(Default)]
struct Last {
    lag: Option<Duration>,
    batch_time: Option<SystemTime>,
    error: Option<String>,
}

impl Counters {
    fn snapshot(&self) -> WorkerStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let last = self.last.lock();
        let handler_errors = get(&self.handler_errors);
        let handler_panics = get(&self.handler_panics);
        let db_errors = get(&self.db_errors);
        WorkerStats {
            events: get(&self.events),
            batches: get(&self.batches),
            retries: get(&self.retries),
            errors: handler_errors + handler_panics + db_errors,
            handler_errors,
            handler_panics,
            db_errors,
            reconnects: get(&self.reconnects),
            wakeups: get(&self.wakeups),
            empty_polls: get(&self.empty_polls),
            looked_ahead: get(&self.looked_ahead),
            lag: last.lag,
            last_batch_time: last.batch_time,
            last_error: last.error.clone(),
            threads: self.threads.load(Ordering::SeqCst),
            listening: self.listening.load(Ordering::SeqCst),
        }
    }

    fn error(&self, counter: &AtomicU64, e: &dyn fmt::Display) {
        counter.fetch_add(1, Ordering::Relaxed);
        self.last.lock().error = Some(e.to_string());
    }
}

/// Counts a thread as running from just before it is spawned for as long as it lives (also
/// when it unwinds, or when spawning it failed and the guard is dropped unused).
struct Running(Arc<Shared>);

impl Running {
    fn enter(shared: &Arc<Shared>) -> Running {
        shared.counters.threads.fetch_add(1, Ordering::SeqCst);
        Running(shared.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.counters.threads.fetch_sub(1, Ordering::SeqCst);
    }
}

/// State shared between the handle and the threads.
struct Shared {
    /// Dropping the sender disconnects every thread's stop receiver: that is the stop signal
    /// (nothing is ever sent).
    stop: Mutex<Option<Sender<()>>>,
    counters: Counters,
}

impl Shared {
    fn request_stop(&self) {
        self.stop.lock().take();
    }
}

/// What every worker thread needs.
struct Ctx {
    handler: Arc<HandlerFn>,
    policy: ErrorPolicy,
    reconnect: (Duration, Duration),
    poll_interval: Duration,
    chunk_size: usize,
    label: String,
    shared: Arc<Shared>,
}

fn stopped(stop: &Receiver<()>) -> bool {
    matches!(stop.try_recv(), Err(TryRecvError::Disconnected))
}

/// Waits `d` unless stopped first; `true` when stopped.
fn pause(stop: &Receiver<()>, d: Duration) -> bool {
    select! {
        recv(stop) -> _ => true,
        default(d) => false,
    }
}

fn is_connection_error(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionLost | ErrorKind::Connect | ErrorKind::Pool
    )
}

enum Outcome {
    /// The batch was finished; with the consumer's next batch when the finish asked for it
    /// in the same transaction (`Some(None)`: there was none yet).
    Finished(Option<Option<Upcoming>>),
    /// The database failed (connection lost, server restart): reconnect with backoff.
    Database(Error),
    /// The handler failed: the policy decides.
    Handler(Error),
    /// The batch was no longer ours to finish (a coop sibling took it over after the dead
    /// interval, or it was finished or repositioned elsewhere): its work rolled back, and the
    /// worker simply goes on.
    Lost(Error),
}

fn work_loop(
    ctx: &Ctx,
    consumer: &Consumer,
    stop: &Receiver<()>,
    wake: &Receiver<()>,
) -> Result<()> {
    let counters = &ctx.shared.counters;
    let mut db_backoff = Backoff::new(ctx.reconnect.0, ctx.reconnect.1);
    let mut handler_backoff = match ctx.policy {
        ErrorPolicy::Retry { initial, max } => Backoff::new(initial, max),
        ErrorPolicy::Stop => Backoff::new(DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX),
    };
    let mut failing = false;
    // A sub-consumer registers itself (idempotent) before its first batch; only once, so that
    // unregistering it while the worker runs is not undone behind the administrator's back.
    let mut registered = consumer.subconsumer_name().is_none();
    // What the last finish learnt about the next batch (see Batch::finish_and_next).
    let mut carried: Option<Option<Upcoming>> = None;
    loop {
        if stopped(stop) {
            return Ok(());
        }
        let next = if let Some(known) = carried.take() {
            known.map(|next| consumer.open_batch(next)).transpose()
        } else if registered {
            // The worker takes each next batch with finish_and_next: worth reading ahead.
            consumer.next_batch_chained(true)
        } else {
            consumer.register_subconsumer().and_then(|_| {
                registered = true;
                consumer.next_batch_chained(true)
            })
        };
        let outcome = match next {
            Ok(batch) => {
                if failing {
                    failing = false;
                    counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    log::info!("{}: database reachable again", ctx.label);
                }
                db_backoff.reset();
                match batch {
                    Some(batch) => run_batch(ctx, batch, stop),
                    None => {
                        counters.empty_polls.fetch_add(1, Ordering::Relaxed);
                        select! {
                            recv(stop) -> _ => return Ok(()),
                            recv(wake) -> _ => {}
                            default(ctx.poll_interval) => {}
                        }
                        continue;
                    }
                }
            }
            // Opening the batch's cursor found the batch closed meanwhile (repositioned,
            // taken over): nothing to redo, ask for the next one.
            Err(e) if e.kind() == ErrorKind::NoSuchBatch => Outcome::Lost(e),
            Err(e) => Outcome::Database(e),
        };
        match outcome {
            Outcome::Finished(next) => {
                handler_backoff.reset();
                carried = next;
            }
            Outcome::Lost(e) => {
                log::warn!("{}: {e}", ctx.label);
                counters.error(&counters.db_errors, &e);
            }
            Outcome::Database(e) => {
                failing = true;
                let delay = db_backoff.next_delay();
                log::warn!("{}: {e}; retrying in {} ms", ctx.label, delay.as_millis());
                counters.error(&counters.db_errors, &e);
                if pause(stop, delay) {
                    return Ok(());
                }
            }
            Outcome::Handler(e) => match ctx.policy {
                ErrorPolicy::Retry { .. } => {
                    let delay = handler_backoff.next_delay();
                    log::warn!(
                        "{}: {e}; the batch is delivered again in {} ms",
                        ctx.label,
                        delay.as_millis()
                    );
                    if pause(stop, delay) {
                        return Ok(());
                    }
                }
                ErrorPolicy::Stop => {
                    log::error!("{}: {e}; stopping the worker", ctx.label);
                    ctx.shared.request_stop();
                    return Err(e);
                }
            },
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_string()
    }
}

fn run_batch(ctx: &Ctx, batch: Batch, stop: &Receiver<()>) -> Outcome {
    let counters = &ctx.shared.counters;
    let batch_id = batch.id();
    if batch.looked_ahead() {
        counters.looked_ahead.fetch_add(1, Ordering::Relaxed);
    }
    let tally = Tally::default();
    let result = {
        let mut wb = WorkBatch {
            batch: &batch,
            tally: &tally,
            stop,
            chunk_size: ctx.chunk_size,
            chunks: None,
            chunk: Vec::new(),
            chunk_pos: 0,
        };
        catch_unwind(AssertUnwindSafe(|| (ctx.handler)(&mut wb)))
    };
    let lost = tally.lost.get() || batch.with_client(|c| c.is_closed());
    let gone = |e: &dyn fmt::Display| {
        Outcome::Lost(Error::new(
            ErrorKind::NoSuchBatch,
            format!("batch {batch_id} is no longer open for this consumer: {e}"),
        ))
    };
    match result {
        Ok(Ok(())) => {
            let tick_time = batch.info().cur_tick_time;
            // Finish and ask for the next batch in one transaction, unless stopping (no new
            // batch is taken then) or a sub-consumer (pgq_coop finishes its own way).
            let finished = if batch.coop.is_none() && !stopped(stop) {
                batch.finish_and_next_info().map(Some)
            } else {
                batch.finish().map(|()| None)
            };
            match finished {
                Ok(next) => {
                    counters.batches.fetch_add(1, Ordering::Relaxed);
                    counters
                        .events
                        .fetch_add(tally.seen.get(), Ordering::Relaxed);
                    counters
                        .retries
                        .fetch_add(tally.retries.get(), Ordering::Relaxed);
                    let now = SystemTime::now();
                    let mut last = counters.last.lock();
                    last.batch_time = Some(now);
                    last.lag = Some(now.duration_since(tick_time).unwrap_or_default());
                    Outcome::Finished(next)
                }
                Err(e) if lost || is_connection_error(&e) => Outcome::Database(e),
                Err(e) if e.kind() == ErrorKind::NoSuchBatch => Outcome::Lost(e),
                Err(e) if tally.gone.get() => gone(&e),
                Err(e) => {
                    let e = Error::new(
                        e.kind(),
                        format!("finishing batch {batch_id} failed: {}", e.message()),
                    )
                    .with_source(e);
                    counters.error(&counters.handler_errors, &e);
                    Outcome::Handler(e)
                }
            }
        }
        Ok(Err(e)) if lost => Outcome::Database(Error::new(
            ErrorKind::ConnectionLost,
            format!("batch {batch_id}: the connection was lost: {e}"),
        )),
        Ok(Err(e)) if tally.gone.get() => gone(&e),
        Ok(Err(e)) => {
            let e = Error::new(
                ErrorKind::Handler,
                format!("handler failed on batch {batch_id}: {e}"),
            );
            counters.error(&counters.handler_errors, &e);
            Outcome::Handler(e)
        }
        Err(panic) => {
            let e = Error::new(
                ErrorKind::Handler,
                format!(
                    "handler panicked on batch {batch_id}: {}",
                    panic_message(&*panic)
                ),
            );
            counters.error(&counters.handler_panics, &e);
            Outcome::Handler(e)
        }
    }
}

/// What a handler did with its batch, kept outside the [`WorkBatch`] so it can be read after
/// the handler returned.
#[derive(Default)]
struct Tally {
    /// Most events any one stream of the batch got to.
    seen: Cell<u64>,
    retries: Cell<u64>,
    /// A read failed because the connection broke.
    lost: Cell<bool>,
    /// A read failed because the batch is no longer open (taken over, finished elsewhere).
    gone: Cell<bool>,
}

impl Tally {
    fn saw(&self, pos: u64) {
        if pos > self.seen.get() {
            self.seen.set(pos);
        }
    }

    fn failed(&self, e: &Error) {
        if is_connection_error(e) {
            self.lost.set(true);
        }
        if e.kind() == ErrorKind::NoSuchBatch {
            self.gone.set(true);
        }
    }
}

/// The batch a handler is working on: stream its events, tag events for retry, run SQL in
/// its transaction.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let client = pgq::Client::connect("dbname=app")?;
/// use std::time::Duration;
/// let worker = pgq::Worker::builder(&client, "orders", "mailer")
///     .handler(|batch: &mut pgq::WorkBatch<'_>| {
///         println!("batch {}", batch.id());
///         for ev in batch.events() {
///             let ev = ev?;
///             if ev.retry.unwrap_or(0) < 5 && ev.data.is_none() {
///                 batch.retry(ev.id, Duration::from_secs(30));
///             }
///         }
///         Ok(())
///     })
///     .start()?;
/// # Ok(()) }
/// ```
pub struct WorkBatch<'a> {
    batch: &'a Batch,
    tally: &'a Tally,
    stop: &'a Receiver<()>,
    chunk_size: usize,
    chunks: Option<Events<'a>>,
    chunk: Vec<Event>,
    chunk_pos: u64,
}

impl fmt::Debug for WorkBatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkBatch")
            .field("batch", self.batch)
            .field("chunk_size", &self.chunk_size)
            .finish()
    }
}

impl<'a> WorkBatch<'a> {
    /// The batch id.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// pgq::Worker::builder(&client, "q", "c").handler(|b| {
    ///     println!("{}", b.id());
    ///     Ok(())
    /// });
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn id(&self) -> i64 {
        self.batch.id()
    }

    /// Everything `pgq.next_batch_info` returned (ticks, their times and event sequences).
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// pgq::Worker::builder(&client, "q", "c").handler(|b| {
    ///     println!("tick {} at {:?}", b.info().cur_tick_id, b.info().cur_tick_time);
    ///     Ok(())
    /// });
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn info(&self) -> &'a NextBatch {
        self.batch.info()
    }

    /// The underlying [`Batch`] (queue and consumer names, tick ids).
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// pgq::Worker::builder(&client, "q", "c").handler(|b| {
    ///     println!("{}/{}", b.batch().queue(), b.batch().consumer());
    ///     Ok(())
    /// });
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn batch(&self) -> &'a Batch {
        self.batch
    }

    /// Streams the batch's events in id order, [`fetch_size`](WorkerBuilder::fetch_size) per
    /// round trip. Calling it again (or after [`next_chunk`](WorkBatch::next_chunk)) restarts
    /// from the first event; the streams share one server-side cursor, so use one at a time.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// pgq::Worker::builder(&client, "q", "c").handler(|b| {
    ///     for ev in b.events() {
    ///         println!("{:?}", ev?.data);
    ///     }
    ///     Ok(())
    /// });
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn events(&mut self) -> WorkEvents<'a> {
        self.chunks = None;
        self.chunk.clear();
        self.chunk_pos = 0;
        WorkEvents {
            inner: self.batch.events(),
            tally: self.tally,
            pos: 0,
        }
    }

    /// The next at most [`max_events_per_call`](WorkerBuilder::max_events_per_call) events
    /// of the batch as a slice, or `None` when all were returned: for handlers that work on
    /// groups of events (a multi-row insert, a bulk API call). The slice is reused by the
    /// next call.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// pgq::Worker::builder(&client, "q", "c")
    ///     .max_events_per_call(500)
    ///     .handler(|b| {
    ///         while let Some(chunk) = b.next_chunk()? {
    ///             let ids: Vec<i64> = chunk.iter().map(|ev| ev.id).collect();
    ///             println!("{ids:?}");
    ///         }
    ///         Ok(())
    ///     });
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn next_chunk(&mut self) -> Result<Option<&[Event]>> {
        self.chunk.clear();
        let batch = self.batch;
        let events = self.chunks.get_or_insert_with(|| batch.events());
        while self.chunk.len() < self.chunk_size {
            match events.next() {
                Some(Ok(ev)) => self.chunk.push(ev),
                Some(Err(e)) => {
                    self.tally.failed(&e);
                    return Err(e);
                }
                None => break,
            }
        }
        self.chunk_pos += self.chunk.len() as u64;
        self.tally.saw(self.chunk_pos);
        if self.chunk.is_empty() {
            Ok(None)
        } else {
            Ok(Some(&self.chunk))
        }
    }

    /// Tags an event for retry: when the batch is finished it goes to the retry queue and
    /// comes back to this consumer after `delay`. Untagged events count as done.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// use std::time::Duration;
    /// pgq::Worker::builder(&client, "q", "c").handler(|b| {
    ///     for ev in b.events() {
    ///         b.retry(ev?.id, Duration::from_secs(10));
    ///     }
    ///     Ok(())
    /// });
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn retry(&self, ev_id: i64, delay: Duration) {
        self.batch.retry(ev_id, delay);
        self.tally.retries.set(self.tally.retries.get() + 1);
    }

    /// Runs `f` on the batch's connection inside the batch's transaction, which commits
    /// together with finishing the batch (and rolls back if the batch is not finished). See
    /// [`Batch::with_client`] for what `f` must not do.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// pgq::Worker::builder(&client, "q", "c").handler(|b| {
    ///     for ev in b.events() {
    ///         let ev = ev?;
    ///         b.with_client(|c| c.execute("insert into log (id) values ($1)", &[&ev.id]))?;
    ///     }
    ///     Ok(())
    /// });
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn with_client<R>(&self, f: impl FnOnce(&mut postgres::Client) -> R) -> R {
        self.batch.with_client(f)
    }

    /// Whether the worker was asked to stop: a long handler may return an error to leave the
    /// rest of the batch for redelivery instead of finishing it.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// pgq::Worker::builder(&client, "q", "c").handler(|b| {
    ///     for ev in b.events() {
    ///         if b.is_stopping() {
    ///             return Err("stopping; the batch will be delivered again".into());
    ///         }
    ///         let _ev = ev?;
    ///     }
    ///     Ok(())
    /// });
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn is_stopping(&self) -> bool {
        stopped(self.stop)
    }
}

/// Iterator over a [`WorkBatch`]'s events; made by [`WorkBatch::events`].
///
/// Yields `Err` once if reading fails (the batch is then not finished and comes back), then
/// ends.
pub struct WorkEvents<'a> {
    inner: Events<'a>,
    tally: &'a Tally,
    pos: u64,
}

impl fmt::Debug for WorkEvents<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkEvents")
            .field("inner", &self.inner)
            .field("read", &self.pos)
            .finish()
    }
}

impl WorkEvents<'_> {
    /// Events fetched from the server but not yet returned: never more than the fetch size.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// pgq::Worker::builder(&client, "q", "c").fetch_size(50).handler(|b| {
    ///     let mut events = b.events();
    ///     while let Some(ev) = events.next() {
    ///         assert!(events.buffered() < 50);
    ///     }
    ///     Ok(())
    /// });
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn buffered(&self) -> usize {
        self.inner.buffered()
    }
}

impl Iterator for WorkEvents<'_> {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Result<Event>> {
        let item = self.inner.next()?;
        match &item {
            Ok(_) => {
                self.pos += 1;
                self.tally.saw(self.pos);
            }
            Err(e) => self.tally.failed(e),
        }
        Some(item)
    }
}

/// The listener thread: holds the `LISTEN` connection, wakes every worker thread when a tick
/// for the queue is announced, reconnects with backoff when the connection fails.
fn listen_loop(
    ctx: &Ctx,
    config: &postgres::Config,
    queue: &str,
    wakers: &[Sender<()>],
    stop: &Receiver<()>,
) {
    let counters = &ctx.shared.counters;
    let wake_all = || {
        for w in wakers {
            // Full means a wake-up is already pending: one is enough.
            let _ = w.try_send(());
        }
    };
    let mut backoff = Backoff::new(ctx.reconnect.0, ctx.reconnect.1);
    let mut failing = false;
    while !stopped(stop) {
        let mut listener = match Listener::connect(config) {
            Ok(l) => l,
            Err(e) => {
                failing = true;
                let delay = backoff.next_delay();
                log::warn!(
                    "{}: {e}; polling only, retrying in {} ms",
                    ctx.label,
                    delay.as_millis()
                );
                counters.error(&counters.db_errors, &e);
                if pause(stop, delay) {
                    break;
                }
                continue;
            }
        };
        if failing {
            failing = false;
            counters.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        backoff.reset();
        counters.listening.store(true, Ordering::SeqCst);
        // Ticks announced while we were not listening were missed: look now.
        wake_all();
        while !stopped(stop) {
            match listener.wait(LISTEN_SLICE, Some(queue)) {
                Ok(true) => {
                    counters.wakeups.fetch_add(1, Ordering::Relaxed);
                    wake_all();
                }
                Ok(false) => {}
                Err(e) => {
                    counters.listening.store(false, Ordering::SeqCst);
                    failing = true;
                    log::warn!("{}: {e}; reconnecting the LISTEN connection", ctx.label);
                    counters.error(&counters.db_errors, &e);
                    break;
                }
            }
        }
    }
    counters.listening.store(false, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn handle_types_are_thread_safe() {
        assert_send_sync::<Worker>();
        assert_send_sync::<WorkerBuilder>();
        assert_send_sync::<WorkerStats>();
    }

    #[test]
    fn default_policy_retries() {
        assert_eq!(
            ErrorPolicy::default(),
            ErrorPolicy::Retry {
                initial: DEFAULT_RETRY_INITIAL,
                max: DEFAULT_RETRY_MAX
            }
        );
    }

    #[test]
    fn panic_messages() {
        let p = catch_unwind(|| panic!("boom {}", 1)).unwrap_err();
        assert_eq!(panic_message(&*p), "boom 1");
        let p = catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(panic_message(&*p), "a non-string panic payload");
    }
}
