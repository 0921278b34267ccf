//! Cooperative consumers (pgq_coop): sub-consumers sharing one consumer's stream.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{datas, wait_until, TestDb};
use pgq::coop::{self, BatchHandling};
use pgq::{Consumer, ErrorKind, NewEvent};

const HOUR: Option<Duration> = Some(Duration::from_secs(3600));

fn setup(db: &TestDb) {
    // On the official extension this is what adds pgq_coop; on ours it is a no-op.
    db.client.install().unwrap();
    db.client.create_queue("q").unwrap();
}

fn send(db: &TestDb, data: &str) -> i64 {
    db.client.send("q", &NewEvent::new("t", data)).unwrap()
}

fn sub(db: &TestDb, name: &str, dead: Option<Duration>) -> Consumer {
    Consumer::new(&db.client, "q", "c")
        .unwrap()
        .subconsumer(name, dead)
        .unwrap()
}

/// (consumer name, open batch, last tick) of every subscription on "q", by name.
fn subscriptions(db: &TestDb) -> Vec<(String, Option<i64>, Option<i64>)> {
    let mut v: Vec<_> = db
        .client
        .consumer_info(Some("q"), None)
        .unwrap()
        .into_iter()
        .map(|c| (c.consumer_name, c.current_batch, c.last_tick))
        .collect();
    v.sort();
    v
}

fn names(db: &TestDb) -> Vec<String> {
    subscriptions(db).into_iter().map(|s| s.0).collect()
}

fn batch_datas(db: &TestDb, batch_id: i64) -> Vec<String> {
    let mut conn = db.conn();
    datas(&pgq::consumer::get_batch_events(&mut conn, batch_id).unwrap())
}

both_backends! {
    /// A sub-consumer's pull loop over `Batch::finish_and_next` (finish and next batch
    /// through pgq_coop, separately) sees every event once.
    fn finish_and_next_for_a_subconsumer(db: &TestDb) {
        setup(db);
        db.client.register_subconsumer("q", "c", "a").unwrap();
        for b in 0..3 {
            send(db, &format!("b{b}"));
            db.tick("q");
        }
        let a = sub(db, "a", HOUR);
        let mut seen = Vec::new();
        let mut next = a.next_batch().unwrap();
        while let Some(batch) = next {
            for ev in batch.events() {
                seen.push(ev.unwrap().data.unwrap_or_default());
            }
            next = batch.finish_and_next(&a).unwrap();
        }
        assert_eq!(seen, ["b0", "b1", "b2"]);
    }

    fn install_adds_pgq_coop_on_either_backend(db: &TestDb) {
        let outcome = db.client.install().unwrap();
        let mut conn = db.conn();
        let n: i64 = conn
            .query_one(
                "select count(*) from pg_proc where pronamespace = 'pgq_coop'::regnamespace \
                 and proname in ('register_subconsumer', 'unregister_subconsumer', 'next_batch', \
                 'next_batch_info', 'next_batch_custom', 'finish_batch')",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(n, 9, "every pgq_coop function and overload");
        if db.backend == common::Backend::Official {
            assert!(matches!(outcome, pgq::InstallOutcome::OfficialExtension { .. }));
            let v: String = conn
                .query_one("select version from pgq_coop.libpgq_schema", &[])
                .unwrap()
                .get(0);
            assert_eq!(v, pgq::schema::SCHEMA_VERSION);
            // the extension's own objects stay as they were
            let ext: i64 = conn
                .query_one(
                    "select count(*) from pg_depend d join pg_extension e on e.oid = d.refobjid \
                     where e.extname = 'pgq' and d.deptype = 'e' and d.classid = 'pg_proc'::regclass \
                     and d.objid in (select oid from pg_proc \
                                     where pronamespace = 'pgq_coop'::regnamespace)",
                    &[],
                )
                .unwrap()
                .get(0);
            assert_eq!(ext, 0, "pgq_coop is not part of the extension");
            // and a second install is a no-op
            assert!(matches!(
                db.client.install().unwrap(),
                pgq::InstallOutcome::OfficialExtension { .. }
            ));
        }
    }

    fn register_and_unregister(db: &TestDb) {
        setup(db);
        assert!(db.client.register_subconsumer("q", "c", "a").unwrap());
        assert!(!db.client.register_subconsumer("q", "c", "a").unwrap());
        assert!(db.client.register_subconsumer("q", "c", "b").unwrap());
        // the main consumer was registered on the way, the sub-consumers share its sub_id
        assert_eq!(names(db), ["c", "c.a", "c.b"]);
        let mut conn = db.conn();
        let ids: i64 = conn
            .query_one("select count(distinct sub_id) from pgq.subscription", &[])
            .unwrap()
            .get(0);
        assert_eq!(ids, 1);

        assert!(db.client.unregister_subconsumer("q", "c", "a", BatchHandling::Fail).unwrap());
        assert!(!db.client.unregister_subconsumer("q", "c", "a", BatchHandling::Fail).unwrap());
        assert!(!db.client.unregister_subconsumer("q", "c", "zz", BatchHandling::Release).unwrap());
        assert_eq!(names(db), ["c", "c.b"]);

        // through a coop-mode Consumer
        let a = sub(db, "a", None);
        assert!(a.register_subconsumer().unwrap());
        assert_eq!(a.subconsumer_name(), Some("a"));
        assert!(a.unregister_subconsumer(BatchHandling::Fail).unwrap());
        let plain = Consumer::new(&db.client, "q", "c").unwrap();
        assert_eq!(plain.register_subconsumer().unwrap_err().kind(), ErrorKind::InvalidInput);
    }

    fn unregister_with_open_batch_fail_or_release(db: &TestDb) {
        setup(db);
        db.client.register_subconsumer("q", "c", "a").unwrap();
        db.client.register_subconsumer("q", "c", "b").unwrap();
        send(db, "e1");
        db.tick("q");
        let mut conn = db.conn();
        let batch = coop::next_batch(&mut conn, "q", "c", "a", None).unwrap().unwrap().batch_id;

        // 0: refused, nothing changes
        let err = db.client.unregister_subconsumer("q", "c", "a", BatchHandling::Fail).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BatchOpen, "{err}");
        assert_eq!(
            coop::next_batch(&mut conn, "q", "c", "a", None).unwrap().unwrap().batch_id,
            batch
        );

        // 1: released; "a" is gone for next_batch, and b takes the batch over, events intact
        assert!(db.client.unregister_subconsumer("q", "c", "a", BatchHandling::Release).unwrap());
        assert!(!db.client.unregister_subconsumer("q", "c", "a", BatchHandling::Release).unwrap());
        let err = coop::next_batch(&mut conn, "q", "c", "a", None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotSubscribed, "{err}");
        let b = sub(db, "b", None).next_batch().unwrap().unwrap();
        assert_eq!(b.id(), batch);
        assert_eq!(b.subconsumer(), Some("b"));
        assert_eq!(datas(&b.events().collect::<pgq::Result<Vec<_>>>().unwrap()), ["e1"]);
        b.finish().unwrap();
        assert_eq!(names(db), ["c", "c.b"]);

        // re-registering before anyone took the released batch gets it back
        db.client.register_subconsumer("q", "c", "a").unwrap();
        send(db, "e2");
        db.tick("q");
        let second = coop::next_batch(&mut conn, "q", "c", "a", None).unwrap().unwrap().batch_id;
        assert!(db.client.unregister_subconsumer("q", "c", "a", BatchHandling::Release).unwrap());
        assert!(db.client.register_subconsumer("q", "c", "a").unwrap());
        let again = coop::next_batch(&mut conn, "q", "c", "a", None).unwrap().unwrap();
        assert_eq!(again.batch_id, second);
        assert_eq!(batch_datas(db, second), ["e2"]);
        assert!(coop::finish_batch(&mut conn, second).unwrap());
        assert_eq!(coop::next_batch(&mut conn, "q", "c", "b", None).unwrap(), None);
    }

    fn released_batch_finished_by_its_owner_is_not_handed_out_again(db: &TestDb) {
        setup(db);
        db.client.register_subconsumer("q", "c", "a").unwrap();
        db.client.register_subconsumer("q", "c", "b").unwrap();
        send(db, "e1");
        db.tick("q");
        let a = sub(db, "a", None).next_batch().unwrap().unwrap();
        assert!(db.client.unregister_subconsumer("q", "c", "a", BatchHandling::Release).unwrap());
        // the former owner was still working on it and finishes: that counts
        a.finish().unwrap();
        assert_eq!(names(db), ["c", "c.b"]);
        let mut conn = db.conn();
        assert_eq!(coop::next_batch(&mut conn, "q", "c", "b", None).unwrap(), None);
    }

    fn batches_are_shared_out_and_finished(db: &TestDb) {
        setup(db);
        db.client.register_subconsumer("q", "c", "a").unwrap();
        db.client.register_subconsumer("q", "c", "b").unwrap();
        send(db, "e1");
        let t1 = db.tick("q");
        send(db, "e2");
        let t2 = db.tick("q");
        let mut conn = db.conn();
        let a = coop::next_batch(&mut conn, "q", "c", "a", None).unwrap().unwrap();
        // asking again gives the same batch, the sibling gets the next one
        assert_eq!(coop::next_batch(&mut conn, "q", "c", "a", None).unwrap().unwrap(), a);
        let b = coop::next_batch(&mut conn, "q", "c", "b", None).unwrap().unwrap();
        assert_ne!(a.batch_id, b.batch_id);
        assert_eq!((a.cur_tick_id, b.cur_tick_id), (t1, t2));
        assert_eq!(b.prev_tick_id, Some(t1));
        assert_eq!(batch_datas(db, a.batch_id), ["e1"]);
        assert_eq!(batch_datas(db, b.batch_id), ["e2"]);
        // the main consumer is past both batches already; the sub-consumers hold them
        assert_eq!(
            subscriptions(db),
            [
                ("c".to_string(), None, Some(t2)),
                ("c.a".to_string(), Some(a.batch_id), a.prev_tick_id),
                ("c.b".to_string(), Some(b.batch_id), Some(t1)),
            ]
        );
        let info = db.client.batch_info(a.batch_id).unwrap().unwrap();
        assert_eq!(info.consumer_name, "c.a");

        assert!(coop::finish_batch(&mut conn, a.batch_id).unwrap());
        assert!(!coop::finish_batch(&mut conn, a.batch_id).unwrap(), "finished twice");
        assert!(!coop::finish_batch(&mut conn, 987_654_321).unwrap(), "unknown batch");
        assert!(coop::finish_batch(&mut conn, b.batch_id).unwrap());
        // idle sub-consumers hold no tick, so they never hold back rotation
        assert_eq!(
            subscriptions(db),
            [
                ("c".to_string(), None, Some(t2)),
                ("c.a".to_string(), None, None),
                ("c.b".to_string(), None, None),
            ]
        );
        assert_eq!(coop::next_batch(&mut conn, "q", "c", "a", None).unwrap(), None);
    }

    fn a_pgq_reader_can_consume_cooperatively(db: &TestDb) {
        setup(db);
        let role = format!("{}_rd", &db.name[..db.name.len().min(50)]);
        let mut su = db.superuser();
        su.batch_execute(&format!("create role \"{role}\" login in role pgq_reader"))
            .unwrap();
        let mut cfg = db.config.clone();
        cfg.user(&role);
        cfg.password("");
        {
            let reader = pgq::ClientBuilder::from_config(cfg).pool_size(2).build().unwrap();
            reader.register_subconsumer("q", "c", "a").unwrap();
            send(db, "e1");
            db.tick("q");
            let c = Consumer::new(&reader, "q", "c").unwrap().subconsumer("a", None).unwrap();
            let b = c.next_batch().unwrap().unwrap();
            assert_eq!(datas(&b.events().collect::<pgq::Result<Vec<_>>>().unwrap()), ["e1"]);
            b.finish().unwrap();
            assert!(c.unregister_subconsumer(BatchHandling::Fail).unwrap());
        }
        su.batch_execute(&format!("drop role \"{role}\"")).unwrap();
    }

    fn idle_subconsumers_do_not_hold_back_rotation(db: &TestDb) {
        setup(db);
        db.client.register_subconsumer("q", "c", "a").unwrap();
        db.client.register_subconsumer("q", "c", "idle").unwrap();
        db.client
            .set_queue_config("q", pgq::QueueParam::RotationPeriod(Duration::ZERO))
            .unwrap();
        send(db, "e1");
        let a = sub(db, "a", None);
        let mut seen = 0;
        // as in admin.rs: parallel tests' transactions can hold rotation back for a moment
        wait_until("rotation", Duration::from_secs(30), || {
            db.tick("q");
            while let Some(b) = a.next_batch().unwrap() {
                seen += b.events().count();
                b.finish().unwrap();
            }
            db.client.maintenance().unwrap();
            db.client.queue_info("q").unwrap().cur_table == 1
        });
        assert_eq!(seen, 1);
    }

    fn next_batch_custom_and_info_forms(db: &TestDb) {
        setup(db);
        db.client.register_subconsumer("q", "c", "a").unwrap();
        let mut conn = db.conn();
        send(db, "e1");
        let t = db.tick("q");
        // the tick is not an hour old, nor does the batch span an hour
        let hour = Duration::from_secs(3600);
        let got = coop::next_batch_custom(&mut conn, "q", "c", "a", Some(hour), None, None, None);
        assert_eq!(got.unwrap(), None);
        let got = coop::next_batch_custom(&mut conn, "q", "c", "a", None, None, Some(hour), HOUR);
        assert_eq!(got.unwrap(), None);
        let b = coop::next_batch_custom(&mut conn, "q", "c", "a", None, Some(1), None, HOUR)
            .unwrap()
            .unwrap();
        assert_eq!(b.cur_tick_id, t);
        assert_eq!(batch_datas(db, b.batch_id), ["e1"]);
        coop::finish_batch(&mut conn, b.batch_id).unwrap();

        // the SQL forms tools call: 3 and 4 argument next_batch / next_batch_info, 6 and 7
        // argument next_batch_custom
        send(db, "e3");
        db.tick("q");
        let id: Option<i64> = conn
            .query_one("select pgq_coop.next_batch('q', 'c', 'a')", &[])
            .unwrap()
            .get(0);
        let id = id.unwrap();
        for sql in [
            "select pgq_coop.next_batch('q', 'c', 'a', '1 hour')",
            "select batch_id from pgq_coop.next_batch_info('q', 'c', 'a')",
            "select batch_id from pgq_coop.next_batch_info('q', 'c', 'a', '1 hour')",
            "select batch_id from pgq_coop.next_batch_custom('q', 'c', 'a', null, null, null)",
            "select batch_id from pgq_coop.next_batch_custom('q', 'c', 'a', null, null, null, '1 hour')",
        ] {
            let again: Option<i64> = conn.query_one(sql, &[]).unwrap().get(0);
            assert_eq!(again, Some(id), "{sql}");
        }
        let done: i32 = conn.query_one("select pgq_coop.finish_batch($1)", &[&id]).unwrap().get(0);
        assert_eq!(done, 1);
    }

    fn dead_subconsumer_batch_is_taken_over(db: &TestDb) {
        setup(db);
        db.client.register_subconsumer("q", "c", "a").unwrap();
        db.client.register_subconsumer("q", "c", "b").unwrap();
        send(db, "e1");
        db.tick("q");
        let a = sub(db, "a", None).next_batch().unwrap().unwrap();
        let mut conn = db.conn();
        // alive (seen less than an hour ago): not taken, and no other batch exists
        assert_eq!(coop::next_batch(&mut conn, "q", "c", "b", HOUR).unwrap(), None);
        assert_eq!(coop::next_batch(&mut conn, "q", "c", "b", None).unwrap(), None);

        // "a" stops asking: after the dead interval "b" takes its batch over
        let short = Some(Duration::from_millis(200));
        let mut taken = None;
        wait_until("b takes a's batch over", Duration::from_secs(10), || {
            taken = coop::next_batch(&mut conn, "q", "c", "b", short).unwrap();
            taken.is_some()
        });
        let taken = taken.unwrap();
        assert_eq!(taken.batch_id, a.id());
        assert_eq!(&taken, a.info());
        assert_eq!(batch_datas(db, taken.batch_id), ["e1"]);

        // the old owner's finish is refused (its work rolls back), the new owner's works
        let err = a.finish().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NoSuchBatch, "{err}");
        assert!(coop::finish_batch(&mut conn, taken.batch_id).unwrap());
        // "a" comes back to life: no batch of its own any more, nothing else to do
        assert_eq!(coop::next_batch(&mut conn, "q", "c", "a", None).unwrap(), None);
        assert_eq!(subscriptions(db).iter().filter(|s| s.1.is_some()).count(), 0);
    }

    fn subconsumers_on_threads_process_each_event_once(db: &TestDb) {
        setup(db);
        const WORKERS: usize = 4;
        const ROUNDS: usize = 30;
        const PER_ROUND: usize = 10;
        const TOTAL: usize = ROUNDS * PER_ROUND;
        for w in 0..WORKERS {
            db.client.register_subconsumer("q", "c", &format!("w{w}")).unwrap();
        }
        let seen = Arc::new(Mutex::new(Vec::<(usize, String)>::new()));
        let batches = Arc::new(Mutex::new(HashMap::<i64, usize>::new()));
        let holding = Arc::new(Mutex::new(HashSet::<i64>::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut handles = Vec::new();
        for w in 0..WORKERS {
            let consumer = sub(db, &format!("w{w}"), HOUR).fetch_size(3);
            let (seen, batches, holding, count, failed) =
                (seen.clone(), batches.clone(), holding.clone(), count.clone(), failed.clone());
            handles.push(std::thread::spawn(move || {
                while count.load(Ordering::SeqCst) < TOTAL && !failed.load(Ordering::SeqCst) {
                    assert!(Instant::now() < deadline, "worker w{w} timed out");
                    let Some(batch) = consumer.next_batch().unwrap() else {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    };
                    // never the same batch twice, never one another worker holds right now
                    if batches.lock().unwrap().insert(batch.id(), w).is_some()
                        || !holding.lock().unwrap().insert(batch.id())
                    {
                        failed.store(true, Ordering::SeqCst);
                        panic!("batch {} handed out twice", batch.id());
                    }
                    let mut n = 0;
                    for ev in batch.events() {
                        let ev = ev.unwrap();
                        seen.lock().unwrap().push((w, ev.data.unwrap_or_default()));
                        n += 1;
                    }
                    holding.lock().unwrap().remove(&batch.id());
                    batch.finish().unwrap();
                    count.fetch_add(n, Ordering::SeqCst);
                }
            }));
        }
        let mut expected = Vec::new();
        for round in 0..ROUNDS {
            let evs: Vec<NewEvent> = (0..PER_ROUND)
                .map(|i| {
                    let d = format!("r{round}-{i}");
                    expected.push(d.clone());
                    NewEvent::new("t", d)
                })
                .collect();
            db.client.send_many("q", &evs).unwrap();
            db.tick("q");
        }
        for h in handles {
            h.join().expect("worker thread");
        }
        let seen = seen.lock().unwrap();
        let mut got: Vec<String> = seen.iter().map(|s| s.1.clone()).collect();
        got.sort();
        expected.sort();
        assert_eq!(got, expected, "every event exactly once");
        let mut conn = db.conn();
        for w in 0..WORKERS {
            assert_eq!(
                coop::next_batch(&mut conn, "q", "c", &format!("w{w}"), None).unwrap(),
                None
            );
        }
    }

    fn threads_take_over_a_dead_peers_batch(db: &TestDb) {
        setup(db);
        const WORKERS: usize = 3;
        const ROUNDS: usize = 12;
        let dead = Some(Duration::from_secs(2));
        db.client.register_subconsumer("q", "c", "doomed").unwrap();
        for w in 0..WORKERS {
            db.client.register_subconsumer("q", "c", &format!("w{w}")).unwrap();
        }
        let mut expected: Vec<String> = Vec::new();
        let mut produce = |round: usize| {
            let evs: Vec<NewEvent> = (0..5)
                .map(|i| {
                    let d = format!("r{round}-{i}");
                    expected.push(d.clone());
                    NewEvent::new("t", d)
                })
                .collect();
            db.client.send_many("q", &evs).unwrap();
            db.tick("q");
        };
        // "doomed" takes the first batch and dies without finishing it
        produce(0);
        let doomed = sub(db, "doomed", dead).next_batch().unwrap().unwrap();
        let doomed_id = doomed.id();
        drop(doomed);

        // Events only count once their batch is finished: a batch taken over from a live
        // but slow thread (possible on a loaded machine) fails to finish and rolls back.
        let done = Arc::new(Mutex::new(Vec::<(i64, Vec<String>)>::new()));
        let total = 5 * ROUNDS;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut handles = Vec::new();
        for w in 0..WORKERS {
            let consumer = sub(db, &format!("w{w}"), dead);
            let done = done.clone();
            handles.push(std::thread::spawn(move || loop {
                let finished: usize = done.lock().unwrap().iter().map(|b| b.1.len()).sum();
                if finished >= total {
                    return;
                }
                assert!(Instant::now() < deadline, "worker w{w} timed out");
                let Some(batch) = consumer.next_batch().unwrap() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let id = batch.id();
                let evs = batch.events().collect::<pgq::Result<Vec<_>>>().unwrap();
                match batch.finish() {
                    Ok(()) => done.lock().unwrap().push((id, datas(&evs))),
                    Err(e) if e.kind() == ErrorKind::NoSuchBatch => {}
                    Err(e) => panic!("finish batch {id}: {e}"),
                }
            }));
        }
        for round in 1..ROUNDS {
            produce(round);
        }
        for h in handles {
            h.join().expect("worker thread");
        }
        let done = done.lock().unwrap();
        let ids: HashSet<i64> = done.iter().map(|b| b.0).collect();
        assert_eq!(ids.len(), done.len(), "a batch finished twice");
        assert!(ids.contains(&doomed_id), "the dead peer's batch was taken over");
        let mut got: Vec<String> = done.iter().flat_map(|b| b.1.clone()).collect();
        got.sort();
        expected.sort();
        assert_eq!(got, expected, "every event exactly once");
    }

    fn retried_events_come_back_to_the_shared_stream(db: &TestDb) {
        setup(db);
        db.client.register_subconsumer("q", "c", "a").unwrap();
        db.client.register_subconsumer("q", "c", "b").unwrap();
        let id = send(db, "again");
        db.tick("q");
        let a = sub(db, "a", None).next_batch().unwrap().unwrap();
        a.retry(id, Duration::ZERO);
        a.finish().unwrap();
        assert_eq!(db.client.retry_events().unwrap(), 1);
        db.tick("q");
        let b = sub(db, "b", None).next_batch().unwrap().unwrap();
        let evs = b.events().collect::<pgq::Result<Vec<_>>>().unwrap();
        assert_eq!(evs.len(), 1);
        assert_eq!((evs[0].id, evs[0].retry), (id, Some(1)));
        b.finish().unwrap();
    }

    fn unregister_consumer_knows_subconsumers(db: &TestDb) {
        setup(db);
        db.client.register_subconsumer("q", "c", "a").unwrap();
        db.client.register_subconsumer("q", "c", "b").unwrap();
        db.client.register_consumer("q", "other").unwrap();
        // pgq.unregister_consumer on a sub-consumer removes that one only
        assert_eq!(db.client.unregister_consumer("q", "c.a").unwrap(), 1);
        assert_eq!(names(db), ["c", "c.b", "other"]);
        // on the main consumer it removes the sub-consumers too
        assert_eq!(db.client.unregister_consumer("q", "c").unwrap(), 2);
        assert_eq!(names(db), ["other"]);
        let left: i64 = db
            .conn()
            .query_one("select count(*) from pgq.consumer where co_name = 'c'", &[])
            .unwrap()
            .get(0);
        assert_eq!(left, 0, "the consumer's name is forgotten");
        // and it can start over
        assert!(db.client.register_subconsumer("q", "c", "a").unwrap());
        assert_eq!(names(db), ["c", "c.a", "other"]);
    }

    fn errors_are_clear(db: &TestDb) {
        setup(db);
        let mut conn = db.conn();
        let e = db.client.register_subconsumer("nope", "c", "a").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoSuchQueue, "{e}");
        let e = coop::next_batch(&mut conn, "nope", "c", "a", None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoSuchQueue, "{e}");
        let e = coop::next_batch(&mut conn, "q", "c", "a", None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotSubscribed, "{e}");
        db.client.register_consumer("q", "c").unwrap();
        let e = coop::next_batch(&mut conn, "q", "c", "a", None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotSubscribed, "{e}");
        assert!(e.message().contains("subconsumer a"), "{e}");
        assert!(!db.client.unregister_subconsumer("nope", "c", "a", BatchHandling::Fail).unwrap());

        // a plain consumer named like the sub-consumer would be is not taken over
        db.client.register_consumer("q", "c.x").unwrap();
        let e = db.client.register_subconsumer("q", "c", "x").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        let e = coop::next_batch(&mut conn, "q", "c", "x", None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotSubscribed, "{e}");
        // sub-consumers of sub-consumers are refused
        db.client.register_subconsumer("q", "c", "y").unwrap();
        let e = db.client.register_subconsumer("q", "c.y", "z").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");

        // bad names are refused before the server, NULLs and bad codes by it
        let e = db.client.register_subconsumer("q", "c", "").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert_eq!(
            Consumer::new(&db.client, "q", "c").unwrap().subconsumer("a\0", None).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        for sql in [
            "select pgq_coop.register_subconsumer('q', 'c', null)",
            "select pgq_coop.register_subconsumer('q', 'c', ' ')",
            "select pgq_coop.unregister_subconsumer('q', 'c', 'a', null)",
            "select pgq_coop.unregister_subconsumer('q', 'c', 'a', 2)",
            "select pgq_coop.next_batch(null, 'c', 'a')",
            "select pgq_coop.next_batch('q', null, 'a', '1 hour')",
            "select * from pgq_coop.next_batch_info('q', 'c', null)",
        ] {
            let e = pgq::Error::from(conn.query_one(sql, &[]).unwrap_err());
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{sql}: {e}");
        }
        let e = pgq::Error::from(
            conn.query_one("select pgq_coop.no_such_function()", &[]).unwrap_err(),
        );
        assert_eq!(e.kind(), ErrorKind::NotInstalled, "{e}");
        // finishing NULL or an unknown batch is a no-op (0), as in the reference
        let n: i32 = conn.query_one("select pgq_coop.finish_batch(null)", &[]).unwrap().get(0);
        assert_eq!(n, 0);
    }
}

#[test]
fn install_on_the_extension_without_privileges_leaves_pgq_coop_out() {
    let db = TestDb::new(common::Backend::Official);
    let role = format!("{}_np", &db.name[..db.name.len().min(50)]);
    let mut su = db.superuser();
    su.batch_execute(&format!("create role \"{role}\" login"))
        .unwrap();
    let mut cfg = db.config.clone();
    cfg.user(&role);
    cfg.password("");
    {
        let mut conn = cfg.connect(postgres::NoTls).unwrap();
        let outcome = pgq::schema::install(&mut conn).unwrap();
        assert!(
            matches!(outcome, pgq::InstallOutcome::OfficialExtension { .. }),
            "{outcome:?}"
        );
        let coop: bool = conn
            .query_one("select to_regnamespace('pgq_coop') is not null", &[])
            .unwrap()
            .get(0);
        assert!(!coop, "pgq_coop needs a role that may modify pgq's tables");
    }
    su.batch_execute(&format!("drop role \"{role}\"")).unwrap();
    let e = db.client.register_subconsumer("q", "c", "a").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotInstalled, "{e}");
    // the superuser's install adds it
    db.client.install().unwrap();
    let e = db
        .client
        .register_subconsumer("nope", "c", "a")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSuchQueue, "{e}");
}
