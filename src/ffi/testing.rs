//! Test-only hooks, compiled with the cargo feature `test-hooks` (never in a release
//! build). Not part of the ABI: `include/pgq.h` does not declare them; tests declare them
//! themselves.

use super::error::{pgq_error, pgq_status};

/// Panics inside the panic boundary, so tests can check that a Rust panic becomes
/// `PGQ_STATUS_PANIC` with an error message instead of unwinding into C.
#[no_mangle]
pub unsafe extern "C" fn pgq_test_panic(err: *mut *mut pgq_error) -> pgq_status {
    ffi_boundary!(err = err, {
        panic!("pgq_test_panic: deliberate panic for the panic-boundary test");
    })
}
