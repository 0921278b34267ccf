//! `pgq_client`: the connection pool, and its options.

use std::ffi::c_char;
use std::time::Duration;

use super::error::{pgq_error, pgq_status, FfiError};
use super::text::{handle, handle_mut, out_arg, str_arg};
use crate::client::Client;

/// Options for `pgq_client_connect`: create with `pgq_client_options_new`, set, and pass to
/// `pgq_client_connect`, which consumes them. Not thread-safe (one thread at a time).
///
/// ```c
/// pgq_client_options *o = pgq_client_options_new();
/// pgq_client_options_set_pool_size(o, 4, NULL);
/// pgq_client_connect(dsn, strlen(dsn), o, &client, &err);   /* o is gone now */
/// ```
pub struct pgq_client_options {
    pool_size: Option<u32>,
    connect_timeout: Option<Duration>,
    transaction_pooling: bool,
}

/// A client: a pool of connections to one database. Fully thread-safe: every call takes a
/// `const pgq_client *`, and any number of threads may use one client at once. Objects
/// created from it (consumers, transactions, batches, workers...) keep the pool alive, so
/// the client may be freed before them.
pub struct pgq_client {
    pub(crate) client: Client,
}

/// New options with the defaults (pool of 8 connections, 10 s connect timeout). Free with
/// `pgq_client_options_free` unless passed to `pgq_client_connect`. NULL only if Rust
/// panicked (out of memory aborts instead).
#[no_mangle]
pub extern "C" fn pgq_client_options_new() -> *mut pgq_client_options {
    ffi_boundary!(default = std::ptr::null_mut(), {
        Box::into_raw(Box::new(pgq_client_options {
            pool_size: None,
            connect_timeout: None,
            transaction_pooling: false,
        }))
    })
}

/// Frees options that were not passed to `pgq_client_connect`. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn pgq_client_options_free(opts: *mut pgq_client_options) {
    ffi_boundary!(default = (), {
        if !opts.is_null() {
            drop(Box::from_raw(opts));
        }
    })
}

/// The maximum number of pooled connections (at least 1; default 8). Each open batch,
/// transaction and worker thread holds one while it works.
#[no_mangle]
pub unsafe extern "C" fn pgq_client_options_set_pool_size(
    opts: *mut pgq_client_options,
    n: u32,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let opts = handle_mut("opts", opts)?;
        if n == 0 {
            return Err(FfiError::invalid("pool size must be at least 1"));
        }
        opts.pool_size = Some(n);
        Ok(())
    })
}

/// How long connecting (and waiting for a free pooled connection) may take, in
/// milliseconds (at least 1; default 10000). A `connect_timeout` in the DSN takes precedence
/// for connecting.
#[no_mangle]
pub unsafe extern "C" fn pgq_client_options_set_connect_timeout_ms(
    opts: *mut pgq_client_options,
    ms: u64,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let opts = handle_mut("opts", opts)?;
        if ms == 0 {
            return Err(FfiError::invalid("connect timeout must be at least 1 ms"));
        }
        opts.connect_timeout = Some(Duration::from_millis(ms));
        Ok(())
    })
}

/// Set `enabled` when the DSN points at a connection pooler in transaction pooling mode
/// (PgBouncer `pool_mode = transaction`; default false). The client then sends every
/// statement unnamed or as a simple query and keeps no session state: workers and
/// `pgq_consumer_wait_batch` only poll (no `LISTEN`), and `pgq_ticker_start` refuses the
/// client with `PGQ_STATUS_INVALID_INPUT` (the ticker needs a direct connection for its
/// session advisory lock: give it a client with a DSN to the server itself). SQL you run on
/// a borrowed connection must not rely on a session either.
#[no_mangle]
pub unsafe extern "C" fn pgq_client_options_set_transaction_pooling(
    opts: *mut pgq_client_options,
    enabled: bool,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        handle_mut("opts", opts)?.transaction_pooling = enabled;
        Ok(())
    })
}

/// Connects to the database in `dsn` (libpq key=value or `postgresql://` URL; `dsn_len`
/// bytes, not NUL-terminated) and opens the pool. It connects once right away, so a wrong
/// host or password fails here with `PGQ_STATUS_CONNECT` and the server's reason.
///
/// `opts` may be NULL (defaults); it is consumed in every case, also on failure.
/// On success `*out` is a new client; free it with `pgq_client_free`.
#[no_mangle]
pub unsafe extern "C" fn pgq_client_connect(
    dsn: *const c_char,
    dsn_len: usize,
    opts: *mut pgq_client_options,
    out: *mut *mut pgq_client,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let opts = if opts.is_null() {
            None
        } else {
            Some(Box::from_raw(opts))
        };
        let out = out_arg("out", out)?;
        let dsn = str_arg("dsn", dsn, dsn_len)?;
        let mut builder = Client::builder(dsn);
        if let Some(o) = opts {
            if let Some(n) = o.pool_size {
                builder = builder.pool_size(n);
            }
            if let Some(t) = o.connect_timeout {
                builder = builder.connect_timeout(t);
            }
            builder = builder.transaction_pooling(o.transaction_pooling);
        }
        let client = builder.build()?;
        out.write(Box::into_raw(Box::new(pgq_client { client })));
        Ok(())
    })
}

/// Frees a client. Objects created from it stay usable (they share the pool, which closes
/// when the last of them is freed). NULL is a no-op. No other thread may be using this
/// `pgq_client` pointer during or after the call.
#[no_mangle]
pub unsafe extern "C" fn pgq_client_free(client: *mut pgq_client) {
    ffi_boundary!(default = (), {
        if !client.is_null() {
            drop(Box::from_raw(client));
        }
    })
}

/// Shared by the admin, producer and consumer modules.
pub(crate) unsafe fn client_arg<'a>(client: *const pgq_client) -> Result<&'a Client, FfiError> {
    handle("client", client).map(|c| &c.client)
}
