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
use pgq::{ErrorKind, ErrorPolicy, NewEvent, Worker, WorkerBuilder};

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

/// (batch id, thread name, event ids) of one handler call.
type Handled = (i64, String, Vec<i64>);

/// `builder` with a handler that records (batch id, data) of every event, and the record.
fn recording(builder: WorkerBuilder) -> (WorkerBuilder, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let builder = builder.handler(move |b| {
        for ev in b.events() {
            s.lock().push((b.id(), ev?.data.unwrap_or_default()));
        }
        Ok(())
    });
    (builder, seen)
}

fn recording_worker(db: &TestDb) -> (Worker, Seen) {
    let (builder, seen) =
        recording(Worker::builder(&db.client, "q", "c").poll_interval(Duration::from_millis(20)));
    let w = builder.start().unwrap();
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

    /// Batches that are ready one after another come through the finish that asks for the
    /// next batch in the same transaction (the names, which need quoting there, included):
    /// each event once, in order, no error.
    fn back_to_back_batches_with_names_that_need_quoting(db: &TestDb) {
        let (queue, consumer) = ("it's a \\ queue", "c\\'x");
        db.client.create_queue(queue).unwrap();
        db.client.register_consumer(queue, consumer).unwrap();
        for b in 0..4 {
            let evs: Vec<NewEvent> =
                (0..3).map(|i| NewEvent::new("t", format!("b{b}e{i}"))).collect();
            db.client.send_many(queue, &evs).unwrap();
            db.tick(queue);
        }
        let (builder, seen) = recording(
            Worker::builder(&db.client, queue, consumer).poll_interval(Duration::from_millis(20)),
        );
        let w = builder.start().unwrap();
        wait_until("4 batches finished", WAIT, || w.stats().batches == 4);
        w.stop();
        w.join().unwrap();
        let seen = seen.lock().clone();
        let datas: Vec<&str> = seen.iter().map(|(_, d)| d.as_str()).collect();
        let want: Vec<String> =
            (0..4).flat_map(|b| (0..3).map(move |i| format!("b{b}e{i}"))).collect();
        assert_eq!(datas, want);
        let mut batches: Vec<i64> = seen.iter().map(|(b, _)| *b).collect();
        batches.dedup();
        assert_eq!(batches.len(), 4, "one handler call per batch: {batches:?}");
        let s = w.stats();
        assert_eq!((s.events, s.batches, s.errors), (12, 4, 0), "{:?}", s.last_error);
        let info = db.client.consumer_info(Some(queue), Some(consumer)).unwrap();
        assert_eq!(info.first().and_then(|c| c.current_batch), None);
        assert!(db.consume_all(queue, consumer).is_empty());
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
    // Polling once an hour: only a notification can bring the batch in time.
    let (builder, seen) =
        recording(Worker::builder(&db.client, "q", "c").poll_interval(Duration::from_secs(3600)));
    let w = builder.start().unwrap();
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
    let (builder, seen) = recording(
        Worker::builder(&db.client, "q", "c")
            .poll_only(true)
            .poll_interval(Duration::from_millis(20)),
    );
    let w = builder.start().unwrap();
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
    assert_eq!(e.kind(), pgq::ErrorKind::Handler, "{e}");
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
    // cooperative mode allows several threads; a bad sub-consumer name is refused
    let e = Worker::builder(&db.client, "q", "c")
        .subconsumer("", None)
        .handler(|_| Ok(()))
        .start()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
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

// ---- cooperative workers (pgq_coop) -------------------------------------------------------

both_backends! {
    fn coop_workers_never_process_a_batch_twice(db: &TestDb) {
        // On the official extension this adds pgq_coop; on ours it is a no-op.
        db.client.install().unwrap();
        db.client.create_queue("q").unwrap();
        // Registered before the events, so the consumer's position is before them.
        for i in 0..3 {
            db.client.register_subconsumer("q", "c", &format!("w-{i}")).unwrap();
        }
        let mut expected = Vec::new();
        for b in 0..12 {
            let ids = produce(db, &format!("b{b}-"), 5);
            expected.extend(ids);
            db.tick("q");
        }
        let log: Arc<Mutex<Vec<Handled>>> = Arc::default();
        let active = Arc::new(AtomicUsize::new(0));
        let max_active = Arc::new(AtomicUsize::new(0));
        let (l, a, m) = (log.clone(), active.clone(), max_active.clone());
        let w = Worker::builder(&db.client, "q", "c")
            .subconsumer("w", Some(Duration::from_secs(3600)))
            .workers(3)
            .poll_interval(Duration::from_millis(20))
            .handler(move |b| {
                let now = a.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                let ids = b.events().map(|e| e.map(|e| e.id)).collect::<pgq::Result<Vec<_>>>();
                // Hold the batch until a sibling works at the same time (bounded wait), so
                // the test sees batches handed out in parallel.
                let deadline = std::time::Instant::now() + Duration::from_secs(2);
                while m.load(Ordering::SeqCst) < 2 && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                a.fetch_sub(1, Ordering::SeqCst);
                let thread = std::thread::current().name().unwrap_or("").to_string();
                l.lock().push((b.id(), thread, ids?));
                Ok(())
            })
            .start()
            .unwrap();
        wait_until("every event", WAIT, || {
            log.lock().iter().map(|(_, _, ids)| ids.len()).sum::<usize>() >= expected.len()
        });
        wait_until("batches finished", WAIT, || w.stats().batches == 12);
        drop(w);
        let log = log.lock();
        let mut batch_ids: Vec<i64> = log.iter().map(|(b, _, _)| *b).collect();
        batch_ids.sort();
        batch_ids.dedup();
        assert_eq!(batch_ids.len(), log.len(), "a batch was processed twice");
        let mut got: Vec<i64> = log.iter().flat_map(|(_, _, ids)| ids.clone()).collect();
        got.sort();
        expected.sort();
        assert_eq!(got, expected, "every event exactly once");
        let threads: std::collections::HashSet<&str> =
            log.iter().map(|(_, t, _)| t.as_str()).collect();
        assert!(threads.len() >= 2, "only {threads:?} worked");
        assert!(max_active.load(Ordering::SeqCst) >= 2, "batches never overlapped");
        // each thread is its own sub-consumer
        let names: Vec<String> = db
            .client
            .consumer_info(Some("q"), None)
            .unwrap()
            .into_iter()
            .map(|c| c.consumer_name)
            .collect();
        for i in 0..3 {
            assert!(names.contains(&format!("c.w-{i}")), "{names:?}");
        }
    }
}

#[test]
fn coop_worker_takes_over_a_dead_peers_batch() {
    let db = TestDb::new(common::Backend::Ours);
    db.client.create_queue("q").unwrap();
    let dead = pgq::Consumer::new(&db.client, "q", "c")
        .unwrap()
        .subconsumer("dead", None)
        .unwrap();
    dead.register_subconsumer().unwrap();
    produce(&db, "x", 3);
    db.tick("q");
    // The peer takes the only batch and dies without finishing it (the batch stays its own).
    let taken = dead.next_batch().unwrap().expect("a batch for the peer");
    let taken_id = taken.id();
    drop(taken);

    let (builder, seen) = recording(
        Worker::builder(&db.client, "q", "c")
            .subconsumer("alive", Some(Duration::from_millis(500)))
            .poll_interval(Duration::from_millis(20)),
    );
    let w = builder.start().unwrap();
    wait_until("the dead peer's batch taken over", WAIT, || {
        seen.lock().len() == 3
    });
    wait_until("finished", WAIT, || w.stats().batches == 1);
    drop(w);
    let seen = seen.lock();
    assert!(seen.iter().all(|(b, _)| *b == taken_id), "{seen:?}");
    let datas: Vec<&str> = seen.iter().map(|(_, d)| d.as_str()).collect();
    assert_eq!(datas, ["x0", "x1", "x2"]);
}

// ---- with the ticker service --------------------------------------------------------------

#[test]
fn ticker_notification_wakes_the_worker_end_to_end() {
    let db = TestDb::new(common::Backend::Ours);
    setup(&db);
    // Polling once an hour: the ticker's NOTIFY is what brings the batch.
    let (builder, seen) =
        recording(Worker::builder(&db.client, "q", "c").poll_interval(Duration::from_secs(3600)));
    let w = builder.start().unwrap();
    wait_until("listening and idle", WAIT, || {
        let s = w.stats();
        s.listening && s.empty_polls >= 2
    });
    let mut ticker = pgq::Ticker::builder(&db.client).start().unwrap();
    produce(&db, "e", 3);
    wait_until("events through ticker + NOTIFY", WAIT, || {
        seen.lock().len() == 3
    });
    assert!(w.stats().wakeups >= 1);
    ticker.stop();
    ticker.join().unwrap();
    drop(w);
    let datas: Vec<String> = seen.lock().iter().map(|(_, d)| d.clone()).collect();
    assert_eq!(datas, ["e0", "e1", "e2"]);
}

#[test]
fn coop_batch_taken_over_while_handled_is_not_a_handler_failure() {
    let db = TestDb::new(common::Backend::Ours);
    db.client.create_queue("q").unwrap();
    db.client.register_subconsumer("q", "c", "a").unwrap();
    db.client.register_subconsumer("q", "c", "b").unwrap();
    produce(&db, "x", 2);
    db.tick("q");
    let (entered_tx, entered_rx) = bounded::<i64>(1);
    let (go_tx, go_rx) = bounded::<()>(1);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    // Under ErrorPolicy::Stop a handler failure would stop the worker: losing the batch to
    // a sibling must not.
    let w = Worker::builder(&db.client, "q", "c")
        .subconsumer("a", None)
        .error_policy(ErrorPolicy::Stop)
        .poll_interval(Duration::from_millis(20))
        .handler(move |b| {
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                entered_tx.send(b.id()).ok();
                go_rx.recv().ok();
            }
            for ev in b.events() {
                ev?;
            }
            Ok(())
        })
        .start()
        .unwrap();
    let held = entered_rx.recv_timeout(WAIT).unwrap();
    // Sibling b considers a dead after 200 ms and takes its batch over.
    let b = pgq::Consumer::new(&db.client, "q", "c")
        .unwrap()
        .subconsumer("b", Some(Duration::from_millis(200)))
        .unwrap();
    let mut taken = None;
    wait_until("b takes a's batch over", WAIT, || {
        taken = b.next_batch().unwrap();
        taken.is_some()
    });
    let taken = taken.unwrap();
    assert_eq!(taken.id(), held);
    assert_eq!(taken.events().count(), 2);
    taken.finish().unwrap();
    go_tx.send(()).unwrap();
    wait_until("a's batch refused", WAIT, || w.stats().db_errors >= 1);
    let s = w.stats();
    assert_eq!((s.batches, s.handler_errors), (0, 0), "{s:?}");
    let msg = s.last_error.unwrap();
    assert!(msg.contains("no longer open"), "{msg}");
    assert!(w.is_running());
    // a goes on with the next batch.
    produce(&db, "y", 1);
    db.tick("q");
    wait_until("a finishes the next batch", WAIT, || w.stats().batches == 1);
    w.stop();
    w.join().unwrap();
}
