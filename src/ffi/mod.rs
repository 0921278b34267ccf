//! The stable C ABI (`include/pgq.h`, generated from this module by cbindgen).
//!
//! This module is a thin translation layer: every function here calls the Rust API of the
//! crate and converts arguments, results and errors. Nothing a Rust user lacks lives here.
//!
//! Conventions (the header repeats them for C readers):
//!
//! - Names are `pgq_<type>_<verb>`; the Rust types carry their C names (`pgq_client`,
//!   `pgq_batch`, ...) so a grep finds both sides. Handles are opaque.
//! - Every fallible function returns a [`pgq_status`](error::pgq_status) and takes a last `pgq_error **err`
//!   that may be NULL; on failure `*err` receives a new error object the caller frees with
//!   `pgq_error_free`. Out-parameters are written only on success. There is no thread-local
//!   "last error".
//! - Strings go in as `(const char *ptr, size_t len)`, are validated as UTF-8 and copied;
//!   `len == 0` means the empty string and `ptr` is then not read. Rust never keeps a
//!   caller's pointer. Optional text is a [`pgq_str`] whose `data == NULL` means SQL NULL.
//! - Strings come out as borrowed [`pgq_str`] views (not NUL-terminated) whose lifetime the
//!   function's comment states.
//! - `pgq_x_free(NULL)` does nothing. A builder (`pgq_x_options`) is consumed by the call
//!   that takes it, whether that call succeeds or not.
//! - Every exported body runs inside one panic boundary (`ffi_boundary!`): a Rust panic
//!   becomes `PGQ_STATUS_PANIC` (or a neutral value for functions that cannot fail) and
//!   never unwinds into C.
//! - Thread safety: a `const pgq_x *` may be shared between threads, a `pgq_x *` may not
//!   (one thread at a time; handing it to another thread in between calls is fine), unless
//!   the type's comment says otherwise.
//! - Times are `int64_t` microseconds since the Unix epoch; durations given to the library
//!   are `uint64_t` milliseconds; durations read back are `int64_t` milliseconds with `-1`
//!   for "none".
//!
//! ```c
//! #include <pgq.h>
//! #include <stdio.h>
//! #include <string.h>
//!
//! int main(void) {
//!     pgq_client *client = NULL;
//!     pgq_error *err = NULL;
//!     const char *dsn = "host=localhost dbname=app";
//!     if (pgq_client_connect(dsn, strlen(dsn), NULL, &client, &err) != PGQ_STATUS_OK) {
//!         fprintf(stderr, "connect: %s\n", pgq_error_message(err));
//!         pgq_error_free(err);
//!         return 1;
//!     }
//!     pgq_new_event ev = {0};
//!     ev.type = (pgq_str){"greeting", 8};
//!     ev.data = (pgq_str){"hello", 5};
//!     int64_t id = 0;
//!     if (pgq_send(client, "orders", 6, &ev, &id, &err) != PGQ_STATUS_OK) {
//!         fprintf(stderr, "send: %s\n", pgq_error_message(err));
//!         pgq_error_free(err);
//!     }
//!     pgq_client_free(client);
//!     return 0;
//! }
//! ```
#![allow(non_camel_case_types)]
// The exported functions are called from C; their safety contract is the header comment
// (each states what the pointers must be), repeated here per function would only be noise.
#![allow(clippy::missing_safety_doc)]

/// The panic boundary around every exported function body.
///
/// `ffi_boundary!(err = err_ptr, { ...; Ok(()) })` runs a fallible body returning
/// `Result<(), FfiError>` and yields a `pgq_status`, storing a new `pgq_error` into
/// `*err_ptr` (when not NULL) on failure. `ffi_boundary!(default = value, { ... })` runs an
/// infallible body and yields its value, or `value` if it panicked. A panic is caught with
/// `catch_unwind` in both forms, so it never unwinds into C.
macro_rules! ffi_boundary {
    (err = $err:expr, $body:block) => {
        $crate::ffi::error::run_fallible(
            $err,
            move || -> ::std::result::Result<(), $crate::ffi::error::FfiError> { $body },
        )
    };
    (default = $default:expr, $body:block) => {
        $crate::ffi::error::run_infallible($default, move || $body)
    };
}

/// A static NUL-terminated C string literal as `*const c_char`.
macro_rules! cstr {
    ($s:literal) => {
        concat!($s, "\0").as_ptr().cast::<::std::ffi::c_char>()
    };
}

// Declared in the order the header presents them (cbindgen follows it), one per group
// so that rustfmt keeps the order.
pub mod error;

pub mod text;

pub mod version;

pub mod log;

pub mod client;

pub mod admin;

pub mod producer;

pub mod consumer;

pub mod worker;

pub mod ticker;

#[cfg(feature = "test-hooks")]
pub mod testing;

pub use text::pgq_str;
