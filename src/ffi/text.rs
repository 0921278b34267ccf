//! `pgq_str` and the argument checks shared by every exported function.

use std::ffi::c_char;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::error::{pgq_status, FfiError};

/// A string view: `len` bytes of UTF-8 at `data`, NOT NUL-terminated.
///
/// As input (event fields), `data == NULL` means SQL NULL (and `len` is ignored); otherwise
/// `len` bytes are read and copied during the call (`len == 0` is the empty string).
/// As output, the view borrows from the object it came from; the function's comment says
/// how long it stays valid, and `data == NULL` means SQL NULL.
///
/// ```c
/// pgq_str s = pgq_event_data(ev);
/// if (s.data) printf("%.*s\n", (int)s.len, s.data); else printf("NULL\n");
/// ```
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct pgq_str {
    /// First byte, or NULL for SQL NULL.
    pub data: *const c_char,
    /// Length in bytes.
    pub len: usize,
}

impl pgq_str {
    pub(crate) const NULL: pgq_str = pgq_str {
        data: std::ptr::null(),
        len: 0,
    };

    pub(crate) fn of(s: &str) -> pgq_str {
        pgq_str {
            data: s.as_ptr().cast(),
            len: s.len(),
        }
    }

    pub(crate) fn of_opt(s: Option<&str>) -> pgq_str {
        s.map_or(pgq_str::NULL, pgq_str::of)
    }
}

/// Borrows `len` bytes at `ptr` as UTF-8; `len == 0` gives "" without reading `ptr`.
pub(crate) unsafe fn str_arg<'a>(
    what: &str,
    ptr: *const c_char,
    len: usize,
) -> Result<&'a str, FfiError> {
    if len == 0 {
        return Ok("");
    }
    if ptr.is_null() {
        return Err(FfiError::null(what));
    }
    if len > isize::MAX as usize {
        return Err(FfiError::invalid(format!(
            "{what}: length {len} is out of range"
        )));
    }
    let bytes = std::slice::from_raw_parts(ptr.cast::<u8>(), len);
    std::str::from_utf8(bytes).map_err(|e| {
        FfiError::new(
            pgq_status::PGQ_STATUS_INVALID_UTF8,
            format!("{what} is not valid UTF-8 ({e})"),
        )
    })
}

/// An optional text input: `data == NULL` is SQL NULL.
pub(crate) unsafe fn opt_str_arg<'a>(what: &str, s: pgq_str) -> Result<Option<&'a str>, FfiError> {
    if s.data.is_null() {
        return Ok(None);
    }
    str_arg(what, s.data, s.len).map(Some)
}

/// A required handle.
pub(crate) unsafe fn handle<'a, T>(what: &str, p: *const T) -> Result<&'a T, FfiError> {
    p.as_ref().ok_or_else(|| FfiError::null(what))
}

/// A required handle the caller lends exclusively for the call.
pub(crate) unsafe fn handle_mut<'a, T>(what: &str, p: *mut T) -> Result<&'a mut T, FfiError> {
    p.as_mut().ok_or_else(|| FfiError::null(what))
}

/// Checks a required out-parameter up front, so nothing is done when it is NULL.
pub(crate) fn out_arg<T>(what: &str, p: *mut T) -> Result<*mut T, FfiError> {
    if p.is_null() {
        Err(FfiError::null(what))
    } else {
        Ok(p)
    }
}

/// Writes an optional out-parameter when the caller gave one.
pub(crate) unsafe fn set_opt<T>(p: *mut T, value: T) {
    if !p.is_null() {
        p.write(value);
    }
}

/// Checks the `struct_size` a caller put in a stats struct: at least the size of the
/// struct's first ABI version (the current size until fields are appended).
pub(crate) fn check_struct_size(
    what: &str,
    size: usize,
    first_version: usize,
) -> Result<(), FfiError> {
    if size < first_version {
        return Err(FfiError::new(
            pgq_status::PGQ_STATUS_OUT_OF_RANGE,
            format!(
                "{what}.struct_size is {size}; set it to sizeof({what}) ({first_version} or more)"
            ),
        ));
    }
    Ok(())
}

/// Writes the first `size` bytes of `value` (all of it if `size` is larger) to `out`, so a
/// caller compiled against a smaller, older version of the struct gets the fields it
/// knows; `struct_size` in the result says how much the library filled.
pub(crate) unsafe fn write_prefix<T: Copy>(out: *mut T, value: &T, size: usize) {
    let n = size.min(std::mem::size_of::<T>());
    std::ptr::copy_nonoverlapping((value as *const T).cast::<u8>(), out.cast::<u8>(), n);
}

/// Microseconds since the Unix epoch (negative before it, saturating).
pub(crate) fn time_us(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |us| -us),
    }
}

/// Milliseconds, saturating.
pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Milliseconds, or -1 for none.
pub(crate) fn opt_ms(d: Option<Duration>) -> i64 {
    d.map_or(-1, ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str_args() {
        unsafe {
            assert_eq!(str_arg("q", std::ptr::null(), 0).unwrap(), "");
            let e = str_arg("q", std::ptr::null(), 3).unwrap_err();
            assert_eq!(e.status, pgq_status::PGQ_STATUS_NULL_POINTER);
            let bad = [0xffu8, 0xfe];
            let e = str_arg("queue name", bad.as_ptr().cast(), 2).unwrap_err();
            assert_eq!(e.status, pgq_status::PGQ_STATUS_INVALID_UTF8);
            assert!(e.message.contains("queue name"), "{}", e.message);
            let ok = "abc";
            assert_eq!(str_arg("q", ok.as_ptr().cast(), 2).unwrap(), "ab");
            assert_eq!(opt_str_arg("x", pgq_str::NULL).unwrap(), None);
        }
    }

    #[test]
    fn times() {
        assert_eq!(time_us(UNIX_EPOCH + Duration::from_micros(5)), 5);
        assert_eq!(time_us(UNIX_EPOCH - Duration::from_micros(5)), -5);
        assert_eq!(opt_ms(None), -1);
        assert_eq!(opt_ms(Some(Duration::from_millis(1500))), 1500);
    }
}
