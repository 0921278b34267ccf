//! Ticking, retry-event moves and maintenance: the [`Ticker`] service, and each step as a
//! function callable once.
//!
//! Consumers only see events once a *tick* has been taken after them, retried events only
//! come back once moved out of the retry queue, and event tables only rotate when maintenance
//! runs. [`Ticker`] does all three on its own threads (see [`service`] for how); the free
//! functions below are the single steps, for your own loop or a one-off call.
//!
//! Only one ticker should tick a database at a time; [`Ticker`] makes sure of that among
//! libpgq tickers, the single steps do not.
//!
//! ```no_run
//! # fn main() -> pgq::Result<()> {
//! let client = pgq::Client::connect("host=localhost dbname=app")?;
//! // The service:
//! let ticker = pgq::Ticker::builder(&client).start()?;
//! # drop(ticker);
//! // Or the steps, from your own loop:
//! let ticked = client.tick_all()?;
//! let moved = client.retry_events()?;
//! let report = client.maintenance()?;
//! # Ok(()) }
//! ```

pub mod service;

pub use service::{
    Ticker, TickerBuilder, TickerDatabaseStats, TickerState, TickerStats, TICK_CHANNEL,
};

use postgres::types::Type;
use postgres::GenericClient;

use crate::client::{check_name, Client};
use crate::error::{Error, ErrorKind, Result};

/// `pgq.ticker()`: ticks every queue that is due (see PGQ's tick rules) and returns how many
/// queues were ticked. Paused and external-ticker queues are skipped.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// let mut conn = postgres::Client::connect("host=localhost dbname=app", postgres::NoTls)?;
/// let n = pgq::ticker::tick_all(&mut conn)?;
/// # Ok(()) }
/// ```
pub fn tick_all(conn: &mut impl GenericClient) -> Result<i64> {
    let row = conn
        .query_typed_one("select pgq.ticker()", &[])
        .map_err(|e| Error::from(e).context("tick all queues"))?;
    Ok(row.get::<_, Option<i64>>(0).unwrap_or(0))
}

/// `pgq.ticker(queue)`: ticks one queue if it is due; returns the new tick id, or `None` when
/// no tick was needed. Fails with [`ErrorKind::TickerDisabled`] for a paused or
/// external-ticker queue and [`ErrorKind::NoSuchQueue`] for an unknown one.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let mut conn = postgres::Client::connect("dbname=app", postgres::NoTls)?;
/// if let Some(tick) = pgq::ticker::tick_queue(&mut conn, "orders")? {
///     println!("tick {tick}");
/// }
/// # Ok(()) }
/// ```
pub fn tick_queue(conn: &mut impl GenericClient, queue: &str) -> Result<Option<i64>> {
    check_name("queue", queue)?;
    let row = conn
        .query_typed_one("select pgq.ticker($1)", &[(&queue, Type::TEXT)])
        .map_err(|e| Error::from(e).context(format_args!("tick queue {queue:?}")))?;
    Ok(row.get(0))
}

/// `pgq.force_tick(queue)`: makes the queue due, so the next ticker call ticks it whatever
/// its thresholds; returns the queue's last tick id (the one before the forced tick).
///
/// To tick at once, follow it with [`tick_queue`]:
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let mut conn = postgres::Client::connect("dbname=app", postgres::NoTls)?;
/// pgq::ticker::force_tick(&mut conn, "orders")?;
/// let tick = pgq::ticker::tick_queue(&mut conn, "orders")?;
/// assert!(tick.is_some());
/// # Ok(()) }
/// ```
pub fn force_tick(conn: &mut impl GenericClient, queue: &str) -> Result<i64> {
    check_name("queue", queue)?;
    let row = conn
        .query_typed_one("select pgq.force_tick($1)", &[(&queue, Type::TEXT)])
        .map_err(|e| Error::from(e).context(format_args!("force tick on {queue:?}")))?;
    // The SQL function returns NULL rather than raising for an unknown queue.
    row.get::<_, Option<i64>>(0)
        .ok_or_else(|| crate::admin::no_such_queue(queue))
}

/// `pgq.maint_retry_events()` repeated until it returns 0: moves every due retry event back
/// into its queue. Returns the total moved.
///
/// On a plain connection each call commits separately, so a long backlog is moved in small
/// transactions.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let mut conn = postgres::Client::connect("dbname=app", postgres::NoTls)?;
/// let moved = pgq::ticker::retry_events(&mut conn)?;
/// # Ok(()) }
/// ```
pub fn retry_events(conn: &mut impl GenericClient) -> Result<u64> {
    let mut total = 0u64;
    loop {
        let row = conn
            .query_typed_one("select pgq.maint_retry_events()", &[])
            .map_err(|e| Error::from(e).context("move due retry events"))?;
        let n = row.get::<_, Option<i32>>(0).unwrap_or(0);
        if n <= 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

/// What [`maintenance`] did.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let client = pgq::Client::connect("dbname=app")?;
/// let r = client.maintenance()?;
/// println!("{} calls, {} tables vacuumed", r.function_calls, r.tables_vacuumed);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Operations `pgq.maint_operations()` listed.
    pub operations: u64,
    /// Maintenance function calls made (a function that asks to be called again counts
    /// once per call).
    pub function_calls: u64,
    /// Tables vacuumed.
    pub tables_vacuumed: u64,
}

/// A function that keeps asking to be called again is stopped after this many calls, so a
/// misbehaving extra-maintenance function cannot hang the caller.
const MAX_CALLS_PER_OPERATION: u32 = 1000;

/// Runs every operation `pgq.maint_operations()` lists (table rotation step 1 and 2, the
/// queues' extra maintenance functions, vacuum), each in its own transaction; `VACUUM` runs
/// outside a transaction, as it must. A function is called again while it returns a positive
/// number.
///
/// Takes a plain connection because `VACUUM` cannot run inside a transaction.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// let mut conn = postgres::Client::connect("host=localhost dbname=app", postgres::NoTls)?;
/// let report = pgq::ticker::maintenance(&mut conn)?;
/// # Ok(()) }
/// ```
pub fn maintenance(conn: &mut postgres::Client) -> Result<MaintenanceReport> {
    let (ops, mut report) = list_operations(conn)?;
    for (func, arg) in &ops {
        run_operation(conn, func, arg.as_deref(), &mut report)?;
    }
    Ok(report)
}

/// Like [`maintenance`], but an operation that fails (in its own transaction, rolled back)
/// does not keep the others from running; their errors come back with the report. Stops
/// early only when the connection is gone.
pub(crate) fn maintenance_keep_going(
    conn: &mut postgres::Client,
) -> Result<(MaintenanceReport, Vec<Error>)> {
    let (ops, mut report) = list_operations(conn)?;
    let mut errors = Vec::new();
    for (func, arg) in &ops {
        if let Err(e) = run_operation(conn, func, arg.as_deref(), &mut report) {
            if conn.is_closed() || e.kind() == ErrorKind::ConnectionLost {
                return Err(e);
            }
            errors.push(e);
        }
    }
    Ok((report, errors))
}

type Operation = (String, Option<String>);

/// `pgq.maint_operations()`, and a report that counts them.
fn list_operations(conn: &mut postgres::Client) -> Result<(Vec<Operation>, MaintenanceReport)> {
    let rows = conn
        .query_typed(
            "select func_name, func_arg from pgq.maint_operations()",
            &[],
        )
        .map_err(|e| Error::from(e).context("list maintenance operations"))?;
    let report = MaintenanceReport {
        operations: rows.len() as u64,
        ..MaintenanceReport::default()
    };
    let mut ops = Vec::with_capacity(rows.len());
    for row in &rows {
        let func: Option<String> = row.try_get(0)?;
        let arg: Option<String> = row.try_get(1)?;
        if let Some(func) = func {
            ops.push((func, arg));
        }
    }
    Ok((ops, report))
}

/// One maintenance operation: `VACUUM` outside a transaction, or the function called in its
/// own transaction, again while it returns a positive number.
fn run_operation(
    conn: &mut postgres::Client,
    func: &str,
    arg: Option<&str>,
    report: &mut MaintenanceReport,
) -> Result<()> {
    let lower = func.trim().to_ascii_lowercase();
    if lower == "vacuum" || lower == "vacuum analyze" {
        if let Some(table) = arg {
            if vacuum(conn, &lower, table)? {
                report.tables_vacuumed += 1;
            }
        }
        return Ok(());
    }
    if !is_function_name(func) {
        return Err(Error::new(
            ErrorKind::Other,
            format!("pgq.maint_operations() returned a bad function name: {func:?}"),
        ));
    }
    let sql = match arg {
        Some(_) => format!("select ({func}($1::text))::text"),
        None => format!("select ({func}())::text"),
    };
    for _ in 0..MAX_CALLS_PER_OPERATION {
        let mut tx = conn.transaction()?;
        let row = match &arg {
            Some(a) => tx.query_typed_one(sql.as_str(), &[(a, Type::TEXT)]),
            None => tx.query_typed_one(sql.as_str(), &[]),
        }
        .map_err(|e| {
            Error::from(e).context(format_args!("maintenance {func}({})", arg.unwrap_or("")))
        })?;
        tx.commit()?;
        report.function_calls += 1;
        let again = row
            .get::<_, Option<String>>(0)
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(0);
        if again <= 0 {
            break;
        }
    }
    Ok(())
}

/// Vacuums `table` if it still exists; the name is resolved and quoted by the server.
fn vacuum(conn: &mut postgres::Client, how: &str, table: &str) -> Result<bool> {
    let row = conn
        .query_typed_opt(
            "select format('%I.%I', n.nspname, c.relname) \
               from pg_catalog.pg_class c \
               join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
              where c.oid = to_regclass($1)",
            &[(&table, Type::TEXT)],
        )
        .map_err(|e| Error::from(e).context(format_args!("vacuum {table}")))?;
    // no row: the table is gone (e.g. its queue was dropped) - nothing to do
    let Some(row) = row else { return Ok(false) };
    let quoted: String = row.get(0);
    let verb = if how == "vacuum analyze" {
        "vacuum analyze"
    } else {
        "vacuum"
    };
    conn.batch_execute(&format!("{verb} {quoted}"))
        .map_err(|e| Error::from(e).context(format_args!("{verb} {table}")))?;
    Ok(true)
}

/// `schema.function` or `function`, plain identifier characters only, since the name is
/// spliced into SQL.
fn is_function_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.is_empty() || parts.len() > 2 {
        return false;
    }
    parts.iter().all(|p| {
        let mut chars = p.chars();
        match chars.next() {
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
            _ => return false,
        }
        chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

impl Client {
    /// Ticks every due queue; see [`tick_all`].
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let n = client.tick_all()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn tick_all(&self) -> Result<i64> {
        tick_all(&mut *self.get()?)
    }

    /// Ticks one queue if due; see [`tick_queue`].
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let tick = client.tick_queue("orders")?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn tick_queue(&self, queue: &str) -> Result<Option<i64>> {
        tick_queue(&mut *self.get()?, queue)
    }

    /// Makes a queue due for a tick; see [`force_tick`].
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// client.force_tick("orders")?;
    /// client.tick_queue("orders")?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn force_tick(&self, queue: &str) -> Result<i64> {
        force_tick(&mut *self.get()?, queue)
    }

    /// Moves all due retry events back into their queues; see [`retry_events`].
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let moved = client.retry_events()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn retry_events(&self) -> Result<u64> {
        retry_events(&mut *self.get()?)
    }

    /// Runs the maintenance operations; see [`maintenance`].
    ///
    /// ```no_run
    /// # let client = pgq::Client::connect("dbname=app")?;
    /// let report = client.maintenance()?;
    /// # Ok::<(), pgq::Error>(())
    /// ```
    pub fn maintenance(&self) -> Result<MaintenanceReport> {
        maintenance(&mut *self.get()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names() {
        assert!(is_function_name("pgq.maint_rotate_tables_step1"));
        assert!(is_function_name("my_maint"));
        assert!(!is_function_name("pgq.x; drop table t"));
        assert!(!is_function_name("a.b.c"));
        assert!(!is_function_name(""));
        assert!(!is_function_name("1abc"));
    }
}
