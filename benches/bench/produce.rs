//! Produce throughput: one event per transaction (1 and 4 threads) and 1000 per transaction.

use std::io::Write;
use std::str::FromStr;

use pgq::{Client, NewEvent, Producer};
use postgres::types::{ToSql, Type};

use crate::report::{Cmp, Report};
use crate::util::{best, connect, human_rate, median, run_timed, sample_event, Op, Res, Settings};

pub const QUEUE: &str = "bench_produce";

/// A plain table with the same columns, defaults and index as a PGQ event table, so a raw
/// INSERT writes an equal row.
const RAW_TABLE: &str = "
    create table bench_raw (
        ev_id     bigserial,
        ev_time   timestamptz not null,
        ev_txid   bigint not null default txid_current(),
        ev_owner  int4,
        ev_retry  int4,
        ev_type   text,
        ev_data   text,
        ev_extra1 text,
        ev_extra2 text,
        ev_extra3 text,
        ev_extra4 text);
    create index bench_raw_txid_idx on bench_raw (ev_txid);";

const RAW_INSERT: &str = "insert into bench_raw \
     (ev_time, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4) \
     values (now(), $1, $2, $3, $4, $5, $6) returning ev_id";

const RAW_INSERT_SELECT: &str = "insert into bench_raw \
     (ev_time, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4) \
     select now(), t, d, e1, e2, e3, e4 \
       from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) \
            as u(t, d, e1, e2, e3, e4)";

const INSERT_EVENT: &str = "select pgq.insert_event($1, $2, $3, $4, $5, $6, $7)";

const INSERT_EVENT_UNNEST: &str = "select pgq.insert_event($1, t, d, e1, e2, e3, e4) \
       from unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) \
            as u(t, d, e1, e2, e3, e4)";

/// The statement `Client::send` runs on our schema (see `src/direct.rs`), for the queue's
/// current table; `checked: false` leaves out the check that the table is still current.
/// How a direct INSERT row of the benchmark checks that its table may still be written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Producer::send's: a lease of transaction ids from `pgq._direct_lease`.
    Lease,
    /// Schema revisions 3–8 (and send_many's chunks): a sub-select on `pgq.queue`.
    QueueRow,
    /// None at all: unsafe under rotation, the floor.
    Unchecked,
}

fn direct_insert_sql(conn: &mut postgres::Client, check: Check) -> Res<String> {
    let row = conn.query_one(
        "select queue_id, queue_cur_table, queue_data_pfx || '_' || queue_cur_table \
           from pgq.queue where queue_name = $1",
        &[&QUEUE],
    )?;
    let (id, cur, table): (i32, i32, String) = (row.get(0), row.get(1), row.get(2));
    // Producer::send's leased statement also returns the row's txid (to renew ahead).
    let txid = if check == Check::Lease {
        ", ev_txid"
    } else {
        ""
    };
    let check = match check {
        Check::Lease => "where pg_catalog.txid_current() >= $7::int8 \
                         and pg_catalog.txid_current() < $8::int8"
            .to_string(),
        Check::QueueRow => format!(
            "where exists (select 1 from pgq.queue q where q.queue_id = {id} \
             and q.queue_cur_table = {cur} and not q.queue_disable_insert \
             and q.queue_per_tx_limit is null)"
        ),
        Check::Unchecked => String::new(),
    };
    Ok(format!(
        "insert into {table} (ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4) \
         select $1::text, $2::text, $3::text, $4::text, $5::text, $6::text {check} \
         returning ev_id{txid}"
    ))
}

/// A lease on the benchmark queue's current table: `(from, until)`.
fn direct_lease(conn: &mut postgres::Client) -> Res<(i64, i64)> {
    let row = conn.query_one(
        "select lease_from, lease_until from pgq._direct_lease($1)",
        &[&QUEUE],
    )?;
    Ok((row.get(0), row.get(1)))
}

pub fn prepare(dsn: &str, client: &Client) -> Res<()> {
    client.create_queue(QUEUE)?;
    connect(dsn)?.batch_execute(RAW_TABLE)?;
    Ok(())
}

type Setup = Box<dyn Fn() -> Res<Op> + Send + Sync>;

struct Variant {
    name: String,
    setup: std::sync::Arc<Setup>,
    rates: Vec<f64>,
}

impl Variant {
    fn new(name: impl Into<String>, setup: Setup) -> Variant {
        Variant {
            name: name.into(),
            setup: std::sync::Arc::new(setup),
            rates: Vec::new(),
        }
    }
}

/// Runs the variants interleaved (round 1 of each, round 2 of each, ...) so that a burst of
/// load from elsewhere on the machine hits all of them alike; the best round is reported.
/// Every round starts on emptied tables (`reset_tables`).
fn measure(variants: &mut [Variant], threads: usize, s: &Settings, dsns: &[&str]) -> Res<()> {
    for round in 0..s.rounds {
        for v in variants.iter_mut() {
            reset_tables(dsns)?;
            let setup = std::sync::Arc::clone(&v.setup);
            let rate = run_timed(threads, s.secs, move || setup())?;
            eprintln!(
                "    round {}/{} {:>2} thread(s) {:<60} {}",
                round + 1,
                s.rounds,
                threads,
                v.name,
                human_rate(rate)
            );
            v.rates.push(rate);
        }
    }
    Ok(())
}

/// Connections a held-connection variant keeps across its rounds, as an application keeps
/// its connections (and as `Producer::send`'s pool does): in a probe, connections opened
/// afresh for every 1-second round ran 7–11% faster than the same statement on connections
/// kept from earlier rounds, which gave every fresh-connection row an edge no long-running
/// producer has.
#[derive(Default)]
struct Kept(IdleConns);

/// A variant's connections between its rounds.
type IdleConns = std::sync::Arc<parking_lot::Mutex<Vec<postgres::Client>>>;

impl Kept {
    /// A kept connection, or a new one the first time; it comes back when the round ends.
    fn take(&self, dsn: &str) -> Res<KeptConn> {
        let conn = match self.0.lock().pop() {
            Some(c) if !c.is_closed() => c,
            _ => connect(dsn)?,
        };
        Ok(KeptConn(Some(conn), std::sync::Arc::clone(&self.0)))
    }
}

struct KeptConn(Option<postgres::Client>, IdleConns);

impl std::ops::Deref for KeptConn {
    type Target = postgres::Client;
    fn deref(&self) -> &postgres::Client {
        self.0.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for KeptConn {
    fn deref_mut(&mut self) -> &mut postgres::Client {
        self.0.as_mut().expect("present until dropped")
    }
}

impl Drop for KeptConn {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            self.1.lock().push(c);
        }
    }
}

/// Empties the raw table and every queue's event tables and writes a checkpoint, so that each
/// timed round starts from the same state: all variants of one queue share its event
/// tables, which would otherwise grow several times larger than the raw table (and draw
/// more autovacuum and checkpoint work into later rounds).
fn reset_tables(dsns: &[&str]) -> Res<()> {
    for dsn in dsns {
        connect(dsn)?.batch_execute(
            "truncate pgq.event_template; \
             do $$ begin \
                 if to_regclass('public.bench_raw') is not null then truncate bench_raw; end if; \
             end $$; \
             checkpoint",
        )?;
    }
    Ok(())
}

fn arrays(events: &[NewEvent]) -> [Vec<Option<String>>; 6] {
    let col = |f: fn(&NewEvent) -> &Option<String>| events.iter().map(|e| f(e).clone()).collect();
    [
        col(|e| &e.ev_type),
        col(|e| &e.data),
        col(|e| &e.extra1),
        col(|e| &e.extra2),
        col(|e| &e.extra3),
        col(|e| &e.extra4),
    ]
}

fn ev_params(ev: &NewEvent) -> [&(dyn postgres::types::ToSql + Sync); 6] {
    [
        &ev.ev_type,
        &ev.data,
        &ev.extra1,
        &ev.extra2,
        &ev.extra3,
        &ev.extra4,
    ]
}

/// One event per transaction (autocommit), 1 and 4 threads.
pub fn single(report: &mut Report, s: &Settings, ours_dsn: &str, official_dsn: &str) -> Res<()> {
    for threads in [1usize, 4] {
        let group = format!("produce 1 ev/tx, {threads} thr");
        eprintln!("  {group}");
        let ours_client = Client::builder(ours_dsn)
            .pool_size(threads as u32)
            .build()?;
        let off_client = Client::builder(official_dsn)
            .pool_size(threads as u32)
            .build()?;
        let mut variants = vec![
            Variant::new("raw INSERT of an equal row (prepared)", {
                let dsn = ours_dsn.to_string();
                let kept = Kept::default();
                Box::new(move || -> Res<Op> {
                    let mut conn = kept.take(&dsn)?;
                    let stmt = conn.prepare(RAW_INSERT)?;
                    let ev = sample_event(1);
                    Ok(Box::new(move || {
                        conn.query_one(&stmt, &ev_params(&ev))?;
                        Ok(1)
                    }))
                })
            }),
            Variant::new("libpgq Producer::send, our schema (direct INSERT)", {
                let client = ours_client.clone();
                Box::new(move || -> Res<Op> {
                    let p = Producer::new(&client, QUEUE)?;
                    let ev = sample_event(1);
                    Ok(Box::new(move || {
                        p.send(&ev)?;
                        Ok(1)
                    }))
                })
            }),
            Variant::new("libpgq Producer::send, official ext (insert_event)", {
                let client = off_client.clone();
                Box::new(move || -> Res<Op> {
                    let p = Producer::new(&client, QUEUE)?;
                    let ev = sample_event(1);
                    Ok(Box::new(move || {
                        p.send(&ev)?;
                        Ok(1)
                    }))
                })
            }),
            Variant::new("libpgq producer::insert_event, held conn, our schema", {
                let dsn = ours_dsn.to_string();
                let kept = Kept::default();
                Box::new(move || -> Res<Op> {
                    let mut conn = kept.take(&dsn)?;
                    let ev = sample_event(1);
                    Ok(Box::new(move || {
                        pgq::producer::insert_event(&mut *conn, QUEUE, &ev)?;
                        Ok(1)
                    }))
                })
            }),
        ];
        for (backend, dsn) in [("official ext", official_dsn), ("our schema", ours_dsn)] {
            let dsn = dsn.to_string();
            let kept = Kept::default();
            variants.push(Variant::new(
                format!("SQL pgq.insert_event (prepared), {backend}"),
                Box::new(move || -> Res<Op> {
                    let mut conn = kept.take(&dsn)?;
                    let stmt = conn.prepare(INSERT_EVENT)?;
                    let ev = sample_event(1);
                    Ok(Box::new(move || {
                        let p = ev_params(&ev);
                        conn.query_one(&stmt, &[&QUEUE, p[0], p[1], p[2], p[3], p[4], p[5]])?;
                        Ok(1)
                    }))
                }),
            ));
        }
        // Fix (1) alone: the same pool type as Client, without the check-out probe.
        variants.push(Variant::new(
            "r2d2 pool without check-out probe + insert_event, our schema",
            {
                let manager = r2d2_postgres::PostgresConnectionManager::new(
                    postgres::Config::from_str(ours_dsn)?,
                    postgres::NoTls,
                );
                let pool = r2d2::Pool::builder()
                    .max_size(threads as u32)
                    .test_on_check_out(false)
                    .build(manager)?;
                Box::new(move || -> Res<Op> {
                    let pool = pool.clone();
                    let ev = sample_event(1);
                    Ok(Box::new(move || {
                        let mut conn = pool.get()?;
                        pgq::producer::insert_event(&mut *conn, QUEUE, &ev)?;
                        Ok(1)
                    }))
                })
            },
        ));
        // What Producer::send would cost with one round trip per event: no per-call prepare
        // (query_typed sends the parameter types along) and no pool check-out probe.
        variants.push(Variant::new(
            "SQL pgq.insert_event (query_typed, no prepare), our schema",
            {
                let dsn = ours_dsn.to_string();
                let kept = Kept::default();
                Box::new(move || -> Res<Op> {
                    let mut conn = kept.take(&dsn)?;
                    let ev = sample_event(1);
                    Ok(Box::new(move || {
                        let t = Type::TEXT;
                        conn.query_typed_one(
                            INSERT_EVENT,
                            &[
                                (&QUEUE, t.clone()),
                                (&ev.ev_type, t.clone()),
                                (&ev.data, t.clone()),
                                (&ev.extra1, t.clone()),
                                (&ev.extra2, t.clone()),
                                (&ev.extra3, t.clone()),
                                (&ev.extra4, t),
                            ],
                        )?;
                        Ok(1)
                    }))
                })
            },
        ));
        // Where Producer::send's time goes: its statement on connections held by the threads
        // (no pool), with its lease, with the check it had before schema revision 9, and
        // with no check at all.
        for (name, check) in [
            (
                "direct INSERT as Producer::send's (leased), held conn, our schema",
                Check::Lease,
            ),
            (
                "the same checked against pgq.queue (revisions 3-8), our schema",
                Check::QueueRow,
            ),
            (
                "the same without any check (unsafe), our schema",
                Check::Unchecked,
            ),
        ] {
            let dsn = ours_dsn.to_string();
            let kept = Kept::default();
            variants.push(Variant::new(
                name,
                Box::new(move || -> Res<Op> {
                    let mut conn = kept.take(&dsn)?;
                    let sql = direct_insert_sql(&mut conn, check)?;
                    let stmt = conn.prepare(&sql)?;
                    let mut lease = direct_lease(&mut conn)?;
                    let ev = sample_event(1);
                    Ok(Box::new(move || {
                        if check != Check::Lease {
                            conn.query_one(&stmt, &ev_params(&ev))?;
                            return Ok(1);
                        }
                        loop {
                            let (from, until) = lease;
                            let [a, b, c, d, e, f] = ev_params(&ev);
                            let params: [&(dyn ToSql + Sync); 8] =
                                [a, b, c, d, e, f, &from, &until];
                            if conn.query_opt(&stmt, &params)?.is_some() {
                                return Ok(1);
                            }
                            // The lease ran out (it spans 1000 txids of the server).
                            lease = direct_lease(&mut conn)?;
                        }
                    }))
                }),
            ));
        }
        measure(&mut variants, threads, s, &[ours_dsn, official_dsn])?;
        let rate: Vec<f64> = variants.iter().map(|v| best(&v.rates)).collect();
        let (raw, official) = (rate[0], rate[4]);
        for (i, v) in variants.iter().enumerate() {
            let res = human_rate(rate[i]);
            let mut cmps = Vec::new();
            if i > 0 {
                if v.name.starts_with("libpgq") {
                    cmps.push(Cmp::target(raw, "raw INSERT", 0.95));
                } else {
                    cmps.push(Cmp::new(raw, "raw INSERT"));
                }
            }
            if i != 0 && i != 4 {
                cmps.push(Cmp::new(official, "official insert_event"));
            }
            report.ratio_row(&group, &v.name, res, rate[i], &cmps);
        }
        report.note(paired_ratios(
            &group,
            &variants,
            &[
                "libpgq Producer::send, our schema",
                "direct INSERT as Producer::send's",
                "the same without any check",
            ],
        ));
    }
    Ok(())
}

/// Nanoseconds a thread or process has run on a CPU, from a `schedstat` file of `/proc`
/// (its first field), or 0 when it cannot be read.
fn run_ns(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|f| f.parse().ok()))
        .unwrap_or(0)
}

/// What one event costs, one thread, `Producer::send` against the raw INSERT: wall time and
/// CPU time per event, this thread's and its server backend's (from `/proc/.../schedstat`,
/// nanosecond counters), in alternating stretches of a fixed number of events, medians of
/// `rounds` stretches each. Both run on the same connection, the pool's only one (the raw
/// INSERT holds it for its stretch): on a shared 2-core machine the same statement can run
/// up to ±10% faster on one connection than on another (the server process's placement),
/// one of the things that move the rate rows above between runs; stretches on one
/// connection still vary by about ±5%.
pub fn cost(report: &mut Report, s: &Settings, ours_dsn: &str) -> Res<()> {
    let group = "produce 1 ev/tx, 1 thr, per event";
    eprintln!("  {group}");
    let n = ((s.secs * 2500.0) as usize).max(500);
    let client = Client::builder(ours_dsn).pool_size(1).build()?;
    let producer = Producer::new(&client, QUEUE)?;
    // The pool's only connection: the one send uses, and the raw INSERT's.
    let pid: i32 = client
        .get()?
        .query_one("select pg_backend_pid()", &[])?
        .get(0);
    let ev = sample_event(1);
    // Prepared once, outside the timed stretches (the pool keeps its only connection).
    let stmt = client.get()?.prepare(RAW_INSERT)?;
    let raw_stretch = |n: usize| -> Res<()> {
        let mut conn = client.get()?;
        for _ in 0..n {
            conn.query_one(&stmt, &ev_params(&ev))?;
        }
        Ok(())
    };
    // Warm both up (plans, the lease, caches).
    raw_stretch(100)?;
    for _ in 0..100 {
        producer.send(&ev)?;
    }
    // [raw, send] × (wall, client, server) µs per event, one entry per stretch.
    let mut got: [[Vec<f64>; 3]; 2] = Default::default();
    let stretches = s.rounds.max(1);
    let backend = format!("/proc/{pid}/schedstat");
    for _ in 0..stretches {
        for (i, slot) in got.iter_mut().enumerate() {
            reset_tables(&[ours_dsn])?;
            let (c0, b0, t0) = (
                run_ns("/proc/thread-self/schedstat"),
                run_ns(&backend),
                std::time::Instant::now(),
            );
            if i == 0 {
                raw_stretch(n)?;
            } else {
                for _ in 0..n {
                    producer.send(&ev)?;
                }
            }
            let per = |ns: f64| ns / 1e3 / n as f64;
            slot[0].push(per(t0.elapsed().as_nanos() as f64));
            slot[1].push(per((run_ns("/proc/thread-self/schedstat") - c0) as f64));
            slot[2].push(per((run_ns(&backend) - b0) as f64));
        }
    }
    let medians: Vec<[f64; 3]> = got
        .iter()
        .map(|v| [0, 1, 2].map(|k| median(v[k].clone())))
        .collect();
    let names = [
        "raw INSERT of an equal row (prepared), on send's connection",
        "libpgq Producer::send, our schema (direct INSERT)",
    ];
    for (i, [wall, cl, sv]) in medians.iter().copied().enumerate() {
        let result = format!(
            "{wall:.1} µs wall · CPU {cl:.1} µs client + {sv:.1} µs server = {:.1} µs",
            cl + sv
        );
        let variant = format!("{} ({stretches} stretches of {n})", names[i]);
        if i == 0 {
            report.row(group, variant, result);
        } else {
            let [raw_wall, raw_cl, raw_sv] = medians[0];
            report.ratio_row(
                group,
                variant,
                result,
                1.0 / wall,
                &[Cmp::new(1.0 / raw_wall, "raw INSERT's speed")],
            );
            report.note(format!(
                "{group}: Producer::send's CPU per event is {:.2}× the raw INSERT's \
                 (client {:.2}×, server {:.2}×)",
                (cl + sv) / (raw_cl + raw_sv),
                cl / raw_cl,
                sv / raw_sv
            ));
        }
    }
    Ok(())
}

/// The median of the per-round ratios of the variants named `which` (by prefix) to variant 0
/// (the baseline), each round's rate against the baseline's in the same round: a figure that
/// one unusually fast or slow round of either side does not move, unlike the ratio of the
/// best rounds.
fn paired_ratios(group: &str, variants: &[Variant], which: &[&str]) -> String {
    let base = &variants[0];
    let parts: Vec<String> = which
        .iter()
        .filter_map(|prefix| variants.iter().find(|v| v.name.starts_with(prefix)))
        .map(|v| {
            let ratios: Vec<f64> = v
                .rates
                .iter()
                .zip(&base.rates)
                .filter(|(_, b)| **b > 0.0)
                .map(|(r, b)| r / b)
                .collect();
            format!("{} {:.2}×", v.name, median(ratios))
        })
        .collect();
    format!(
        "{group}: median of the per-round ratios to \"{}\" ({} rounds): {}",
        base.name,
        base.rates.len(),
        parts.join("; ")
    )
}

/// 1000 events per transaction, one thread.
pub fn bulk(report: &mut Report, s: &Settings, ours_dsn: &str, official_dsn: &str) -> Res<()> {
    const N: u64 = 1000;
    let group = "produce 1000 ev/tx, 1 thr";
    eprintln!("  {group}");
    let events: std::sync::Arc<Vec<NewEvent>> =
        std::sync::Arc::new((0..N).map(sample_event).collect());
    let ours_client = Client::builder(ours_dsn).pool_size(1).build()?;
    let off_client = Client::builder(official_dsn).pool_size(1).build()?;
    let mut variants = vec![Variant::new("raw INSERT … SELECT from unnest(arrays)", {
        let dsn = ours_dsn.to_string();
        let events = events.clone();
        Box::new(move || -> Res<Op> {
            let mut conn = connect(&dsn)?;
            let stmt = conn.prepare(RAW_INSERT_SELECT)?;
            let a = arrays(&events);
            Ok(Box::new(move || {
                Ok(conn.execute(&stmt, &[&a[0], &a[1], &a[2], &a[3], &a[4], &a[5]])?)
            }))
        })
    })];
    // Where the COPY path's time goes: the same COPY text the library writes, into the plain
    // table on a held connection, without the library's queue look-up and pool check-out.
    variants.push(Variant::new("raw COPY (text) of equal rows, held conn", {
        let dsn = ours_dsn.to_string();
        let events = events.clone();
        Box::new(move || -> Res<Op> {
            let mut conn = connect(&dsn)?;
            let text = copy_text(&events, &now_text(&mut conn)?)?;
            Ok(Box::new(move || {
                let mut tx = conn.transaction()?;
                let mut w = tx.copy_in(
                    "copy bench_raw (ev_time, ev_type, ev_data, ev_extra1, ev_extra2, \
                     ev_extra3, ev_extra4) from stdin",
                )?;
                w.write_all(&text)?;
                let n = w.finish()?;
                tx.commit()?;
                Ok(n)
            }))
        })
    }));
    for (backend, client) in [
        ("our schema (INSERT … unnest)", &ours_client),
        ("official ext (COPY)", &off_client),
    ] {
        let client = client.clone();
        let events = events.clone();
        variants.push(Variant::new(
            format!("libpgq Producer::send_many, {backend}"),
            Box::new(move || -> Res<Op> {
                let p = Producer::new(&client, QUEUE)?;
                let events = events.clone();
                Ok(Box::new(move || Ok(p.send_many(&events)?)))
            }),
        ));
    }
    for (backend, dsn) in [("official ext", official_dsn), ("our schema", ours_dsn)] {
        let dsn = dsn.to_string();
        let events = events.clone();
        variants.push(Variant::new(
            format!("SQL pgq.insert_event ×1000 in a loop, {backend}"),
            Box::new(move || -> Res<Op> {
                let mut conn = connect(&dsn)?;
                let stmt = conn.prepare(INSERT_EVENT)?;
                let events = events.clone();
                Ok(Box::new(move || {
                    let mut tx = conn.transaction()?;
                    for ev in events.iter() {
                        let p = ev_params(ev);
                        tx.query_one(&stmt, &[&QUEUE, p[0], p[1], p[2], p[3], p[4], p[5]])?;
                    }
                    tx.commit()?;
                    Ok(events.len() as u64)
                }))
            }),
        ));
    }
    {
        let dsn = official_dsn.to_string();
        let events = events.clone();
        variants.push(Variant::new(
            "SQL pgq.insert_event ×1000 in one statement, official ext",
            Box::new(move || -> Res<Op> {
                let mut conn = connect(&dsn)?;
                let stmt = conn.prepare(INSERT_EVENT_UNNEST)?;
                let a = arrays(&events);
                Ok(Box::new(move || {
                    let rows =
                        conn.query(&stmt, &[&QUEUE, &a[0], &a[1], &a[2], &a[3], &a[4], &a[5]])?;
                    Ok(rows.len() as u64)
                }))
            }),
        ));
    }
    measure(&mut variants, 1, s, &[ours_dsn, official_dsn])?;
    let rate: Vec<f64> = variants.iter().map(|v| best(&v.rates)).collect();
    let (raw, official_loop) = (rate[0], rate[4]);
    for (i, v) in variants.iter().enumerate() {
        let res = human_rate(rate[i]);
        let cmps = match i {
            0 => vec![],
            1 => vec![Cmp::new(raw, "raw INSERT…SELECT")],
            2 | 3 => vec![
                Cmp::target(raw, "raw INSERT…SELECT", 0.90),
                Cmp::target(official_loop, "official insert_event loop", 3.0),
            ],
            4 => vec![Cmp::new(raw, "raw INSERT…SELECT")],
            _ => vec![
                Cmp::new(raw, "raw INSERT…SELECT"),
                Cmp::new(official_loop, "official insert_event loop"),
            ],
        };
        report.ratio_row(group, &v.name, res, rate[i], &cmps);
    }
    Ok(())
}

fn now_text(conn: &mut postgres::Client) -> Res<String> {
    Ok(conn.query_one("select now()::text", &[])?.get(0))
}

/// COPY text rows for `events` (the sample events need no escaping; checked here).
fn copy_text(events: &[NewEvent], now: &str) -> Res<Vec<u8>> {
    let mut out = Vec::new();
    for ev in events {
        out.extend_from_slice(now.as_bytes());
        for f in [
            &ev.ev_type,
            &ev.data,
            &ev.extra1,
            &ev.extra2,
            &ev.extra3,
            &ev.extra4,
        ] {
            out.push(b'\t');
            match f {
                None => out.extend_from_slice(b"\\N"),
                Some(v) if v.contains(['\\', '\t', '\n', '\r']) => {
                    return Err("sample event needs COPY escaping".into())
                }
                Some(v) => out.extend_from_slice(v.as_bytes()),
            }
        }
        out.push(b'\n');
    }
    Ok(out)
}
