//! Retry: tagged events come back to their owner only, later, with ev_retry incremented.

mod common;

use std::time::Duration;

use common::{datas, TestDb};
use pgq::{Consumer, ErrorKind, NewEvent};

fn setup(db: &TestDb) {
    db.client.create_queue("q").unwrap();
    db.client.register_consumer("q", "owner").unwrap();
    db.client.register_consumer("q", "other").unwrap();
}

fn retry_queue_len(db: &TestDb) -> i64 {
    db.conn()
        .query_one("select count(*) from pgq.retry_queue", &[])
        .unwrap()
        .get(0)
}

both_backends! {
    fn retried_event_returns_to_owner_only(db: &TestDb) {
        setup(db);
        let keep = db.client.send("q", &NewEvent::new("t", "ok")).unwrap();
        let bad = db.client.send("q", &NewEvent::new("t", "fails").extra1("x")).unwrap();
        db.tick("q");
        let owner = Consumer::new(&db.client, "q", "owner").unwrap();
        let b = owner.next_batch().unwrap().unwrap();
        let mut first = None;
        for ev in b.events() {
            let ev = ev.unwrap();
            if ev.id == bad {
                first = Some(ev.clone());
                b.retry(ev.id, Duration::ZERO);
            }
        }
        b.finish().unwrap();
        let first = first.expect("event seen");
        assert_eq!(retry_queue_len(db), 1);

        assert_eq!(db.client.retry_events().unwrap(), 1);
        assert_eq!(db.client.retry_events().unwrap(), 0);
        assert_eq!(retry_queue_len(db), 0);
        db.tick("q");

        let again = db.consume_all("q", "owner");
        assert_eq!(again.len(), 1, "{again:?}");
        let r = &again[0];
        assert_eq!(r.id, bad, "same event id");
        assert_eq!(r.retry, Some(1));
        assert_eq!(r.data, first.data);
        assert_eq!(r.extra1, first.extra1);
        assert_eq!(r.time, first.time, "original event time kept");
        assert_ne!(r.txid, first.txid, "re-inserted by a new transaction");

        // the other consumer saw each event exactly once and never the retry
        let other = db.consume_all("q", "other");
        let ids: Vec<i64> = other.iter().map(|e| e.id).collect();
        assert_eq!(ids, [keep, bad]);
        assert!(other.iter().all(|e| e.retry.is_none()));
        assert!(owner.next_batch().unwrap().is_none());
    }

    /// Many events tagged in one batch (one of them twice, delays whole and sub-second) are
    /// queued together at finish; an unknown id among them fails the finish and queues none.
    fn many_tagged_retries_in_one_batch(db: &TestDb) {
        setup(db);
        let evs: Vec<NewEvent> = (0..300).map(|i| NewEvent::new("t", i.to_string())).collect();
        db.client.send_many("q", &evs).unwrap();
        db.tick("q");
        let owner = Consumer::new(&db.client, "q", "owner").unwrap().fetch_size(64);
        let tag_all = |b: &pgq::Batch, extra: Option<i64>| {
            let mut first = None;
            for (i, ev) in b.events().enumerate() {
                let ev = ev.unwrap();
                first.get_or_insert(ev.id);
                let delay = if i % 2 == 0 { Duration::ZERO } else { Duration::from_millis(1) };
                b.retry(ev.id, delay);
            }
            b.retry(first.unwrap(), Duration::ZERO); // tagged twice: queued once
            if let Some(id) = extra {
                b.retry(id, Duration::ZERO);
            }
        };
        // An id that is not in the batch: nothing is queued, the batch stays open.
        let b = owner.next_batch().unwrap().unwrap();
        let batch_id = b.id();
        tag_all(&b, Some(i64::MAX));
        let e = b.finish().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoSuchEvent, "{e}");
        assert_eq!(retry_queue_len(db), 0);
        let b = owner.next_batch().unwrap().unwrap();
        assert_eq!(b.id(), batch_id);
        tag_all(&b, None);
        b.finish().unwrap();
        assert_eq!(retry_queue_len(db), 300);
        let mut moved = 0;
        common::wait_until("all retries due", Duration::from_secs(10), || {
            moved += db.client.retry_events().unwrap();
            moved == 300
        });
        db.tick("q");
        let again = db.consume_all("q", "owner");
        let want: Vec<String> = (0..300).map(|i| i.to_string()).collect();
        assert_eq!(datas(&again), want);
        assert!(again.iter().all(|e| e.retry == Some(1)), "{again:?}");
    }

    fn batch_retry_and_counts(db: &TestDb) {
        setup(db);
        for i in 0..3 {
            db.client.send("q", &NewEvent::new("t", i.to_string())).unwrap();
        }
        db.tick("q");
        let mut conn = db.conn();
        let mut batch = pgq::consumer::next_batch(&mut conn, "q", "owner").unwrap().unwrap().batch_id;
        for round in 1..=2 {
            let n = pgq::consumer::batch_retry(&mut conn, batch, Duration::ZERO).unwrap();
            assert_eq!(n, 3);
            pgq::consumer::finish_batch(&mut conn, batch).unwrap();
            assert_eq!(db.client.retry_events().unwrap(), 3);
            db.tick("q");
            batch = pgq::consumer::next_batch(&mut conn, "q", "owner").unwrap().unwrap().batch_id;
            let evs = pgq::consumer::get_batch_events(&mut conn, batch).unwrap();
            assert_eq!(datas(&evs), ["0", "1", "2"]);
            assert!(evs.iter().all(|e| e.retry == Some(round)), "{evs:?}");
        }
        pgq::consumer::finish_batch(&mut conn, batch).unwrap();
        let e = pgq::consumer::batch_retry(&mut conn, 987_654, Duration::ZERO).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoSuchBatch, "{e}");
    }

    fn event_retry_rules(db: &TestDb) {
        setup(db);
        let id = db.client.send("q", &NewEvent::new("t", "x")).unwrap();
        db.tick("q");
        let mut conn = db.conn();
        let b = pgq::consumer::next_batch(&mut conn, "q", "owner").unwrap().unwrap();
        assert!(pgq::consumer::event_retry(&mut conn, b.batch_id, id, Duration::from_secs(3600)).unwrap());
        // already queued: 0
        assert!(!pgq::consumer::event_retry(&mut conn, b.batch_id, id, Duration::from_secs(1)).unwrap());
        let e = pgq::consumer::event_retry(&mut conn, b.batch_id, id + 1000, Duration::ZERO).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoSuchEvent, "{e}");
        pgq::consumer::finish_batch(&mut conn, b.batch_id).unwrap();
        // not due yet: stays in the retry queue
        assert_eq!(db.client.retry_events().unwrap(), 0);
        assert_eq!(retry_queue_len(db), 1);
        // unregistering the owner deletes its retry events
        db.client.unregister_consumer("q", "owner").unwrap();
        assert_eq!(retry_queue_len(db), 0);
    }

    fn retry_at_time_and_subsecond_delay(db: &TestDb) {
        setup(db);
        let a = db.client.send("q", &NewEvent::new("t", "a")).unwrap();
        let b = db.client.send("q", &NewEvent::new("t", "b")).unwrap();
        db.tick("q");
        let mut conn = db.conn();
        let nb = pgq::consumer::next_batch(&mut conn, "q", "owner").unwrap().unwrap();
        let past = std::time::SystemTime::now() - Duration::from_secs(60);
        assert!(pgq::consumer::event_retry_at(&mut conn, nb.batch_id, a, past).unwrap());
        assert!(pgq::consumer::event_retry(&mut conn, nb.batch_id, b, Duration::from_millis(1)).unwrap());
        pgq::consumer::finish_batch(&mut conn, nb.batch_id).unwrap();
        let mut moved = 0;
        common::wait_until("both retries due", Duration::from_secs(10), || {
            moved += db.client.retry_events().unwrap();
            moved == 2
        });
        db.tick("q");
        let evs = db.consume_all("q", "owner");
        assert_eq!(datas(&evs), ["a", "b"]);
        assert!(evs.iter().all(|e| e.retry == Some(1)));
    }
}

/// `pgq.event_retry_many` (libpgq's schema only) keeps `pgq.event_retry`'s rules for each
/// event: the first time of an id given twice, already queued ids skipped, and an unknown id
/// (or batch, or NULL id) an error that queues none; array lengths must match.
#[test]
fn event_retry_many_rules() {
    let db = TestDb::new(common::Backend::Ours);
    setup(&db);
    let ids: Vec<i64> = (0..4)
        .map(|i| {
            db.client
                .send("q", &NewEvent::new("t", i.to_string()))
                .unwrap()
        })
        .collect();
    db.tick("q");
    let mut conn = db.conn();
    let b = pgq::consumer::next_batch(&mut conn, "q", "owner")
        .unwrap()
        .unwrap()
        .batch_id;
    fn retry_many(
        conn: &mut impl postgres::GenericClient,
        b: i64,
        ids: &[i64],
        secs: &[i32],
    ) -> Result<i32, postgres::Error> {
        conn.query_one(
            "select pgq.event_retry_many($1, $2::int8[], \
                (select array_agg(now() + make_interval(secs => s) order by n) \
                   from unnest($3::int4[]) with ordinality u(s, n)))",
            &[&b, &ids, &secs],
        )
        .map(|r| r.get::<_, i32>(0))
    }
    let err_message = |e: postgres::Error| e.as_db_error().map(|d| d.message().to_string());
    // Every failure below rolls back to the savepoint and queues nothing.
    let mut tx = conn.transaction().unwrap();
    for (bad, secs, want) in [
        (vec![ids[0], ids[3] + 1000], vec![0, 0], "event not found"),
        (
            vec![ids[0], ids[1]],
            vec![0],
            "event_retry_many: 2 event ids but 1 retry times",
        ),
    ] {
        let mut sp = tx.transaction().unwrap();
        let e = retry_many(&mut sp, b, &bad, &secs).unwrap_err();
        assert_eq!(err_message(e).as_deref(), Some(want));
        sp.rollback().unwrap();
    }
    {
        let mut sp = tx.transaction().unwrap();
        let e = sp
            .query_one(
                "select pgq.event_retry_many($1, array[null]::int8[], array[now()])",
                &[&b],
            )
            .unwrap_err();
        assert_eq!(err_message(e).as_deref(), Some("event not found"));
        sp.rollback().unwrap();
    }
    {
        let mut sp = tx.transaction().unwrap();
        let e = sp
            .query_one(
                "select pgq.event_retry_many(987654, array[1]::int8[], array[now()])",
                &[],
            )
            .unwrap_err();
        assert_eq!(err_message(e).as_deref(), Some("event not found"));
        sp.rollback().unwrap();
    }
    let queued: i64 = tx
        .query_one("select count(*) from pgq.retry_queue", &[])
        .unwrap()
        .get(0);
    assert_eq!(queued, 0);
    // ids[0] twice: its first time (an hour) counts; then ids[0] again and ids[2]: one new.
    assert_eq!(
        retry_many(&mut tx, b, &[ids[0], ids[1], ids[0]], &[3600, 0, 0]).unwrap(),
        2
    );
    assert_eq!(
        retry_many(&mut tx, b, &[ids[0], ids[2]], &[0, 0]).unwrap(),
        1
    );
    let rows: Vec<(i64, bool, i32)> = tx
        .query(
            "select ev_id, ev_retry_after > now() + interval '30 minutes', ev_retry \
               from pgq.retry_queue order by ev_id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        rows,
        [(ids[0], true, 1), (ids[1], false, 1), (ids[2], false, 1)]
    );
    tx.commit().unwrap();
    pgq::consumer::finish_batch(&mut conn, b).unwrap();
}
