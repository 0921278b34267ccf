//! Rotation under load, on both backends: producers write concurrently (single inserts and
//! the COPY bulk path, some transactions kept open across ticks and rotations, some rolled
//! back) while the event tables are rotated again and again and two consumers read. Every
//! consumer must see every committed event exactly once, and nothing that was rolled back.
//! A table truncated while a consumer still needed it would show up as lost events.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{datas, TestDb};
use pgq::admin::QueueParam;
use pgq::{Consumer, NewEvent};

const PRODUCERS: usize = 4;
/// Producers that commit through the pool (`Client::send` / `send_many`: on our schema the
/// direct INSERT into a remembered current table, checked in the statement itself).
const POOLED_PRODUCERS: usize = 2;
const CONSUMERS: [&str; 2] = ["a", "b"];
/// Rotations to reach; with 3 tables, 6 means every table was truncated and reused twice.
const ROTATIONS: u64 = 6;
/// The whole run stops here even if fewer rotations happened (then the test fails).
const RUN_LIMIT: Duration = Duration::from_secs(20);

/// A tiny deterministic PRNG (xorshift64*), so runs vary per thread without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Shared {
    stop: AtomicBool,
    /// A producer keeps its transaction open across a rotation.
    holding: AtomicBool,
    rotations: AtomicU64,
    /// Events whose transaction committed.
    committed: Mutex<Vec<String>>,
    /// Events whose transaction rolled back.
    rolled_back: Mutex<Vec<String>>,
}

fn cur_table(conn: &mut postgres::Client) -> i32 {
    conn.query_one(
        "select queue_cur_table from pgq.queue where queue_name = 'q'",
        &[],
    )
    .expect("read queue_cur_table")
    .get(0)
}

/// One producer: transactions of 1-5 events, one at a time or through COPY; now and then one
/// stays open until the tables have rotated (or a while has passed) before it commits, and
/// some roll back.
fn produce(db: &TestDb, p: usize, shared: &Shared) {
    let mut conn = db.conn();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (p as u64 + 1).wrapping_mul(0x1234_5678_9abc));
    let mut n = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        let mut tx = conn.transaction().expect("begin");
        let mut mine = Vec::new();
        let mut write = |tx: &mut postgres::Transaction<'_>, rng: &mut Rng, mine: &mut Vec<_>| {
            let k = 1 + rng.below(5);
            let events: Vec<NewEvent> = (0..k)
                .map(|_| {
                    n += 1;
                    NewEvent::new("load", format!("p{p}-{n}"))
                })
                .collect();
            if rng.below(2) == 0 {
                for ev in &events {
                    pgq::producer::insert_event(tx, "q", ev).expect("insert_event");
                }
            } else {
                pgq::producer::insert_events(tx, "q", &events).expect("insert_events (COPY)");
            }
            mine.extend(events.into_iter().filter_map(|e| e.data));
        };
        write(&mut tx, &mut rng, &mut mine);
        // Keep this transaction open across ticks and, usually, a rotation; write again
        // afterwards, possibly into the new current table. One such transaction at a time:
        // an open transaction holds back the xmin of every tick, and rotation waits until
        // the consumers are past it, so more would only slow the test down.
        if rng.below(4) == 0
            && shared
                .holding
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            let seen = shared.rotations.load(Ordering::SeqCst);
            let until = Instant::now() + Duration::from_millis(200);
            while shared.rotations.load(Ordering::SeqCst) == seen
                && Instant::now() < until
                && !shared.stop.load(Ordering::SeqCst)
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            write(&mut tx, &mut rng, &mut mine);
            shared.holding.store(false, Ordering::SeqCst);
        }
        if rng.below(10) == 0 {
            tx.rollback().expect("rollback");
            shared.rolled_back.lock().unwrap().extend(mine);
        } else {
            tx.commit().expect("commit");
            shared.committed.lock().unwrap().extend(mine);
        }
    }
}

/// One pooled producer: one event per transaction (`Client::send`), or 1-5 at once
/// (`Client::send_many`); every call commits by itself.
fn produce_pooled(db: &TestDb, p: usize, shared: &Shared) {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ (p as u64 + 7).wrapping_mul(0x9876_5432_1fed));
    let mut n = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        let k = 1 + rng.below(5);
        let events: Vec<NewEvent> = (0..k)
            .map(|_| {
                n += 1;
                NewEvent::new("load", format!("pool{p}-{n}"))
            })
            .collect();
        if rng.below(2) == 0 {
            for ev in &events {
                db.client.send("q", ev).expect("Client::send");
            }
        } else {
            db.client
                .send_many("q", &events)
                .expect("Client::send_many");
        }
        shared
            .committed
            .lock()
            .unwrap()
            .extend(events.into_iter().filter_map(|e| e.data));
    }
}

/// One consumer: takes batches as they come until told to stop; returns what it saw and
/// how many batches were read ahead. Consumer "b" chains its batches with a small fetch
/// size, so that the next batch is read ahead (libpgq's schema) while rotations happen.
fn consume(db: &TestDb, name: &str, shared: &Shared) -> (Vec<String>, usize) {
    let chained = name == "b";
    let consumer = Consumer::new(&db.client, "q", name)
        .expect("consumer")
        .fetch_size(if chained { 25 } else { 50 });
    let mut seen = Vec::new();
    let mut looked_ahead = 0;
    let mut next = None;
    while !shared.stop.load(Ordering::SeqCst) {
        let batch = match next.take() {
            Some(batch) => batch,
            None => match consumer.next_batch().expect("next_batch") {
                Some(batch) => batch,
                None => {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
            },
        };
        looked_ahead += usize::from(batch.looked_ahead());
        for ev in batch.events() {
            seen.push(ev.expect("read event").data.unwrap_or_default());
        }
        if chained {
            next = batch.finish_and_next(&consumer).expect("finish_and_next");
        } else {
            batch.finish().expect("finish");
        }
    }
    if let Some(batch) = next {
        for ev in batch.events() {
            seen.push(ev.expect("read event").data.unwrap_or_default());
        }
        batch.finish().expect("finish");
    }
    (seen, looked_ahead)
}

/// Ticks and forces rotation (step 1 and step 2 in separate transactions) until enough
/// rotations happened; returns how many.
fn rotate(db: &TestDb, shared: &Shared) -> u64 {
    let mut conn = db.conn();
    let deadline = Instant::now() + RUN_LIMIT;
    let mut table = cur_table(&mut conn);
    let mut attempts = 0u64;
    while shared.rotations.load(Ordering::SeqCst) < ROTATIONS && Instant::now() < deadline {
        db.tick("q");
        conn.query_one("select pgq.maint_rotate_tables_step1('q')", &[])
            .expect("maint_rotate_tables_step1");
        attempts += 1;
        db.tick("q");
        conn.query_one("select pgq.maint_rotate_tables_step2()", &[])
            .expect("maint_rotate_tables_step2");
        let now = cur_table(&mut conn);
        if now != table {
            table = now;
            shared.rotations.fetch_add(1, Ordering::SeqCst);
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    eprintln!(
        "{:?}: {} rotations in {attempts} attempts",
        db.backend,
        shared.rotations.load(Ordering::SeqCst)
    );
    shared.rotations.load(Ordering::SeqCst)
}

fn check_exactly_once(consumer: &str, seen: &[String], committed: &[String], rolled: &[String]) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for s in seen {
        *counts.entry(s.as_str()).or_default() += 1;
    }
    let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(10).collect();
    assert!(dups.is_empty(), "consumer {consumer}: duplicates {dups:?}");
    let lost: Vec<_> = committed
        .iter()
        .filter(|c| !counts.contains_key(c.as_str()))
        .take(10)
        .collect();
    assert!(
        lost.is_empty(),
        "consumer {consumer}: {} of {} committed events lost, e.g. {lost:?}",
        committed
            .iter()
            .filter(|c| !counts.contains_key(c.as_str()))
            .count(),
        committed.len()
    );
    let ghosts: Vec<_> = rolled
        .iter()
        .filter(|r| counts.contains_key(r.as_str()))
        .take(10)
        .collect();
    assert!(
        ghosts.is_empty(),
        "consumer {consumer}: saw rolled-back events {ghosts:?}"
    );
    assert_eq!(seen.len(), committed.len(), "consumer {consumer}");
}

both_backends! {
    fn no_event_lost_or_duplicated_while_rotating(db: &TestDb) {
        db.client.create_queue("q").unwrap();
        for c in CONSUMERS {
            db.client.register_consumer("q", c).unwrap();
        }
        db.client
            .set_queue_config("q", QueueParam::RotationPeriod(Duration::ZERO))
            .unwrap();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            holding: AtomicBool::new(false),
            rotations: AtomicU64::new(0),
            committed: Mutex::new(Vec::new()),
            rolled_back: Mutex::new(Vec::new()),
        });

        /// Stops the threads however the scope's body ends: a panic in it would otherwise
        /// leave them running, and the scope waiting for them, for ever.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let (rotations, seen) = std::thread::scope(|s| {
            let _stop = StopOnDrop(&shared.stop);
            let producers: Vec<_> = (0..PRODUCERS)
                .map(|p| {
                    let shared = &shared;
                    s.spawn(move || produce(db, p, shared))
                })
                .chain((0..POOLED_PRODUCERS).map(|p| {
                    let shared = &shared;
                    s.spawn(move || produce_pooled(db, p, shared))
                }))
                .collect();
            let consumers: Vec<_> = CONSUMERS
                .iter()
                .map(|c| {
                    let shared = &shared;
                    s.spawn(move || consume(db, c, shared))
                })
                .collect();
            let rotations = rotate(db, &shared);
            shared.stop.store(true, Ordering::SeqCst);
            for p in producers {
                p.join().expect("producer panicked");
            }
            let (seen, looked_ahead): (Vec<Vec<String>>, Vec<usize>) = consumers
                .into_iter()
                .map(|c| c.join().expect("consumer panicked"))
                .unzip();
            eprintln!("{:?}: batches read ahead per consumer: {looked_ahead:?}", db.backend);
            if db.backend == common::Backend::Official {
                assert_eq!(looked_ahead, [0, 0], "the official schema has no look-ahead");
            } else {
                assert_eq!(looked_ahead[0], 0, "a pull loop of finish + next_batch");
                assert!(looked_ahead[1] > 0, "consumer b never read a batch ahead");
            }
            (rotations, seen)
        });

        // Everything committed is behind this tick; drain the rest.
        db.tick("q");
        let committed = shared.committed.lock().unwrap().clone();
        let rolled = shared.rolled_back.lock().unwrap().clone();
        assert!(
            rotations >= ROTATIONS,
            "only {rotations} rotations within {RUN_LIMIT:?}"
        );
        assert!(committed.len() > 100, "too little load: {} events", committed.len());
        assert!(!rolled.is_empty(), "no transaction was rolled back");
        for (name, mut got) in CONSUMERS.iter().zip(seen) {
            got.extend(datas(&db.consume_all("q", name)));
            check_exactly_once(name, &got, &committed, &rolled);
        }
        // The tables were really truncated and reused: fewer rows remain than were written.
        let mut conn = db.conn();
        let pfx: String = conn
            .query_one("select queue_data_pfx from pgq.queue where queue_name = 'q'", &[])
            .unwrap()
            .get(0);
        let left: i64 = conn
            .query_one(format!("select count(*) from {pfx}").as_str(), &[])
            .unwrap()
            .get(0);
        assert!(
            (left as usize) < committed.len(),
            "{left} rows left of {} committed: nothing was truncated",
            committed.len()
        );
    }
}
