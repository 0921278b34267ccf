//! The pull consumer: batches and borrowed event views.

use std::ffi::c_char;
use std::time::Duration;

use super::client::{client_arg, pgq_client};
use super::error::{pgq_error, pgq_status, FfiError};
use super::text::{
    check_struct_size, handle, handle_mut, out_arg, pgq_str, set_opt, str_arg, time_us,
    write_prefix,
};
use crate::consumer::{Batch, Consumer, Events};
use crate::coop::BatchHandling;
use crate::event::Event;
use crate::worker::{WorkBatch, WorkEvents};

/// A pull consumer: one consumer name on one queue. `pgq_consumer_next_batch` takes a
/// `pgq_consumer *` (one thread at a time); the other calls take `const pgq_consumer *` and
/// may run from several threads. To consume in parallel, create several consumers (each
/// batch belongs to one caller at a time; PGQ hands a consumer's next batch out only
/// after the previous one is finished).
///
/// ```c
/// pgq_consumer *c = NULL;
/// pgq_consumer_new(client, "orders", 6, "mailer", 6, &c, &err);
/// pgq_consumer_register(c, NULL, &err);
/// pgq_batch *b = NULL;
/// if (pgq_consumer_next_batch(c, 5000, &b, &err) == PGQ_STATUS_OK && b) {
///     const pgq_event *ev;
///     while (pgq_batch_next_event(b, &ev, &err) == PGQ_STATUS_OK && ev) { ... }
///     pgq_batch_finish(b, &err);
/// }
/// pgq_consumer_free(c);
/// ```
pub struct pgq_consumer {
    consumer: Consumer,
}

/// Creates a consumer handle for consumer `name` on queue `q` (no database call; see
/// `pgq_consumer_register`). On success `*out` is the new handle.
#[no_mangle]
pub unsafe extern "C" fn pgq_consumer_new(
    client: *const pgq_client,
    q: *const c_char,
    q_len: usize,
    name: *const c_char,
    name_len: usize,
    out: *mut *mut pgq_consumer,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let c = client_arg(client)?;
        let out = out_arg("out", out)?;
        let q = str_arg("queue name", q, q_len)?;
        let name = str_arg("consumer name", name, name_len)?;
        let consumer = Consumer::new(c, q, name)?;
        out.write(Box::into_raw(Box::new(pgq_consumer { consumer })));
        Ok(())
    })
}

/// Frees a consumer handle (its registration stays). Batches it handed out stay valid.
/// NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn pgq_consumer_free(consumer: *mut pgq_consumer) {
    ffi_boundary!(default = (), {
        if !consumer.is_null() {
            drop(Box::from_raw(consumer));
        }
    })
}

/// Registers the consumer on its queue. `*created` (may be NULL) is true if it was newly
/// registered, false if it already was.
#[no_mangle]
pub unsafe extern "C" fn pgq_consumer_register(
    consumer: *const pgq_consumer,
    created: *mut bool,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let c = handle("consumer", consumer)?;
        let was_created = c.consumer.register()?;
        set_opt(created, was_created);
        Ok(())
    })
}

/// Unregisters the consumer from its queue (its pending retries are dropped).
#[no_mangle]
pub unsafe extern "C" fn pgq_consumer_unregister(
    consumer: *const pgq_consumer,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        handle("consumer", consumer)?.consumer.unregister()?;
        Ok(())
    })
}

/// How many events `pgq_batch_next_event` fetches from the server per round trip (at least
/// 1; default 1000). Applies to batches taken after the call.
#[no_mangle]
pub unsafe extern "C" fn pgq_consumer_set_fetch_size(
    consumer: *mut pgq_consumer,
    n: u32,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let c = handle_mut("consumer", consumer)?;
        if n == 0 {
            return Err(FfiError::invalid("fetch size must be at least 1"));
        }
        c.consumer = c.consumer.clone().fetch_size(n as usize);
        Ok(())
    })
}

/// Cooperative mode (`pgq_coop`): this handle consumes as subconsumer `sub` of its
/// consumer, sharing the consumer's batches with the other subconsumers (each batch goes
/// to one of them). `dead_interval_ms` > 0 lets it take over the open batch of a sibling
/// that has been silent for that long (0: never). Register the subconsumer with
/// `pgq_consumer_register_subconsumer` (the consumer itself must be registered too).
#[no_mangle]
pub unsafe extern "C" fn pgq_consumer_set_subconsumer(
    consumer: *mut pgq_consumer,
    sub: *const c_char,
    sub_len: usize,
    dead_interval_ms: u64,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let c = handle_mut("consumer", consumer)?;
        let sub = str_arg("subconsumer name", sub, sub_len)?;
        let dead = (dead_interval_ms > 0).then(|| Duration::from_millis(dead_interval_ms));
        c.consumer = c.consumer.clone().subconsumer(sub, dead)?;
        Ok(())
    })
}

/// Registers the handle's subconsumer (see `pgq_consumer_set_subconsumer`) with
/// `pgq_coop`, and the consumer on the queue if it is not yet. `*created` (may be NULL) is
/// true if the subconsumer was new. Without a subconsumer: `PGQ_STATUS_INVALID_INPUT`.
#[no_mangle]
pub unsafe extern "C" fn pgq_consumer_register_subconsumer(
    consumer: *const pgq_consumer,
    created: *mut bool,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let c = handle("consumer", consumer)?;
        let was_created = c.consumer.register_subconsumer()?;
        set_opt(created, was_created);
        Ok(())
    })
}

/// Unregisters the handle's subconsumer. If it has an open batch: with `release_batch`
/// the batch is left to the next sibling that asks; without it the call fails with
/// `PGQ_STATUS_BATCH_OPEN`.
#[no_mangle]
pub unsafe extern "C" fn pgq_consumer_unregister_subconsumer(
    consumer: *const pgq_consumer,
    release_batch: bool,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let c = handle("consumer", consumer)?;
        let handling = if release_batch {
            BatchHandling::Release
        } else {
            BatchHandling::Fail
        };
        c.consumer.unregister_subconsumer(handling)?;
        Ok(())
    })
}

/// Longest wait `pgq_consumer_next_batch` accepts (about 49.7 days); longer is capped.
const MAX_WAIT_MS: u64 = u32::MAX as u64;

/// Waits up to `timeout_ms` milliseconds (0: just look once; capped at 2^32-1 ms) for the
/// consumer's next batch. On success `*out` is the batch, or NULL if none came in time
/// (that is not an error). While waiting it listens for the ticker's `pgq_tick`
/// notifications (unless poll-only) and polls, so a batch is seen soon after its tick.
/// A batch holds a pooled connection and an open transaction until it is finished or
/// freed; an unfinished batch is delivered again.
///
/// Errors: `PGQ_STATUS_NOT_SUBSCRIBED` if the consumer is not registered,
/// `PGQ_STATUS_NO_SUCH_QUEUE`, connection errors.
#[no_mangle]
pub unsafe extern "C" fn pgq_consumer_next_batch(
    consumer: *mut pgq_consumer,
    timeout_ms: u64,
    out: *mut *mut pgq_batch,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let c = handle_mut("consumer", consumer)?;
        let out = out_arg("out", out)?;
        let batch = if timeout_ms == 0 {
            c.consumer.next_batch()?
        } else {
            let timeout = Duration::from_millis(timeout_ms.min(MAX_WAIT_MS));
            c.consumer.wait_batch(timeout)?
        };
        let handle = batch.map_or(std::ptr::null_mut(), |b| {
            Box::into_raw(Box::new(pgq_batch::owned(b)))
        });
        out.write(handle);
        Ok(())
    })
}

/// Whether to read ahead while the caller handles events (default true); it matters only for
/// batches bigger than one fetch. A thread of the batch's own then runs the next FETCH
/// while the caller handles the events before; and on libpgq's schema, for a batch taken
/// with `pgq_batch_finish_next`, the server also reads and sorts the next batch meanwhile,
/// on a spare pooled connection, which the next `pgq_batch_finish_next` takes over. False:
/// every FETCH runs when `pgq_batch_next_event` needs it, on the batch's connection only.
/// Applies to batches taken after the call.
#[no_mangle]
pub unsafe extern "C" fn pgq_consumer_set_read_ahead(
    consumer: *mut pgq_consumer,
    read_ahead: bool,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let c = handle_mut("consumer", consumer)?;
        c.consumer = c.consumer.clone().read_ahead(read_ahead);
        Ok(())
    })
}

/// Poll-only mode for `pgq_consumer_next_batch`: never `LISTEN`, only poll (needed behind
/// PgBouncer in transaction pooling mode). Default false; always on for a client with
/// `pgq_client_options_set_transaction_pooling`.
#[no_mangle]
pub unsafe extern "C" fn pgq_consumer_set_poll_only(
    consumer: *mut pgq_consumer,
    poll_only: bool,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let c = handle_mut("consumer", consumer)?;
        c.consumer = c.consumer.clone().poll_only(poll_only);
        Ok(())
    })
}

/// How often `pgq_consumer_next_batch` asks for a batch while it waits, in milliseconds
/// (at least 1; default 1000 while listening, 100 in poll-only mode).
#[no_mangle]
pub unsafe extern "C" fn pgq_consumer_set_poll_interval_ms(
    consumer: *mut pgq_consumer,
    interval_ms: u64,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let c = handle_mut("consumer", consumer)?;
        if interval_ms == 0 {
            return Err(FfiError::invalid("poll interval must be at least 1 ms"));
        }
        c.consumer = c
            .consumer
            .clone()
            .poll_interval(Duration::from_millis(interval_ms));
        Ok(())
    })
}

/// A batch of events being consumed. Not thread-safe: one thread at a time. Read events
/// with `pgq_batch_next_event`, tag failures with `pgq_batch_retry`, then
/// `pgq_batch_finish`. Freeing it unfinished rolls back: the batch is delivered again.
///
/// Inside a worker's handler (`pgq_batch_handler`) the batch belongs to the worker: it is
/// valid only during that handler call, and `pgq_batch_finish` / `pgq_batch_free` must not
/// be called on it (finish returns `PGQ_STATUS_INVALID_STATE`, free does nothing); the
/// worker finishes it when the handler returns 0.
pub struct pgq_batch {
    // Field order is drop order: the view and the iterator borrow the source.
    current: Option<pgq_event>,
    events: Option<EventIter>,
    source: Source,
}

enum EventIter {
    Plain(Events<'static>),
    Work(WorkEvents<'static>),
}

enum Source {
    /// From `pgq_consumer_next_batch`: a Box pointer owned by this handle (NULL once taken).
    Owned(*mut Batch),
    /// A worker's batch, lent for one handler call.
    Worker(*mut WorkBatch<'static>),
}

impl pgq_batch {
    fn owned(b: Batch) -> pgq_batch {
        pgq_batch {
            current: None,
            events: None,
            source: Source::Owned(Box::into_raw(Box::new(b))),
        }
    }

    /// A handle lending `wb` to C for the duration of one handler call. The caller must
    /// drop it before `wb`'s borrow ends (it lives on the handler's stack frame).
    pub(crate) unsafe fn lend(wb: &mut WorkBatch<'_>) -> pgq_batch {
        let wb: *mut WorkBatch<'_> = wb;
        pgq_batch {
            current: None,
            events: None,
            source: Source::Worker(wb.cast()),
        }
    }

    fn is_lent(&self) -> bool {
        matches!(self.source, Source::Worker(_))
    }

    fn batch(&self) -> &Batch {
        match self.source {
            // SAFETY: a live Box pointer for as long as self exists (see Drop, take_batch).
            Source::Owned(b) => unsafe { &*b },
            // SAFETY: lent for the lifetime of this handle (see lend).
            Source::Worker(wb) => unsafe { (*wb).batch() },
        }
    }

    fn next(&mut self) -> Option<crate::Result<Event>> {
        if self.events.is_none() {
            self.events = Some(match self.source {
                // SAFETY: the iterator is dropped before the batch it borrows (field order,
                // Drop, take_batch).
                Source::Owned(b) => EventIter::Plain(unsafe { &*b }.events()),
                // SAFETY: as above, within the handler call.
                Source::Worker(wb) => EventIter::Work(unsafe { (*wb).events() }),
            });
        }
        match self.events.as_mut()? {
            EventIter::Plain(it) => it.next(),
            EventIter::Work(it) => it.next(),
        }
    }

    fn retry(&self, ev_id: i64, delay: Duration) {
        match self.source {
            Source::Owned(_) => self.batch().retry(ev_id, delay),
            // SAFETY: lent for the lifetime of this handle.
            Source::Worker(wb) => unsafe { (*wb).retry(ev_id, delay) },
        }
    }

    /// Ends the borrows and takes an owned batch out.
    fn take_batch(mut self) -> Option<Batch> {
        self.current = None;
        self.events = None;
        match std::mem::replace(&mut self.source, Source::Owned(std::ptr::null_mut())) {
            // SAFETY: from Box::into_raw in `owned`; nothing borrows it any more.
            Source::Owned(b) if !b.is_null() => Some(*unsafe { Box::from_raw(b) }),
            _ => None,
        }
    }
}

impl Drop for pgq_batch {
    fn drop(&mut self) {
        self.current = None;
        self.events = None;
        if let Source::Owned(b) = self.source {
            if !b.is_null() {
                // SAFETY: as in take_batch. Dropping an unfinished Batch rolls it back.
                drop(unsafe { Box::from_raw(b) });
            }
        }
    }
}

/// The batch id.
#[no_mangle]
pub unsafe extern "C" fn pgq_batch_id(batch: *const pgq_batch) -> i64 {
    ffi_boundary!(default = -1, {
        batch.as_ref().map_or(-1, |b| b.batch().id())
    })
}

/// Whether the server read and sorted this batch while the batch before it was handled (see
/// `pgq_consumer_set_read_ahead`); false for NULL.
#[no_mangle]
pub unsafe extern "C" fn pgq_batch_looked_ahead(batch: *const pgq_batch) -> bool {
    ffi_boundary!(default = false, {
        batch.as_ref().is_some_and(|b| b.batch().looked_ahead())
    })
}

/// The tick that ends the batch.
#[no_mangle]
pub unsafe extern "C" fn pgq_batch_tick_id(batch: *const pgq_batch) -> i64 {
    ffi_boundary!(default = -1, {
        batch.as_ref().map_or(-1, |b| b.batch().tick_id())
    })
}

/// The tick that starts the batch, -1 for the first batch after registration.
#[no_mangle]
pub unsafe extern "C" fn pgq_batch_prev_tick_id(batch: *const pgq_batch) -> i64 {
    ffi_boundary!(default = -1, {
        batch
            .as_ref()
            .and_then(|b| b.batch().prev_tick_id())
            .unwrap_or(-1)
    })
}

/// The queue's name; borrowed from the batch, valid until it is finished or freed (inside
/// a handler: until the handler returns).
#[no_mangle]
pub unsafe extern "C" fn pgq_batch_queue(batch: *const pgq_batch) -> pgq_str {
    ffi_boundary!(default = pgq_str::NULL, {
        batch
            .as_ref()
            .map_or(pgq_str::NULL, |b| pgq_str::of(b.batch().queue()))
    })
}

/// The consumer's name; borrowed like `pgq_batch_queue`.
#[no_mangle]
pub unsafe extern "C" fn pgq_batch_consumer(batch: *const pgq_batch) -> pgq_str {
    ffi_boundary!(default = pgq_str::NULL, {
        batch
            .as_ref()
            .map_or(pgq_str::NULL, |b| pgq_str::of(b.batch().consumer()))
    })
}

/// The subconsumer that holds the batch in cooperative mode, else a NULL view; borrowed
/// like `pgq_batch_queue`.
#[no_mangle]
pub unsafe extern "C" fn pgq_batch_subconsumer(batch: *const pgq_batch) -> pgq_str {
    ffi_boundary!(default = pgq_str::NULL, {
        batch
            .as_ref()
            .map_or(pgq_str::NULL, |b| pgq_str::of_opt(b.batch().subconsumer()))
    })
}

/// When the batch's end tick was taken, in microseconds since the Unix epoch.
#[no_mangle]
pub unsafe extern "C" fn pgq_batch_tick_time_us(batch: *const pgq_batch) -> i64 {
    ffi_boundary!(default = -1, {
        batch
            .as_ref()
            .map_or(-1, |b| time_us(b.batch().info().cur_tick_time))
    })
}

/// Whether the worker that lent this batch to its handler is stopping (a long handler
/// may cut its work short and return non-zero to have the batch delivered again later).
/// Always false for a batch from `pgq_consumer_next_batch`.
#[no_mangle]
pub unsafe extern "C" fn pgq_batch_is_stopping(batch: *const pgq_batch) -> bool {
    ffi_boundary!(default = false, {
        match batch.as_ref().map(|b| &b.source) {
            // SAFETY: lent for the lifetime of this handle.
            Some(Source::Worker(wb)) => unsafe { (**wb).is_stopping() },
            _ => false,
        }
    })
}

/// The next event of the batch: `*out` is a view valid until the next call on this batch
/// (`pgq_batch_next_event`, `pgq_batch_finish`, `pgq_batch_free`), or NULL after the last
/// event (and on every call after that). Events are fetched from the server in rounds of
/// the consumer's fetch size, so large batches stream in bounded memory.
#[no_mangle]
pub unsafe extern "C" fn pgq_batch_next_event(
    batch: *mut pgq_batch,
    out: *mut *const pgq_event,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let b = handle_mut("batch", batch)?;
        let out = out_arg("out", out)?;
        b.current = None;
        let next = b.next();
        match next {
            None => out.write(std::ptr::null()),
            Some(Ok(ev)) => {
                let view: *const pgq_event = b.current.insert(pgq_event { ev });
                out.write(view);
            }
            Some(Err(e)) => return Err(e.into()),
        }
        Ok(())
    })
}

/// Every field of an event in one struct, for bindings where each call costs (Python's
/// ctypes): filled by `pgq_event_fields_get` or `pgq_batch_next_event_fields`. The text
/// views borrow from the event view and are valid as long as it is. Set `struct_size` to
/// `sizeof(pgq_event_fields)` before the call (see `pgq_worker_stats`).
///
/// cbindgen:field-names=[struct_size, retry, id, time_us, txid, type, data, extra1, extra2, extra3, extra4]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct pgq_event_fields {
    /// In: `sizeof(pgq_event_fields)` as the caller knows it.
    pub struct_size: u32,
    /// Times retried before, -1 on the first delivery.
    pub retry: i32,
    /// The event id.
    pub id: i64,
    /// Insert time, microseconds since the Unix epoch.
    pub time_us: i64,
    /// The inserting transaction's id.
    pub txid: i64,
    /// `ev_type`.
    pub ev_type: pgq_str,
    /// `ev_data`.
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

unsafe fn fill_fields(ev: &Event, out: *mut pgq_event_fields) -> Result<(), FfiError> {
    let size = (*out).struct_size as usize;
    check_struct_size(
        "pgq_event_fields",
        size,
        std::mem::size_of::<pgq_event_fields>(),
    )?;
    let full = pgq_event_fields {
        struct_size: std::mem::size_of::<pgq_event_fields>() as u32,
        retry: ev.retry.unwrap_or(-1),
        id: ev.id,
        time_us: time_us(ev.time),
        txid: ev.txid,
        ev_type: pgq_str::of_opt(ev.ev_type.as_deref()),
        data: pgq_str::of_opt(ev.data.as_deref()),
        extra1: pgq_str::of_opt(ev.extra1.as_deref()),
        extra2: pgq_str::of_opt(ev.extra2.as_deref()),
        extra3: pgq_str::of_opt(ev.extra3.as_deref()),
        extra4: pgq_str::of_opt(ev.extra4.as_deref()),
    };
    write_prefix(out, &full, size);
    Ok(())
}

/// Fills `*out` with every field of the event view `ev` (one call instead of ten).
#[no_mangle]
pub unsafe extern "C" fn pgq_event_fields_get(
    ev: *const pgq_event,
    out: *mut pgq_event_fields,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let ev = handle("ev", ev)?;
        let out = out_arg("out", out)?;
        fill_fields(&ev.ev, out)
    })
}

/// `pgq_batch_next_event` and `pgq_event_fields_get` in one call: `*out` is the next event
/// view (NULL after the last one) and, when it is not NULL, `*fields` is filled from it
/// (`fields->struct_size` must be set; it is checked before the event is taken).
#[no_mangle]
pub unsafe extern "C" fn pgq_batch_next_event_fields(
    batch: *mut pgq_batch,
    out: *mut *const pgq_event,
    fields: *mut pgq_event_fields,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let b = handle_mut("batch", batch)?;
        let out = out_arg("out", out)?;
        let fields = out_arg("fields", fields)?;
        check_struct_size(
            "pgq_event_fields",
            (*fields).struct_size as usize,
            std::mem::size_of::<pgq_event_fields>(),
        )?;
        b.current = None;
        match b.next() {
            None => out.write(std::ptr::null()),
            Some(Ok(ev)) => {
                let view: &pgq_event = b.current.insert(pgq_event { ev });
                fill_fields(&view.ev, fields)?;
                out.write(view);
            }
            Some(Err(e)) => return Err(e.into()),
        }
        Ok(())
    })
}

/// Tags event `ev_id` of this batch for redelivery after `delay_ms` milliseconds (rounded
/// up to whole seconds by PGQ's retry queue). Takes effect when the batch is finished.
#[no_mangle]
pub unsafe extern "C" fn pgq_batch_retry(
    batch: *mut pgq_batch,
    ev_id: i64,
    delay_ms: u64,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let b = handle_mut("batch", batch)?;
        b.retry(ev_id, Duration::from_millis(delay_ms));
        Ok(())
    })
}

/// Frees the handle `batch` and gives its batch to the caller, to finish; refused for NULL
/// and for a worker's batch (the worker finishes it).
unsafe fn take_owned(batch: *mut pgq_batch) -> Result<Option<Batch>, FfiError> {
    if batch.is_null() {
        return Err(FfiError::null("batch"));
    }
    if (*batch).is_lent() {
        return Err(FfiError::state(
            "this batch belongs to a worker, which finishes it when the handler returns 0",
        ));
    }
    Ok(Box::from_raw(batch).take_batch())
}

/// Finishes the batch: queues the tagged retries, closes the batch and commits, so the
/// consumer moves on. Frees `batch` in every case; if it fails nothing was committed and
/// the batch will be delivered again.
#[no_mangle]
pub unsafe extern "C" fn pgq_batch_finish(
    batch: *mut pgq_batch,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        if let Some(b) = take_owned(batch)? {
            b.finish()?;
        }
        Ok(())
    })
}

/// Finishes the batch (as `pgq_batch_finish`) and takes `consumer`'s next one in the same
/// transaction: one round trip and one commit fewer than `pgq_batch_finish` followed by
/// `pgq_consumer_next_batch` with no wait. `consumer` must be the one the batch came from.
/// Frees `batch` in every case. On success `*out` is the next batch, or NULL when there is
/// none yet (then wait with `pgq_consumer_next_batch`); on failure `*out` is NULL, nothing
/// was committed and the batch will be delivered again.
#[no_mangle]
pub unsafe extern "C" fn pgq_batch_finish_next(
    batch: *mut pgq_batch,
    consumer: *mut pgq_consumer,
    out: *mut *mut pgq_batch,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        // Taken first: whatever fails below, the batch is freed (and rolled back).
        let taken = take_owned(batch)?;
        let out = out_arg("out", out)?;
        out.write(std::ptr::null_mut());
        let c = handle_mut("consumer", consumer)?;
        if let Some(b) = taken {
            if let Some(next) = b.finish_and_next(&c.consumer)? {
                out.write(Box::into_raw(Box::new(pgq_batch::owned(next))));
            }
        }
        Ok(())
    })
}

/// Frees a batch. Unfinished, it is rolled back and will be delivered again. NULL is a
/// no-op, and so is a worker's batch inside its handler (the worker owns it).
#[no_mangle]
pub unsafe extern "C" fn pgq_batch_free(batch: *mut pgq_batch) {
    ffi_boundary!(default = (), {
        if !batch.is_null() {
            if (*batch).is_lent() {
                log::warn!("pgq_batch_free on a worker's batch ignored: the worker owns it");
                return;
            }
            drop(Box::from_raw(batch));
        }
    })
}

/// A view of one event, borrowed from its batch: valid until the next call on that batch.
/// Accessors return -1 / an empty view for NULL. The text views (`data == NULL`: SQL NULL)
/// live as long as the event view.
pub struct pgq_event {
    ev: Event,
}

/// The event id.
#[no_mangle]
pub unsafe extern "C" fn pgq_event_id(ev: *const pgq_event) -> i64 {
    ffi_boundary!(default = -1, { ev.as_ref().map_or(-1, |e| e.ev.id) })
}

/// When the event was inserted, in microseconds since the Unix epoch.
#[no_mangle]
pub unsafe extern "C" fn pgq_event_time_us(ev: *const pgq_event) -> i64 {
    ffi_boundary!(default = -1, {
        ev.as_ref().map_or(-1, |e| time_us(e.ev.time))
    })
}

/// The id of the transaction that inserted the event.
#[no_mangle]
pub unsafe extern "C" fn pgq_event_txid(ev: *const pgq_event) -> i64 {
    ffi_boundary!(default = -1, { ev.as_ref().map_or(-1, |e| e.ev.txid) })
}

/// How many times the event was retried before: -1 on its first delivery.
#[no_mangle]
pub unsafe extern "C" fn pgq_event_retry(ev: *const pgq_event) -> i32 {
    ffi_boundary!(default = -1, {
        ev.as_ref().and_then(|e| e.ev.retry).unwrap_or(-1)
    })
}

/// `ev_type`.
#[no_mangle]
pub unsafe extern "C" fn pgq_event_type(ev: *const pgq_event) -> pgq_str {
    ffi_boundary!(default = pgq_str::NULL, {
        ev.as_ref()
            .map_or(pgq_str::NULL, |e| pgq_str::of_opt(e.ev.ev_type.as_deref()))
    })
}

/// `ev_data`, the payload.
#[no_mangle]
pub unsafe extern "C" fn pgq_event_data(ev: *const pgq_event) -> pgq_str {
    ffi_boundary!(default = pgq_str::NULL, {
        ev.as_ref()
            .map_or(pgq_str::NULL, |e| pgq_str::of_opt(e.ev.data.as_deref()))
    })
}

/// `ev_extra1`.
#[no_mangle]
pub unsafe extern "C" fn pgq_event_extra1(ev: *const pgq_event) -> pgq_str {
    ffi_boundary!(default = pgq_str::NULL, {
        ev.as_ref()
            .map_or(pgq_str::NULL, |e| pgq_str::of_opt(e.ev.extra1.as_deref()))
    })
}

/// `ev_extra2`.
#[no_mangle]
pub unsafe extern "C" fn pgq_event_extra2(ev: *const pgq_event) -> pgq_str {
    ffi_boundary!(default = pgq_str::NULL, {
        ev.as_ref()
            .map_or(pgq_str::NULL, |e| pgq_str::of_opt(e.ev.extra2.as_deref()))
    })
}

/// `ev_extra3`.
#[no_mangle]
pub unsafe extern "C" fn pgq_event_extra3(ev: *const pgq_event) -> pgq_str {
    ffi_boundary!(default = pgq_str::NULL, {
        ev.as_ref()
            .map_or(pgq_str::NULL, |e| pgq_str::of_opt(e.ev.extra3.as_deref()))
    })
}

/// `ev_extra4`.
#[no_mangle]
pub unsafe extern "C" fn pgq_event_extra4(ev: *const pgq_event) -> pgq_str {
    ffi_boundary!(default = pgq_str::NULL, {
        ev.as_ref()
            .map_or(pgq_str::NULL, |e| pgq_str::of_opt(e.ev.extra4.as_deref()))
    })
}
