//! Wake-ups: waiting for new ticks with `LISTEN pgq_tick`, backed by polling.
//!
//! After a ticker round that created ticks, the ticker runs `pg_notify('pgq_tick', queue)`
//! for each queue that got one, in the tick's own transaction, so the notification arrives only
//! if the tick committed. Consumers `LISTEN pgq_tick` on a dedicated connection (a pooled one
//! would carry the subscription back into the pool) and wake when the payload names their
//! queue. They also poll on a timeout, so correctness never depends on a notification
//! arriving: one can be lost while the listening connection reconnects, or never be sent by a
//! ticker that does not notify (pgqd).
//!
//! Behind PgBouncer in transaction pooling mode `LISTEN` does not work; poll-only mode
//! ([`Consumer::poll_only`](crate::Consumer::poll_only),
//! [`WorkerBuilder::poll_only`](crate::WorkerBuilder::poll_only)) never sends it.
//!
//! ```no_run
//! # fn main() -> pgq::Result<()> {
//! use std::time::Duration;
//! let client = pgq::Client::connect("host=localhost dbname=app")?;
//! let consumer = pgq::Consumer::new(&client, "orders", "mailer")?;
//! // Returns as soon as a tick makes a batch available, or after 5 s with None.
//! if let Some(batch) = consumer.wait_batch(Duration::from_secs(5))? {
//!     batch.finish()?;
//! }
//! # Ok(()) }
//! ```

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use postgres::fallible_iterator::FallibleIterator;
use postgres::NoTls;

use crate::client::describe_target;
use crate::error::{Error, ErrorKind, Result};

/// The notification channel a ticker signals new ticks on; the payload is the queue name.
///
/// ```no_run
/// # let mut conn = postgres::Client::connect("dbname=app", postgres::NoTls)?;
/// // What a ticker does after ticking queue "orders" (wakes its consumers at once):
/// conn.execute("select pg_notify($1, $2)", &[&pgq::wakeup::NOTIFY_CHANNEL, &"orders"])?;
/// # Ok::<(), postgres::Error>(())
/// ```
pub const NOTIFY_CHANNEL: &str = "pgq_tick";

/// How often a waiting consumer polls for a batch while it also listens for notifications:
/// only a safety net, since a notification normally wakes it at once.
///
/// ```
/// assert_eq!(pgq::wakeup::DEFAULT_POLL_INTERVAL, std::time::Duration::from_secs(1));
/// ```
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How often a consumer in poll-only mode asks for a batch unless told otherwise: the latency
/// it adds to every batch, and one cheap query per interval while idle.
///
/// ```
/// assert!(pgq::wakeup::DEFAULT_POLL_ONLY_INTERVAL < pgq::wakeup::DEFAULT_POLL_INTERVAL);
/// ```
pub const DEFAULT_POLL_ONLY_INTERVAL: Duration = Duration::from_millis(100);

/// A dedicated connection that has run `LISTEN pgq_tick`.
pub(crate) struct Listener {
    conn: postgres::Client,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("closed", &self.conn.is_closed())
            .finish()
    }
}

impl Listener {
    /// Opens a new connection with `config` and subscribes to [`NOTIFY_CHANNEL`].
    pub(crate) fn connect(config: &postgres::Config) -> Result<Listener> {
        let mut conn = config.connect(NoTls).map_err(|e| {
            let target = describe_target(config);
            let err = Error::from(e);
            let msg = format!(
                "cannot open the LISTEN connection to {target}: {}",
                err.message()
            );
            Error::new(ErrorKind::Connect, msg).with_source(err)
        })?;
        conn.batch_execute(&format!("listen {NOTIFY_CHANNEL}"))
            .map_err(|e| Error::from(e).context(format_args!("listen {NOTIFY_CHANNEL}")))?;
        Ok(Listener { conn })
    }

    /// Waits up to `timeout` for a notification about `queue` (any queue when `None`; an
    /// empty payload counts for every queue). Returns `true` when one arrived, after draining
    /// whatever else is already buffered; `false` on timeout. Fails with
    /// [`ErrorKind::ConnectionLost`] when the connection is gone.
    pub(crate) fn wait(&mut self, timeout: Duration, queue: Option<&str>) -> Result<bool> {
        let deadline = deadline_after(timeout);
        let matches = |n: &postgres::Notification| {
            n.channel() == NOTIFY_CHANNEL
                && (queue.is_none() || n.payload().is_empty() || Some(n.payload()) == queue)
        };
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let next = self
                .conn
                .notifications()
                .timeout_iter(remaining)
                .next()
                .map_err(|e| Error::from(e).context("waiting for notifications"))?;
            match next {
                Some(n) if matches(&n) => {
                    // Several ticks may have been announced at once: one wake-up is enough.
                    let mut pending = self.conn.notifications();
                    let mut it = pending.iter();
                    while let Ok(Some(_)) = it.next() {}
                    return Ok(true);
                }
                Some(_) => {
                    if Instant::now() >= deadline {
                        return Ok(false);
                    }
                }
                None => {
                    // timeout_iter also ends at once when the server went away.
                    if self.conn.is_closed() {
                        return Err(Error::new(
                            ErrorKind::ConnectionLost,
                            "the LISTEN connection was closed by the server",
                        ));
                    }
                    return Ok(false);
                }
            }
        }
    }
}

/// How a [`Consumer`](crate::Consumer) waits in [`wait_batch`](crate::Consumer::wait_batch):
/// its settings, and its listening connection once it has one. A clone starts without a
/// connection of its own, so clones never share one.
pub(crate) struct WaitState {
    pub(crate) poll_interval: Option<Duration>,
    pub(crate) poll_only: bool,
    pub(crate) listener: Mutex<Option<Listener>>,
}

impl WaitState {
    /// The poll interval in effect.
    pub(crate) fn interval(&self) -> Duration {
        match (self.poll_interval, self.poll_only) {
            (Some(d), _) => d,
            (None, true) => DEFAULT_POLL_ONLY_INTERVAL,
            (None, false) => DEFAULT_POLL_INTERVAL,
        }
    }
}

impl Default for WaitState {
    fn default() -> WaitState {
        WaitState {
            poll_interval: None,
            poll_only: false,
            listener: Mutex::new(None),
        }
    }
}

impl Clone for WaitState {
    fn clone(&self) -> WaitState {
        WaitState {
            poll_interval: self.poll_interval,
            poll_only: self.poll_only,
            listener: Mutex::new(None),
        }
    }
}

impl fmt::Debug for WaitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitState")
            .field("poll_interval", &self.interval())
            .field("poll_only", &self.poll_only)
            .finish()
    }
}

/// Capped exponential backoff with jitter: each delay is drawn from the upper half of the
/// current step, so that many clients that failed together do not retry in lockstep.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
    rng: u64,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Backoff {
        let initial = initial.max(Duration::from_millis(1));
        let mut h = RandomState::new().build_hasher();
        h.write_u64(initial.as_nanos() as u64);
        Backoff {
            initial,
            max: max.max(initial),
            step: initial,
            rng: h.finish() | 1,
        }
    }

    /// The next delay; the step doubles up to the cap.
    pub(crate) fn next_delay(&mut self) -> Duration {
        // xorshift64: plenty for jitter, no dependency.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let frac = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        let d = self.step.mul_f64(0.5 + 0.5 * frac);
        self.step = (self.step * 2).min(self.max);
        d
    }

    /// Back to the initial step after a success.
    pub(crate) fn reset(&mut self) {
        self.step = self.initial;
    }
}

/// `now + timeout`, or a deadline far in the future when that does not fit in an
/// [`Instant`] (a caller may pass `Duration::MAX` to mean "wait for ever").
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    #[test]
    fn deadline_after_saturates() {
        let far = super::deadline_after(std::time::Duration::MAX);
        assert!(far > std::time::Instant::now() + std::time::Duration::from_secs(3600));
        let soon = super::deadline_after(std::time::Duration::from_millis(5));
        assert!(soon <= std::time::Instant::now() + std::time::Duration::from_millis(5));
    }

    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let d: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        // step i is min(100ms * 2^i, 1s); delays lie in its upper half
        for (i, d) in d.iter().enumerate() {
            let step =
                (Duration::from_millis(100) * 2u32.pow(i as u32)).min(Duration::from_secs(1));
            assert!(
                *d >= step / 2 && *d <= step,
                "delay {i} = {d:?}, step {step:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn default_intervals() {
        let mut w = WaitState::default();
        assert_eq!(w.interval(), DEFAULT_POLL_INTERVAL);
        w.poll_only = true;
        assert_eq!(w.interval(), DEFAULT_POLL_ONLY_INTERVAL);
        w.poll_interval = Some(Duration::from_secs(7));
        assert_eq!(w.interval(), Duration::from_secs(7));
    }
}
