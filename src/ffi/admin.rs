//! Administration: install, queues, consumers, ticks, and the info objects.

use std::ffi::c_char;

use super::client::{client_arg, pgq_client};
use super::error::{pgq_error, pgq_status};
use super::text::{ms, opt_ms, out_arg, pgq_str, set_opt, str_arg, time_us};
use crate::admin::{ConsumerInfo, QueueInfo};

/// Installs PGQ into the client's database, or upgrades an older install of this library's
/// schema in place; does nothing when it is current (also when the official `pgq`
/// extension is installed).
///
/// ```c
/// if (pgq_install(client, &err) != PGQ_STATUS_OK) { ... }
/// ```
#[no_mangle]
pub unsafe extern "C" fn pgq_install(
    client: *const pgq_client,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        client_arg(client)?.install()?;
        Ok(())
    })
}

/// Creates queue `q` (`q_len` bytes of UTF-8). `*created` (may be NULL) is true if it was
/// created, false if it already existed.
#[no_mangle]
pub unsafe extern "C" fn pgq_create_queue(
    client: *const pgq_client,
    q: *const c_char,
    q_len: usize,
    created: *mut bool,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let c = client_arg(client)?;
        let q = str_arg("queue name", q, q_len)?;
        let was_created = c.create_queue(q)?;
        set_opt(created, was_created);
        Ok(())
    })
}

/// Drops queue `q` and its events. With consumers still registered it fails with
/// `PGQ_STATUS_CONSUMERS_ATTACHED` unless `force` is true.
#[no_mangle]
pub unsafe extern "C" fn pgq_drop_queue(
    client: *const pgq_client,
    q: *const c_char,
    q_len: usize,
    force: bool,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let c = client_arg(client)?;
        let q = str_arg("queue name", q, q_len)?;
        c.drop_queue(q, force)?;
        Ok(())
    })
}

/// Sets one queue parameter as `pgq.set_queue_config` takes it: the name without the
/// `queue_` prefix (`ticker_max_lag`, `ticker_max_count`, `ticker_idle_period`,
/// `ticker_paused`, `rotation_period`, `external_ticker`, `disable_insert`...) and the value
/// as text (`"5 seconds"`, `"1000"`, `"true"`).
#[no_mangle]
pub unsafe extern "C" fn pgq_set_queue_config(
    client: *const pgq_client,
    q: *const c_char,
    q_len: usize,
    param: *const c_char,
    param_len: usize,
    value: *const c_char,
    value_len: usize,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let c = client_arg(client)?;
        let q = str_arg("queue name", q, q_len)?;
        let param = str_arg("parameter name", param, param_len)?;
        let value = str_arg("parameter value", value, value_len)?;
        c.set_queue_config_raw(q, param, value)?;
        Ok(())
    })
}

/// Registers consumer `consumer` on queue `q`, starting at the newest tick. `*created` (may
/// be NULL) is true if it was newly registered.
#[no_mangle]
pub unsafe extern "C" fn pgq_register_consumer(
    client: *const pgq_client,
    q: *const c_char,
    q_len: usize,
    consumer: *const c_char,
    consumer_len: usize,
    created: *mut bool,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let c = client_arg(client)?;
        let q = str_arg("queue name", q, q_len)?;
        let consumer = str_arg("consumer name", consumer, consumer_len)?;
        let was_created = c.register_consumer(q, consumer)?;
        set_opt(created, was_created);
        Ok(())
    })
}

/// Registers consumer `consumer` on `q`, or repositions it, so its next batch starts after
/// tick `tick_id` (an open batch is dropped). `*created` (may be NULL) is true if it was
/// newly registered. Unknown tick: `PGQ_STATUS_NO_SUCH_TICK`.
#[no_mangle]
pub unsafe extern "C" fn pgq_register_consumer_at(
    client: *const pgq_client,
    q: *const c_char,
    q_len: usize,
    consumer: *const c_char,
    consumer_len: usize,
    tick_id: i64,
    created: *mut bool,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let c = client_arg(client)?;
        let q = str_arg("queue name", q, q_len)?;
        let consumer = str_arg("consumer name", consumer, consumer_len)?;
        let was_created = c.register_consumer_at(q, consumer, tick_id)?;
        set_opt(created, was_created);
        Ok(())
    })
}

/// Unregisters consumer `consumer` from queue `q`, dropping its pending retries. Succeeds
/// also when it was not registered.
#[no_mangle]
pub unsafe extern "C" fn pgq_unregister_consumer(
    client: *const pgq_client,
    q: *const c_char,
    q_len: usize,
    consumer: *const c_char,
    consumer_len: usize,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let c = client_arg(client)?;
        let q = str_arg("queue name", q, q_len)?;
        let consumer = str_arg("consumer name", consumer, consumer_len)?;
        c.unregister_consumer(q, consumer)?;
        Ok(())
    })
}

/// One ticker round over all queues (`pgq.ticker()`): ticks every queue whose thresholds
/// are due. `*ticked` (may be NULL) receives what `pgq.ticker()` returned (the number of
/// queues looked at). A long-running service should use `pgq_ticker_start` instead.
#[no_mangle]
pub unsafe extern "C" fn pgq_tick(
    client: *const pgq_client,
    ticked: *mut i64,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let n = client_arg(client)?.tick_all()?;
        set_opt(ticked, n);
        Ok(())
    })
}

/// Ticks queue `q` if its thresholds are due (`pgq.ticker(q)`); `*tick_id` (may be NULL)
/// receives the new tick id, or -1 if no tick was needed.
#[no_mangle]
pub unsafe extern "C" fn pgq_tick_queue(
    client: *const pgq_client,
    q: *const c_char,
    q_len: usize,
    tick_id: *mut i64,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let c = client_arg(client)?;
        let q = str_arg("queue name", q, q_len)?;
        let t = c.tick_queue(q)?;
        set_opt(tick_id, t.unwrap_or(-1));
        Ok(())
    })
}

/// Makes queue `q` due (`pgq.force_tick`), so the next tick of it happens whatever its
/// thresholds. Follow with `pgq_tick_queue` to tick at once.
#[no_mangle]
pub unsafe extern "C" fn pgq_force_tick(
    client: *const pgq_client,
    q: *const c_char,
    q_len: usize,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let c = client_arg(client)?;
        let q = str_arg("queue name", q, q_len)?;
        c.force_tick(q)?;
        Ok(())
    })
}

/// Moves retry events whose time has come back into their queues (`pgq.maint_retry_events`,
/// what a ticker does periodically). `*moved` (may be NULL) receives how many moved.
#[no_mangle]
pub unsafe extern "C" fn pgq_retry_events(
    client: *const pgq_client,
    moved: *mut u64,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let n = client_arg(client)?.retry_events()?;
        set_opt(moved, n);
        Ok(())
    })
}

/// One maintenance round (table rotation, cleanup, vacuum), what a ticker does
/// periodically. `*operations` (may be NULL) receives the number of operations performed.
#[no_mangle]
pub unsafe extern "C" fn pgq_maintenance(
    client: *const pgq_client,
    operations: *mut u64,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let report = client_arg(client)?.maintenance()?;
        set_opt(operations, report.operations);
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// Queue info

/// One queue's settings and state (a row of `pgq.get_queue_info()`). Immutable: a `const
/// pgq_queue_info *` may be read from several threads. Owned (free with
/// `pgq_queue_info_free`) when it came from `pgq_queue_info_get`; borrowed from its list
/// (valid until `pgq_queue_list_free`, never freed on its own) when it came from
/// `pgq_queue_list_at`. Accessors return 0 / an empty view for a NULL pointer.
pub struct pgq_queue_info {
    info: QueueInfo,
}

/// A list of queues, from `pgq_queue_list_get`. Immutable, may be read from several threads.
pub struct pgq_queue_list {
    items: Vec<pgq_queue_info>,
}

/// Reads queue `q`'s info into a new `*out` (free with `pgq_queue_info_free`).
/// Unknown queue: `PGQ_STATUS_NO_SUCH_QUEUE`.
#[no_mangle]
pub unsafe extern "C" fn pgq_queue_info_get(
    client: *const pgq_client,
    q: *const c_char,
    q_len: usize,
    out: *mut *mut pgq_queue_info,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let c = client_arg(client)?;
        let out = out_arg("out", out)?;
        let q = str_arg("queue name", q, q_len)?;
        let info = c.queue_info(q)?;
        out.write(Box::into_raw(Box::new(pgq_queue_info { info })));
        Ok(())
    })
}

/// Frees an info object from `pgq_queue_info_get` (never one from `pgq_queue_list_at`).
/// NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn pgq_queue_info_free(info: *mut pgq_queue_info) {
    ffi_boundary!(default = (), {
        if !info.is_null() {
            drop(Box::from_raw(info));
        }
    })
}

/// Reads all queues into a new `*out` (free with `pgq_queue_list_free`).
#[no_mangle]
pub unsafe extern "C" fn pgq_queue_list_get(
    client: *const pgq_client,
    out: *mut *mut pgq_queue_list,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let c = client_arg(client)?;
        let out = out_arg("out", out)?;
        let items = c
            .queues()?
            .into_iter()
            .map(|info| pgq_queue_info { info })
            .collect();
        out.write(Box::into_raw(Box::new(pgq_queue_list { items })));
        Ok(())
    })
}

/// Number of queues in the list (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn pgq_queue_list_len(list: *const pgq_queue_list) -> usize {
    ffi_boundary!(default = 0, { list.as_ref().map_or(0, |l| l.items.len()) })
}

/// The `i`-th queue, borrowed from the list (valid until `pgq_queue_list_free`); NULL when
/// `i` is out of range or `list` is NULL.
#[no_mangle]
pub unsafe extern "C" fn pgq_queue_list_at(
    list: *const pgq_queue_list,
    i: usize,
) -> *const pgq_queue_info {
    ffi_boundary!(default = std::ptr::null(), {
        list.as_ref()
            .and_then(|l| l.items.get(i))
            .map_or(std::ptr::null(), |q| q as *const pgq_queue_info)
    })
}

/// Frees a queue list and every info borrowed from it. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn pgq_queue_list_free(list: *mut pgq_queue_list) {
    ffi_boundary!(default = (), {
        if !list.is_null() {
            drop(Box::from_raw(list));
        }
    })
}

/// The queue's name; borrowed from `info`, valid as long as it is.
#[no_mangle]
pub unsafe extern "C" fn pgq_queue_info_name(info: *const pgq_queue_info) -> pgq_str {
    ffi_boundary!(default = pgq_str::NULL, {
        info.as_ref()
            .map_or(pgq_str::NULL, |x| pgq_str::of(&x.info.name))
    })
}

/// Number of rotating event tables.
#[no_mangle]
pub unsafe extern "C" fn pgq_queue_info_ntables(info: *const pgq_queue_info) -> i32 {
    ffi_boundary!(default = 0, { info.as_ref().map_or(0, |x| x.info.ntables) })
}

/// The event table inserts go to now.
#[no_mangle]
pub unsafe extern "C" fn pgq_queue_info_cur_table(info: *const pgq_queue_info) -> i32 {
    ffi_boundary!(default = 0, {
        info.as_ref().map_or(0, |x| x.info.cur_table)
    })
}

/// How often the event tables rotate, in milliseconds.
#[no_mangle]
pub unsafe extern "C" fn pgq_queue_info_rotation_period_ms(info: *const pgq_queue_info) -> i64 {
    ffi_boundary!(default = 0, {
        info.as_ref().map_or(0, |x| ms(x.info.rotation_period))
    })
}

/// When the tables last rotated, in microseconds since the Unix epoch.
#[no_mangle]
pub unsafe extern "C" fn pgq_queue_info_switch_time_us(info: *const pgq_queue_info) -> i64 {
    ffi_boundary!(default = 0, {
        info.as_ref().map_or(0, |x| time_us(x.info.switch_time))
    })
}

/// Whether ticks come from an external source.
#[no_mangle]
pub unsafe extern "C" fn pgq_queue_info_external_ticker(info: *const pgq_queue_info) -> bool {
    ffi_boundary!(default = false, {
        info.as_ref().is_some_and(|x| x.info.external_ticker)
    })
}

/// Whether ticking is paused.
#[no_mangle]
pub unsafe extern "C" fn pgq_queue_info_ticker_paused(info: *const pgq_queue_info) -> bool {
    ffi_boundary!(default = false, {
        info.as_ref().is_some_and(|x| x.info.ticker_paused)
    })
}

/// Tick after this many events.
#[no_mangle]
pub unsafe extern "C" fn pgq_queue_info_ticker_max_count(info: *const pgq_queue_info) -> i32 {
    ffi_boundary!(default = 0, {
        info.as_ref().map_or(0, |x| x.info.ticker_max_count)
    })
}

/// Tick at least this often while events come, in milliseconds.
#[no_mangle]
pub unsafe extern "C" fn pgq_queue_info_ticker_max_lag_ms(info: *const pgq_queue_info) -> i64 {
    ffi_boundary!(default = 0, {
        info.as_ref().map_or(0, |x| ms(x.info.ticker_max_lag))
    })
}

/// Tick this often when idle, in milliseconds.
#[no_mangle]
pub unsafe extern "C" fn pgq_queue_info_ticker_idle_period_ms(info: *const pgq_queue_info) -> i64 {
    ffi_boundary!(default = 0, {
        info.as_ref().map_or(0, |x| ms(x.info.ticker_idle_period))
    })
}

/// Time since the last tick in milliseconds, -1 if unknown.
#[no_mangle]
pub unsafe extern "C" fn pgq_queue_info_ticker_lag_ms(info: *const pgq_queue_info) -> i64 {
    ffi_boundary!(default = -1, {
        info.as_ref().map_or(-1, |x| opt_ms(x.info.ticker_lag))
    })
}

/// Recent events per second, -1.0 if unknown.
#[no_mangle]
pub unsafe extern "C" fn pgq_queue_info_ev_per_sec(info: *const pgq_queue_info) -> f64 {
    ffi_boundary!(default = -1.0, {
        info.as_ref()
            .map_or(-1.0, |x| x.info.ev_per_sec.unwrap_or(-1.0))
    })
}

/// Events inserted since the last tick.
#[no_mangle]
pub unsafe extern "C" fn pgq_queue_info_ev_new(info: *const pgq_queue_info) -> i64 {
    ffi_boundary!(default = 0, { info.as_ref().map_or(0, |x| x.info.ev_new) })
}

/// The last tick's id, -1 if none.
#[no_mangle]
pub unsafe extern "C" fn pgq_queue_info_last_tick_id(info: *const pgq_queue_info) -> i64 {
    ffi_boundary!(default = -1, {
        info.as_ref()
            .map_or(-1, |x| x.info.last_tick_id.unwrap_or(-1))
    })
}

// ---------------------------------------------------------------------------------------
// Consumer info

/// One consumer's state on one queue (a row of `pgq.get_consumer_info()`). Immutable, may
/// be read from several threads; borrowed from its list (valid until
/// `pgq_consumer_list_free`). Accessors return -1 / an empty view for a NULL pointer.
pub struct pgq_consumer_info {
    info: ConsumerInfo,
}

/// A list of consumers, from `pgq_consumer_list_get`. Immutable, may be read from several
/// threads.
pub struct pgq_consumer_list {
    items: Vec<pgq_consumer_info>,
}

/// Reads the consumers of queue `q` (or of all queues when `q` is NULL; `q_len` is then
/// ignored) into a new `*out` (free with `pgq_consumer_list_free`).
#[no_mangle]
pub unsafe extern "C" fn pgq_consumer_list_get(
    client: *const pgq_client,
    q: *const c_char,
    q_len: usize,
    out: *mut *mut pgq_consumer_list,
    err: *mut *mut pgq_error,
) -> pgq_status {
    ffi_boundary!(err = err, {
        let c = client_arg(client)?;
        let out = out_arg("out", out)?;
        let q = if q.is_null() {
            None
        } else {
            Some(str_arg("queue name", q, q_len)?)
        };
        let items = c
            .consumer_info(q, None)?
            .into_iter()
            .map(|info| pgq_consumer_info { info })
            .collect();
        out.write(Box::into_raw(Box::new(pgq_consumer_list { items })));
        Ok(())
    })
}

/// Number of consumers in the list (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn pgq_consumer_list_len(list: *const pgq_consumer_list) -> usize {
    ffi_boundary!(default = 0, { list.as_ref().map_or(0, |l| l.items.len()) })
}

/// The `i`-th consumer, borrowed from the list (valid until `pgq_consumer_list_free`);
/// NULL when `i` is out of range or `list` is NULL.
#[no_mangle]
pub unsafe extern "C" fn pgq_consumer_list_at(
    list: *const pgq_consumer_list,
    i: usize,
) -> *const pgq_consumer_info {
    ffi_boundary!(default = std::ptr::null(), {
        list.as_ref()
            .and_then(|l| l.items.get(i))
            .map_or(std::ptr::null(), |c| c as *const pgq_consumer_info)
    })
}

/// Frees a consumer list and every info borrowed from it. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn pgq_consumer_list_free(list: *mut pgq_consumer_list) {
    ffi_boundary!(default = (), {
        if !list.is_null() {
            drop(Box::from_raw(list));
        }
    })
}

/// The queue's name; borrowed, valid as long as `info` is.
#[no_mangle]
pub unsafe extern "C" fn pgq_consumer_info_queue(info: *const pgq_consumer_info) -> pgq_str {
    ffi_boundary!(default = pgq_str::NULL, {
        info.as_ref()
            .map_or(pgq_str::NULL, |x| pgq_str::of(&x.info.queue_name))
    })
}

/// The consumer's name; borrowed, valid as long as `info` is.
#[no_mangle]
pub unsafe extern "C" fn pgq_consumer_info_name(info: *const pgq_consumer_info) -> pgq_str {
    ffi_boundary!(default = pgq_str::NULL, {
        info.as_ref()
            .map_or(pgq_str::NULL, |x| pgq_str::of(&x.info.consumer_name))
    })
}

/// How far behind the consumer is, in milliseconds; -1 if unknown.
#[no_mangle]
pub unsafe extern "C" fn pgq_consumer_info_lag_ms(info: *const pgq_consumer_info) -> i64 {
    ffi_boundary!(default = -1, {
        info.as_ref().map_or(-1, |x| opt_ms(x.info.lag))
    })
}

/// Time since the consumer last finished a batch, in milliseconds; -1 if unknown.
#[no_mangle]
pub unsafe extern "C" fn pgq_consumer_info_last_seen_ms(info: *const pgq_consumer_info) -> i64 {
    ffi_boundary!(default = -1, {
        info.as_ref().map_or(-1, |x| opt_ms(x.info.last_seen))
    })
}

/// The last tick the consumer finished, -1 if none.
#[no_mangle]
pub unsafe extern "C" fn pgq_consumer_info_last_tick(info: *const pgq_consumer_info) -> i64 {
    ffi_boundary!(default = -1, {
        info.as_ref().map_or(-1, |x| x.info.last_tick.unwrap_or(-1))
    })
}

/// The open batch's id, -1 if none.
#[no_mangle]
pub unsafe extern "C" fn pgq_consumer_info_current_batch(info: *const pgq_consumer_info) -> i64 {
    ffi_boundary!(default = -1, {
        info.as_ref()
            .map_or(-1, |x| x.info.current_batch.unwrap_or(-1))
    })
}

/// The open batch's end tick, -1 if none.
#[no_mangle]
pub unsafe extern "C" fn pgq_consumer_info_next_tick(info: *const pgq_consumer_info) -> i64 {
    ffi_boundary!(default = -1, {
        info.as_ref().map_or(-1, |x| x.info.next_tick.unwrap_or(-1))
    })
}

/// Events waiting for the consumer, -1 if unknown.
#[no_mangle]
pub unsafe extern "C" fn pgq_consumer_info_pending_events(info: *const pgq_consumer_info) -> i64 {
    ffi_boundary!(default = -1, {
        info.as_ref()
            .map_or(-1, |x| x.info.pending_events.unwrap_or(-1))
    })
}
