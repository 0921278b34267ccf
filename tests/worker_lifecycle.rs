//! Worker lifecycle: start, stop, double stop, join, drop joins, and no thread left behind.
//!
//! Alone in its test binary, so that the threads it counts (by name, from /proc) are its own.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{wait_until, Backend, TestDb};
use crossbeam_channel::bounded;
use parking_lot::Mutex;
use pgq::{NewEvent, Worker};

const WAIT: Duration = Duration::from_secs(20);

/// Names of this process's threads that belong to workers.
fn worker_threads() -> Vec<String> {
    let mut names = Vec::new();
    let tasks = std::fs::read_dir("/proc/self/task").expect("read /proc/self/task");
    for t in tasks.flatten() {
        if let Ok(comm) = std::fs::read_to_string(t.path().join("comm")) {
            let comm = comm.trim().to_string();
            if comm.starts_with("pgq-worker") || comm.starts_with("pgq-listener") {
                names.push(comm);
            }
        }
    }
    names.sort();
    names
}

#[test]
fn lifecycle() {
    let db = TestDb::new(Backend::Ours);
    db.client.create_queue("q").unwrap();
    db.client.register_consumer("q", "c").unwrap();
    assert!(worker_threads().is_empty());

    // start, stop twice, join twice
    let w = Worker::builder(&db.client, "q", "c")
        .handler(|_| Ok(()))
        .start()
        .unwrap();
    // running as soon as start() returned
    assert!(w.is_running());
    assert_eq!(w.stats().threads, 2);
    wait_until("threads named", WAIT, || worker_threads().len() == 2);
    assert_eq!(worker_threads(), ["pgq-listener", "pgq-worker-0"]);
    w.stop();
    w.stop();
    w.join().unwrap();
    w.join().unwrap();
    assert!(!w.is_running());
    assert_eq!(w.stats().threads, 0);
    assert!(worker_threads().is_empty(), "{:?}", worker_threads());
    drop(w);

    // dropping a running worker stops and joins it
    let w = Worker::builder(&db.client, "q", "c")
        .handler(|_| Ok(()))
        .start()
        .unwrap();
    wait_until("listening", WAIT, || w.stats().listening);
    drop(w);
    assert!(worker_threads().is_empty(), "{:?}", worker_threads());

    // poll-only: one thread; dropped right after start
    let w = Worker::builder(&db.client, "q", "c")
        .poll_only(true)
        .handler(|_| Ok(()))
        .start()
        .unwrap();
    drop(w);
    assert!(worker_threads().is_empty(), "{:?}", worker_threads());

    // dropping while a handler runs waits for it: the batch is finished, not torn
    let (entered_tx, entered_rx) = bounded::<()>(1);
    let (go_tx, go_rx) = bounded::<()>(1);
    let w = Worker::builder(&db.client, "q", "c")
        .poll_interval(Duration::from_millis(20))
        .handler(move |b| {
            entered_tx.send(()).ok();
            go_rx.recv().ok();
            b.events().count();
            Ok(())
        })
        .start()
        .unwrap();
    db.client.send("q", &NewEvent::new("t", "x")).unwrap();
    db.tick("q");
    entered_rx.recv_timeout(WAIT).unwrap();
    let dropper = std::thread::spawn(move || {
        drop(w);
    });
    // the drop is waiting for the handler
    std::thread::sleep(Duration::from_millis(50));
    assert!(!dropper.is_finished());
    go_tx.send(()).unwrap();
    dropper.join().unwrap();
    assert!(worker_threads().is_empty(), "{:?}", worker_threads());
    let info = db.client.consumer_info(Some("q"), Some("c")).unwrap();
    assert_eq!(
        info[0].current_batch, None,
        "the running batch was finished"
    );
    assert!(db.consume_all("q", "c").is_empty());

    // the last handle dropped inside the handler: no deadlock, the threads still end
    let slot: Arc<Mutex<Option<Worker>>> = Arc::default();
    let s = slot.clone();
    let w = Worker::builder(&db.client, "q", "c")
        .poll_interval(Duration::from_millis(20))
        .handler(move |b| {
            b.events().count();
            let w = s.lock().take();
            drop(w);
            Ok(())
        })
        .start()
        .unwrap();
    *slot.lock() = Some(w);
    db.client.send("q", &NewEvent::new("t", "y")).unwrap();
    db.tick("q");
    wait_until("threads gone", WAIT, || worker_threads().is_empty());
    assert!(slot.lock().is_none());
    assert!(
        db.consume_all("q", "c").is_empty(),
        "the batch was finished"
    );
}
