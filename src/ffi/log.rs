//! Forwarding the library's `log` records to a C callback.
//!
//! The first successful `pgq_set_logger` installs this module's forwarder as the process'
//! `log` logger; later calls only swap the callback. A process whose Rust code already
//! installed another `log` logger gets an error instead (its logger keeps the records).

use std::ffi::{c_char, c_void};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, RwLock};

use super::error::{pgq_error, pgq_status, FfiError};

/// A log level: one of the `PGQ_LOG_*` values.
pub type pgq_log_level = u32;
/// No records (as `max_level`: logging off).
pub const PGQ_LOG_OFF: pgq_log_level = 0;
/// Errors.
pub const PGQ_LOG_ERROR: pgq_log_level = 1;
/// Warnings.
pub const PGQ_LOG_WARN: pgq_log_level = 2;
/// Information.
pub const PGQ_LOG_INFO: pgq_log_level = 3;
/// Debugging detail.
pub const PGQ_LOG_DEBUG: pgq_log_level = 4;
/// Very verbose tracing.
pub const PGQ_LOG_TRACE: pgq_log_level = 5;

/// Receives one log record: its level, its target (the Rust module, e.g. `pgq::consumer`)
/// and its message, both as (pointer, length) UTF-8 that are NOT NUL-terminated and valid
/// only during the call.
///
/// Called on whichever thread logs, possibly on several threads at once: it must be
/// thread-safe, should be quick, and must not unwind (no C++ exceptions, no longjmp). It may
/// call other pgq functions, including `pgq_set_logger` (the new logger applies to later
/// records).
pub type pgq_log_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        level: pgq_log_level,
        target: *const c_char,
        target_len: usize,
        msg: *const c_char,
        msg_len: usize,
    ),
>;

/// Frees a callback's `user_data` when the library no longer needs it.
pub type pgq_free_fn = Option<unsafe extern "C" fn(user_data: *mut c_void)>;

struct CLogger {
    cb: unsafe extern "C" fn(
        *mut c_void,
        pgq_log_level,
        *const c_char,
        usize,
        *const c_char,
        usize,
    ),
    user_data: *mut c_void,
    user_data_free: pgq_free_fn,
}

// SAFETY: the header requires the callback and its user_data to be usable from any thread.
unsafe impl Send for CLogger {}
unsafe impl Sync for CLogger {}

impl Drop for CLogger {
    fn drop(&mut self) {
        if let Some(free) = self.user_data_free {
            // SAFETY: called once, after the last record went to this logger.
            unsafe { free(self.user_data) };
        }
    }
}

/// The current callback. Records take an `Arc` clone and call it without holding the lock,
/// so a callback may log or replace the logger; the old `user_data` is freed when the last
/// record in flight has returned.
static CURRENT: RwLock<Option<Arc<CLogger>>> = RwLock::new(None);
/// Serialises installation of the forwarder; `true` once it is the process' logger.
static INSTALLED: Mutex<bool> = Mutex::new(false);

struct Forwarder;

static FORWARDER: Forwarder = Forwarder;

fn current() -> Option<Arc<CLogger>> {
    match CURRENT.read() {
        Ok(g) => g.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

fn replace(new: Option<Arc<CLogger>>) -> Option<Arc<CLogger>> {
    match CURRENT.write() {
        Ok(mut g) => std::mem::replace(&mut *g, new),
        Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), new),
    }
}

impl log::Log for Forwarder {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let Some(logger) = current() else { return };
        let level = match record.level() {
            log::Level::Error => PGQ_LOG_ERROR,
            log::Level::Warn => PGQ_LOG_WARN,
            log::Level::Info => PGQ_LOG_INFO,
            log::Level::Debug => PGQ_LOG_DEBUG,
            log::Level::Trace => PGQ_LOG_TRACE,
        };
        let mut msg = String::new();
        if write!(msg, "{}", record.args()).is_err() {
            return;
        }
        let target = record.target();
        // SAFETY: the callback was given to pgq_set_logger with this contract.
        unsafe {
            (logger.cb)(
                logger.user_data,
                level,
                target.as_ptr().cast(),
                target.len(),
                msg.as_ptr().cast(),
                msg.len(),
            )
        };
    }

    fn flush(&self) {}
}

fn level_filter(level: pgq_log_level) -> Result<log::LevelFilter, FfiError> {
    Ok(match level {
        PGQ_LOG_OFF => log::LevelFilter::Off,
        PGQ_LOG_ERROR => log::LevelFilter::Error,
        PGQ_LOG_WARN => log::LevelFilter::Warn,
        PGQ_LOG_INFO => log::LevelFilter::Info,
        PGQ_LOG_DEBUG => log::LevelFilter::Debug,
        PGQ_LOG_TRACE => log::LevelFilter::Trace,
        other => {
            return Err(FfiError::invalid(format!(
                "max_level {other} is not a pgq_log_level (0 = off .. 5 = trace)"
            )))
        }
    })
}

/// Sends the library's log records up to `max_level` to `cb`, replacing any previous
/// callback (whose `user_data_free` is then called, once no record is in flight on it).
/// `cb == NULL` turns logging off (`user_data` and `user_data_free` are then ignored);
/// so does `max_level == PGQ_LOG_OFF`.
///
/// `user_data` is passed to every call of `cb`; `user_data_free` (may be NULL) is called
/// exactly once when the library drops this logger, on whichever thread does that. On
/// failure the library keeps nothing and does not call `user_data_free`.
///
/// Fails with `PGQ_STATUS_INVALID_INPUT` for an unknown `max_level`, and with
/// `PGQ_STATUS_INVALID_STATE` when the process (its Rust code) already installed another
/// `log` logger.
///
/// ```c
/// static void on_log(void *ud, pgq_log_level lvl, const char *t, size_t tl,
///                    const char *m, size_t ml) {
///     (void)ud; fprintf(stderr, "[%u] %.*s: %.*s\n", lvl, (int)tl, t, (int)ml, m);
/// }
/// pgq_set_logger(on_log, NULL, NULL, PGQ_LOG_INFO, &err);
/// ```
#[no_mangle]
pub unsafe extern "C" fn pgq_set_logger(
    cb: pgq_log_fn,
    user_data: *mut c_void,
    user_data_free: pgq_free_fn,
    max_level: pgq_log_level,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let filter = level_filter(max_level)?;
        let Some(cb) = cb else {
            log::set_max_level(log::LevelFilter::Off);
            drop(replace(None));
            return Ok(());
        };
        {
            let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
            if !*installed {
                log::set_logger(&FORWARDER).map_err(|_| {
                    FfiError::state(
                        "another `log` logger is already installed in this process; \
                         its records cannot be forwarded to a C callback",
                    )
                })?;
                *installed = true;
            }
        }
        let logger = CLogger {
            cb,
            user_data,
            user_data_free,
        };
        let old = replace(Some(Arc::new(logger)));
        log::set_max_level(filter);
        drop(old);
        Ok(())
    })
}
