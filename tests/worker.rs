//! Consumer workers against a real server: delivery, wake-ups (LISTEN and poll-only), the
//! batch cap, handler failures (error, panic, policy), graceful stop and at-least-once.
//! Lifecycle (no thread left behind) and server restart have their own test binaries.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;

use common::{wait_until, TestDb};
use pgq::{ErrorKind, ErrorPolicy, NewEvent, Worker};

const WAIT: Duration = Duration::from_secs(20);

fn setup(db: &TestDb) {
    db.client.create_queue("q").unwrap();
    db.client.register_consumer("q", "c").unwrap();
}

/// Sends `n` events with data `{prefix}{i}`; returns their ids.
fn produce(db: &TestDb, prefix: &str, n: usize) -> Vec<i64> {
    let events: Vec<NewEvent> = (0..n)
        .map(|i| NewEvent::new("t", format!("{prefix}{i}")))
        .collect();
    let mut conn = db.client.get().unwrap();
    let mut tx = conn.transaction().unwrap();
    let mut ids = Vec::new();
    for ev in &events {
        ids.push(pgq::producer::insert_event(&mut tx, "q", ev).unwrap());
    }
    tx.commit().unwrap();
    ids
}

fn open_batch(db: &TestDb) -> Option<i64> {
    let info = db.client.consumer_info(Some("q"), Some("c")).unwrap();
    info.first().and_then(|c| c.current_batch)
}

fn retry_rows(db: &TestDb) -> i64 {
    db.conn()
        .query_one("select count(*) from pgq.retry_queue", &[])
        .unwrap()
        .get(0)
}

type Seen = Arc<Mutex<Vec<(i64, String)>>>;

fn recording_worker(db: &TestDb) -> (Worker, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let w = Worker::builder(&db.client, "q", "c")
        .poll_interval(Duration::from_millis(20))
        .handler(move |b| {
            for ev in b.events() {
                let ev = ev?;
                s.lock().push((b.id(), ev.data.unwrap_or_default()));
            }
            Ok(())
        })
        .start()
        .unwrap();
    (w, seen)
}

both_backends! {
    fn delivers_every_event_once_and_finishes(db: &TestDb) {
        setup(db);
        let (w, seen) = recording_worker(db);
        produce(db, "a", 5);
        db.tick("q");
        produce(db, "b", 3);
        db.tick("q");
        wait_until("8 events", WAIT, || seen.lock().len() == 8);
        wait_until("2 batches finished", WAIT, || w.stats().batches == 2);
        w.stop();
        w.join().unwrap();
        let datas: Vec<String> = seen.lock().iter().map(|(_, d)| d.clone()).collect();
        assert_eq!(datas, ["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2"]);
        let s = w.stats();
        assert_eq!((s.events, s.batches, s.errors), (8, 2, 0));
        assert!(s.last_batch_time.is_some());
        assert!(s.lag.is_some());
        // finished: nothing open, nothing left
        assert_eq!(open_batch(db), None);
        assert!(db.consume_all("q", "c").is_empty());
    }

    fn handler_error_means_redelivery(db: &TestDb) {
        setup(db);
        let attempts: Arc<Mutex<Vec<i64>>> = Arc::default();
        let a = attempts.clone();
        let w = Worker::builder(&db.client, "q", "c")
            .poll_interval(Duration::from_millis(20))
            .error_policy(ErrorPolicy::Retry {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(50),
            })
            .handler(move |b| {
                let n = b.events().count();
                assert_eq!(n, 2);
                let mut a = a.lock();
                a.push(b.id());
                if a.len() < 3 {
                    return Err(format!("attempt {} fails", a.len()).into());
                }
                Ok(())
            })
            .start()
            .unwrap();
        produce(db, "x", 2);
        db.tick("q");
        wait_until("finished after 3 attempts", WAIT, || w.stats().batches == 1);
        w.stop();
        w.join().unwrap();
        let a = attempts.lock().clone();
        assert_eq!(a.len(), 3);
        assert!(a.iter().all(|id| *id == a[0]), "same batch each time: {a:?}");
        let s = w.stats();
        assert_eq!((s.handler_errors, s.errors, s.events), (2, 2, 2));
        assert!(s.last_error.unwrap().contains("attempt 2 fails"));
        assert_eq!(open_batch(db), None);
    }

    fn retries_and_finish_commit_together(db: &TestDb) {
        setup(db);
        db.conn().batch_execute("create table side (id bigint)").unwrap();
        let attempt = Arc::new(AtomicUsize::new(0));
        let a = attempt.clone();
        let (entered_tx, entered_rx) = bounded::<()>(0);
        let (go_tx, go_rx) = bounded::<()>(0);
        let w = Worker::builder(&db.client, "q", "c")
            .poll_interval(Duration::from_millis(20))
            .error_policy(ErrorPolicy::Retry {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(50),
            })
            .handler(move |b| {
                let n = a.fetch_add(1, Ordering::SeqCst);
                for ev in b.events() {
                    let ev = ev?;
                    b.with_client(|c| c.execute("insert into side values ($1)", &[&ev.id]))?;
                    if ev.data.as_deref() == Some("r0") {
                        b.retry(ev.id, Duration::from_secs(3600));
                    }
                }
                if n == 0 {
                    // An id that is not in the batch: event_retry fails at finish, so
                    // nothing of this attempt may commit.
                    b.retry(i64::MAX, Duration::from_secs(1));
                }
                // While the handler runs, its batch must still be open.
                entered_tx.send(()).ok();
                go_rx.recv().ok();
                Ok(())
            })
            .start()
            .unwrap();
        produce(db, "r", 3);
        db.tick("q");
        // attempt 1: handler returned, finish failed
        entered_rx.recv_timeout(WAIT).unwrap();
        assert!(open_batch(db).is_some(), "batch finished before the handler returned");
        go_tx.send(()).unwrap();
        wait_until("first attempt failed", WAIT, || w.stats().handler_errors == 1);
        assert_eq!(retry_rows(db), 0, "a retry committed without its batch");
        let side: i64 = db.conn().query_one("select count(*) from side", &[]).unwrap().get(0);
        assert_eq!(side, 0, "handler SQL committed without its batch");
        assert!(open_batch(db).is_some());
        assert!(w.stats().last_error.unwrap().contains("finishing batch"));
        // attempt 2 succeeds
        entered_rx.recv_timeout(WAIT).unwrap();
        assert!(open_batch(db).is_some());
        go_tx.send(()).unwrap();
        wait_until("batch finished", WAIT, || w.stats().batches == 1);
        drop(w);
        assert_eq!(retry_rows(db), 1);
        let side: i64 = db.conn().query_one("select count(*) from side", &[]).unwrap().get(0);
        assert_eq!(side, 3);
        assert_eq!(open_batch(db), None);
    }
}

#[test]
fn notification_wakes_an_idle_worker() {
    let db = TestDb::new(common::Backend::Ours);
    setup(&db);
    let seen: Seen = Arc::default();
    let s = seen.clone();
    // Polling once an hour: only a notification can bring the batch in time.
    let w = Worker::builder(&db.client, "q", "c")
        .poll_interval(Duration::from_secs(3600))
        .handler(move |b| {
            for ev in b.events() {
                s.lock().push((b.id(), ev?.data.unwrap_or_default()));
            }
            Ok(())
        })
        .start()
        .unwrap();
    // After LISTEN took effect the listener wakes the worker once; two empty polls mean that
    // wake-up has been used up.
    wait_until("listening and idle", WAIT, || {
        let s = w.stats();
        s.listening && s.empty_polls >= 2
    });
    produce(&db, "n", 2);
    db.tick("q");
    // A notification for another queue does not count.
    db.conn()
        .batch_execute("notify pgq_tick, 'other'; ")
        .unwrap();
    db.conn().batch_execute("notify pgq_tick, 'q'").unwrap();
    wait_until("events after the notification", WAIT, || {
        seen.lock().len() == 2
    });
    let s = w.stats();
    assert_eq!(s.wakeups, 1);
    drop(w);
}

#[test]
fn poll_only_mode_delivers_without_listen() {
    let db = TestDb::new(common::Backend::Ours);
    setup(&db);
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let w = Worker::builder(&db.client, "q", "c")
        .poll_only(true)
        .poll_interval(Duration::from_millis(20))
        .handler(move |b| {
            for ev in b.events() {
                s.lock().push((b.id(), ev?.data.unwrap_or_default()));
            }
            Ok(())
        })
        .start()
        .unwrap();
    produce(&db, "p", 3);
    db.tick("q");
    wait_until("events by polling", WAIT, || seen.lock().len() == 3);
    let s = w.stats();
    assert!(!s.listening);
    assert_eq!(s.wakeups, 0);
    assert_eq!(s.threads, 1, "no listener thread in poll-only mode");
    // No session of this database has ever run LISTEN.
    let listens: i64 = db
        .conn()
        .query_one(
            "select count(*) from pg_stat_activity \
              where datname = current_database() and query ilike 'listen%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(listens, 0);
    drop(w);
}

#[test]
fn wait_batch_wakes_on_notification_and_times_out() {
    let db = TestDb::new(common::Backend::Ours);
    setup(&db);
    let consumer = pgq::Consumer::new(&db.client, "q", "c")
        .unwrap()
        .poll_interval(Duration::from_secs(3600));
    // Nothing there: returns None at the deadline.
    let t = std::time::Instant::now();
    assert!(consumer
        .wait_batch(Duration::from_millis(200))
        .unwrap()
        .is_none());
    assert!(t.elapsed() >= Duration::from_millis(200));
    // A tick plus a notification from another thread ends a long wait early.
    let client = db.client.clone();
    let dsn_db = db.config.clone();
    let notifier = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        client.send("q", &NewEvent::new("t", "w")).unwrap();
        client.force_tick("q").unwrap();
        client.tick_queue("q").unwrap();
        let mut c = dsn_db.connect(postgres::NoTls).unwrap();
        c.batch_execute("notify pgq_tick, 'q'").unwrap();
    });
    let batch = consumer
        .wait_batch(Duration::from_secs(60))
        .unwrap()
        .expect("a batch after the notification");
    let evs: Vec<_> = batch.events().collect::<pgq::Result<_>>().unwrap();
    assert_eq!(evs.len(), 1);
    batch.finish().unwrap();
    notifier.join().unwrap();
    // Poll-only: found by polling.
    let polling = pgq::Consumer::new(&db.client, "q", "c")
        .unwrap()
        .poll_only(true)
        .poll_interval(Duration::from_millis(10));
    db.client.send("q", &NewEvent::new("t", "p")).unwrap();
    db.tick("q");
    let batch = polling.wait_batch(WAIT).unwrap().expect("batch by polling");
    assert_eq!(batch.events().count(), 1);
    batch.finish().unwrap();
}

#[test]
fn batch_cap_bounds_memory() {
    let db = TestDb::new(common::Backend::Ours);
    db.client.create_queue("q").unwrap();
    db.client.register_consumer("q", "stream").unwrap();
    db.client.register_consumer("q", "chunks").unwrap();
    let events: Vec<NewEvent> = (0..1000)
        .map(|i| NewEvent::new("t", i.to_string()))
        .collect();
    db.client.send_many("q", &events).unwrap();
    db.tick("q");

    // events(): never more than fetch_size buffered
    let max_buffered = Arc::new(AtomicUsize::new(0));
    let read: Arc<Mutex<Vec<String>>> = Arc::default();
    let (mb, r) = (max_buffered.clone(), read.clone());
    let w1 = Worker::builder(&db.client, "q", "stream")
        .fetch_size(64)
        .handler(move |b| {
            let mut it = b.events();
            while let Some(ev) = it.next() {
                mb.fetch_max(it.buffered() + 1, Ordering::SeqCst);
                r.lock().push(ev?.data.unwrap_or_default());
            }
            Ok(())
        })
        .start()
        .unwrap();
    // next_chunk(): slices of at most max_events_per_call
    let chunks: Arc<Mutex<Vec<usize>>> = Arc::default();
    let c = chunks.clone();
    let w2 = Worker::builder(&db.client, "q", "chunks")
        .fetch_size(64)
        .max_events_per_call(100)
        .handler(move |b| {
            while let Some(chunk) = b.next_chunk()? {
                c.lock().push(chunk.len());
            }
            Ok(())
        })
        .start()
        .unwrap();
    wait_until("both consumers finished", WAIT, || {
        w1.stats().batches == 1 && w2.stats().batches == 1
    });
    drop((w1, w2));
    let read = read.lock();
    let expected: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    assert_eq!(*read, expected);
    let mb = max_buffered.load(Ordering::SeqCst);
    assert!(mb <= 64, "held {mb} events at once with fetch_size 64");
    assert!(mb > 1, "events were not fetched in groups");
    let chunks = chunks.lock();
    assert_eq!(chunks.iter().sum::<usize>(), 1000);
    assert!(chunks.iter().all(|n| *n <= 100), "{chunks:?}");
    assert_eq!(chunks.len(), 10);
}

#[test]
fn panicking_handler_is_reported_and_retried() {
    let db = TestDb::new(common::Backend::Ours);
    setup(&db);
    let calls: Arc<Mutex<Vec<i64>>> = Arc::default();
    let c = calls.clone();
    let w = Worker::builder(&db.client, "q", "c")
        .poll_interval(Duration::from_millis(20))
        .error_policy(ErrorPolicy::Retry {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(20),
        })
        .handler(move |b| {
            let first = {
                let mut c = c.lock();
                c.push(b.id());
                c.len() == 1
            };
            if first {
                panic!("boom in the handler");
            }
            b.events().count();
            Ok(())
        })
        .start()
        .unwrap();
    produce(&db, "x", 1);
    db.tick("q");
    wait_until("batch finished after the panic", WAIT, || {
        w.stats().batches == 1
    });
    let s = w.stats();
    assert_eq!(s.handler_panics, 1);
    assert_eq!(s.errors, 1);
    assert!(s.last_error.unwrap().contains("boom in the handler"));
    assert!(w.is_running(), "a panic must not kill the worker");
    let calls = calls.lock().clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0], calls[1], "the same batch is delivered again");
    w.stop();
    w.join().unwrap();
}

#[test]
fn stop_policy_stops_and_leaves_the_batch() {
    let db = TestDb::new(common::Backend::Ours);
    setup(&db);
    let w = Worker::builder(&db.client, "q", "c")
        .poll_interval(Duration::from_millis(20))
        .error_policy(ErrorPolicy::Stop)
        .handler(|_b| Err("cannot handle this".into()))
        .start()
        .unwrap();
    produce(&db, "x", 2);
    db.tick("q");
    wait_until("worker stopped itself", WAIT, || !w.is_running());
    let e = w.join().unwrap_err();
    assert!(e.to_string().contains("cannot handle this"), "{e}");
    assert!(w.join().is_ok(), "the error is returned once");
    let open = open_batch(&db).expect("batch left open");
    let batch = pgq::Consumer::new(&db.client, "q", "c")
        .unwrap()
        .next_batch()
        .unwrap()
        .unwrap();
    assert_eq!(batch.id(), open);
    assert_eq!(batch.events().count(), 2);
}

#[test]
fn graceful_stop_finishes_current_batch_and_takes_no_new_one() {
    let db = TestDb::new(common::Backend::Ours);
    setup(&db);
    let (entered_tx, entered_rx): (Sender<i64>, Receiver<i64>) = bounded(1);
    let (go_tx, go_rx) = bounded::<()>(1);
    let w = Worker::builder(&db.client, "q", "c")
        .poll_interval(Duration::from_millis(20))
        .handler(move |b| {
            entered_tx.send(b.id()).ok();
            go_rx.recv().ok();
            assert!(b.is_stopping());
            b.events().count();
            Ok(())
        })
        .start()
        .unwrap();
    produce(&db, "first", 2);
    db.tick("q");
    produce(&db, "second", 3);
    db.tick("q");
    let first = entered_rx.recv_timeout(WAIT).unwrap();
    w.stop();
    go_tx.send(()).unwrap();
    w.join().unwrap();
    assert!(!w.is_running());
    let s = w.stats();
    assert_eq!((s.batches, s.events), (1, 2));
    // The second batch is still there for the next run.
    let rest = db.consume_all("q", "c");
    assert_eq!(common::datas(&rest), ["second0", "second1", "second2"]);
    assert_ne!(open_batch(&db), Some(first));
}

#[test]
fn builder_refuses_bad_settings() {
    let db = TestDb::new(common::Backend::Ours);
    let e = Worker::builder(&db.client, "q", "c").start().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("handler"), "{e}");
    let e = Worker::builder(&db.client, "q", "c")
        .workers(2)
        .handler(|_| Ok(()))
        .start()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("subconsumer"), "{e}");
    let e = Worker::builder(&db.client, "q", "c")
        .workers(0)
        .handler(|_| Ok(()))
        .start()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = Worker::builder(&db.client, "", "c")
        .handler(|_| Ok(()))
        .start()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[test]
fn unregistered_consumer_is_an_error_not_a_crash() {
    let db = TestDb::new(common::Backend::Ours);
    db.client.create_queue("q").unwrap();
    let w = Worker::builder(&db.client, "q", "nobody")
        .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(20))
        .handler(|_| Ok(()))
        .start()
        .unwrap();
    wait_until("error counted", WAIT, || w.stats().db_errors >= 2);
    assert!(w.is_running());
    let msg = w.stats().last_error.unwrap();
    assert!(msg.contains("nobody"), "{msg}");
    // Registering later lets it run.
    db.client.register_consumer("q", "nobody").unwrap();
    wait_until("recovered", WAIT, || w.stats().reconnects >= 1);
    w.stop();
    w.join().unwrap();
}
