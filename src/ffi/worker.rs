//! Callback consumer workers: `pgq_worker_*`.

use std::cell::Cell;
use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::client::{client_arg, pgq_client};
use super::consumer::pgq_batch;
use super::error::{pgq_error, pgq_status, FfiError};
use super::log::pgq_free_fn;
use super::text::{
    check_struct_size, handle, handle_mut, opt_ms, out_arg, str_arg, time_us, write_prefix,
};
use crate::worker::{ErrorPolicy, WorkBatch, Worker, WorkerStats};

/// Handles one batch for a worker.
///
/// - **Thread:** called on one of the worker's own threads (named `pgq-worker-N`), never
///   on the thread that started the worker.
/// - **Overlap:** with one worker thread (the default) calls never overlap. With
///   `pgq_worker_options_set_workers(n > 1)` (cooperative mode) up to n calls run at the
///   same time, each with its own batch, so `user_data` must then be thread-safe.
/// - **Once per batch:** the handler gets the whole batch in one call. `batch` is valid
///   only during the call: read events with `pgq_batch_next_event` (each view valid until
///   the next call on the batch) and tag failures with `pgq_batch_retry`. Do not call
///   `pgq_batch_finish` or `pgq_batch_free` on it; do not keep it or its views.
/// - **Return:** 0 = handled: the tagged retries are queued and the batch is finished (one
///   transaction). Any other value = failed: the batch is not finished and is delivered
///   again (after a delay, or the worker stops, per `pgq_worker_options_set_stop_on_error`);
///   it is counted in `handler_errors`.
/// - **Must not:** unwind (no C++ exceptions, no longjmp) or block forever (stopping waits
///   for the running handler). It may call `pgq_worker_stop` on its own worker (the stop
///   takes effect after it returns); `pgq_worker_join` on its own worker returns
///   `PGQ_STATUS_WOULD_DEADLOCK`, and `pgq_worker_free` on its own worker is deferred
///   until the handler returned.
pub type pgq_batch_handler =
    Option<unsafe extern "C" fn(user_data: *mut c_void, batch: *mut pgq_batch) -> i32>;

/// Options for `pgq_worker_start`, which consumes them. One thread at a time.
///
/// ```c
/// pgq_worker_options *o = pgq_worker_options_new();
/// pgq_worker_options_set_fetch_size(o, 500, NULL);
/// pgq_worker_start(client, "orders", 6, "mailer", 6, o, handle_batch, ctx, NULL, &w, &err);
/// ```
pub struct pgq_worker_options {
    workers: u32,
    fetch_size: Option<u32>,
    poll_interval: Option<Duration>,
    poll_only: bool,
    read_ahead: bool,
    subconsumer: Option<(String, Option<Duration>)>,
    stop_on_error: bool,
    retry_backoff: Option<(Duration, Duration)>,
}

/// A running worker: threads that take the consumer's batches and call the handler once
/// per batch. Fully thread-safe except `pgq_worker_join` / `pgq_worker_free`, which take
/// `pgq_worker *` (one thread; they may run while other threads call `pgq_worker_stop` or
/// `pgq_worker_stats_get`).
pub struct pgq_worker {
    worker: Option<Worker>,
    ctx: Arc<HandlerCtx>,
}

/// A snapshot of a worker's counters, filled by `pgq_worker_stats_get`. Set `struct_size` to
/// `sizeof(pgq_worker_stats)` before the call: the library writes at most that many bytes,
/// so a program built against an older (smaller) struct keeps working when fields are
/// appended (a size below this first version's is `PGQ_STATUS_OUT_OF_RANGE`). After the
/// call `struct_size` holds the library's own size of the struct.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct pgq_worker_stats {
    /// In: `sizeof(pgq_worker_stats)` as the caller knows it.
    pub struct_size: u32,
    /// Worker and listener threads running now.
    pub threads: u32,
    /// Events in finished batches.
    pub events: u64,
    /// Finished batches.
    pub batches: u64,
    /// Events tagged for retry in finished batches.
    pub retries: u64,
    /// handler_errors + db_errors (+ Rust handler panics, which C handlers cannot cause).
    pub errors: u64,
    /// Handler calls that returned non-zero (batch delivered again).
    pub handler_errors: u64,
    /// Database errors (connection lost, server restart...), retried with backoff.
    pub db_errors: u64,
    /// Recoveries after database errors.
    pub reconnects: u64,
    /// Tick notifications that woke a worker.
    pub wakeups: u64,
    /// Polls that found no batch.
    pub empty_polls: u64,
    /// Lag of the last finished batch (now - its tick time) in ms, -1 before the first.
    pub lag_ms: i64,
    /// When the last batch was finished, microseconds since the Unix epoch; -1 before the
    /// first.
    pub last_batch_time_us: i64,
    /// Whether the tick listener is connected.
    pub listening: bool,
    /// Batches the server had read and sorted while the batch before was handled (see
    /// `pgq_worker_options_set_read_ahead`). Added after the first release of this struct: a
    /// caller compiled with the struct without it gets the fields before it.
    pub looked_ahead: u64,
}

struct HandlerCtx {
    handler: unsafe extern "C" fn(*mut c_void, *mut pgq_batch) -> i32,
    user_data: *mut c_void,
    user_data_free: pgq_free_fn,
    /// Set once the worker started: on failure the caller keeps user_data.
    armed: AtomicBool,
}

// SAFETY: the header requires user_data to be usable from the worker's threads.
unsafe impl Send for HandlerCtx {}
unsafe impl Sync for HandlerCtx {}

impl Drop for HandlerCtx {
    fn drop(&mut self) {
        if self.armed.load(Ordering::SeqCst) {
            if let Some(free) = self.user_data_free {
                // SAFETY: called once, after the last handler call returned.
                unsafe { free(self.user_data) };
            }
        }
    }
}

thread_local! {
    /// The HandlerCtx whose handler this thread is running (0: none), to detect a join of
    /// a worker from its own handler.
    static IN_HANDLER: Cell<usize> = const { Cell::new(0) };
}

fn in_own_handler(ctx: &Arc<HandlerCtx>) -> bool {
    let id = Arc::as_ptr(ctx) as usize;
    IN_HANDLER.with(|c| c.get() == id)
}

/// New worker options: 1 thread, fetch size 1000, listen for ticks and poll every second,
/// retry a failed batch with backoff from 500 ms up to 30 s. NULL only if Rust panicked.
#[no_mangle]
pub extern "C" fn pgq_worker_options_new() -> *mut pgq_worker_options {
    ffi_boundary!(default = std::ptr::null_mut(), {
        Box::into_raw(Box::new(pgq_worker_options {
            workers: 1,
            fetch_size: None,
            poll_interval: None,
            poll_only: false,
            read_ahead: true,
            subconsumer: None,
            stop_on_error: false,
            retry_backoff: None,
        }))
    })
}

/// Frees options that were not passed to `pgq_worker_start`. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn pgq_worker_options_free(opts: *mut pgq_worker_options) {
    ffi_boundary!(default = (), {
        if !opts.is_null() {
            drop(Box::from_raw(opts));
        }
    })
}

/// Number of worker threads (at least 1; default 1). More than one needs cooperative mode
/// (`pgq_worker_options_set_subconsumer`): each thread is then its own subconsumer.
#[no_mangle]
pub unsafe extern "C" fn pgq_worker_options_set_workers(
    opts: *mut pgq_worker_options,
    n: u32,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let o = handle_mut("opts", opts)?;
        if n == 0 {
            return Err(FfiError::invalid("a worker needs at least 1 thread"));
        }
        o.workers = n;
        Ok(())
    })
}

/// Events fetched per round trip while a handler reads its batch (at least 1; default
/// 1000).
#[no_mangle]
pub unsafe extern "C" fn pgq_worker_options_set_fetch_size(
    opts: *mut pgq_worker_options,
    n: u32,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let o = handle_mut("opts", opts)?;
        if n == 0 {
            return Err(FfiError::invalid("fetch size must be at least 1"));
        }
        o.fetch_size = Some(n);
        Ok(())
    })
}

/// How often an idle worker asks for a batch even without a tick notification, in ms (at
/// least 1; default 1000, or 100 in poll-only mode).
#[no_mangle]
pub unsafe extern "C" fn pgq_worker_options_set_poll_interval_ms(
    opts: *mut pgq_worker_options,
    ms: u64,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let o = handle_mut("opts", opts)?;
        if ms == 0 {
            return Err(FfiError::invalid("poll interval must be at least 1 ms"));
        }
        o.poll_interval = Some(Duration::from_millis(ms));
        Ok(())
    })
}

/// Poll-only mode: no `LISTEN` connection, only polling (PgBouncer transaction pooling; a
/// client with `pgq_client_options_set_transaction_pooling` always polls only).
#[no_mangle]
pub unsafe extern "C" fn pgq_worker_options_set_poll_only(
    opts: *mut pgq_worker_options,
    poll_only: bool,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        handle_mut("opts", opts)?.poll_only = poll_only;
        Ok(())
    })
}

/// Whether to read ahead while the handler works (default true): the next chunk of a batch
/// bigger than one fetch, and on libpgq's schema the next batch, on a spare pooled
/// connection (see `pgq_consumer_set_read_ahead`).
#[no_mangle]
pub unsafe extern "C" fn pgq_worker_options_set_read_ahead(
    opts: *mut pgq_worker_options,
    read_ahead: bool,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        handle_mut("opts", opts)?.read_ahead = read_ahead;
        Ok(())
    })
}

/// Cooperative mode: the worker consumes as subconsumer `sub` of its consumer (with
/// several threads: `sub-0`, `sub-1`, ...), sharing the consumer's batches with other
/// subconsumers. `dead_interval_ms` > 0 lets it take over the batch of a subconsumer
/// silent for that long (0: never). Each thread registers its subconsumer before its
/// first batch; register them beforehand (`pgq_consumer_register_subconsumer`) if events
/// produced before the worker first runs must be seen. They stay registered after a stop.
#[no_mangle]
pub unsafe extern "C" fn pgq_worker_options_set_subconsumer(
    opts: *mut pgq_worker_options,
    sub: *const c_char,
    sub_len: usize,
    dead_interval_ms: u64,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let o = handle_mut("opts", opts)?;
        let sub = str_arg("subconsumer name", sub, sub_len)?;
        let dead = (dead_interval_ms > 0).then(|| Duration::from_millis(dead_interval_ms));
        o.subconsumer = Some((sub.to_string(), dead));
        Ok(())
    })
}

/// What happens when the handler returns non-zero: `false` (default) delivers the batch
/// again after a backoff delay; `true` stops the worker (`pgq_worker_join` then returns
/// `PGQ_STATUS_HANDLER`).
#[no_mangle]
pub unsafe extern "C" fn pgq_worker_options_set_stop_on_error(
    opts: *mut pgq_worker_options,
    stop: bool,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        handle_mut("opts", opts)?.stop_on_error = stop;
        Ok(())
    })
}

/// Backoff before a failed batch is delivered again: starts at `initial_ms`, doubles (with
/// jitter) up to `max_ms` (default 500 ms .. 30 s). `initial_ms` must be at least 1 and
/// not above `max_ms`.
#[no_mangle]
pub unsafe extern "C" fn pgq_worker_options_set_retry_backoff_ms(
    opts: *mut pgq_worker_options,
    initial_ms: u64,
    max_ms: u64,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let o = handle_mut("opts", opts)?;
        if initial_ms == 0 || initial_ms > max_ms {
            return Err(FfiError::invalid(format!(
                "retry backoff {initial_ms}..{max_ms} ms: need 1 <= initial <= max"
            )));
        }
        o.retry_backoff = Some((
            Duration::from_millis(initial_ms),
            Duration::from_millis(max_ms),
        ));
        Ok(())
    })
}

/// Error text a C handler's non-zero return becomes.
#[derive(Debug)]
struct HandlerFailed(i32);

impl std::fmt::Display for HandlerFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the C handler returned {}", self.0)
    }
}

impl std::error::Error for HandlerFailed {}

/// Starts a worker for consumer `consumer` on queue `q` (register the consumer first).
/// `handler` is called once per batch as `pgq_batch_handler` describes, with `user_data`.
///
/// `opts` may be NULL (defaults) and is consumed in every case. `user_data_free` (may be
/// NULL) is called exactly once with `user_data` after the last handler call has returned:
/// by `pgq_worker_free` (when freed from the handler, later, on a worker or helper
/// thread). If this call fails, the handler is never called and `user_data_free` is not
/// called: the caller still owns `user_data`. On success `*out` is the worker: stop it with `pgq_worker_stop`
/// and `pgq_worker_join`, or just `pgq_worker_free`.
#[no_mangle]
pub unsafe extern "C" fn pgq_worker_start(
    client: *const pgq_client,
    q: *const c_char,
    q_len: usize,
    consumer: *const c_char,
    consumer_len: usize,
    opts: *mut pgq_worker_options,
    handler: pgq_batch_handler,
    user_data: *mut c_void,
    user_data_free: pgq_free_fn,
    out: *mut *mut pgq_worker,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let opts = if opts.is_null() {
            None
        } else {
            Some(Box::from_raw(opts))
        };
        let c = client_arg(client)?;
        let out = out_arg("out", out)?;
        let q = str_arg("queue name", q, q_len)?;
        let consumer = str_arg("consumer name", consumer, consumer_len)?;
        let handler = handler.ok_or_else(|| FfiError::null("handler"))?;
        let ctx = Arc::new(HandlerCtx {
            handler,
            user_data,
            user_data_free,
            armed: AtomicBool::new(false),
        });
        let mut builder = Worker::builder(c, q, consumer);
        if let Some(o) = opts {
            builder = builder.workers(o.workers as usize);
            if let Some(n) = o.fetch_size {
                builder = builder.fetch_size(n as usize);
            }
            if let Some(d) = o.poll_interval {
                builder = builder.poll_interval(d);
            }
            builder = builder.poll_only(o.poll_only).read_ahead(o.read_ahead);
            if let Some((sub, dead)) = &o.subconsumer {
                builder = builder.subconsumer(sub, *dead);
            }
            let policy = if o.stop_on_error {
                ErrorPolicy::Stop
            } else if let Some((initial, max)) = o.retry_backoff {
                ErrorPolicy::Retry { initial, max }
            } else {
                ErrorPolicy::default()
            };
            builder = builder.error_policy(policy);
        }
        let call_ctx = ctx.clone();
        let worker = builder
            .handler(move |wb: &mut WorkBatch<'_>| {
                let id = Arc::as_ptr(&call_ctx) as usize;
                let outer = IN_HANDLER.with(|c| c.replace(id));
                // SAFETY: the lent handle lives on this frame, inside the borrow of wb.
                let mut lent = unsafe { pgq_batch::lend(wb) };
                // SAFETY: the handler contract in the header.
                let rc = unsafe { (call_ctx.handler)(call_ctx.user_data, &mut lent) };
                drop(lent);
                IN_HANDLER.with(|c| c.set(outer));
                if rc == 0 {
                    Ok(())
                } else {
                    Err(Box::new(HandlerFailed(rc)) as crate::worker::HandlerError)
                }
            })
            .start()?;
        ctx.armed.store(true, Ordering::SeqCst);
        out.write(Box::into_raw(Box::new(pgq_worker {
            worker: Some(worker),
            ctx,
        })));
        Ok(())
    })
}

/// Asks the worker to stop: no new batch is taken; a running handler finishes (and its
/// batch is finished if it returns 0). Returns at once; idempotent; may be called from any
/// thread, including the worker's own handler.
#[no_mangle]
pub unsafe extern "C" fn pgq_worker_stop(
    worker: *const pgq_worker,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        if let Some(w) = &handle("worker", worker)?.worker {
            w.stop();
        }
        Ok(())
    })
}

/// Waits until the worker's threads have ended (after `pgq_worker_stop`, or after a
/// handler error with stop-on-error). Returns the error that stopped it, if any
/// (`PGQ_STATUS_HANDLER` for a failing handler). From the worker's own handler it returns
/// `PGQ_STATUS_WOULD_DEADLOCK` at once. Joining again returns OK.
#[no_mangle]
pub unsafe extern "C" fn pgq_worker_join(
    worker: *mut pgq_worker,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let w = handle_mut("worker", worker)?;
        if in_own_handler(&w.ctx) {
            return Err(FfiError::new(
                pgq_status::PGQ_STATUS_WOULD_DEADLOCK,
                "pgq_worker_join called from the worker's own handler would wait for \
                 itself; call pgq_worker_stop there and join from another thread",
            ));
        }
        if let Some(worker) = &w.worker {
            // A failed handler is ErrorKind::Handler, which maps to PGQ_STATUS_HANDLER.
            worker.join().map_err(FfiError::from)?;
        }
        Ok(())
    })
}

/// Fills `*out` with the worker's counters; see `pgq_worker_stats` (the struct) for
/// `struct_size`.
#[no_mangle]
pub unsafe extern "C" fn pgq_worker_stats_get(
    worker: *const pgq_worker,
    out: *mut pgq_worker_stats,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let w = handle("worker", worker)?;
        let out = out_arg("out", out)?;
        let size = (*out).struct_size as usize;
        // The struct's first version ended before looked_ahead.
        check_struct_size(
            "pgq_worker_stats",
            size,
            std::mem::offset_of!(pgq_worker_stats, looked_ahead),
        )?;
        let s: WorkerStats = w.worker.as_ref().map(Worker::stats).unwrap_or_default();
        let full = pgq_worker_stats {
            struct_size: size.min(std::mem::size_of::<pgq_worker_stats>()) as u32,
            threads: u32::try_from(s.threads).unwrap_or(u32::MAX),
            events: s.events,
            batches: s.batches,
            retries: s.retries,
            errors: s.errors,
            handler_errors: s.handler_errors,
            db_errors: s.db_errors,
            reconnects: s.reconnects,
            wakeups: s.wakeups,
            empty_polls: s.empty_polls,
            lag_ms: opt_ms(s.lag),
            last_batch_time_us: s.last_batch_time.map_or(-1, time_us),
            listening: s.listening,
            looked_ahead: s.looked_ahead,
        };
        write_prefix(out, &full, size);
        Ok(())
    })
}

/// Stops the worker, waits for its threads and frees it (then `user_data_free` runs).
/// Called from the worker's own handler, the stop is immediate and the rest happens on a
/// helper thread once the handler has returned. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn pgq_worker_free(worker: *mut pgq_worker) {
    ffi_boundary!(default = (), {
        if worker.is_null() {
            return;
        }
        let mut w = Box::from_raw(worker);
        if let Some(inner) = &w.worker {
            inner.stop();
        }
        if in_own_handler(&w.ctx) {
            // Joining here would wait for this very handler: let a helper thread do it.
            let slot = Arc::new(parking_lot::Mutex::new(w.worker.take()));
            let theirs = slot.clone();
            let spawned = std::thread::Builder::new()
                .name("pgq-worker-free".to_string())
                .spawn(move || drop(theirs.lock().take()));
            if let Err(e) = spawned {
                log::error!("cannot free a worker from its handler (no thread: {e}); leaking it");
                std::mem::forget(slot.lock().take());
            }
        }
        drop(w);
    })
}
