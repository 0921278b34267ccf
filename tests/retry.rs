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
