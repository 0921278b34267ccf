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
use std::sync::Arc;
use std::time::{Duration, Instant};

use postgres::types::{ToSql, Type};

use crate::client::{pooled_execute, pooled_query_opt, PooledConnection};
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

/// Where direct inserts for one queue go on one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// One event: `insert … select $1..$6 where <check> returning ev_id`; with a lease,
    /// the check is `txid_current()` within `$7..$8` (see [`Lease`]).
    one: String,
    /// `insert … select from unnest($1..$6) where <check on pgq.queue>`.
    many: String,
    /// The lease the single-event statement is checked against (schema revision 9 on).
    lease: Option<Lease>,
}

/// A range of transaction ids in which the queue's remembered table may be written
/// without reading `pgq.queue` again: `pgq._direct_lease` grants it, and any change of the
/// queue's table or insert rules ends it at once (schema revision 9, `30_produce.sql`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    from: i64,
    until: i64,
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
                 {one_check} returning ev_id"
            ),
            many: format!(
                "insert into {table} {columns} \
                 select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], \
                 $5::text[], $6::text[]) {check}"
            ),
            lease,
        }
    }
}

/// What one pooled connection knows (kept in its r2d2 extensions).
#[derive(Default)]
struct DirectCache {
    /// Our schema's revision on this connection's database (`Some(None)`: not ours, or not
    /// readable); see [`schema_revision`].
    revision: Option<Option<u32>>,
    /// Per queue: its target, or when it was last found unfit.
    queues: HashMap<String, Entry>,
}

enum Entry {
    Direct(Arc<Target>),
    Unfit(Instant),
}

/// The queue's direct target on `conn`, or `None` when `pgq.insert_event` must be used
/// (another schema, an unknown queue — whose error insert_event reports —, an unfit queue).
pub(crate) fn target(conn: &mut PooledConnection, queue: &str) -> Result<Option<Arc<Target>>> {
    let cached = PooledConnection::extensions(conn)
        .get::<DirectCache>()
        .and_then(|c| match c.queues.get(queue) {
            Some(Entry::Direct(t)) => Some(Some(Arc::clone(t))),
            Some(Entry::Unfit(at)) if at.elapsed() < RECHECK_UNFIT => Some(None),
            _ => None,
        });
    if let Some(hit) = cached {
        return Ok(hit);
    }
    // (Cached per connection after the first look.)
    let Some(revision) = schema_revision(conn)?.filter(|rev| *rev >= DIRECT_SINCE_REVISION) else {
        return Ok(None);
    };
    let found = lookup(conn, queue, revision >= LEASE_SINCE_REVISION)?.map(Arc::new);
    let entry = match &found {
        Some(t) => Entry::Direct(Arc::clone(t)),
        None => Entry::Unfit(Instant::now()),
    };
    let c = cache(conn);
    // Bounded: a connection that has sent to very many queues starts over.
    if c.queues.len() >= 1024 {
        c.queues.clear();
    }
    c.queues.insert(queue.to_string(), entry);
    Ok(found)
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
    let has_ours: bool = conn
        .query_typed_one(
            "select pg_catalog.to_regclass('pgq.libpgq_schema') is not null \
                and pg_catalog.has_table_privilege('pgq.libpgq_schema', 'SELECT')",
            &[],
        )?
        .get(0);
    let rev = if has_ours {
        conn.query_typed_opt("select version from pgq.libpgq_schema", &[])?
            .and_then(|r| r.get::<_, Option<String>>(0))
            .and_then(|v| v.trim().parse::<u32>().ok())
    } else {
        None
    };
    cache(conn).revision = Some(rev);
    Ok(rev)
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

/// Inserts one event directly; `Ok(None)` when the check failed (nothing was inserted: the
/// lease ran out, or the tables rotated).
pub(crate) fn insert_one(
    conn: &mut PooledConnection,
    target: &Target,
    ev: &NewEvent,
) -> Result<Option<i64>> {
    let fields = [
        (&ev.ev_type as &(dyn ToSql + Sync), Type::TEXT),
        (&ev.data, Type::TEXT),
        (&ev.extra1, Type::TEXT),
        (&ev.extra2, Type::TEXT),
        (&ev.extra3, Type::TEXT),
        (&ev.extra4, Type::TEXT),
    ];
    let row = match &target.lease {
        Some(lease) => {
            let [a, b, c, d, e, f] = fields;
            pooled_query_opt(
                conn,
                &target.one,
                &[
                    a,
                    b,
                    c,
                    d,
                    e,
                    f,
                    (&lease.from, Type::INT8),
                    (&lease.until, Type::INT8),
                ],
            )?
        }
        None => pooled_query_opt(conn, &target.one, &fields)?,
    };
    Ok(row.map(|r| r.get(0)))
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
        assert!(
            !t.one.contains("pgq.queue"),
            "a leased insert reads no other table"
        );
        assert!(t.many.contains("q.queue_id = 7 and q.queue_cur_table = 2"));
    }
}
