//! The ticker service: `pgq_ticker_*`.

use std::ffi::c_char;
use std::time::Duration;

use parking_lot::Mutex;

use super::client::{client_arg, pgq_client};
use super::error::{pgq_error, pgq_status, FfiError};
use super::text::{check_struct_size, handle, handle_mut, out_arg, str_arg, time_us, write_prefix};
use crate::ticker::service::DEFAULT_MIN_TICK_LAG;
use crate::ticker::{Ticker, TickerStats};

/// Options for `pgq_ticker_start`, which consumes them. One thread at a time.
///
/// ```c
/// pgq_ticker_options *o = pgq_ticker_options_new();
/// pgq_ticker_options_set_ticker_period_ms(o, 200, NULL);
/// pgq_ticker_start(client, o, &ticker, &err);
/// ```
pub struct pgq_ticker_options {
    ticker_period: Option<Duration>,
    retry_period: Option<Duration>,
    maint_period: Option<Duration>,
    takeover_period: Option<Duration>,
    notify: bool,
    name: Option<String>,
    /// None: the builder's default; Some(None): eager ticking off.
    eager: Option<Option<Duration>>,
}

/// A running ticker service: one thread per database that ticks the queues, moves due
/// retry events back and runs maintenance, like pgqd. Only one ticker per database is
/// active; others stand by and take over when it goes away. `pgq_ticker_stop` and
/// `pgq_ticker_stats_get` may be called from any thread; `pgq_ticker_join` / `pgq_ticker_free`
/// take `pgq_ticker *` (other calls wait while a join runs).
pub struct pgq_ticker {
    ticker: Mutex<Ticker>,
}

/// A snapshot of a ticker's counters, filled by `pgq_ticker_stats_get`. Set `struct_size` to
/// `sizeof(pgq_ticker_stats)` before the call (see `pgq_worker_stats`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct pgq_ticker_stats {
    /// In: `sizeof(pgq_ticker_stats)` as the caller knows it.
    pub struct_size: u32,
    /// Databases where this ticker is the active one.
    pub active: u32,
    /// Databases where it stands by (another ticker is active).
    pub standby: u32,
    /// Ticks created.
    pub ticks: u64,
    /// Ticker rounds run.
    pub rounds: u64,
    /// Retry events moved back into their queues.
    pub retry_events_moved: u64,
    /// Maintenance runs.
    pub maintenance_runs: u64,
    /// Maintenance operations performed.
    pub maintenance_calls: u64,
    /// Tables vacuumed by maintenance.
    pub tables_vacuumed: u64,
    /// Errors (each retried after a backoff).
    pub errors: u64,
    /// Reconnections after errors.
    pub reconnects: u64,
    /// When the last tick was created, microseconds since the Unix epoch; -1 if never.
    pub last_tick_us: i64,
    /// Rounds that ran the full `pgq.ticker()` (not only the cheap checks). Added in
    /// libpgq 0.1 after the first release of this struct: a caller compiled with the
    /// struct without it gets the fields before it.
    pub full_rounds: u64,
}

/// New ticker options with pgqd's defaults. NULL only if Rust panicked.
#[no_mangle]
pub extern "C" fn pgq_ticker_options_new() -> *mut pgq_ticker_options {
    ffi_boundary!(default = std::ptr::null_mut(), {
        Box::into_raw(Box::new(pgq_ticker_options {
            ticker_period: None,
            retry_period: None,
            maint_period: None,
            takeover_period: None,
            notify: true,
            name: None,
            eager: None,
        }))
    })
}

/// Frees options that were not passed to `pgq_ticker_start`. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn pgq_ticker_options_free(opts: *mut pgq_ticker_options) {
    ffi_boundary!(default = (), {
        if !opts.is_null() {
            drop(Box::from_raw(opts));
        }
    })
}

unsafe fn period(
    opts: *mut pgq_ticker_options,
    ms: u64,
    what: &str,
    set: impl FnOnce(&mut pgq_ticker_options, Duration),
) -> Result<(), FfiError> {
    let o = handle_mut("opts", opts)?;
    if ms == 0 {
        return Err(FfiError::invalid(format!("{what} must be at least 1 ms")));
    }
    set(o, Duration::from_millis(ms));
    Ok(())
}

/// Pause between ticker rounds in ms (at least 1; pgqd's `ticker_period`).
#[no_mangle]
pub unsafe extern "C" fn pgq_ticker_options_set_ticker_period_ms(
    opts: *mut pgq_ticker_options,
    ms: u64,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        period(opts, ms, "ticker period", |o, d| o.ticker_period = Some(d))
    })
}

/// Pause between moving due retry events back, in ms (at least 1; pgqd's `retry_period`).
#[no_mangle]
pub unsafe extern "C" fn pgq_ticker_options_set_retry_period_ms(
    opts: *mut pgq_ticker_options,
    ms: u64,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        period(opts, ms, "retry period", |o, d| o.retry_period = Some(d))
    })
}

/// Pause between maintenance runs in ms (at least 1; pgqd's `maint_period`).
#[no_mangle]
pub unsafe extern "C" fn pgq_ticker_options_set_maint_period_ms(
    opts: *mut pgq_ticker_options,
    ms: u64,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        period(opts, ms, "maintenance period", |o, d| {
            o.maint_period = Some(d)
        })
    })
}

/// How often a standby ticker tries to become the active one, in ms (at least 1).
#[no_mangle]
pub unsafe extern "C" fn pgq_ticker_options_set_takeover_period_ms(
    opts: *mut pgq_ticker_options,
    ms: u64,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        period(opts, ms, "takeover period", |o, d| {
            o.takeover_period = Some(d)
        })
    })
}

/// Whether to send a `pgq_tick` notification after rounds that created ticks, which wakes
/// waiting consumers and workers at once (default true).
#[no_mangle]
pub unsafe extern "C" fn pgq_ticker_options_set_notify(
    opts: *mut pgq_ticker_options,
    notify: bool,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        handle_mut("opts", opts)?.notify = notify;
        Ok(())
    })
}

/// Eager ticking (default on): tick a queue as soon as it has new events and its last
/// tick is at least `min_lag_ms` old (0: the library's default, 5 ms), instead of waiting
/// for the queue's `ticker_max_count` events or `ticker_max_lag`, so consumers see events
/// about one ticker round after their commit. `eager = false` ticks by the queue's rules
/// only, like pgqd (fewer, larger batches). Needs libpgq's schema; on the official
/// extension the ticker falls back to the queue's rules.
#[no_mangle]
pub unsafe extern "C" fn pgq_ticker_options_set_eager(
    opts: *mut pgq_ticker_options,
    eager: bool,
    min_lag_ms: u64,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let o = handle_mut("opts", opts)?;
        o.eager = Some(if !eager {
            None
        } else if min_lag_ms == 0 {
            Some(DEFAULT_MIN_TICK_LAG)
        } else {
            Some(Duration::from_millis(min_lag_ms))
        });
        Ok(())
    })
}

/// A label for the ticker's thread name and log lines (default: the database name).
#[no_mangle]
pub unsafe extern "C" fn pgq_ticker_options_set_name(
    opts: *mut pgq_ticker_options,
    name: *const c_char,
    name_len: usize,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let o = handle_mut("opts", opts)?;
        o.name = Some(str_arg("name", name, name_len)?.to_string());
        Ok(())
    })
}

/// Starts a ticker for the client's database (on its own connection, not from the pool)
/// and returns at once; connecting happens on the ticker's thread, and a database that is
/// down is retried. `opts` may be NULL (defaults) and is consumed in every case. On
/// success `*out` is the ticker: stop it with `pgq_ticker_stop` + `pgq_ticker_join`, or
/// `pgq_ticker_free`.
#[no_mangle]
pub unsafe extern "C" fn pgq_ticker_start(
    client: *const pgq_client,
    opts: *mut pgq_ticker_options,
    out: *mut *mut pgq_ticker,
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
        let mut b = Ticker::builder(c);
        if let Some(o) = opts {
            if let Some(d) = o.ticker_period {
                b = b.ticker_period(d);
            }
            if let Some(d) = o.retry_period {
                b = b.retry_period(d);
            }
            if let Some(d) = o.maint_period {
                b = b.maint_period(d);
            }
            if let Some(d) = o.takeover_period {
                b = b.takeover_period(d);
            }
            b = b.notify(o.notify);
            if let Some(n) = o.name {
                b = b.name(n);
            }
            if let Some(e) = o.eager {
                b = b.eager(e);
            }
        }
        let ticker = b.start()?;
        out.write(Box::into_raw(Box::new(pgq_ticker {
            ticker: Mutex::new(ticker),
        })));
        Ok(())
    })
}

/// Asks the ticker to stop; returns at once. Idempotent, any thread.
#[no_mangle]
pub unsafe extern "C" fn pgq_ticker_stop(
    ticker: *const pgq_ticker,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        handle("ticker", ticker)?.ticker.lock().stop();
        Ok(())
    })
}

/// Stops the ticker if needed and waits for its threads to end. Joining again returns OK.
#[no_mangle]
pub unsafe extern "C" fn pgq_ticker_join(
    ticker: *mut pgq_ticker,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        handle_mut("ticker", ticker)?.ticker.lock().join()?;
        Ok(())
    })
}

/// Fills `*out` with the ticker's counters summed over its databases (set
/// `out->struct_size` first).
#[no_mangle]
pub unsafe extern "C" fn pgq_ticker_stats_get(
    ticker: *const pgq_ticker,
    out: *mut pgq_ticker_stats,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let t = handle("ticker", ticker)?;
        let out = out_arg("out", out)?;
        let size = (*out).struct_size as usize;
        // The struct's first version ended before full_rounds.
        check_struct_size(
            "pgq_ticker_stats",
            size,
            std::mem::offset_of!(pgq_ticker_stats, full_rounds),
        )?;
        let s: TickerStats = t.ticker.lock().stats();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let full = pgq_ticker_stats {
            struct_size: size.min(std::mem::size_of::<pgq_ticker_stats>()) as u32,
            active: count(s.active),
            standby: count(s.standby),
            ticks: s.ticks,
            rounds: s.rounds,
            retry_events_moved: s.retry_events_moved,
            maintenance_runs: s.maintenance_runs,
            maintenance_calls: s.maintenance_calls,
            tables_vacuumed: s.tables_vacuumed,
            errors: s.errors,
            reconnects: s.reconnects,
            last_tick_us: s.last_tick.map_or(-1, time_us),
            full_rounds: s.full_rounds,
        };
        write_prefix(out, &full, size);
        Ok(())
    })
}

/// Stops the ticker, waits for its threads and frees it. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn pgq_ticker_free(ticker: *mut pgq_ticker) {
    ffi_boundary!(default = (), {
        if !ticker.is_null() {
            drop(Box::from_raw(ticker));
        }
    })
}
