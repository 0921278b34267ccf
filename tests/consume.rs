//! Consuming: batch boundaries, visibility, exactly-once, independence, redelivery.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{datas, TestDb};
use pgq::{Consumer, ErrorKind, NewEvent};

fn setup(db: &TestDb, consumers: &[&str]) {
    db.client.create_queue("q").unwrap();
    for c in consumers {
        db.client.register_consumer("q", c).unwrap();
    }
}

fn send(db: &TestDb, data: &str) -> i64 {
    db.client.send("q", &NewEvent::new("t", data)).unwrap()
}

both_backends! {
    fn only_committed_events_are_seen(db: &TestDb) {
        setup(db, &["c"]);
        let mut open = db.conn();
        let mut tx = open.transaction().unwrap();
        pgq::producer::insert_event(&mut tx, "q", &NewEvent::new("t", "late")).unwrap();
        let mut aborted = db.conn();
        let mut tx2 = aborted.transaction().unwrap();
        pgq::producer::insert_event(&mut tx2, "q", &NewEvent::new("t", "aborted")).unwrap();
        send(db, "early");
        db.tick("q");
        // "late" is still uncommitted at the tick: not in this batch
        assert_eq!(datas(&db.consume_all("q", "c")), ["early"]);
        tx.commit().unwrap();
        tx2.rollback().unwrap();
        db.tick("q");
        assert_eq!(datas(&db.consume_all("q", "c")), ["late"]);
        db.tick("q");
        assert!(db.consume_all("q", "c").is_empty());
    }

    fn open_transaction_splits_a_batch_range(db: &TestDb) {
        // The newer tick's snapshot has a transaction in progress whose txid lies between
        // two committed ones: the earlier committed event is visible below that xmin, the
        // later one only through the snapshot check, and the open one comes a batch later.
        setup(db, &["c"]);
        db.tick("q");
        db.consume_all("q", "c");
        send(db, "before");
        let mut open = db.conn();
        let mut tx = open.transaction().unwrap();
        pgq::producer::insert_event(&mut tx, "q", &NewEvent::new("t", "open")).unwrap();
        send(db, "after");
        db.tick("q");
        assert_eq!(datas(&db.consume_all("q", "c")), ["before", "after"]);
        tx.commit().unwrap();
        db.tick("q");
        assert_eq!(datas(&db.consume_all("q", "c")), ["open"]);
        db.tick("q");
        assert!(db.consume_all("q", "c").is_empty());
    }

    fn transactions_open_across_ticks_delivered_once(db: &TestDb) {
        setup(db, &["c"]);
        // Several producers whose transactions start, insert, and commit at different points
        // relative to several ticks. Every event must arrive exactly once.
        let mut conns: Vec<postgres::Client> = (0..4).map(|_| db.conn()).collect();
        let mut expected = Vec::new();
        let mut got = Vec::new();
        for round in 0..5 {
            let mut txs = Vec::new();
            for (i, c) in conns.iter_mut().enumerate() {
                let mut tx = c.transaction().unwrap();
                let d = format!("r{round}-p{i}-a");
                pgq::producer::insert_event(&mut tx, "q", &NewEvent::new("t", d.as_str())).unwrap();
                expected.push(d);
                txs.push(tx);
            }
            send(db, &format!("r{round}-direct"));
            expected.push(format!("r{round}-direct"));
            db.tick("q");
            got.extend(datas(&db.consume_all("q", "c")));
            // commit some, insert more into others, tick in between
            let mut rest = Vec::new();
            for (i, mut tx) in txs.into_iter().enumerate() {
                if i % 2 == 0 {
                    tx.commit().unwrap();
                } else {
                    let d = format!("r{round}-p{i}-b");
                    pgq::producer::insert_event(&mut tx, "q", &NewEvent::new("t", d.as_str()))
                        .unwrap();
                    expected.push(d);
                    rest.push(tx);
                }
            }
            db.tick("q");
            got.extend(datas(&db.consume_all("q", "c")));
            for tx in rest {
                tx.commit().unwrap();
            }
        }
        db.tick("q");
        got.extend(datas(&db.consume_all("q", "c")));
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for g in &got {
            *counts.entry(g.as_str()).or_default() += 1;
        }
        let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(dups.is_empty(), "duplicates: {dups:?}");
        let mut want = expected.clone();
        want.sort();
        let mut have = got.clone();
        have.sort();
        assert_eq!(have, want);
    }

    fn consumers_are_independent(db: &TestDb) {
        setup(db, &["a", "b"]);
        for i in 0..3 {
            send(db, &i.to_string());
        }
        db.tick("q");
        assert_eq!(datas(&db.consume_all("q", "a")), ["0", "1", "2"]);
        // a late registrant only sees events after its registration
        db.client.register_consumer("q", "late").unwrap();
        send(db, "3");
        db.tick("q");
        assert_eq!(datas(&db.consume_all("q", "a")), ["3"]);
        assert_eq!(datas(&db.consume_all("q", "b")), ["0", "1", "2", "3"]);
        assert_eq!(datas(&db.consume_all("q", "late")), ["3"]);
        // an open batch of one consumer does not block another
        send(db, "4");
        db.tick("q");
        let held = db.client.next_batch("q", "a").unwrap().expect("batch for a");
        assert_eq!(datas(&db.consume_all("q", "b")), ["4"]);
        drop(held);
        assert_eq!(datas(&db.consume_all("q", "a")), ["4"]);
    }

    fn unfinished_batch_is_redelivered(db: &TestDb) {
        setup(db, &["c"]);
        send(db, "x");
        send(db, "y");
        db.tick("q");
        let consumer = Consumer::new(&db.client, "q", "c").unwrap();
        let b1 = consumer.next_batch().unwrap().expect("batch");
        let id = b1.id();
        let first: Vec<_> = b1.events().collect::<pgq::Result<_>>().unwrap();
        assert_eq!(datas(&first), ["x", "y"]);
        drop(b1); // crash before finish
        let b2 = consumer.next_batch().unwrap().expect("same batch again");
        assert_eq!(b2.id(), id);
        let again: Vec<_> = b2.events().collect::<pgq::Result<_>>().unwrap();
        assert_eq!(again, first);
        b2.finish().unwrap();
        assert!(consumer.next_batch().unwrap().is_none());

        // the low-level layer: next_batch on an open batch returns it again
        send(db, "z");
        db.tick("q");
        let mut conn = db.conn();
        let n1 = pgq::consumer::next_batch(&mut conn, "q", "c").unwrap().unwrap();
        let n2 = pgq::consumer::next_batch(&mut conn, "q", "c").unwrap().unwrap();
        assert_eq!(n1, n2);
        assert_eq!(datas(&pgq::consumer::get_batch_events(&mut conn, n1.batch_id).unwrap()), ["z"]);
        assert!(pgq::consumer::finish_batch(&mut conn, n1.batch_id).unwrap());
        assert!(!pgq::consumer::finish_batch(&mut conn, n1.batch_id).unwrap());
        assert!(pgq::consumer::next_batch(&mut conn, "q", "c").unwrap().is_none());
    }

    fn empty_batches_must_be_finished(db: &TestDb) {
        setup(db, &["c"]);
        let t1 = db.tick("q");
        let t2 = db.tick("q");
        let consumer = Consumer::new(&db.client, "q", "c").unwrap();
        let b = consumer.next_batch().unwrap().expect("a batch per tick span");
        assert_eq!(b.events().count(), 0);
        assert!(b.tick_id() == t1 || b.tick_id() == t2);
        b.finish().unwrap();
        let b = consumer.next_batch().unwrap();
        if let Some(b) = b {
            assert_eq!(b.tick_id(), t2);
            assert_eq!(b.events().count(), 0);
            b.finish().unwrap();
        }
        assert!(consumer.next_batch().unwrap().is_none());
        let info = &db.client.consumer_info(Some("q"), Some("c")).unwrap()[0];
        assert_eq!(info.last_tick, Some(t2));
    }

    fn events_stream_in_small_fetches(db: &TestDb) {
        setup(db, &["c"]);
        db.tick("q");
        db.consume_all("q", "c");
        let start = last_tick(db);
        let evs: Vec<NewEvent> = (0..250).map(|i| NewEvent::new("t", i.to_string())).collect();
        db.client.send_many("q", &evs).unwrap();
        db.tick("q");
        for fetch in [1usize, 7, 250, 1000] {
            // rewind, so each round reads the same batch span
            db.client.register_consumer_at("q", "c", start).unwrap();
            let consumer = Consumer::new(&db.client, "q", "c").unwrap().fetch_size(fetch);
            let b = consumer.next_batch().unwrap().expect("batch");
            let got: Vec<_> = b.events().collect::<pgq::Result<_>>().unwrap();
            assert_eq!(got.len(), 250, "fetch size {fetch}");
            let ids: Vec<i64> = got.iter().map(|e| e.id).collect();
            let mut sorted = ids.clone();
            sorted.sort();
            assert_eq!(ids, sorted, "ordered by ev_id");
            // events() can be restarted
            assert_eq!(b.events().count(), 250);
            b.finish().unwrap();
        }
    }

    /// The first events of a batch come as text with the batch (the rest in binary FETCHes):
    /// every field reads the same either way, whatever the batch size and fetch size, and
    /// the same as pgq.get_batch_events.
    fn first_events_read_with_the_batch_equal_fetched_ones(db: &TestDb) {
        let names: Vec<String> = [1usize, 7, 100, 101, 1000].iter().map(|f| format!("f{f}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        setup(db, &refs);
        for size in [1usize, 99, 100, 101, 250] {
            let evs: Vec<NewEvent> = (0..size)
                .map(|i| match i % 5 {
                    0 => NewEvent::new("t", format!("plain {i}")),
                    1 => NewEvent::new("", "tab\there\nnewline \\ back'slash \"q\"")
                        .extra1("ünïcødé ✓ 😀"),
                    2 => {
                        let mut e = NewEvent::new("t", "");
                        e.ev_type = None;
                        e.data = None;
                        e
                    }
                    3 => NewEvent::new("t", "x".repeat(5000)).extra2("e2").extra3("e3").extra4("e4"),
                    _ => NewEvent::new("t", " leading and trailing spaces "),
                })
                .collect();
            db.client.send_many("q", &evs).unwrap();
            db.tick("q");
            let mut conn = db.conn();
            for (f, name) in [1usize, 7, 100, 101, 1000].iter().zip(&names) {
                let c = Consumer::new(&db.client, "q", name).unwrap().fetch_size(*f);
                let b = c.next_batch().unwrap().unwrap();
                let got: Vec<pgq::Event> = b.events().map(|e| e.unwrap()).collect();
                let want = pgq::consumer::get_batch_events(&mut conn, b.id()).unwrap();
                assert_eq!(got.len(), size, "batch of {size}, fetch_size {f}");
                assert_eq!(got, want, "batch of {size}, fetch_size {f}");
                // Read again from the start: the same.
                let again: Vec<pgq::Event> = b.events().map(|e| e.unwrap()).collect();
                assert_eq!(again, want, "second read, batch of {size}, fetch_size {f}");
                b.finish().unwrap();
            }
        }
    }

    /// A pull loop over `Batch::finish_and_next` sees every event once, in order; a batch
    /// handed to another consumer's `finish_and_next` is refused and comes again.
    fn finish_and_next_pull_loop(db: &TestDb) {
        setup(db, &["c", "other"]);
        for b in 0..3 {
            for i in 0..2 {
                send(db, &format!("b{b}e{i}"));
            }
            db.tick("q");
        }
        let c = Consumer::new(&db.client, "q", "c").unwrap();
        let other = Consumer::new(&db.client, "q", "other").unwrap();
        let first = c.next_batch().unwrap().unwrap();
        let id = first.id();
        let e = first.finish_and_next(&other).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        let mut seen = Vec::new();
        let mut batches = Vec::new();
        let mut next = c.next_batch().unwrap();
        while let Some(batch) = next {
            batches.push(batch.id());
            for ev in batch.events() {
                seen.push(ev.unwrap().data.unwrap_or_default());
            }
            next = batch.finish_and_next(&c).unwrap();
        }
        assert_eq!(batches[0], id, "the refused batch came again");
        assert_eq!(seen, ["b0e0", "b0e1", "b1e0", "b1e1", "b2e0", "b2e1"]);
        assert!(c.next_batch().unwrap().is_none());
        assert_eq!(datas(&db.consume_all("q", "other")).len(), 6);
    }

    fn cursor_reads_interleave_with_client_work(db: &TestDb) {
        // The events stream from a cursor of the batch's transaction, fetch_size rows per
        // round trip; statements run through with_client between two fetches must neither
        // disturb it nor be disturbed, and never more than fetch_size events are held.
        setup(db, &["c"]);
        db.conn().batch_execute("create table seen (data text)").unwrap();
        let evs: Vec<NewEvent> = (0..25).map(|i| NewEvent::new("t", i.to_string())).collect();
        db.client.send_many("q", &evs).unwrap();
        db.tick("q");
        let want: Vec<String> = (0..25).map(|i| i.to_string()).collect();
        let consumer = Consumer::new(&db.client, "q", "c").unwrap().fetch_size(4);
        let b = consumer.next_batch().unwrap().expect("batch");
        // Work on the connection before the first fetch, too.
        let n: i64 = b
            .with_client(|c| c.query_one("select count(*) from generate_series(1, 7)", &[]))
            .unwrap()
            .get(0);
        assert_eq!(n, 7);
        let mut got = Vec::new();
        let mut held = Vec::new();
        let mut it = b.events();
        while let Some(ev) = it.next() {
            held.push(it.buffered());
            let data = ev.unwrap().data.unwrap();
            b.with_client(|c| {
                c.execute("insert into seen values ($1)", &[&data])?;
                // A query that returns rows of its own in between.
                c.query("select data from seen order by data", &[])
            })
            .unwrap();
            got.push(data);
        }
        assert_eq!(got, want, "every event once, in order");
        // Events come in fours (the first four read with the batch, then one FETCH of four at
        // a time, the last one alone), and buffered() counts what is left of the current four.
        let chunks: Vec<usize> = (0..24).map(|i| 3 - i % 4).chain([0]).collect();
        assert_eq!(held, chunks, "events buffered after each one taken, fetch_size 4");
        // A second pass after a partial one starts from the first event again.
        let partial: Vec<_> = b.events().take(6).map(|e| e.unwrap().data.unwrap()).collect();
        assert_eq!(partial, want[..6]);
        assert_eq!(datas(&b.events().map(|e| e.unwrap()).collect::<Vec<_>>()), want);
        b.finish().unwrap();
        let n: i64 = db.conn().query_one("select count(*) from seen", &[]).unwrap().get(0);
        assert_eq!(n, 25, "the handler's work committed with the batch");
        assert!(consumer.next_batch().unwrap().is_none());
    }

    fn failed_statement_mid_batch_loses_nothing(db: &TestDb) {
        // A statement of the handler's that fails aborts the batch's transaction: the next
        // fetch reports it once, and the dropped batch comes back whole.
        setup(db, &["c"]);
        let evs: Vec<NewEvent> = (0..10).map(|i| NewEvent::new("t", i.to_string())).collect();
        db.client.send_many("q", &evs).unwrap();
        db.tick("q");
        let consumer = Consumer::new(&db.client, "q", "c").unwrap().fetch_size(3);
        let b = consumer.next_batch().unwrap().expect("batch");
        let mut seen = 0;
        let mut errors = 0;
        for ev in b.events() {
            match ev {
                Ok(_) => seen += 1,
                Err(_) => errors += 1,
            }
            if seen == 2 {
                assert!(b.with_client(|c| c.batch_execute("select 1/0")).is_err());
            }
        }
        // The first fetch's three rows were held already, and the second fetch's three had
        // been read ahead (before the failing statement); the third fetch fails.
        assert_eq!((seen, errors), (6, 1));
        let batch_id = b.id();
        drop(b);
        let again = consumer.next_batch().unwrap().expect("redelivered");
        assert_eq!(again.id(), batch_id);
        let all: Vec<_> = again.events().map(|e| e.unwrap()).collect();
        assert_eq!(all.len(), 10);
        again.finish().unwrap();
    }

    fn batch_work_commits_with_finish(db: &TestDb) {
        setup(db, &["c"]);
        db.conn().batch_execute("create table seen (data text)").unwrap();
        send(db, "a");
        db.tick("q");
        let consumer = Consumer::new(&db.client, "q", "c").unwrap();
        // dropped: work rolls back with the batch
        let b = consumer.next_batch().unwrap().unwrap();
        for ev in b.events() {
            let ev = ev.unwrap();
            b.with_client(|c| c.execute("insert into seen values ($1)", &[&ev.data])).unwrap();
        }
        drop(b);
        let n: i64 = db.conn().query_one("select count(*) from seen", &[]).unwrap().get(0);
        assert_eq!(n, 0);
        // finished: work commits with the batch
        let b = consumer.next_batch().unwrap().unwrap();
        for ev in b.events() {
            let ev = ev.unwrap();
            b.with_client(|c| c.execute("insert into seen values ($1)", &[&ev.data])).unwrap();
        }
        b.finish().unwrap();
        let n: i64 = db.conn().query_one("select count(*) from seen", &[]).unwrap().get(0);
        assert_eq!(n, 1);
        assert!(consumer.next_batch().unwrap().is_none());
    }

    fn register_consumer_at_repositions(db: &TestDb) {
        setup(db, &["c"]);
        send(db, "1");
        let t1 = db.tick("q");
        send(db, "2");
        db.tick("q");
        send(db, "3");
        db.tick("q");
        assert_eq!(datas(&db.consume_all("q", "c")), ["1", "2", "3"]);
        // back to after tick t1: events 2 and 3 again
        assert!(!db.client.register_consumer_at("q", "c", t1).unwrap());
        assert_eq!(datas(&db.consume_all("q", "c")), ["2", "3"]);
        // a new consumer can start in the past too
        assert!(db.client.register_consumer_at("q", "new", t1).unwrap());
        assert_eq!(datas(&db.consume_all("q", "new")), ["2", "3"]);
        // repositioning drops an open batch
        let open = db.client.next_batch("q", "c").unwrap();
        assert!(open.is_none());
        db.client.register_consumer_at("q", "c", t1).unwrap();
        let mut conn = db.conn();
        let b = pgq::consumer::next_batch(&mut conn, "q", "c").unwrap().unwrap();
        db.client.register_consumer_at("q", "c", t1).unwrap();
        let info = &db.client.consumer_info(Some("q"), Some("c")).unwrap()[0];
        assert_eq!(info.current_batch, None, "open batch {} dropped", b.batch_id);
        assert_eq!(datas(&db.consume_all("q", "c")), ["2", "3"]);

        let e = db.client.register_consumer_at("q", "c", 999_999).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoSuchTick, "{e}");
    }

    fn next_batch_errors_and_custom(db: &TestDb) {
        setup(db, &["c"]);
        let e = db.client.next_batch("q", "stranger").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotSubscribed, "{e}");
        assert!(e.to_string().contains("q/stranger"), "{e}");
        let e = db.client.next_batch("nope", "c").unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::NotSubscribed | ErrorKind::NoSuchQueue),
            "{e}"
        );
        send(db, "a");
        db.tick("q");
        let mut conn = db.conn();
        // a tick younger than min_lag is held back
        let held = pgq::consumer::next_batch_custom(
            &mut conn, "q", "c", Some(Duration::from_secs(3600)), None, None,
        )
        .unwrap();
        assert!(held.is_none());
        let b = pgq::consumer::next_batch_custom(&mut conn, "q", "c", None, None, None)
            .unwrap()
            .expect("no limits: a batch");
        assert_eq!(datas(&pgq::consumer::get_batch_events(&mut conn, b.batch_id).unwrap()), ["a"]);
        pgq::consumer::finish_batch(&mut conn, b.batch_id).unwrap();
        let e = pgq::consumer::get_batch_events(&mut conn, 987_654).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoSuchBatch, "{e}");
    }
}

fn last_tick(db: &TestDb) -> i64 {
    db.conn()
        .query_one(
            "select max(tick_id) from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue \
             where q.queue_name = 'q'",
            &[],
        )
        .unwrap()
        .get(0)
}

/// `pgq.finish_and_next_batch` (libpgq's schema only) leaves a consumer exactly where
/// `pgq.finish_batch` followed by `pgq.next_batch_info` leaves a twin: same ticks, same
/// subscription row, through new batches, the end of the ticks, a batch that is not the
/// open one and a NULL batch.
#[test]
fn finish_and_next_batch_matches_finish_then_next() {
    let db = TestDb::new(common::Backend::Ours);
    setup(&db, &["one", "twin"]);
    for i in 0..3 {
        send(&db, &i.to_string());
        db.tick("q");
    }
    let mut conn = db.conn();
    type Info = (
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
    );
    let info = |row: &postgres::Row| -> Info {
        let b: Option<i64> = row.get("batch_id");
        (
            b.map(|_| 1),
            row.get("cur_tick_id"),
            row.get("prev_tick_id"),
            row.get("cur_tick_event_seq"),
            row.get("prev_tick_event_seq"),
        )
    };
    let sub = |conn: &mut postgres::Client, c: &str| -> (Option<i64>, Option<i64>, bool) {
        let r = conn
            .query_one(
                "select s.sub_last_tick, s.sub_next_tick, s.sub_batch is not null
                   from pgq.subscription s join pgq.consumer c on c.co_id = s.sub_consumer
                  where c.co_name = $1",
                &[&c],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    let next = |conn: &mut postgres::Client, c: &str| -> (Option<i64>, Info) {
        let r = conn
            .query_one("select * from pgq.next_batch_info('q', $1)", &[&c])
            .unwrap();
        (r.get("batch_id"), info(&r))
    };
    let (mut one, first) = next(&mut conn, "one");
    let (mut twin, twin_first) = next(&mut conn, "twin");
    assert_eq!(first, twin_first);
    // Four steps: two more batches, then no newer tick (twice).
    for step in 0..4 {
        let r = conn
            .query_one(
                "select * from pgq.finish_and_next_batch($1, 'q', 'one')",
                &[&one],
            )
            .unwrap();
        let got = info(&r);
        one = r.get("batch_id");
        if let Some(b) = twin {
            conn.execute("select pgq.finish_batch($1)", &[&b]).unwrap();
        }
        let (b, want) = next(&mut conn, "twin");
        twin = b;
        assert_eq!(got, want, "step {step}");
        assert_eq!(sub(&mut conn, "one"), sub(&mut conn, "twin"), "step {step}");
    }
    assert_eq!((one, twin), (None, None));
    // A batch that is not the open one finishes nothing; the next batch is still handed out.
    send(&db, "late");
    db.tick("q");
    let r = conn
        .query_one(
            "select * from pgq.finish_and_next_batch(987654, 'q', 'one')",
            &[],
        )
        .unwrap();
    let (b, want) = next(&mut conn, "twin");
    assert_eq!(info(&r), want);
    let opened: Option<i64> = r.get("batch_id");
    assert!(opened.is_some() && b.is_some());
    // Asked again with NULL: the same open batch (as next_batch_info gives).
    let again: Option<i64> = conn
        .query_one(
            "select batch_id from pgq.finish_and_next_batch(null, 'q', 'one')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(again, opened);
    let e = conn
        .query_one(
            "select * from pgq.finish_and_next_batch(1, 'q', 'nobody')",
            &[],
        )
        .unwrap_err();
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(msg.starts_with("Not subscriber to queue"), "{msg}");
}
