//! Producing events.
//!
//! An event becomes visible to consumers only when the inserting transaction commits, so
//! inserting inside your own transaction makes the event commit or roll back together with
//! your business data:
//!
//! ```no_run
//! # fn main() -> pgq::Result<()> {
//! let client = pgq::Client::connect("host=localhost dbname=app")?;
//! let mut conn = client.get()?;
//! let mut tx = conn.transaction()?;
//! tx.execute("insert into orders (id, total) values ($1, $2)", &[&42i64, &99.5f64])?;
//! pgq::producer::insert_event(&mut tx, "orders", &pgq::NewEvent::new("order.created", "42"))?;
//! tx.commit()?; // both the row and the event, or neither
//! # Ok(()) }
//! ```
//!
//! For many events at once, [`insert_events`] streams them with `COPY` into the queue's
//! current event table, which is much faster than one `insert_event` call per event.
//!
//! [`Client::send`] and [`Client::send_many`] (and [`Producer`]) commit on a pooled
//! connection of their own. On libpgq's schema (revision 3 and later) they insert straight
//! into the queue's current event table with one plain statement that checks, in its own
//! `WHERE`, that the table is still current: as cheap as inserting the row yourself. On the
//! official extension, and for queues with inserts disabled or a per-transaction limit, they
//! call `pgq.insert_event` (one event) or `COPY` (many).

use std::io::Write;

use postgres::types::{ToSql, Type};
use postgres::{GenericClient, Row, ToStatement};

use crate::client::{
    cached_statement, check_name, mark_suspect, pooled_query_one, pooled_query_opt, unnamed_only,
    Client, PooledConnection,
};
use crate::direct;
use crate::error::{Error, ErrorKind, Result};
use crate::event::NewEvent;

/// `pgq.insert_event` (7-argument form): inserts one event in the caller's transaction and
/// returns its `ev_id`.
///
/// Fails with [`ErrorKind::NoSuchQueue`] for an unknown queue and
/// [`ErrorKind::InsertDisabled`] when the queue refuses inserts.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// let mut conn = postgres::Client::connect("host=localhost dbname=app", postgres::NoTls)?;
/// let ev = pgq::NewEvent::new("user.signup", r#"{"user": 7}"#).extra1("web");
/// let id = pgq::producer::insert_event(&mut conn, "signups", &ev)?;
/// # Ok(()) }
/// ```
pub fn insert_event(conn: &mut impl GenericClient, queue: &str, event: &NewEvent) -> Result<i64> {
    // Parameter types given: one round trip (an unnamed statement), not a prepare and an
    // execute; Client::send uses a statement prepared once per pooled connection instead.
    insert_event_with(queue, event, |params| {
        let typed: Vec<(&(dyn ToSql + Sync), Type)> =
            params.iter().map(|p| (*p, Type::TEXT)).collect();
        conn.query_typed_one(INSERT_EVENT_SQL, &typed)
    })
}

const INSERT_EVENT_SQL: &str = "select pgq.insert_event($1, $2, $3, $4, $5, $6, $7)";

/// [`insert_event`] with the way to run [`INSERT_EVENT_SQL`] given.
fn insert_event_with(
    queue: &str,
    event: &NewEvent,
    run: impl FnOnce(&[&(dyn ToSql + Sync)]) -> std::result::Result<Row, postgres::Error>,
) -> Result<i64> {
    check_name("queue", queue)?;
    event.validate()?;
    let row = run(&[
        &queue,
        &event.ev_type,
        &event.data,
        &event.extra1,
        &event.extra2,
        &event.extra3,
        &event.extra4,
    ])
    .map_err(|e| Error::from(e).context(format_args!("insert event into {queue:?}")))?;
    row.get::<_, Option<i64>>(0).ok_or_else(|| {
        Error::new(
            ErrorKind::Other,
            format!("pgq.insert_event({queue:?}, ...) returned NULL"),
        )
    })
}

/// Inserts many events with one `COPY` into the queue's current event table; returns how many
/// were inserted.
///
/// Runs in one transaction: if `conn` is a plain connection a transaction is opened and
/// committed here; if it is already a [`postgres::Transaction`] a savepoint is used and the
/// events commit with the caller's transaction. Like `insert_event`, it fails with
/// [`ErrorKind::NoSuchQueue`] or [`ErrorKind::InsertDisabled`] (the latter unless
/// `session_replication_role` is `replica`), and inserts nothing on any error.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// let mut conn = postgres::Client::connect("host=localhost dbname=app", postgres::NoTls)?;
/// let events: Vec<pgq::NewEvent> = (0..10_000)
///     .map(|i| pgq::NewEvent::new("tick", i.to_string()))
///     .collect();
/// let n = pgq::producer::insert_events(&mut conn, "metrics", &events)?;
/// assert_eq!(n, 10_000);
/// # Ok(()) }
/// ```
pub fn insert_events(
    conn: &mut impl GenericClient,
    queue: &str,
    events: &[NewEvent],
) -> Result<u64> {
    check_name("queue", queue)?;
    for ev in events {
        ev.validate()?;
    }
    if events.is_empty() {
        return Ok(0);
    }
    insert_events_checked(conn, queue, events)
}

/// The queue's current event table (quoted) and the transaction's `now()`, for
/// [`insert_events`].
///
/// The table name is valid only for this transaction, and only if the transaction already
/// has its txid: rotation may switch tables and complete (step 2) between this query and the
/// COPY, and a txid taken only by the COPY would then lie after the step-2 mark while the
/// rows sit in the old table, which readers no longer search. So the txid is taken first, in
/// the same statement: the `offset 0` subquery is not flattened and its volatile column is
/// evaluated (and tested) before `current_event_table` runs on its row. current_event_table
/// runs once (an uncorrelated subquery), not once per pg_class row: a volatile function
/// re-evaluated during a scan can see a rotation halfway. It raises the queue's errors itself
/// (unknown queue, inserts disabled unless replaying).
const EVENT_TABLE_SQL: &str = "select format('%I.%I', n.nspname, c.relname), now()::text \
       from pg_catalog.pg_class c \
       join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
      where c.oid = (select pgq.current_event_table($1) \
                       from (select txid_current() as txid offset 0) t \
                      where t.txid is not null)::regclass";

/// The part of [`insert_events`] after the checks, in a transaction of its own.
fn insert_events_checked(
    conn: &mut impl GenericClient,
    queue: &str,
    events: &[NewEvent],
) -> Result<u64> {
    let mut tx = conn.transaction()?;
    let (table, now) =
        lookup_event_table(queue, |params| tx.query_typed_opt(EVENT_TABLE_SQL, params))?;
    let n = copy_events(&mut tx, copy_sql(&table).as_str(), &now, queue, events)?;
    tx.commit()?;
    Ok(n)
}

/// Runs [`EVENT_TABLE_SQL`] with `run`: the queue's current table and `now()`.
fn lookup_event_table(
    queue: &str,
    run: impl FnOnce(
        &[(&(dyn ToSql + Sync), Type)],
    ) -> std::result::Result<Option<Row>, postgres::Error>,
) -> Result<(String, String)> {
    let row = run(&[(&queue, Type::TEXT)])
        .map_err(|e| Error::from(e).context(format_args!("insert events into {queue:?}")))?;
    match row {
        Some(r) => Ok((r.get(0), r.get(1))),
        None => Err(crate::admin::no_such_queue(queue)),
    }
}

/// The COPY statement for an event table. ev_id and ev_txid come from the table's
/// defaults; ev_time has none, so every row gets the transaction's now(), as insert_event
/// would give it.
fn copy_sql(table: &str) -> String {
    format!(
        "copy {table} (ev_time, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4) \
         from stdin"
    )
}

/// Streams `events` with `copy` (a [`copy_sql`] statement, text or prepared).
fn copy_events<T: ToStatement + ?Sized>(
    conn: &mut impl GenericClient,
    copy: &T,
    now: &str,
    queue: &str,
    events: &[NewEvent],
) -> Result<u64> {
    let mut writer = conn.copy_in(copy)?;
    let mut line = Vec::with_capacity(256);
    for ev in events {
        line.clear();
        line.extend_from_slice(now.as_bytes());
        for field in ev.fields() {
            line.push(b'\t');
            escape_copy_text(&mut line, field.as_deref());
        }
        line.push(b'\n');
        writer.write_all(&line).map_err(|e| {
            Error::new(
                ErrorKind::ConnectionLost,
                format!("COPY into {queue:?} failed: {e}"),
            )
            .with_source(e)
        })?;
        // Do not keep a copy of a huge payload around for the next (small) event.
        if line.capacity() > 1 << 20 {
            line = Vec::with_capacity(256);
        }
    }
    writer
        .finish()
        .map_err(|e| Error::from(e).context(format_args!("COPY into {queue:?}")))
}

fn escape_copy_text(out: &mut Vec<u8>, value: Option<&str>) {
    let value = match value {
        None => {
            out.extend_from_slice(b"\\N");
            return;
        }
        Some(v) => v,
    };
    out.reserve(value.len());
    let bytes = value.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// A producer bound to one queue: a [`Client`] plus the queue name.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// let client = pgq::Client::connect("host=localhost dbname=app")?;
/// let producer = pgq::Producer::new(&client, "orders")?;
/// producer.send(&pgq::NewEvent::new("order.created", "42"))?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Producer {
    client: Client,
    queue: String,
}

impl Producer {
    /// A producer for `queue` (the name is checked here; the queue's existence on first send).
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let p = pgq::Producer::new(&client, "orders")?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn new(client: &Client, queue: &str) -> Result<Producer> {
        check_name("queue", queue)?;
        Ok(Producer {
            client: client.clone(),
            queue: queue.to_string(),
        })
    }

    /// The queue name.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// assert_eq!(pgq::Producer::new(&client, "orders")?.queue(), "orders");
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Inserts and commits one event; returns its id.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let id = pgq::Producer::new(&client, "orders")?.send(&pgq::NewEvent::new("t", "d"))?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn send(&self, event: &NewEvent) -> Result<i64> {
        self.client.send(&self.queue, event)
    }

    /// Inserts and commits many events in one transaction; returns how many.
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let evs = vec![pgq::NewEvent::new("t", "1"), pgq::NewEvent::new("t", "2")];
    /// pgq::Producer::new(&client, "orders")?.send_many(&evs)?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn send_many(&self, events: &[NewEvent]) -> Result<u64> {
        self.client.send_many(&self.queue, events)
    }
}

impl Client {
    /// Inserts and commits one event; see [`insert_event`].
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let id = client.send("orders", &pgq::NewEvent::new("order.created", "42"))?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn send(&self, queue: &str, event: &NewEvent) -> Result<i64> {
        // Validate before taking a connection: bad input costs no round trip.
        check_name("queue", queue)?;
        event.validate()?;
        let mut conn = self.get_sticky()?;
        // On our schema: one plain INSERT into the current table (see crate::direct).
        if let Some(id) = direct::send_one(&mut conn, queue, event, self.leases())
            .map_err(|e| e.context(format_args!("insert event into {queue:?}")))?
        {
            return Ok(id);
        }
        insert_event_with(queue, event, |params| {
            let typed: Vec<(&(dyn ToSql + Sync), Type)> =
                params.iter().map(|p| (*p, Type::TEXT)).collect();
            pooled_query_one(&mut conn, INSERT_EVENT_SQL, &typed)
        })
    }

    /// Inserts and commits many events in one transaction: `INSERT … SELECT … FROM unnest(…)`
    /// on our schema, `COPY` elsewhere (see the module docs); see [`insert_events`].
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let evs: Vec<_> = (0..100).map(|i| pgq::NewEvent::new("n", i.to_string())).collect();
    /// client.send_many("orders", &evs)?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn send_many(&self, queue: &str, events: &[NewEvent]) -> Result<u64> {
        check_name("queue", queue)?;
        for ev in events {
            ev.validate()?;
        }
        if events.is_empty() {
            return Ok(0);
        }
        let mut conn = self.get_sticky()?;
        if let Some(n) = send_many_direct(&mut conn, queue, events)? {
            return Ok(n);
        }
        // As insert_events, with the lookup and the COPY prepared once per pooled
        // connection (BEGIN, lookup, COPY, COMMIT: four round trips). Behind a transaction
        // pooler the lookup goes unnamed, and the COPY's statement is prepared inside the
        // transaction and closed before COMMIT (nothing outlives the transaction).
        conn.batch_execute("begin")?;
        let result = (|| -> Result<u64> {
            let (table, now) = lookup_event_table(queue, |params| {
                pooled_query_opt(&mut conn, EVENT_TABLE_SQL, params)
            })?;
            let n = if unnamed_only(&conn) {
                copy_events(&mut **conn, copy_sql(&table).as_str(), &now, queue, events)?
            } else {
                let copy = cached_statement(&mut conn, &copy_sql(&table))?;
                copy_events(&mut **conn, &copy, &now, queue, events)?
            };
            conn.batch_execute("commit")?;
            Ok(n)
        })();
        if result.is_err() {
            // Ignored: a failed COMMIT leaves nothing to roll back (a warning only).
            let _ = conn.batch_execute("rollback");
            // A COPY refused at its start can leave the connection out of step.
            mark_suspect(&mut conn);
        }
        result
    }
}

/// [`Client::send_many`] on our schema: `INSERT … SELECT … FROM unnest(…)` straight into the
/// current table (see [`crate::direct`]), one statement per chunk; several chunks run in one
/// transaction. `Ok(None)`: the direct path does not apply (nothing was inserted), use COPY.
fn send_many_direct(
    conn: &mut PooledConnection,
    queue: &str,
    events: &[NewEvent],
) -> Result<Option<u64>> {
    if direct::target(conn, queue)?.is_none() {
        return Ok(None);
    }
    let chunks = direct::chunks(events);
    let in_tx = chunks.len() > 1;
    if in_tx {
        conn.batch_execute("begin")?;
    }
    let result = (|| -> Result<Option<u64>> {
        for chunk in &chunks {
            let done = direct::attempt(conn, queue, |c, t| direct::insert_chunk(c, t, chunk))
                .map_err(|e| e.context(format_args!("insert events into {queue:?}")))?;
            if done.is_none() {
                // The direct path no longer applies (the table is gone, the queue changed,
                // or it kept rotating): nothing of this call may stay, COPY does it all.
                if in_tx {
                    conn.batch_execute("rollback")?;
                }
                return Ok(None);
            }
        }
        if in_tx {
            conn.batch_execute("commit")?;
        }
        Ok(Some(events.len() as u64))
    })();
    if result.is_err() && in_tx {
        // Ignored: the error that matters is the one returned.
        let _ = conn.batch_execute("rollback");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(v: Option<&str>) -> String {
        let mut out = Vec::new();
        escape_copy_text(&mut out, v);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn copy_escaping() {
        assert_eq!(esc(None), "\\N");
        assert_eq!(esc(Some("")), "");
        assert_eq!(esc(Some("plain ü")), "plain ü");
        assert_eq!(esc(Some("a\tb\nc\rd\\e")), "a\\tb\\nc\\rd\\\\e");
        assert_eq!(esc(Some("\\N")), "\\\\N");
        assert_eq!(esc(Some("\\.")), "\\\\.");
    }
}
