//! The direct insert path of [`Client::send`](crate::Client::send) and
//! [`Client::send_many`](crate::Client::send_many) on libpgq's own schema.
//!
//! `pgq.insert_event` has to find the queue's current event table on every call, and a
//! PL/pgSQL function can insert into a table whose name changes only through `EXECUTE`,
//! which plans the INSERT again on every call: most of the cost of a one-event transaction.
//! On a pooled connection the library can do better. It remembers, per connection and queue,
//! the current table, and inserts into it with one plain statement whose own `WHERE` makes
//! sure that the remembered table may still be written.
//!
//! From schema revision 9 that check reads no table. `pgq._direct_lease` returns the table
//! together with a *lease*, a range of transaction ids, and the statement is
//!
//! ```sql
//! insert into pgq.event_1_2 (ev_type, ev_data, ...) select $1, $2, ...
//!  where txid_current() >= $7 and txid_current() < $8
//! returning ev_id
//! ```
//!
//! Whatever changes where or whether direct inserts may go (rotation step 1, a change of
//! `queue_disable_insert` or `queue_per_tx_limit`) ends every lease before it commits: a
//! trigger on `pgq.queue` assigns a lease's span of transaction ids right after the update,
//! so every transaction that starts after the change has a txid past every older lease. The
//! lookup reads the queue row `FOR SHARE` (and drops that lock at once), so it never grants a
//! lease from a row whose change is still in progress. `src/schema/sql/30_produce.sql` gives
//! the whole argument. A lease also runs out by itself after the span (1000 transaction ids
//! of the whole server); the statement then inserts nothing and the library looks the queue
//! up again, as after a rotation.
//!
//! A steady producer never gets there: the statement also returns the row's txid, and the
//! send that finds it within [`RENEW_AHEAD`] ids of the lease's end looks up the next lease
//! right after its own commit. The connections of one client share their newest lease
//! ([`LeaseBook`]), so with several threads sending, the server is asked about once per span,
//! not once per span and connection.
//!
//! Before revision 9 (and for [`Client::send_many`](crate::Client::send_many)'s chunks,
//! whose cost is per statement, not per event) the check reads the queue row itself:
//!
//! ```sql
//! insert into pgq.event_1_2 (ev_type, ev_data, ...) select $1, $2, ...
//!  where exists (select 1 from pgq.queue q where q.queue_id = 1 and q.queue_cur_table = 2
//!                   and not q.queue_disable_insert and q.queue_per_tx_limit is null)
//! returning ev_id
//! ```
//!
//! The check is an uncorrelated sub-select, evaluated once before any row is inserted. When
//! it fails (the tables rotated, the queue changed) nothing is inserted, the statement
//! returns no row, and the library looks the queue up again and retries. It costs a plain
//! INSERT about 8% at four threads: it is one more relation to lock and read.
//!
//! Why this is safe under rotation: the check reads the queue row in the statement's
//! snapshot, and the statement's txid is assigned only when it inserts, after that
//! snapshot. A writer that still saw the old table can therefore get a txid after step 1 of
//! a rotation. Revision 3 of our schema makes `pgq.maint_rotate_tables_step2` wait until no
//! session of the database holds a snapshot older than step 1 (see its comment), so such a
//! writer's txid is always below the step-2 mark and readers still search the old table for
//! it. (A leased insert's txid is below the first txid after step 1's burn, so below the
//! mark too.) The official extension does not wait there, so on it (and on revisions before
//! 3) the library calls `pgq.insert_event` as before.
//!
//! Queues with `queue_disable_insert` or `queue_per_tx_limit`, and roles without INSERT on
//! the event table, use `pgq.insert_event` too, which applies those rules.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use postgres::types::{ToSql, Type};

use crate::client::{
    pooled_execute, pooled_query_opt, typed_cached_statement, unnamed_only, PooledConnection,
};
use crate::error::{Error, Result};
use crate::event::NewEvent;

/// The first schema revision whose rotation step 2 waits for old snapshots.
const DIRECT_SINCE_REVISION: u32 = 3;
/// The first schema revision that grants leases (`pgq._direct_lease`).
const LEASE_SINCE_REVISION: u32 = 9;

/// How long a queue found unfit for the direct path (inserts disabled, a per-transaction
/// limit, no INSERT privilege) keeps using `pgq.insert_event` before it is looked at again.
const RECHECK_UNFIT: Duration = Duration::from_secs(5);

/// Events in one `send_many` statement at most; bigger sends are split into several
/// statements (in one transaction), so that no statement's arrays grow without bound.
const CHUNK_EVENTS: usize = 5000;
/// Payload bytes (all fields) of one `send_many` statement at most (a single bigger event
/// still goes alone).
const CHUNK_BYTES: usize = 16 << 20;

/// How many transaction ids before its end a lease is renewed, by the send that finds its
/// own txid that close to the end: the producer then never runs into the end of a lease
/// (an INSERT that inserts nothing, then the lookup) while it sends steadily.
const RENEW_AHEAD: i64 = 250;

/// Where direct inserts for one queue go on one connection.
pub(crate) struct Target {
    /// Which queue and table: a lease is for one table of one queue.
    queue_id: i32,
    cur_table: i32,
    /// One event: `insert … select $1..$6 where <check> returning ev_id`; with a lease,
    /// the check is `txid_current()` within `$7..$8` (see [`Lease`]), and the statement
    /// also returns the row's txid, which tells how much of the lease is left.
    one: String,
    /// `insert … select from unnest($1..$6) where <check on pgq.queue>`.
    many: String,
    /// The lease the single-event statement is checked against (schema revision 9 on);
    /// renewed in place ([`renew_ahead`], [`LeaseBook`]).
    lease: Option<LeaseCell>,
    /// `one` prepared on the connection whose cache holds this target, from its first use
    /// on (never in transaction pooling mode): the per-event path then neither hashes the
    /// statement's text nor builds a parameter list.
    one_prepared: OnceLock<postgres::Statement>,
}

/// A range of transaction ids in which the queue's remembered table may be written
/// without reading `pgq.queue` again: `pgq._direct_lease` grants it, and any change of the
/// queue's table or insert rules ends it at once (schema revision 9, `30_produce.sql`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    from: i64,
    until: i64,
}

/// A [`Lease`] that the one thread using the connection replaces in place.
struct LeaseCell {
    from: AtomicI64,
    until: AtomicI64,
}

impl LeaseCell {
    fn new(lease: Lease) -> LeaseCell {
        LeaseCell {
            from: AtomicI64::new(lease.from),
            until: AtomicI64::new(lease.until),
        }
    }

    fn get(&self) -> Lease {
        Lease {
            from: self.from.load(Ordering::Relaxed),
            until: self.until.load(Ordering::Relaxed),
        }
    }

    fn set(&self, lease: Lease) {
        self.from.store(lease.from, Ordering::Relaxed);
        self.until.store(lease.until, Ordering::Relaxed);
    }
}

/// The newest lease per queue that any connection of one [`Client`](crate::Client) was
/// granted, so that its connections share one lease instead of each looking up its own:
/// with `n` threads sending, a lease's span of server txids passes `n` times faster than
/// one thread's share of it.
///
/// A lease is a fact about one database of one server (its txids and its queue row), not
/// about a session, so any session of that database may insert under it; the server still
/// checks every insert against it. Entries name their server ([`DirectCache::server`]), so
/// that a connection never takes a lease of another server (a DSN with several hosts).
#[derive(Default)]
pub(crate) struct LeaseBook(parking_lot::Mutex<HashMap<String, Shared>>);

struct Shared {
    server: Arc<str>,
    queue_id: i32,
    cur_table: i32,
    lease: Lease,
    /// A connection is looking up the next lease: the others keep theirs meanwhile.
    renewing: bool,
}

impl Shared {
    /// Enters `lease` for `target`'s table as the queue's entry (the book is bounded: one
    /// client that sends to very many queues starts over).
    fn put(
        book: &mut HashMap<String, Shared>,
        server: &Arc<str>,
        queue: &str,
        target: &Target,
        lease: Lease,
        renewing: bool,
    ) {
        if book.len() >= 1024 && !book.contains_key(queue) {
            book.clear();
        }
        let entry = Shared {
            server: Arc::clone(server),
            queue_id: target.queue_id,
            cur_table: target.cur_table,
            lease,
            renewing,
        };
        book.insert(queue.to_string(), entry);
    }
}

/// What a connection whose lease is ending should do.
enum Turn {
    /// Take this newer lease, granted to another connection.
    Adopt(Lease),
    /// Look up the next lease (and [`LeaseBook::publish`] it).
    Renew,
    /// Another connection is renewing; go on with the current lease.
    Wait,
}

impl LeaseBook {
    /// A lease for `target`'s table on `server` that ends after `until`, if one is known.
    fn newer(&self, server: &str, queue: &str, target: &Target, until: i64) -> Option<Lease> {
        let book = self.0.lock();
        let s = book.get(queue)?;
        (s.server.as_ref() == server
            && s.queue_id == target.queue_id
            && s.cur_table == target.cur_table
            && s.lease.until > until)
            .then_some(s.lease)
    }

    /// [`newer`](Self::newer), or else whether this connection should renew.
    fn turn(&self, server: &Arc<str>, queue: &str, target: &Target, until: i64) -> Turn {
        let mut book = self.0.lock();
        match book.get_mut(queue) {
            Some(s) if s.server == *server => {
                if s.queue_id == target.queue_id
                    && s.cur_table == target.cur_table
                    && s.lease.until > until
                {
                    Turn::Adopt(s.lease)
                } else if s.renewing {
                    Turn::Wait
                } else {
                    s.renewing = true;
                    Turn::Renew
                }
            }
            _ => {
                // A placeholder that fits no one until the lookup publishes.
                let none = Lease { from: 0, until: 0 };
                Shared::put(&mut book, server, queue, target, none, true);
                Turn::Renew
            }
        }
    }

    /// Records a lease just granted on `server` (and ends a renewal turn for the queue);
    /// the newest lease known is kept.
    fn publish(&self, server: &Arc<str>, queue: &str, target: &Target) {
        let Some(lease) = target.lease.as_ref().map(LeaseCell::get) else {
            return;
        };
        let mut book = self.0.lock();
        if let Some(s) = book.get_mut(queue) {
            s.renewing = false;
            if s.server == *server && s.lease.until >= lease.until {
                return;
            }
        }
        Shared::put(&mut book, server, queue, target, lease, false);
    }

    /// Ends a renewal turn that granted nothing (the lookup failed).
    fn end_turn(&self, queue: &str) {
        if let Some(s) = self.0.lock().get_mut(queue) {
            s.renewing = false;
        }
    }
}

impl Target {
    fn new(queue_id: i32, cur_table: i32, table: &str, lease: Option<Lease>) -> Target {
        let columns = "(ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4)";
        let check = format!(
            "where exists (select 1 from pgq.queue q where q.queue_id = {queue_id} \
             and q.queue_cur_table = {cur_table} and not q.queue_disable_insert \
             and q.queue_per_tx_limit is null)"
        );
        let one_check = match lease {
            // Both bounds: a lease also never fits another cluster's ids by chance.
            Some(_) => "where pg_catalog.txid_current() >= $7::int8 \
                        and pg_catalog.txid_current() < $8::int8"
                .to_string(),
            None => check.clone(),
        };
        Target {
            one: format!(
                "insert into {table} {columns} \
                 select $1::text, $2::text, $3::text, $4::text, $5::text, $6::text \
                 {one_check} returning ev_id{}",
                if lease.is_some() { ", ev_txid" } else { "" }
            ),
            many: format!(
                "insert into {table} {columns} \
                 select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], \
                 $5::text[], $6::text[]) {check}"
            ),
            queue_id,
            cur_table,
            lease: lease.map(LeaseCell::new),
            one_prepared: OnceLock::new(),
        }
    }
}

/// What one pooled connection knows (kept in its r2d2 extensions).
#[derive(Default)]
struct DirectCache {
    /// Our schema's revision on this connection's database (`Some(None)`: not ours, or not
    /// readable); see [`schema_revision`].
    revision: Option<Option<u32>>,
    /// Which server and database the connection talks to (read with the revision): leases
    /// are shared only between connections to the same one ([`LeaseBook`]).
    server: Option<Arc<str>>,
    /// Per queue: its target, or when it was last found unfit.
    queues: HashMap<String, Entry>,
    /// The target used last (also in `queues`): a producer that sends to one queue in a loop
    /// finds it without hashing the queue's name.
    last: Option<(String, Arc<Target>)>,
}

enum Entry {
    Direct(Arc<Target>),
    Unfit(Instant),
}

/// The queue's direct target on `conn`, or `None` when `pgq.insert_event` must be used
/// (another schema, an unknown queue — whose error insert_event reports —, an unfit queue).
pub(crate) fn target(conn: &mut PooledConnection, queue: &str) -> Result<Option<Arc<Target>>> {
    target_with(conn, queue, None)
}

/// [`target`], publishing a lease it looks up in `book`.
fn target_with(
    conn: &mut PooledConnection,
    queue: &str,
    book: Option<&LeaseBook>,
) -> Result<Option<Arc<Target>>> {
    if let Some(c) = PooledConnection::extensions_mut(conn).get_mut::<DirectCache>() {
        match &c.last {
            Some((q, t)) if q == queue => return Ok(Some(Arc::clone(t))),
            _ => {}
        }
        match c.queues.get(queue) {
            Some(Entry::Direct(t)) => {
                let t = Arc::clone(t);
                c.last = Some((queue.to_string(), Arc::clone(&t)));
                return Ok(Some(t));
            }
            Some(Entry::Unfit(at)) if at.elapsed() < RECHECK_UNFIT => return Ok(None),
            _ => {}
        }
    }
    // (Cached per connection after the first look.)
    let Some(revision) = schema_revision(conn)?.filter(|rev| *rev >= DIRECT_SINCE_REVISION) else {
        return Ok(None);
    };
    let found = lookup(conn, queue, revision >= LEASE_SINCE_REVISION)?.map(Arc::new);
    if let (Some(book), Some(t), Some(server)) = (book, &found, server(conn)) {
        book.publish(&server, queue, t);
    }
    store(conn, queue, found.clone());
    Ok(found)
}

/// Remembers the queue's target on `conn` (`None`: unfit, for a while).
fn store(conn: &mut PooledConnection, queue: &str, found: Option<Arc<Target>>) {
    let c = cache(conn);
    // Bounded: a connection that has sent to very many queues starts over.
    if c.queues.len() >= 1024 {
        c.queues.clear();
    }
    c.last = found.as_ref().map(|t| (queue.to_string(), Arc::clone(t)));
    let entry = match found {
        Some(t) => Entry::Direct(t),
        None => Entry::Unfit(Instant::now()),
    };
    c.queues.insert(queue.to_string(), entry);
}

/// [`Client::send`](crate::Client::send)'s direct path: the event's id, or `Ok(None)` when
/// the direct path does not apply or kept failing its check (nothing was inserted: use
/// `pgq.insert_event`). Like [`attempt`], and with a lease it renews the lease shortly before
/// it ends, or takes the newer one another connection of the client got ([`LeaseBook`]).
pub(crate) fn send_one(
    conn: &mut PooledConnection,
    queue: &str,
    ev: &NewEvent,
    book: &LeaseBook,
) -> Result<Option<i64>> {
    for _ in 0..3 {
        let Some(target) = target_with(conn, queue, Some(book))? else {
            return Ok(None);
        };
        match insert_one(conn, &target, ev) {
            Ok(Some((id, txid))) => {
                if let (Some(cell), Some(txid)) = (&target.lease, txid) {
                    if cell.get().until - txid <= RENEW_AHEAD {
                        renew_ahead(conn, queue, &target, book);
                    }
                }
                return Ok(Some(id));
            }
            Ok(None) => {
                // The lease ran out or the queue changed: a newer lease for the same table
                // that another connection got saves the lookup (and if the queue changed,
                // the server turns that one down too, and the lookup follows).
                let newer = match (&target.lease, server(conn)) {
                    (Some(cell), Some(server)) => book
                        .newer(&server, queue, &target, cell.get().until)
                        .map(|lease| cell.set(lease)),
                    _ => None,
                };
                if newer.is_none() {
                    forget(conn, queue);
                }
            }
            Err(e) if fall_back_after(&e) => {
                forget(conn, queue);
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Renews `target`'s lease ahead of its end, after an event went in (whose transaction has
/// committed, so nothing here may fail the send): takes the newer lease of another
/// connection, or looks up the next one unless another connection is doing so already.
fn renew_ahead(conn: &mut PooledConnection, queue: &str, target: &Arc<Target>, book: &LeaseBook) {
    let (Some(cell), Some(server)) = (&target.lease, server(conn)) else {
        return;
    };
    match book.turn(&server, queue, target, cell.get().until) {
        Turn::Adopt(lease) => cell.set(lease),
        Turn::Wait => {}
        Turn::Renew => match lookup(conn, queue, true) {
            Ok(Some(next)) => {
                let next = Arc::new(next);
                book.publish(&server, queue, &next);
                match &next.lease {
                    Some(l)
                        if next.queue_id == target.queue_id
                            && next.cur_table == target.cur_table =>
                    {
                        cell.set(l.get());
                    }
                    // The tables rotated meanwhile: the new target from now on.
                    _ => store(conn, queue, Some(next)),
                }
            }
            Ok(None) => {
                // No longer fit for direct inserts: the next send looks at the queue again.
                book.end_turn(queue);
                forget(conn, queue);
            }
            Err(e) => {
                book.end_turn(queue);
                log::debug!("renewing the insert lease of queue {queue:?} failed: {e}");
            }
        },
    }
}

/// Runs `op` (one direct statement) on the queue's target: `Ok(Some(v))` when it went in,
/// `Ok(None)` when the direct path does not apply or kept failing its check (nothing was
/// inserted: use `pgq.insert_event` / COPY). A failed check (the tables rotated) looks the
/// queue up again and retries, a few times; a table that is gone, or a role that may no
/// longer write it, gives up on the direct path.
pub(crate) fn attempt<T>(
    conn: &mut PooledConnection,
    queue: &str,
    mut op: impl FnMut(&mut PooledConnection, &Target) -> Result<Option<T>>,
) -> Result<Option<T>> {
    for _ in 0..3 {
        let Some(target) = target(conn, queue)? else {
            return Ok(None);
        };
        match op(conn, &target) {
            Ok(Some(v)) => return Ok(Some(v)),
            Ok(None) => forget(conn, queue),
            Err(e) if fall_back_after(&e) => {
                forget(conn, queue);
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Forgets the queue's target on `conn` (after the check in the statement failed).
fn forget(conn: &mut PooledConnection, queue: &str) {
    if let Some(c) = PooledConnection::extensions_mut(conn).get_mut::<DirectCache>() {
        c.queues.remove(queue);
        if c.last.as_ref().is_some_and(|(q, _)| q == queue) {
            c.last = None;
        }
    }
}

fn cache(conn: &mut PooledConnection) -> &mut DirectCache {
    let exts = PooledConnection::extensions_mut(conn);
    if exts.get::<DirectCache>().is_none() {
        exts.insert(DirectCache::default());
    }
    exts.get_mut::<DirectCache>()
        .expect("the cache was inserted just above")
}

/// The revision of libpgq's schema in the connection's database, once per pooled connection
/// (two queries the first time); `None` on the official extension, or when this role may
/// not read it (revision 3 lets everyone read it; an older one is too old for what the
/// callers ask anyway).
pub(crate) fn schema_revision(conn: &mut PooledConnection) -> Result<Option<u32>> {
    if let Some(rev) = known_schema_revision(conn) {
        return Ok(rev);
    }
    // Unnamed statements (query_typed): these run once per connection, and a transaction
    // pooler must see nothing named.
    // The server: its address, port and start time (a restart or failover makes it another
    // one), and the database.
    let row = conn.query_typed_one(
        "select pg_catalog.to_regclass('pgq.libpgq_schema') is not null \
            and pg_catalog.has_table_privilege('pgq.libpgq_schema', 'SELECT'), \
         pg_catalog.concat_ws('/', pg_catalog.current_database(), \
                   pg_catalog.host(pg_catalog.inet_server_addr()), \
                   pg_catalog.current_setting('port'), \
                   extract(epoch from pg_catalog.pg_postmaster_start_time()))",
        &[],
    )?;
    let (has_ours, server): (bool, String) = (row.get(0), row.get(1));
    let rev = if has_ours {
        conn.query_typed_opt("select version from pgq.libpgq_schema", &[])?
            .and_then(|r| r.get::<_, Option<String>>(0))
            .and_then(|v| v.trim().parse::<u32>().ok())
    } else {
        None
    };
    let c = cache(conn);
    c.revision = Some(rev);
    c.server = Some(server.into());
    Ok(rev)
}

/// The server and database of `conn`, once [`schema_revision`] has read it.
fn server(conn: &PooledConnection) -> Option<Arc<str>> {
    PooledConnection::extensions(conn)
        .get::<DirectCache>()
        .and_then(|c| c.server.clone())
}

/// [`schema_revision`] if it is known for this connection already (no round trip).
pub(crate) fn known_schema_revision(conn: &PooledConnection) -> Option<Option<u32>> {
    PooledConnection::extensions(conn)
        .get::<DirectCache>()
        .and_then(|c| c.revision)
}

/// The queue's current table, if the queue exists, takes plain inserts and this role may
/// insert into the table; with `leased`, together with a lease on it.
fn lookup(conn: &mut PooledConnection, queue: &str, leased: bool) -> Result<Option<Target>> {
    if leased {
        let row = pooled_query_opt(
            conn,
            "select l.queue_id, l.cur_table, l.table_name, l.lease_from, l.lease_until \
               from pgq._direct_lease($1) l \
              where pg_catalog.has_table_privilege(l.table_name, 'INSERT')",
            &[(&queue, Type::TEXT)],
        )?;
        return Ok(row.map(|r| {
            let lease = Lease {
                from: r.get(3),
                until: r.get(4),
            };
            Target::new(r.get(0), r.get(1), r.get::<_, &str>(2), Some(lease))
        }));
    }
    let row = pooled_query_opt(
        conn,
        "select q.queue_id, q.queue_cur_table, q.queue_data_pfx || '_' || q.queue_cur_table \
           from pgq.queue q \
          where q.queue_name = $1 \
            and not q.queue_disable_insert and q.queue_per_tx_limit is null \
            and pg_catalog.has_table_privilege( \
                    q.queue_data_pfx || '_' || q.queue_cur_table, 'INSERT')",
        &[(&queue, Type::TEXT)],
    )?;
    Ok(row.map(|r| Target::new(r.get(0), r.get(1), r.get::<_, &str>(2), None)))
}

/// Whether an error of a direct statement means "use insert_event instead": the table is
/// gone (queue dropped and made again) or the role may no longer insert into it.
fn fall_back_after(err: &Error) -> bool {
    matches!(err.sqlstate(), Some("42P01" | "42501"))
}

/// Inserts one event directly: its id, and with a lease the row's txid; `Ok(None)` when the
/// check failed (nothing was inserted: the lease ran out, or the tables rotated).
fn insert_one(
    conn: &mut PooledConnection,
    target: &Target,
    ev: &NewEvent,
) -> Result<Option<(i64, Option<i64>)>> {
    let fields = ev.fields().map(|v| v as &(dyn ToSql + Sync));
    let [a, b, c, d, e, f] = fields;
    let lease = target.lease.as_ref().map(LeaseCell::get);
    let values: &[&(dyn ToSql + Sync)] = match &lease {
        Some(lease) => &[a, b, c, d, e, f, &lease.from, &lease.until],
        None => &fields,
    };
    let row = match target.one_prepared.get() {
        Some(stmt) => conn.query_opt(stmt, values)?,
        None => {
            let types = [Type::TEXT, Type::INT8];
            let typed: Vec<(&(dyn ToSql + Sync), Type)> = values
                .iter()
                .enumerate()
                .map(|(i, v)| (*v, types[usize::from(i >= 6)].clone()))
                .collect();
            if unnamed_only(conn) {
                pooled_query_opt(conn, &target.one, &typed)?
            } else {
                let stmt = typed_cached_statement(conn, &target.one, &typed)?;
                conn.query_opt(target.one_prepared.get_or_init(|| stmt), values)?
            }
        }
    };
    Ok(row.map(|r| (r.get(0), lease.map(|_| r.get(1)))))
}

/// Inserts a chunk of events directly; `Ok(None)` when the check failed (nothing was
/// inserted).
pub(crate) fn insert_chunk(
    conn: &mut PooledConnection,
    target: &Target,
    events: &[NewEvent],
) -> Result<Option<()>> {
    let column = |f: fn(&NewEvent) -> &Option<String>| -> Vec<Option<&str>> {
        events.iter().map(|e| f(e).as_deref()).collect()
    };
    let cols = [
        column(|e| &e.ev_type),
        column(|e| &e.data),
        column(|e| &e.extra1),
        column(|e| &e.extra2),
        column(|e| &e.extra3),
        column(|e| &e.extra4),
    ];
    let params: Vec<(&(dyn ToSql + Sync), Type)> =
        cols.iter().map(|c| (c as _, Type::TEXT_ARRAY)).collect();
    let n = pooled_execute(conn, &target.many, &params)?;
    Ok((n == events.len() as u64).then_some(()))
}

/// `events` cut into statements of at most [`CHUNK_EVENTS`] events and [`CHUNK_BYTES`]
/// bytes (each chunk has at least one event).
pub(crate) fn chunks(events: &[NewEvent]) -> Vec<&[NewEvent]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, ev) in events.iter().enumerate() {
        let size = [
            &ev.ev_type,
            &ev.data,
            &ev.extra1,
            &ev.extra2,
            &ev.extra3,
            &ev.extra4,
        ]
        .iter()
        .map(|f| f.as_ref().map_or(0, String::len))
        .sum::<usize>();
        if i > start && (i - start >= CHUNK_EVENTS || bytes + size > CHUNK_BYTES) {
            out.push(&events[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < events.len() {
        out.push(&events[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_both_limits() {
        let small: Vec<NewEvent> = (0..12_001)
            .map(|i| NewEvent::new("t", i.to_string()))
            .collect();
        let c = chunks(&small);
        assert_eq!(
            c.iter().map(|c| c.len()).collect::<Vec<_>>(),
            [5000, 5000, 2001]
        );

        let big = "x".repeat(CHUNK_BYTES / 2 + 1);
        let evs = vec![
            NewEvent::new("t", big.clone()),
            NewEvent::new("t", big.clone()),
            NewEvent::new("t", "y"),
            NewEvent::new("t", "x".repeat(CHUNK_BYTES * 2)),
        ];
        let c = chunks(&evs);
        assert_eq!(c.iter().map(|c| c.len()).collect::<Vec<_>>(), [1, 2, 1]);
        assert!(chunks(&[]).is_empty());
    }

    #[test]
    fn target_statements_name_the_table_and_the_check() {
        let t = Target::new(7, 2, "pgq.event_7_2", None);
        assert!(t.one.starts_with("insert into pgq.event_7_2 "));
        assert!(t.one.contains("q.queue_id = 7 and q.queue_cur_table = 2"));
        assert!(t.one.ends_with("returning ev_id"));
        assert!(t.many.contains("unnest($1::text[]"));

        let lease = Lease {
            from: 10,
            until: 1010,
        };
        let t = Target::new(7, 2, "pgq.event_7_2", Some(lease));
        assert!(t.one.starts_with("insert into pgq.event_7_2 "));
        assert!(t.one.contains("txid_current() >= $7::int8"));
        assert!(t.one.ends_with("returning ev_id, ev_txid"));
        assert!(
            !t.one.contains("pgq.queue"),
            "a leased insert reads no other table"
        );
        assert!(t.many.contains("q.queue_id = 7 and q.queue_cur_table = 2"));
    }
}
