//! `pgq_status`, `pgq_error` and the panic boundary.

use std::any::Any;
use std::ffi::{c_char, CString};
use std::panic::{self, AssertUnwindSafe};

use crate::error::{Error, ErrorKind};

/// The result of every fallible call. The numbers are stable: a value is never reused for
/// another meaning, and new values may be added at the end (treat unknown values as
/// `PGQ_STATUS_ERROR`).
///
/// ```c
/// pgq_status st = pgq_install(client, &err);
/// if (st == PGQ_STATUS_PERMISSION_DENIED) { /* ask the DBA */ }
/// ```
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum pgq_status {
    /// Success.
    PGQ_STATUS_OK = 0,
    /// Any error not covered by a more specific status.
    PGQ_STATUS_ERROR = 1,
    /// A required pointer argument was NULL.
    PGQ_STATUS_NULL_POINTER = 2,
    /// A string argument was not valid UTF-8.
    PGQ_STATUS_INVALID_UTF8 = 3,
    /// An argument was rejected (bad name, NUL byte in text, zero where a count is needed...).
    PGQ_STATUS_INVALID_INPUT = 4,
    /// Could not connect to the server (unreachable, refused, bad credentials, bad DSN).
    PGQ_STATUS_CONNECT = 5,
    /// No pooled connection became available in time.
    PGQ_STATUS_POOL = 6,
    /// An established connection broke while in use.
    PGQ_STATUS_CONNECTION_LOST = 7,
    /// The named queue does not exist.
    PGQ_STATUS_NO_SUCH_QUEUE = 8,
    /// The consumer is not registered on the queue.
    PGQ_STATUS_NOT_SUBSCRIBED = 9,
    /// The queue still has consumers (drop it with `force`).
    PGQ_STATUS_CONSUMERS_ATTACHED = 10,
    /// The batch is unknown (already finished, or never existed).
    PGQ_STATUS_NO_SUCH_BATCH = 11,
    /// The event is not part of the batch.
    PGQ_STATUS_NO_SUCH_EVENT = 12,
    /// The tick does not exist.
    PGQ_STATUS_NO_SUCH_TICK = 13,
    /// Inserts into the queue are disabled.
    PGQ_STATUS_INSERT_DISABLED = 14,
    /// The queue's ticker is paused or external.
    PGQ_STATUS_TICKER_DISABLED = 15,
    /// PGQ is not installed in the database (run `pgq_install`).
    PGQ_STATUS_NOT_INSTALLED = 16,
    /// The server refused permission.
    PGQ_STATUS_PERMISSION_DENIED = 17,
    /// Any other error reported by the server (see `pgq_error_sqlstate`).
    PGQ_STATUS_DATABASE = 18,
    /// A wait ran out of time.
    PGQ_STATUS_TIMEOUT = 19,
    /// The worker or ticker has stopped.
    PGQ_STATUS_STOPPED = 20,
    /// The call would wait for the calling thread itself (e.g. joining a worker from its
    /// own handler).
    PGQ_STATUS_WOULD_DEADLOCK = 21,
    /// A handler returned an error.
    PGQ_STATUS_HANDLER = 22,
    /// A bug: Rust code panicked. The message says where; please report it.
    PGQ_STATUS_PANIC = 23,
    /// The handle cannot do this any more (used after finish, commit, stop...).
    PGQ_STATUS_INVALID_STATE = 24,
    /// An index or number was out of range.
    PGQ_STATUS_OUT_OF_RANGE = 25,
    /// A cooperative subconsumer still has an open batch (finish it, or unregister with
    /// release).
    PGQ_STATUS_BATCH_OPEN = 26,
}

impl pgq_status {
    fn from_kind(kind: ErrorKind) -> pgq_status {
        use pgq_status::*;
        match kind {
            ErrorKind::Connect => PGQ_STATUS_CONNECT,
            ErrorKind::Pool => PGQ_STATUS_POOL,
            ErrorKind::ConnectionLost => PGQ_STATUS_CONNECTION_LOST,
            ErrorKind::NoSuchQueue => PGQ_STATUS_NO_SUCH_QUEUE,
            ErrorKind::NotSubscribed => PGQ_STATUS_NOT_SUBSCRIBED,
            ErrorKind::ConsumersAttached => PGQ_STATUS_CONSUMERS_ATTACHED,
            ErrorKind::NoSuchBatch => PGQ_STATUS_NO_SUCH_BATCH,
            ErrorKind::NoSuchEvent => PGQ_STATUS_NO_SUCH_EVENT,
            ErrorKind::BatchOpen => PGQ_STATUS_BATCH_OPEN,
            ErrorKind::NoSuchTick => PGQ_STATUS_NO_SUCH_TICK,
            ErrorKind::InsertDisabled => PGQ_STATUS_INSERT_DISABLED,
            ErrorKind::TickerDisabled => PGQ_STATUS_TICKER_DISABLED,
            ErrorKind::NotInstalled => PGQ_STATUS_NOT_INSTALLED,
            ErrorKind::InvalidInput => PGQ_STATUS_INVALID_INPUT,
            ErrorKind::PermissionDenied => PGQ_STATUS_PERMISSION_DENIED,
            ErrorKind::Database => PGQ_STATUS_DATABASE,
            ErrorKind::Handler => PGQ_STATUS_HANDLER,
            _ => PGQ_STATUS_ERROR,
        }
    }
}

/// An error: status, message and (when the server sent one) SQLSTATE. Created by the
/// library and handed to the caller through a `pgq_error **err` argument; the caller owns
/// it and frees it with `pgq_error_free`. Immutable: a `const pgq_error *` may be read from
/// several threads.
///
/// ```c
/// pgq_error *err = NULL;
/// if (pgq_create_queue(client, "q", 1, NULL, &err) != PGQ_STATUS_OK) {
///     fprintf(stderr, "%s (SQLSTATE %s)\n", pgq_error_message(err),
///             pgq_error_sqlstate(err) ? pgq_error_sqlstate(err) : "-");
///     pgq_error_free(err);
/// }
/// ```
pub struct pgq_error {
    status: pgq_status,
    message: CString,
    sqlstate: Option<CString>,
}

/// The error type of the FFI layer before it becomes a `pgq_error` for C.
#[derive(Debug)]
pub(crate) struct FfiError {
    pub(crate) status: pgq_status,
    pub(crate) message: String,
    pub(crate) sqlstate: Option<String>,
}

impl FfiError {
    pub(crate) fn new(status: pgq_status, message: impl Into<String>) -> FfiError {
        FfiError {
            status,
            message: message.into(),
            sqlstate: None,
        }
    }

    pub(crate) fn null(what: &str) -> FfiError {
        FfiError::new(
            pgq_status::PGQ_STATUS_NULL_POINTER,
            format!("{what} must not be NULL"),
        )
    }

    pub(crate) fn invalid(message: impl Into<String>) -> FfiError {
        FfiError::new(pgq_status::PGQ_STATUS_INVALID_INPUT, message)
    }

    pub(crate) fn state(message: impl Into<String>) -> FfiError {
        FfiError::new(pgq_status::PGQ_STATUS_INVALID_STATE, message)
    }

    fn panic(payload: Box<dyn Any + Send>) -> FfiError {
        let what = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "(no message)".to_string()
        };
        FfiError::new(
            pgq_status::PGQ_STATUS_PANIC,
            format!("internal error: libpgq panicked: {what}; this is a bug, please report it"),
        )
    }

    fn into_c(self) -> pgq_error {
        pgq_error {
            status: self.status,
            message: c_string(self.message),
            sqlstate: self.sqlstate.map(c_string),
        }
    }
}

impl From<Error> for FfiError {
    fn from(e: Error) -> FfiError {
        FfiError {
            status: pgq_status::from_kind(e.kind()),
            message: e.message().to_string(),
            sqlstate: e.sqlstate().map(str::to_string),
        }
    }
}

/// A C string from text that may contain NUL bytes (shown as `\0`).
fn c_string(s: String) -> CString {
    match CString::new(s) {
        Ok(c) => c,
        Err(e) => {
            let text = String::from_utf8_lossy(&e.into_vec()).replace('\0', "\\0");
            CString::new(text).unwrap_or_default()
        }
    }
}

/// Runs a fallible exported body inside the panic boundary; see `ffi_boundary!`.
pub(crate) fn run_fallible(
    err: *mut *mut pgq_error,
    body: impl FnOnce() -> Result<(), FfiError>,
) -> pgq_status {
    let result = panic::catch_unwind(AssertUnwindSafe(body))
        .unwrap_or_else(|payload| Err(FfiError::panic(payload)));
    match result {
        Ok(()) => pgq_status::PGQ_STATUS_OK,
        Err(e) => {
            let status = e.status;
            if !err.is_null() {
                // Building the error object allocates; keep even that inside a boundary.
                let boxed = panic::catch_unwind(AssertUnwindSafe(|| Box::new(e.into_c())));
                if let Ok(b) = boxed {
                    // SAFETY: the caller passes either NULL or a writable `pgq_error **`.
                    unsafe { *err = Box::into_raw(b) };
                }
            }
            status
        }
    }
}

/// Runs an infallible exported body inside the panic boundary; see `ffi_boundary!`.
pub(crate) fn run_infallible<T>(default: T, body: impl FnOnce() -> T) -> T {
    panic::catch_unwind(AssertUnwindSafe(body)).unwrap_or(default)
}

/// The error's message: NUL-terminated UTF-8, valid until `pgq_error_free(e)`. Never NULL
/// (an empty string for a NULL `e`).
#[no_mangle]
pub unsafe extern "C" fn pgq_error_message(e: *const pgq_error) -> *const c_char {
    ffi_boundary!(default = cstr!(""), {
        match e.as_ref() {
            Some(e) => e.message.as_ptr(),
            None => cstr!(""),
        }
    })
}

/// The SQLSTATE the server reported (five characters, NUL-terminated, valid until
/// `pgq_error_free(e)`), or NULL when the error did not come from the server or `e` is NULL.
#[no_mangle]
pub unsafe extern "C" fn pgq_error_sqlstate(e: *const pgq_error) -> *const c_char {
    ffi_boundary!(default = std::ptr::null(), {
        match e.as_ref().and_then(|e| e.sqlstate.as_ref()) {
            Some(s) => s.as_ptr(),
            None => std::ptr::null(),
        }
    })
}

/// The error's status (the same value the failing call returned);
/// `PGQ_STATUS_NULL_POINTER` for a NULL `e`.
#[no_mangle]
pub unsafe extern "C" fn pgq_error_status(e: *const pgq_error) -> pgq_status {
    ffi_boundary!(default = pgq_status::PGQ_STATUS_PANIC, {
        match e.as_ref() {
            Some(e) => e.status,
            None => pgq_status::PGQ_STATUS_NULL_POINTER,
        }
    })
}

/// Frees an error. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn pgq_error_free(e: *mut pgq_error) {
    ffi_boundary!(default = (), {
        if !e.is_null() {
            drop(Box::from_raw(e));
        }
    })
}

/// A short, static, NUL-terminated name of a status ("PGQ_STATUS_NO_SUCH_QUEUE"); "unknown"
/// for values this library does not know.
#[no_mangle]
pub extern "C" fn pgq_status_name(status: u32) -> *const c_char {
    ffi_boundary!(default = cstr!("unknown"), {
        match status {
            0 => cstr!("PGQ_STATUS_OK"),
            1 => cstr!("PGQ_STATUS_ERROR"),
            2 => cstr!("PGQ_STATUS_NULL_POINTER"),
            3 => cstr!("PGQ_STATUS_INVALID_UTF8"),
            4 => cstr!("PGQ_STATUS_INVALID_INPUT"),
            5 => cstr!("PGQ_STATUS_CONNECT"),
            6 => cstr!("PGQ_STATUS_POOL"),
            7 => cstr!("PGQ_STATUS_CONNECTION_LOST"),
            8 => cstr!("PGQ_STATUS_NO_SUCH_QUEUE"),
            9 => cstr!("PGQ_STATUS_NOT_SUBSCRIBED"),
            10 => cstr!("PGQ_STATUS_CONSUMERS_ATTACHED"),
            11 => cstr!("PGQ_STATUS_NO_SUCH_BATCH"),
            12 => cstr!("PGQ_STATUS_NO_SUCH_EVENT"),
            13 => cstr!("PGQ_STATUS_NO_SUCH_TICK"),
            14 => cstr!("PGQ_STATUS_INSERT_DISABLED"),
            15 => cstr!("PGQ_STATUS_TICKER_DISABLED"),
            16 => cstr!("PGQ_STATUS_NOT_INSTALLED"),
            17 => cstr!("PGQ_STATUS_PERMISSION_DENIED"),
            18 => cstr!("PGQ_STATUS_DATABASE"),
            19 => cstr!("PGQ_STATUS_TIMEOUT"),
            20 => cstr!("PGQ_STATUS_STOPPED"),
            21 => cstr!("PGQ_STATUS_WOULD_DEADLOCK"),
            22 => cstr!("PGQ_STATUS_HANDLER"),
            23 => cstr!("PGQ_STATUS_PANIC"),
            24 => cstr!("PGQ_STATUS_INVALID_STATE"),
            25 => cstr!("PGQ_STATUS_OUT_OF_RANGE"),
            26 => cstr!("PGQ_STATUS_BATCH_OPEN"),
            _ => cstr!("unknown"),
        }
    })
}
