//! Looking ahead: the server reads and sorts a consumer's next batch while the client still
//! handles the current one.
//!
//! Opening a batch waits for the server to collect the batch's events and sort them by id
//! (PGQ's order) before the first row comes, and PGQ gives a consumer its next batch only
//! after the current one is finished. A consumer that chains its batches
//! ([`Batch::finish_and_next`](crate::consumer::Batch::finish_and_next), the worker) does
//! not wait for that: once a batch turns out bigger than one fetch, a thread of its own
//! takes a spare pooled connection (when one is idle or the pool may open another; it
//! waits at most [`SPARE_WAIT`] for it), opens a transaction and declares a cursor over the
//! events the next batch will hold (`pgq.look_ahead_cursor`, libpgq's schema revision 7),
//! reading its first rows. When `pgq.next_batch_custom` then returns exactly that batch (the
//! same two ticks), the batch is read from that cursor and finished in that transaction;
//! otherwise, or when anything failed, the look-ahead is rolled back and the batch opened
//! as usual. A look-ahead that nobody takes is waited for and rolled back.
//!
//! This changes no guarantee. A tick range's events are fixed once its end tick exists,
//! and no rotation can remove them while the consumer has not passed them; the batch is
//! still finished only after its handler returned, in the transaction that read it.

use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Receiver;

use crate::client::{mark_suspect, Client, PooledConnection};
use crate::consumer::{sql_literal, NextBatch, CURSOR_NAME};
use crate::error::{Error, ErrorKind, Result};
use crate::event::{Event, EventColumns};

/// The schema revision that has `pgq.look_ahead_cursor`.
pub(crate) const REVISION: u32 = 7;

/// How long a look-ahead waits for a pooled connection at most: enough to open one on a
/// loaded server, short because the consumer may be waiting for the look-ahead (only when
/// other threads drained the pool after the check for a spare connection, the wait is for
/// one of theirs to come back).
const SPARE_WAIT: Duration = Duration::from_secs(1);

/// A running or finished look-ahead of the batch after tick `after_tick`.
pub(crate) struct LookAhead {
    after_tick: i64,
    rx: Receiver<Result<Option<Ready>>>,
    /// `None` once the result was taken.
    handle: Option<JoinHandle<()>>,
}

/// A next batch's transaction, open on its own connection with the batch's cursor declared.
pub(crate) struct Ready {
    pub(crate) conn: PooledConnection,
    /// The tick the batch ends at.
    cur_tick_id: i64,
    /// Its first events (the cursor is past them) and how many were asked for.
    pub(crate) first: (Vec<Event>, usize),
}

impl LookAhead {
    /// Starts reading the batch of `consumer` on `queue` that follows tick `after_tick`
    /// (where the open batch ends), `quick` events of it at first, when the pool has a
    /// connection to spare and a thread can be started.
    pub(crate) fn start(
        client: &Client,
        queue: &str,
        consumer: &str,
        after_tick: i64,
        quick: usize,
    ) -> Option<LookAhead> {
        if !client.has_spare_connection() {
            return None;
        }
        let client = client.clone();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let sql = format!(
            "begin; select pgq.look_ahead_cursor({}, {}, {after_tick}, '{CURSOR_NAME}')",
            sql_literal(queue),
            sql_literal(consumer)
        );
        let spawned = std::thread::Builder::new()
            .name("pgq-look-ahead".into())
            .spawn(move || {
                // The connection is taken here, not by the caller: opening one, or checking
                // one that sat idle, then costs the caller nothing. Should the pool run dry
                // meanwhile, the wait is short: the caller may be waiting for this thread.
                let res = client
                    .get_within(Some(SPARE_WAIT))
                    .and_then(|conn| run(conn, &sql, quick));
                if let Err(crossbeam_channel::SendError(Ok(Some(ready)))) = tx.send(res) {
                    ready.release();
                }
            });
        match spawned {
            Ok(handle) => Some(LookAhead {
                after_tick,
                rx,
                handle: Some(handle),
            }),
            Err(e) => {
                log::debug!("no look-ahead thread: {e}");
                None
            }
        }
    }

    /// Waits for the look-ahead; the batch it read when that is `info`'s batch (which
    /// `pgq.next_batch_custom` returned meanwhile), else `None` (and it is rolled back).
    pub(crate) fn take(mut self, info: &NextBatch) -> Option<Ready> {
        let ready = self.wait()?;
        if info.prev_tick_id == Some(self.after_tick) && info.cur_tick_id == ready.cur_tick_id {
            Some(ready)
        } else {
            log::debug!(
                "look-ahead read ticks {}..{}, but batch {} is {:?}..{}; opening it anew",
                self.after_tick,
                ready.cur_tick_id,
                info.batch_id,
                info.prev_tick_id,
                info.cur_tick_id
            );
            ready.release();
            None
        }
    }

    /// Waits for the thread and takes its result (once).
    fn wait(&mut self) -> Option<Ready> {
        let handle = self.handle.take()?;
        let res = self.rx.recv();
        if handle.join().is_err() {
            log::warn!("the look-ahead thread panicked");
        }
        match res {
            Ok(Ok(ready)) => ready,
            Ok(Err(e)) => {
                log::debug!("look-ahead failed (the batch is opened as usual): {e}");
                None
            }
            Err(_) => None,
        }
    }
}

impl Drop for LookAhead {
    /// Not wanted after all (the batch was dropped, finished without taking the next one,
    /// or the worker stops): waits for its statement, at most as long as opening the next
    /// batch would have taken, and rolls it back. (Not cancelled: a cancel request can
    /// arrive after the statement ended, and then hit whatever runs next on that pooled
    /// connection.)
    fn drop(&mut self) {
        if let Some(ready) = self.wait() {
            ready.release();
        }
    }
}

impl Ready {
    /// Rolls the look-ahead's transaction back; the connection returns to the pool.
    fn release(mut self) {
        roll_back(&mut self.conn);
    }
}

/// Ends the look-ahead's transaction on `conn`, which then may go back to the pool (if that
/// fails, the pool checks it before its next use).
fn roll_back(conn: &mut PooledConnection) {
    if let Err(e) = conn.batch_execute("rollback") {
        log::debug!("rolling back a look-ahead failed: {e}");
        mark_suspect(conn);
    }
}

/// A connection that may be inside the look-ahead's transaction: rolled back when dropped
/// (also when the thread unwinds), unless taken.
struct InTransaction(Option<PooledConnection>);

impl Drop for InTransaction {
    fn drop(&mut self) {
        if let Some(conn) = &mut self.0 {
            roll_back(conn);
        }
    }
}

/// The look-ahead thread's work: `sql` (BEGIN and `pgq.look_ahead_cursor`), then the first
/// `quick` rows. `Ok(None)` when there is nothing to read ahead (an older schema, no next
/// tick yet).
fn run(mut conn: PooledConnection, sql: &str, quick: usize) -> Result<Option<Ready>> {
    if !crate::direct::schema_revision(&mut conn)?.is_some_and(|r| r >= REVISION) {
        return Ok(None);
    }
    let mut open = InTransaction(Some(conn));
    let Some(conn) = open.0.as_mut() else {
        return Ok(None);
    };
    let read = declare_and_read(conn, sql, quick)?;
    Ok(read.and_then(|(cur_tick_id, first)| {
        open.0.take().map(|conn| Ready {
            conn,
            cur_tick_id,
            first: (first, quick),
        })
    }))
}

fn declare_and_read(
    conn: &mut PooledConnection,
    sql: &str,
    quick: usize,
) -> Result<Option<(i64, Vec<Event>)>> {
    let messages = conn.simple_query(sql)?;
    let tick = messages.iter().find_map(|m| match m {
        postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::parse::<i64>)),
        _ => None,
    });
    let cur_tick_id = match tick {
        Some(Some(Ok(t))) => t,
        Some(None) => return Ok(None),
        other => {
            return Err(Error::new(
                ErrorKind::Other,
                format!("pgq.look_ahead_cursor returned {other:?}"),
            ))
        }
    };
    let rows = conn.query_typed(&format!("fetch forward {quick} from {CURSOR_NAME}"), &[])?;
    let mut first = Vec::with_capacity(rows.len());
    if let Some(row) = rows.first() {
        let at = EventColumns::find(row.columns())?;
        for row in &rows {
            first.push(Event::from_row_at(row, &at)?);
        }
    }
    Ok(Some((cur_tick_id, first)))
}
