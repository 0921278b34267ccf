//! Producing events: one, many (COPY), and inside a transaction.

use std::ffi::c_char;

use postgres::Transaction;

use super::client::{client_arg, pgq_client};
use super::error::{pgq_error, pgq_status, FfiError};
use super::text::{handle_mut, opt_str_arg, out_arg, pgq_str, set_opt, str_arg};
use crate::client::PooledConnection;
use crate::event::NewEvent;
use crate::producer::{insert_event, insert_events};

/// An event to send. Every field is optional text: `data == NULL` is SQL NULL. The library
/// copies the fields during the call. Zero-initialise it (`pgq_new_event ev = {0};`) and set
/// what you need.
///
/// ```c
/// pgq_new_event ev = {0};
/// ev.type = (pgq_str){"order.created", 13};
/// ev.data = (pgq_str){"{\"id\": 42}", 10};
/// pgq_send(client, "orders", 6, &ev, NULL, &err);
/// ```
///
/// cbindgen:field-names=[type, data, extra1, extra2, extra3, extra4]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct pgq_new_event {
    /// `ev_type`.
    pub ev_type: pgq_str,
    /// `ev_data`, the payload.
    pub data: pgq_str,
    /// `ev_extra1`.
    pub extra1: pgq_str,
    /// `ev_extra2`.
    pub extra2: pgq_str,
    /// `ev_extra3`.
    pub extra3: pgq_str,
    /// `ev_extra4`.
    pub extra4: pgq_str,
}

unsafe fn new_event(ev: &pgq_new_event, index: Option<usize>) -> Result<NewEvent, FfiError> {
    let field = |name: &str| match index {
        Some(i) => format!("event {i} field {name}"),
        None => format!("event field {name}"),
    };
    let own = |s: Option<&str>| s.map(str::to_string);
    Ok(NewEvent {
        ev_type: own(opt_str_arg(&field("type"), ev.ev_type)?),
        data: own(opt_str_arg(&field("data"), ev.data)?),
        extra1: own(opt_str_arg(&field("extra1"), ev.extra1)?),
        extra2: own(opt_str_arg(&field("extra2"), ev.extra2)?),
        extra3: own(opt_str_arg(&field("extra3"), ev.extra3)?),
        extra4: own(opt_str_arg(&field("extra4"), ev.extra4)?),
    })
}

unsafe fn new_events(evs: *const pgq_new_event, n: usize) -> Result<Vec<NewEvent>, FfiError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if evs.is_null() {
        return Err(FfiError::null("evs"));
    }
    if n > isize::MAX as usize / std::mem::size_of::<pgq_new_event>() {
        return Err(FfiError::new(
            pgq_status::PGQ_STATUS_OUT_OF_RANGE,
            format!("{n} events is out of range"),
        ));
    }
    let slice = std::slice::from_raw_parts(evs, n);
    slice
        .iter()
        .enumerate()
        .map(|(i, ev)| new_event(ev, Some(i)))
        .collect()
}

unsafe fn event_arg(ev: *const pgq_new_event) -> Result<NewEvent, FfiError> {
    match ev.as_ref() {
        Some(ev) => new_event(ev, None),
        None => Err(FfiError::null("ev")),
    }
}

/// Sends one event to queue `q` in its own transaction. `*ev_id` (may be NULL) receives the
/// new event's id.
#[no_mangle]
pub unsafe extern "C" fn pgq_send(
    client: *const pgq_client,
    q: *const c_char,
    q_len: usize,
    ev: *const pgq_new_event,
    ev_id: *mut i64,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let c = client_arg(client)?;
        let q = str_arg("queue name", q, q_len)?;
        let ev = event_arg(ev)?;
        let id = c.send(q, &ev)?;
        set_opt(ev_id, id);
        Ok(())
    })
}

/// Sends `n` events (an array at `evs`; NULL allowed when `n == 0`) to queue `q` with COPY,
/// in one transaction: all of them or none. Much faster than `n` calls of `pgq_send`.
#[no_mangle]
pub unsafe extern "C" fn pgq_send_many(
    client: *const pgq_client,
    q: *const c_char,
    q_len: usize,
    evs: *const pgq_new_event,
    n: usize,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let c = client_arg(client)?;
        let q = str_arg("queue name", q, q_len)?;
        let evs = new_events(evs, n)?;
        c.send_many(q, &evs)?;
        Ok(())
    })
}

/// A database transaction on one pooled connection: events sent through it (and SQL run
/// with `pgq_tx_execute`) commit or roll back together. Not thread-safe: one thread at a
/// time. After a failed call the transaction is aborted on the server; only
/// `pgq_tx_rollback` / `pgq_tx_free` make sense (`pgq_tx_commit` then rolls back and
/// returns `PGQ_STATUS_INVALID_STATE`).
///
/// ```c
/// pgq_tx *tx = NULL;
/// if (pgq_tx_begin(client, &tx, &err) == PGQ_STATUS_OK) {
///     pgq_tx_execute(tx, "update stock set n = n - 1 where id = 7", 40, &err);
///     pgq_tx_send(tx, "orders", 6, &ev, NULL, &err);
///     pgq_tx_commit(tx, &err);   /* tx is gone now, whatever the result */
/// }
/// ```
pub struct pgq_tx {
    // Declared first: dropped (rolled back) before the connection it borrows.
    tx: Option<Transaction<'static>>,
    conn: *mut PooledConnection,
    /// The first failure inside the transaction. PostgreSQL answers COMMIT of an aborted
    /// transaction with a silent rollback, so commit must refuse instead of reporting OK.
    failed: Option<String>,
}

impl pgq_tx {
    fn tx(&mut self) -> Result<&mut Transaction<'static>, FfiError> {
        self.tx
            .as_mut()
            .ok_or_else(|| FfiError::state("the transaction is already finished"))
    }

    /// Runs one step in the transaction, remembering a failure for commit.
    fn step<T>(
        &mut self,
        f: impl FnOnce(&mut Transaction<'static>) -> crate::Result<T>,
    ) -> Result<T, FfiError> {
        let result = f(self.tx()?);
        if let Err(e) = &result {
            self.failed.get_or_insert_with(|| e.message().to_string());
        }
        result.map_err(FfiError::from)
    }
}

impl Drop for pgq_tx {
    fn drop(&mut self) {
        // Dropping an open Transaction rolls it back; it must go before its connection.
        drop(self.tx.take());
        // SAFETY: conn came from Box::into_raw in pgq_tx_begin, and nothing borrows it now.
        drop(unsafe { Box::from_raw(self.conn) });
    }
}

/// Starts a transaction on a connection taken from the pool (held until commit or
/// rollback). On success `*out` is the new transaction.
#[no_mangle]
pub unsafe extern "C" fn pgq_tx_begin(
    client: *const pgq_client,
    out: *mut *mut pgq_tx,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let c = client_arg(client)?;
        let out = out_arg("out", out)?;
        let conn: *mut PooledConnection = Box::into_raw(Box::new(c.get()?));
        // SAFETY: the connection lives in its own heap allocation that pgq_tx frees only
        // after the transaction borrowing it is gone (see Drop), so 'static is never
        // observed beyond the real lifetime.
        let tx = match (*conn).transaction() {
            Ok(tx) => tx,
            Err(e) => {
                drop(Box::from_raw(conn));
                return Err(crate::Error::from(e).into());
            }
        };
        let handle = pgq_tx {
            tx: Some(tx),
            conn,
            failed: None,
        };
        out.write(Box::into_raw(Box::new(handle)));
        Ok(())
    })
}

/// Sends one event to queue `q` inside the transaction. `*ev_id` (may be NULL) receives its
/// id. Consumers see it only after `pgq_tx_commit`.
#[no_mangle]
pub unsafe extern "C" fn pgq_tx_send(
    tx: *mut pgq_tx,
    q: *const c_char,
    q_len: usize,
    ev: *const pgq_new_event,
    ev_id: *mut i64,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let tx = handle_mut("tx", tx)?;
        let q = str_arg("queue name", q, q_len)?;
        let ev = event_arg(ev)?;
        let id = tx.step(|t| insert_event(t, q, &ev))?;
        set_opt(ev_id, id);
        Ok(())
    })
}

/// Sends `n` events to queue `q` with COPY inside the transaction (NULL `evs` allowed when
/// `n == 0`).
#[no_mangle]
pub unsafe extern "C" fn pgq_tx_send_many(
    tx: *mut pgq_tx,
    q: *const c_char,
    q_len: usize,
    evs: *const pgq_new_event,
    n: usize,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let tx = handle_mut("tx", tx)?;
        let q = str_arg("queue name", q, q_len)?;
        let evs = new_events(evs, n)?;
        tx.step(|t| insert_events(t, q, &evs))?;
        Ok(())
    })
}

/// Runs SQL (one or more statements, no parameters, results discarded) inside the
/// transaction, e.g. the business change the events describe. Do not run COMMIT or
/// ROLLBACK here: use `pgq_tx_commit` / `pgq_tx_rollback`.
#[no_mangle]
pub unsafe extern "C" fn pgq_tx_execute(
    tx: *mut pgq_tx,
    sql: *const c_char,
    sql_len: usize,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let tx = handle_mut("tx", tx)?;
        let sql = str_arg("sql", sql, sql_len)?;
        tx.step(|t| t.batch_execute(sql).map_err(crate::Error::from))?;
        Ok(())
    })
}

/// Commits the transaction and frees `tx`, also when the commit fails (then nothing was
/// committed). If an earlier call on this transaction failed (other than for a NULL
/// pointer or invalid UTF-8 argument, which change nothing), it rolls back instead and
/// returns `PGQ_STATUS_INVALID_STATE`.
#[no_mangle]
pub unsafe extern "C" fn pgq_tx_commit(tx: *mut pgq_tx, err: *mut *mut pgq_error) -> pgq_status {
    ffi_boundary!(err = err, {
        if tx.is_null() {
            return Err(FfiError::null("tx"));
        }
        let mut handle = Box::from_raw(tx);
        let t = handle
            .tx
            .take()
            .ok_or_else(|| FfiError::state("the transaction is already finished"))?;
        if let Some(first) = handle.failed.take() {
            drop(t); // rolls back
            return Err(FfiError::state(format!(
                "not committed: a call in this transaction failed ({first}), so it was \
                 rolled back"
            )));
        }
        t.commit().map_err(crate::Error::from)?;
        Ok(())
    })
}

/// Rolls the transaction back and frees `tx`. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn pgq_tx_rollback(tx: *mut pgq_tx) {
    ffi_boundary!(default = (), {
        if !tx.is_null() {
            let mut handle = Box::from_raw(tx);
            if let Some(t) = handle.tx.take() {
                if let Err(e) = t.rollback() {
                    log::warn!("rolling back a pgq_tx failed: {e}");
                }
            }
        }
    })
}

/// Same as `pgq_tx_rollback`: an unfinished transaction is rolled back. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn pgq_tx_free(tx: *mut pgq_tx) {
    pgq_tx_rollback(tx)
}
