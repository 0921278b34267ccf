//! Cooperative consumers: several sub-consumers sharing one consumer's event stream.
//!
//! A consumer registered on a queue normally processes every batch itself. With
//! `pgq_coop` (the SQL API of SkyTools' cooperative consumers, which libpgq installs next to
//! its PGQ schema and also next to the official extension), sub-consumers of the consumer
//! split its batches between them: each batch goes to exactly one sub-consumer, and every
//! event of the stream is processed by one of them. Threads or processes scale out that way
//! without any coordination of their own.
//!
//! * A sub-consumer keeps its open batch until it finishes it; asking again (after a crash)
//!   gives it the same batch, and no other sub-consumer gets that batch while it is alive.
//! * With a *dead interval*, a sub-consumer that has not been seen for longer than that
//!   (its batch has been open that long without it asking again) is considered dead, and
//!   the next sibling that asks takes its batch over.
//! * A sub-consumer that unregisters with [`BatchHandling::Release`] leaves its open batch
//!   to the next sibling that asks; nothing is lost.
//!
//! ```no_run
//! # fn main() -> pgq::Result<()> {
//! use std::time::Duration;
//!
//! let client = pgq::Client::connect("host=localhost dbname=app")?;
//! client.register_subconsumer("orders", "mailer", "worker-1")?;
//! let consumer = pgq::Consumer::new(&client, "orders", "mailer")?
//!     .subconsumer("worker-1", Some(Duration::from_secs(300)))?;
//! while let Some(batch) = consumer.next_batch()? {
//!     for ev in batch.events() {
//!         let ev = ev?;
//!         // handle ev ...
//!     }
//!     batch.finish()?; // pgq_coop.finish_batch
//! }
//! # Ok(()) }
//! ```
//!
//! The free functions are the SQL API one to one, for callers who manage connections and
//! transactions themselves. Retrying single events works as for any batch
//! ([`consumer::event_retry`](crate::consumer::event_retry)); retried events come back into
//! the shared stream, to whichever sub-consumer gets their batch.

use std::time::Duration;

use postgres::types::Type;
use postgres::GenericClient;

use crate::admin::interval_text;
use crate::client::{check_name, Client};
use crate::consumer::{Batch, Consumer, NextBatch};
use crate::error::{Error, ErrorKind, Result};

/// What [`unregister_subconsumer`] does when the sub-consumer has an open batch
/// (`batch_handling` of `pgq_coop.unregister_subconsumer`).
///
/// ```
/// assert_eq!(pgq::coop::BatchHandling::Release.code(), 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatchHandling {
    /// `0`: refuse with an [`ErrorKind::BatchOpen`] error; finish the batch first.
    Fail,
    /// `1`: release the batch; the next sibling sub-consumer asking for a batch gets it.
    Release,
}

impl BatchHandling {
    /// The SQL API's integer for this choice.
    ///
    /// ```
    /// assert_eq!(pgq::coop::BatchHandling::Fail.code(), 0);
    /// ```
    pub fn code(self) -> i32 {
        match self {
            BatchHandling::Fail => 0,
            BatchHandling::Release => 1,
        }
    }
}

/// `pgq_coop.register_subconsumer`: registers sub-consumer `subconsumer` of `consumer` on
/// `queue` (and `consumer` itself first, when needed); `true` if newly registered.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// let mut conn = postgres::Client::connect("host=localhost dbname=app", postgres::NoTls)?;
/// pgq::coop::register_subconsumer(&mut conn, "orders", "mailer", "worker-1")?;
/// # Ok(()) }
/// ```
pub fn register_subconsumer(
    conn: &mut impl GenericClient,
    queue: &str,
    consumer: &str,
    subconsumer: &str,
) -> Result<bool> {
    check_names(queue, consumer, subconsumer)?;
    let row = conn
        .query_typed_one(
            "select pgq_coop.register_subconsumer($1, $2, $3)",
            &[
                (&queue, Type::TEXT),
                (&consumer, Type::TEXT),
                (&subconsumer, Type::TEXT),
            ],
        )
        .map_err(|e| {
            Error::from(e).context(format_args!(
                "register subconsumer {queue}/{consumer}.{subconsumer}"
            ))
        })?;
    Ok(row.get::<_, Option<i32>>(0).unwrap_or(0) > 0)
}

/// `pgq_coop.unregister_subconsumer`: unregisters the sub-consumer; `false` if it was not
/// registered. `handling` decides about an open batch (see [`BatchHandling`]).
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let mut conn = postgres::Client::connect("dbname=app", postgres::NoTls)?;
/// use pgq::coop::BatchHandling;
/// pgq::coop::unregister_subconsumer(&mut conn, "orders", "mailer", "worker-1",
///                                   BatchHandling::Release)?;
/// # Ok(()) }
/// ```
pub fn unregister_subconsumer(
    conn: &mut impl GenericClient,
    queue: &str,
    consumer: &str,
    subconsumer: &str,
    handling: BatchHandling,
) -> Result<bool> {
    check_names(queue, consumer, subconsumer)?;
    let row = conn
        .query_typed_one(
            "select pgq_coop.unregister_subconsumer($1, $2, $3, $4)",
            &[
                (&queue, Type::TEXT),
                (&consumer, Type::TEXT),
                (&subconsumer, Type::TEXT),
                (&handling.code(), Type::INT4),
            ],
        )
        .map_err(|e| {
            Error::from(e).context(format_args!(
                "unregister subconsumer {queue}/{consumer}.{subconsumer}"
            ))
        })?;
    Ok(row.get::<_, Option<i32>>(0).unwrap_or(0) > 0)
}

/// `pgq_coop.next_batch_info`: the sub-consumer's open batch, else a released or (with
/// `dead_interval`) a dead sibling's batch, else a new batch of the shared stream; `None`
/// when there is nothing to do yet.
///
/// Run it in its own transaction (a plain connection does that), so the batch is recorded
/// as the sub-consumer's before its events are processed.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let mut conn = postgres::Client::connect("dbname=app", postgres::NoTls)?;
/// use std::time::Duration;
/// if let Some(b) = pgq::coop::next_batch(&mut conn, "orders", "mailer", "worker-1",
///                                        Some(Duration::from_secs(300)))? {
///     let events = pgq::consumer::get_batch_events(&mut conn, b.batch_id)?;
///     pgq::coop::finish_batch(&mut conn, b.batch_id)?;
/// }
/// # Ok(()) }
/// ```
pub fn next_batch(
    conn: &mut impl GenericClient,
    queue: &str,
    consumer: &str,
    subconsumer: &str,
    dead_interval: Option<Duration>,
) -> Result<Option<NextBatch>> {
    next_batch_custom(
        conn,
        queue,
        consumer,
        subconsumer,
        None,
        None,
        None,
        dead_interval,
    )
}

/// `pgq_coop.next_batch_custom`: like [`next_batch`], but a new batch of the shared stream
/// is opened with the limits of
/// [`consumer::next_batch_custom`](crate::consumer::next_batch_custom) (`None` = no limit).
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let mut conn = postgres::Client::connect("dbname=app", postgres::NoTls)?;
/// use std::time::Duration;
/// let b = pgq::coop::next_batch_custom(&mut conn, "orders", "mailer", "worker-1",
///     None, Some(1000), Some(Duration::from_secs(60)), None)?;
/// # Ok(()) }
/// ```
#[allow(clippy::too_many_arguments)] // the SQL function's arguments, one to one
pub fn next_batch_custom(
    conn: &mut impl GenericClient,
    queue: &str,
    consumer: &str,
    subconsumer: &str,
    min_lag: Option<Duration>,
    min_count: Option<i32>,
    min_interval: Option<Duration>,
    dead_interval: Option<Duration>,
) -> Result<Option<NextBatch>> {
    check_names(queue, consumer, subconsumer)?;
    let min_lag = min_lag.map(interval_text);
    let min_interval = min_interval.map(interval_text);
    let dead_interval = dead_interval.map(interval_text);
    let row = conn
        .query_typed_one(
            "select * from pgq_coop.next_batch_custom($1, $2, $3, $4::text::interval, $5, \
             $6::text::interval, $7::text::interval)",
            &[
                (&queue, Type::TEXT),
                (&consumer, Type::TEXT),
                (&subconsumer, Type::TEXT),
                (&min_lag, Type::TEXT),
                (&min_count, Type::INT4),
                (&min_interval, Type::TEXT),
                (&dead_interval, Type::TEXT),
            ],
        )
        .map_err(|e| {
            Error::from(e).context(format_args!(
                "next batch for subconsumer {queue}/{consumer}.{subconsumer}"
            ))
        })?;
    NextBatch::from_row(&row)
}

/// `pgq_coop.finish_batch`: closes a sub-consumer's batch; `false` if no such batch was open.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let mut conn = postgres::Client::connect("dbname=app", postgres::NoTls)?;
/// pgq::coop::finish_batch(&mut conn, 17)?;
/// # Ok(()) }
/// ```
pub fn finish_batch(conn: &mut impl GenericClient, batch_id: i64) -> Result<bool> {
    let row = conn
        .query_typed_one(
            "select pgq_coop.finish_batch($1)",
            &[(&batch_id, Type::INT8)],
        )
        .map_err(|e| Error::from(e).context(format_args!("finish coop batch {batch_id}")))?;
    Ok(row.get::<_, Option<i32>>(0).unwrap_or(0) > 0)
}

fn check_names(queue: &str, consumer: &str, subconsumer: &str) -> Result<()> {
    check_name("queue", queue)?;
    check_name("consumer", consumer)?;
    check_name("subconsumer", subconsumer)
}

/// Coop mode of a [`Consumer`]: which sub-consumer it pulls as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subconsumer {
    name: String,
    dead_interval: Option<Duration>,
}

impl Subconsumer {
    pub(crate) fn next_batch(
        &self,
        conn: &mut impl GenericClient,
        queue: &str,
        consumer: &str,
    ) -> Result<Option<NextBatch>> {
        next_batch(conn, queue, consumer, &self.name, self.dead_interval)
    }

    /// Finishes `batch_id` inside the batch's transaction, after checking that it still
    /// belongs to this sub-consumer: a sibling that took it over (dead interval) processes
    /// it now, so this one's work must roll back instead of finishing the sibling's batch.
    pub(crate) fn finish_batch(
        &self,
        conn: &mut impl GenericClient,
        batch_id: i64,
        queue: &str,
        consumer: &str,
    ) -> Result<()> {
        let full = format!("{consumer}.{}", self.name);
        let owned = conn
            .query_typed_opt(
                "select 1 from pgq.subscription s \
                   join pgq.consumer c on c.co_id = s.sub_consumer \
                  where s.sub_batch = $1 and c.co_name = $2",
                &[(&batch_id, Type::INT8), (&full, Type::TEXT)],
            )
            .map_err(|e| Error::from(e).context(format_args!("finish coop batch {batch_id}")))?
            .is_some();
        if !owned || !finish_batch(conn, batch_id)? {
            return Err(Error::new(
                ErrorKind::NoSuchBatch,
                format!(
                    "batch {batch_id} of {queue}/{full} is no longer open for this \
                     subconsumer (taken over by another subconsumer after the dead interval, \
                     or finished elsewhere); its work was rolled back"
                ),
            ));
        }
        Ok(())
    }
}

impl Consumer {
    /// Switches this consumer to coop mode as sub-consumer `name`: [`next_batch`] then
    /// goes through `pgq_coop.next_batch` (taking over the batch of a sibling not seen for
    /// `dead_interval`, when given) and [`Batch::finish`] through `pgq_coop.finish_batch`.
    /// Register the sub-consumer first ([`register_subconsumer`](Consumer::register_subconsumer)).
    ///
    /// [`next_batch`]: Consumer::next_batch
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// use std::time::Duration;
    /// let c = pgq::Consumer::new(&client, "orders", "mailer")?
    ///     .subconsumer("worker-1", Some(Duration::from_secs(300)))?;
    /// c.register_subconsumer()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn subconsumer(mut self, name: &str, dead_interval: Option<Duration>) -> Result<Consumer> {
        check_name("subconsumer", name)?;
        self.coop = Some(Subconsumer {
            name: name.to_string(),
            dead_interval,
        });
        Ok(self)
    }

    /// The sub-consumer name in coop mode, `None` otherwise.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let c = pgq::Consumer::new(&client, "orders", "mailer")?.subconsumer("w1", None)?;
    /// assert_eq!(c.subconsumer_name(), Some("w1"));
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn subconsumer_name(&self) -> Option<&str> {
        self.coop.as_ref().map(|s| s.name.as_str())
    }

    /// The dead interval in coop mode, `None` otherwise or when not set.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let c = pgq::Consumer::new(&client, "orders", "mailer")?.subconsumer("w1", None)?;
    /// assert_eq!(c.dead_interval(), None);
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn dead_interval(&self) -> Option<Duration> {
        self.coop.as_ref().and_then(|s| s.dead_interval)
    }

    /// Registers this consumer's sub-consumer (coop mode only); `true` if new.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// pgq::Consumer::new(&client, "orders", "mailer")?
    ///     .subconsumer("w1", None)?
    ///     .register_subconsumer()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn register_subconsumer(&self) -> Result<bool> {
        let sub = self.require_coop()?;
        self.client
            .register_subconsumer(self.queue(), self.name(), &sub.name)
    }

    /// Unregisters this consumer's sub-consumer (coop mode only); `false` if it was not
    /// registered.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// pgq::Consumer::new(&client, "orders", "mailer")?
    ///     .subconsumer("w1", None)?
    ///     .unregister_subconsumer(pgq::coop::BatchHandling::Release)?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn unregister_subconsumer(&self, handling: BatchHandling) -> Result<bool> {
        let sub = self.require_coop()?;
        self.client
            .unregister_subconsumer(self.queue(), self.name(), &sub.name, handling)
    }

    fn require_coop(&self) -> Result<&Subconsumer> {
        self.coop.as_ref().ok_or_else(|| {
            Error::invalid_input(format!(
                "consumer {}/{} is not in coop mode; call Consumer::subconsumer first",
                self.queue(),
                self.name()
            ))
        })
    }
}

impl Batch {
    /// The sub-consumer that holds this batch, when it came through coop mode.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// # let c = pgq::Consumer::new(&client, "q", "c")?.subconsumer("w1", None)?;
    /// # let batch = c.next_batch()?.unwrap();
    /// assert_eq!(batch.subconsumer(), Some("w1"));
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn subconsumer(&self) -> Option<&str> {
        self.coop.as_ref().map(|s| s.name.as_str())
    }
}

impl Client {
    /// Registers a sub-consumer; see [`register_subconsumer`].
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// client.register_subconsumer("orders", "mailer", "worker-1")?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn register_subconsumer(
        &self,
        queue: &str,
        consumer: &str,
        subconsumer: &str,
    ) -> Result<bool> {
        register_subconsumer(&mut *self.get()?, queue, consumer, subconsumer)
    }

    /// Unregisters a sub-consumer; see [`unregister_subconsumer`].
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// use pgq::coop::BatchHandling;
    /// client.unregister_subconsumer("orders", "mailer", "worker-1", BatchHandling::Fail)?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn unregister_subconsumer(
        &self,
        queue: &str,
        consumer: &str,
        subconsumer: &str,
        handling: BatchHandling,
    ) -> Result<bool> {
        unregister_subconsumer(&mut *self.get()?, queue, consumer, subconsumer, handling)
    }

    /// Opens the next batch for a sub-consumer; see [`Consumer::subconsumer`].
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// if let Some(batch) = client.next_coop_batch("orders", "mailer", "worker-1", None)? {
    ///     batch.finish()?;
    /// }
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn next_coop_batch(
        &self,
        queue: &str,
        consumer: &str,
        subconsumer: &str,
        dead_interval: Option<Duration>,
    ) -> Result<Option<Batch>> {
        Consumer::new(self, queue, consumer)?
            .subconsumer(subconsumer, dead_interval)?
            .next_batch()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_handling_codes_match_the_sql_api() {
        assert_eq!(BatchHandling::Fail.code(), 0);
        assert_eq!(BatchHandling::Release.code(), 1);
    }
}
