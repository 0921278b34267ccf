//! Library and ABI version.

use std::ffi::c_char;

/// The ABI version this library implements. It changes only when the ABI changes in an
/// incompatible way (never within one SONAME, `libpgq.so.0`); additions keep it. The
/// header's `PGQ_ABI_VERSION` macro has the same value, so a program can compare the
/// library it loaded with the header it was compiled against.
pub const ABI_VERSION: u32 = 1;

/// The library version, e.g. "0.1.0": static, NUL-terminated (equal to the header's
/// `PGQ_VERSION` when header and library match).
///
/// ```c
/// printf("libpgq %s, ABI %u\n", pgq_version(), pgq_abi_version());
/// ```
#[no_mangle]
pub extern "C" fn pgq_version() -> *const c_char {
    ffi_boundary!(default = std::ptr::null(), {
        concat!(env!("CARGO_PKG_VERSION"), "\0")
            .as_ptr()
            .cast::<c_char>()
    })
}

/// The ABI version of the loaded library; equal to the header's `PGQ_ABI_VERSION` when they
/// match. Wrappers (Python, Go) refuse to run with a library whose ABI version differs.
#[no_mangle]
pub extern "C" fn pgq_abi_version() -> u32 {
    ffi_boundary!(default = ABI_VERSION, { ABI_VERSION })
}
