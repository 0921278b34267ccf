//! Looking ahead: a consumer that chains its batches (`Batch::finish_and_next`, the worker)
//! has the server read and sort its next batch while it handles the current one, on a
//! spare pooled connection (libpgq's schema, revision 7). The batch it then hands out must
//! be exactly the batch PGQ gave it, and a look-ahead that is not taken must leave nothing
//! behind.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::{wait_until, Backend, TestDb};
use pgq::{Consumer, Event, NewEvent, Worker};

const WAIT: Duration = Duration::from_secs(20);

fn setup(db: &TestDb, consumers: &[&str]) {
    db.client.create_queue("q").unwrap();
    for c in consumers {
        db.client.register_consumer("q", c).unwrap();
    }
}

/// `n` events whose data says which batch they belong to, with NULLs, unicode and a big
/// payload among them.
fn fill(db: &TestDb, batch: usize, n: usize) {
    let evs: Vec<NewEvent> = (0..n)
        .map(|i| match i % 4 {
            0 => NewEvent::new("t", format!("b{batch}e{i}")).extra1("ünïcødé ✓"),
            1 => {
                let mut e = NewEvent::new("t", format!("b{batch}e{i}"));
                e.ev_type = None;
                e
            }
            2 => NewEvent::new("big", format!("b{batch}e{i} {}", "x".repeat(3000))),
            _ => NewEvent::new("t", format!("b{batch}e{i}")).extra4("tab\there"),
        })
        .collect();
    db.client.send_many("q", &evs).unwrap();
}

/// Opens `n` pooled connections at once and hands them back, so that a look-ahead finds a
/// spare one idle instead of opening one (which a loaded machine may make slow).
fn warm(client: &pgq::Client, n: usize) {
    let held: Vec<_> = (0..n).map(|_| client.get().unwrap()).collect();
    drop(held);
}

/// Client sessions of the test database that are inside a transaction (the one asking is
/// not), described by their state and last statement.
fn in_transaction(db: &TestDb) -> Vec<String> {
    db.superuser()
        .query(
            "select format('%s: %s', state, query) from pg_stat_activity \
              where datname = current_database() and pid <> pg_backend_pid() \
                and backend_type = 'client backend' and xact_start is not null",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn open_transactions(db: &TestDb) -> usize {
    in_transaction(db).len()
}

/// Reads a batch whole and checks it against `pgq.get_batch_events` on another connection;
/// then reads it again from the start (a new cursor in the batch's transaction), which must
/// give the same.
fn read_and_check(conn: &mut postgres::Client, batch: &pgq::Batch) -> Vec<Event> {
    let got: Vec<Event> = batch.events().map(|e| e.unwrap()).collect();
    let want = pgq::consumer::get_batch_events(conn, batch.id()).unwrap();
    assert_eq!(
        got,
        want,
        "batch {} (read ahead: {})",
        batch.id(),
        batch.looked_ahead()
    );
    let again: Vec<Event> = batch.events().map(|e| e.unwrap()).collect();
    assert_eq!(again, want, "batch {} read again", batch.id());
    got
}

both_backends! {
    /// A chained pull loop over batches bigger than one fetch: on libpgq's schema every
    /// batch after the first was read ahead, and each is exactly what get_batch_events says,
    /// including a retried event that comes back in a later batch; on the official
    /// extension nothing is read ahead and the loop reads the same.
    fn chained_batches_are_read_ahead_and_exact(db: &TestDb) {
        setup(db, &["c", "other"]);
        for b in 0..5 {
            fill(db, b, 10 + 7 * b);
            db.tick("q");
        }
        warm(&db.client, 3);
        let consumer = Consumer::new(&db.client, "q", "c").unwrap().fetch_size(4);
        let mut conn = db.conn();
        let mut seen = Vec::new();
        let mut looked = Vec::new();
        let mut next = consumer.next_batch().unwrap();
        let mut retried = None;
        while let Some(batch) = next {
            looked.push(batch.looked_ahead());
            let evs = read_and_check(&mut conn, &batch);
            seen.extend(evs.iter().map(|e| e.data.clone().unwrap()));
            if retried.is_none() {
                // Send one event of the first batch back: it comes again, in a later batch
                // (a row of this consumer's own in the event table).
                let ev = &evs[3];
                batch.retry(ev.id, Duration::ZERO);
                retried = Some(ev.data.clone().unwrap());
            }
            if looked.len() == 3 {
                // Move the due retry into the queue, and tick once more, while batches are
                // being read ahead.
                conn.query_one("select pgq.maint_retry_events()", &[]).unwrap();
                db.tick("q");
            }
            next = batch.finish_and_next(&consumer).unwrap();
        }
        // The first batch came from next_batch, the second was the first one taken by
        // finish_and_next: from the third on, each was read ahead by the one before.
        let want_looked = db.backend == Backend::Ours;
        assert!(looked.len() >= 6, "batches: {looked:?}");
        assert!(!looked[0] && !looked[1], "read ahead per batch: {looked:?}");
        assert!(
            looked[2..].iter().all(|l| *l == want_looked),
            "read ahead per batch: {looked:?}"
        );
        // Every event once, the retried one twice.
        let retried = retried.unwrap();
        assert_eq!(seen.iter().filter(|d| **d == retried).count(), 2, "the retry came back");
        let mut all: Vec<String> = db
            .consume_all("q", "other")
            .into_iter()
            .map(|e| e.data.unwrap())
            .collect();
        assert_eq!(seen.len(), all.len() + 1, "no event lost or doubled");
        seen.sort();
        seen.dedup();
        all.sort();
        assert_eq!(seen, all);
        wait_until("no transaction left open", WAIT, || open_transactions(db) == 0);
    }
}

/// A look-ahead that is not taken (the batch is dropped, or finished without asking for
/// the next one) is rolled back: no session stays in a transaction, and the batches come as
/// they would have.
#[test]
fn look_ahead_not_taken_leaves_nothing_behind() {
    let db = TestDb::new(Backend::Ours);
    setup(&db, &["c"]);
    for b in 0..5 {
        fill(&db, b, 12);
        db.tick("q");
    }
    warm(&db.client, 3);
    let consumer = Consumer::new(&db.client, "q", "c").unwrap().fetch_size(5);
    let mut conn = db.conn();
    let first = consumer.next_batch().unwrap().unwrap();
    read_and_check(&mut conn, &first);
    let second = first.finish_and_next(&consumer).unwrap().unwrap();
    let second_id = second.id();
    // Start reading: the look-ahead of the third batch starts with the second chunk.
    let mut it = second.events();
    for _ in 0..6 {
        it.next().unwrap().unwrap();
    }
    drop(it);
    drop(second);
    wait_until("the dropped batch's transactions to end", WAIT, || {
        open_transactions(&db) == 0
    });
    // The dropped batch comes again, whole; finished plainly, its look-ahead is dropped too.
    let again = consumer.next_batch().unwrap().unwrap();
    assert_eq!(again.id(), second_id);
    assert!(!again.looked_ahead());
    read_and_check(&mut conn, &again);
    again.finish().unwrap();
    wait_until("the finished batch's look-ahead to end", WAIT, || {
        open_transactions(&db) == 0
    });
    // A chain again: the third batch from next_batch, the fourth from finish_and_next (it
    // reads the fifth ahead), the fifth from that look-ahead.
    let third = consumer.next_batch().unwrap().unwrap();
    assert!(!third.looked_ahead());
    read_and_check(&mut conn, &third);
    let fourth = third.finish_and_next(&consumer).unwrap().unwrap();
    assert!(!fourth.looked_ahead());
    read_and_check(&mut conn, &fourth);
    let fifth = fourth.finish_and_next(&consumer).unwrap().unwrap();
    assert!(fifth.looked_ahead());
    read_and_check(&mut conn, &fifth);
    assert!(fifth.finish_and_next(&consumer).unwrap().is_none());
    wait_until("no transaction left open", WAIT, || {
        open_transactions(&db) == 0
    });
}

/// When the look-ahead finds no next tick yet, the next batch is opened as usual once
/// there is one; and a consumer with read-ahead off never reads ahead and never starts a
/// read-ahead thread.
#[test]
fn no_next_tick_yet_and_read_ahead_off() {
    let db = TestDb::new(Backend::Ours);
    setup(&db, &["c", "off"]);
    fill(&db, 0, 5);
    db.tick("q");
    fill(&db, 1, 20);
    db.tick("q");
    let mut conn = db.conn();
    let consumer = Consumer::new(&db.client, "q", "c").unwrap().fetch_size(3);
    let first = consumer.next_batch().unwrap().unwrap();
    read_and_check(&mut conn, &first);
    let second = first.finish_and_next(&consumer).unwrap().unwrap();
    // Its look-ahead runs now, finds no tick after this batch and rolls back (the only
    // statement that leaves a session of this test idle with "rollback" as its last).
    read_and_check(&mut conn, &second);
    wait_until("the look-ahead to find nothing", WAIT, || {
        let n: i64 = db
            .superuser()
            .query_one(
                "select count(*) from pg_stat_activity where datname = current_database() \
                    and state = 'idle' and query = 'rollback'",
                &[],
            )
            .unwrap()
            .get(0);
        n == 1
    });
    fill(&db, 2, 9);
    db.tick("q");
    let third = second.finish_and_next(&consumer).unwrap().unwrap();
    assert!(!third.looked_ahead(), "there was no tick to read ahead to");
    let evs = read_and_check(&mut conn, &third);
    assert_eq!(evs.len(), 9);
    assert!(third.finish_and_next(&consumer).unwrap().is_none());

    let off = Consumer::new(&db.client, "q", "off")
        .unwrap()
        .fetch_size(3)
        .read_ahead(false);
    let mut next = off.next_batch().unwrap();
    let mut n = 0;
    while let Some(batch) = next {
        assert!(!batch.looked_ahead());
        for ev in batch.events() {
            ev.unwrap();
            n += 1;
            // Only the batch's own transaction: nothing reads the next batch.
            let open = in_transaction(&db);
            assert_eq!(open.len(), 1, "read_ahead(false): {open:?}");
        }
        next = batch.finish_and_next(&off).unwrap();
    }
    assert_eq!(n, 34);
}

/// `pgq.look_ahead_cursor` declares nothing unless the consumer's open batch ends at the
/// given tick and there is a tick after it, in a READ COMMITTED transaction.
#[test]
fn look_ahead_cursor_sql() {
    let db = TestDb::new(Backend::Ours);
    setup(&db, &["c"]);
    for b in 0..2 {
        fill(&db, b, 3);
        db.tick("q");
    }
    let mut conn = db.conn();
    let call = |conn: &mut postgres::Client, consumer: &str, after: i64, rr: bool| {
        let mut tx = conn
            .build_transaction()
            .isolation_level(if rr {
                postgres::IsolationLevel::RepeatableRead
            } else {
                postgres::IsolationLevel::ReadCommitted
            })
            .start()
            .unwrap();
        let tick: Option<i64> = tx
            .query_one(
                "select pgq.look_ahead_cursor('q', $1, $2, 'la')",
                &[&consumer, &after],
            )
            .unwrap()
            .get(0);
        let rows: Option<Vec<String>> = tick.map(|_| {
            tx.query("fetch all from la", &[])
                .unwrap()
                .iter()
                .map(|r| {
                    let data: String = r.get("ev_data");
                    data.split(' ').next().unwrap().to_string()
                })
                .collect()
        });
        tx.rollback().unwrap();
        (tick, rows)
    };
    // No open batch yet: from where the consumer stands, its first batch.
    let at: i64 = conn
        .query_one("select sub_last_tick from pgq.subscription", &[])
        .unwrap()
        .get(0);
    let (first, first_rows) = call(&mut conn, "c", at, false);
    assert_eq!(first_rows.unwrap(), ["b0e0", "b0e1", "b0e2"]);
    // The cursor has every column of the event tables, in their order, so the server sorts
    // the rows as stored, without building new ones.
    let stored: Vec<String> = conn
        .query(
            "select attname::text from pg_attribute \
              where attrelid = 'pgq.event_template'::regclass and attnum > 0 \
                and not attisdropped order by attnum",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored.len(), 11, "{stored:?}");
    let mut tx = conn.transaction().unwrap();
    tx.execute("select pgq.look_ahead_cursor('q', 'c', $1, 'la')", &[&at])
        .unwrap();
    let columns = tx.prepare("fetch all from la").unwrap();
    let columns: Vec<&str> = columns.columns().iter().map(|c| c.name()).collect();
    assert_eq!(columns, stored);
    tx.rollback().unwrap();
    let b = pgq::consumer::next_batch(&mut conn, "q", "c")
        .unwrap()
        .unwrap();
    assert_eq!((b.prev_tick_id, Some(b.cur_tick_id)), (Some(at), first));
    let (tick, rows) = call(&mut conn, "c", b.cur_tick_id, false);
    assert!(tick.is_some_and(|t| t > b.cur_tick_id), "{tick:?}");
    assert_eq!(rows.as_deref().unwrap(), ["b1e0", "b1e1", "b1e2"]);
    // Not READ COMMITTED, not a consumer.
    assert_eq!(call(&mut conn, "c", b.cur_tick_id, true), (None, None));
    assert_eq!(
        call(&mut conn, "nobody", b.cur_tick_id, false),
        (None, None)
    );
    // NULL arguments: nothing declared, no error.
    let none: Option<i64> = conn
        .query_one(
            "select pgq.look_ahead_cursor('q', 'c', $1, null)",
            &[&b.cur_tick_id],
        )
        .unwrap()
        .get(0);
    assert_eq!(none, None);
    // Once the batch is finished (by another connection while a look-ahead starts), the
    // same; what it declared is the batch next_batch gives next.
    pgq::consumer::finish_batch(&mut conn, b.batch_id).unwrap();
    assert_eq!(
        call(&mut conn, "c", b.cur_tick_id, false),
        (tick, rows.clone())
    );
    let b2 = pgq::consumer::next_batch(&mut conn, "q", "c")
        .unwrap()
        .unwrap();
    assert_eq!(Some(b2.cur_tick_id), tick);
    assert_eq!(call(&mut conn, "c", b.cur_tick_id, false), (tick, rows));
    // A consumer past the tick.
    let prev = b.prev_tick_id.unwrap();
    assert_eq!(call(&mut conn, "c", prev, false), (None, None));
    // No tick after the last one.
    assert_eq!(call(&mut conn, "c", b2.cur_tick_id, false), (None, None));
}

/// A worker draining a backlog of batches bigger than one fetch reads them ahead (and
/// counts it), every event once; with read-ahead off it does not.
#[test]
fn worker_reads_batches_ahead() {
    let db = TestDb::new(Backend::Ours);
    setup(&db, &["w", "off"]);
    let batches = 8;
    for b in 0..batches {
        fill(&db, b, 25);
        db.tick("q");
    }
    for (name, on) in [("w", true), ("off", false)] {
        let (tx, rx) = crossbeam_channel::unbounded();
        let worker = Worker::builder(&db.client, "q", name)
            .fetch_size(10)
            .read_ahead(on)
            .handler(move |batch| {
                for ev in batch.events() {
                    tx.send(ev?.data.unwrap()).unwrap();
                }
                Ok(())
            })
            .start()
            .unwrap();
        wait_until("the backlog to be consumed", WAIT, || {
            worker.stats().events == 25 * batches as u64
        });
        let stats = worker.stats();
        worker.stop();
        worker.join().unwrap();
        let mut got: Vec<String> = rx.try_iter().collect();
        let n = got.len();
        got.sort();
        got.dedup();
        assert_eq!((n, got.len()), (200, 200), "every event once");
        if on {
            // A worker reads ahead from its first batch on (when a connection is spare).
            assert!(stats.looked_ahead >= 1, "{stats:?}");
        } else {
            assert_eq!(stats.looked_ahead, 0, "{stats:?}");
        }
    }
    wait_until("no transaction left open", WAIT, || {
        open_transactions(&db) == 0
    });
}

/// The server restarts while a batch is open and the next one has been read ahead: the
/// finish fails, nothing is lost or skipped, and consuming goes on once the server is back
/// (the open batch comes again).
#[test]
fn server_restart_with_a_look_ahead_pending() {
    let cluster = Cluster::start("look-ahead-restart");
    let (_, client) = cluster.database("app", Backend::Ours);
    client.create_queue("q").unwrap();
    client.register_consumer("q", "c").unwrap();
    let mut want = Vec::new();
    for b in 0..4 {
        let evs: Vec<NewEvent> = (0..12)
            .map(|i| NewEvent::new("t", format!("{b}-{i}")))
            .collect();
        want.extend(evs.iter().map(|e| e.data.clone().unwrap()));
        client.send_many("q", &evs).unwrap();
        let mut conn = client.get().unwrap();
        pgq::ticker::force_tick(&mut *conn, "q").unwrap();
        pgq::ticker::tick_queue(&mut *conn, "q").unwrap();
    }
    let in_transaction = || -> i64 {
        cluster
            .superuser("app")
            .query_one(
                "select count(*) from pg_stat_activity where datname = 'app' \
                   and backend_type = 'client backend' and xact_start is not null \
                   and pid <> pg_backend_pid()",
                &[],
            )
            .unwrap()
            .get(0)
    };
    warm(&client, 3);
    let consumer = Consumer::new(&client, "q", "c").unwrap().fetch_size(5);
    let mut seen: Vec<String> = Vec::new();
    let read =
        |b: &pgq::Batch| -> Vec<String> { b.events().map(|e| e.unwrap().data.unwrap()).collect() };
    let first = consumer.next_batch().unwrap().unwrap();
    seen.extend(read(&first));
    let second = first.finish_and_next(&consumer).unwrap().unwrap();
    let second_id = second.id();
    let second_events = read(&second);
    // The second batch's transaction and the third's look-ahead are both open.
    wait_until("the look-ahead to be ready", WAIT, || in_transaction() == 2);
    // The test cluster commits asynchronously: make what was committed durable before the
    // immediate stop, so that the server comes back where the consumer left it.
    cluster
        .superuser("app")
        .batch_execute("checkpoint")
        .unwrap();
    cluster.restart();
    let e = second.finish_and_next(&consumer).unwrap_err();
    assert_eq!(e.kind(), pgq::ErrorKind::ConnectionLost, "{e}");
    // Back: the unfinished batch comes again (a few tries while the pool finds out that
    // its connections broke), then the rest.
    let mut next = None;
    for _ in 0..10 {
        match consumer.next_batch() {
            Ok(b) => {
                next = b;
                break;
            }
            Err(e) => assert_eq!(e.kind(), pgq::ErrorKind::ConnectionLost, "{e}"),
        }
    }
    let again = next.expect("the open batch again");
    assert_eq!(again.id(), second_id);
    let mut next = Some(again);
    while let Some(batch) = next {
        seen.extend(read(&batch));
        next = batch.finish_and_next(&consumer).unwrap();
    }
    assert_eq!(seen, want, "every event once, in order, after the restart");
    assert_eq!(second_events, want[12..24]);
}
