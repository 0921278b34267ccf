//! Behind a real PgBouncer in transaction pooling mode (`scripts/pgbouncer.sh`: pool_mode =
//! transaction, two server connections per database): a client built with
//! `transaction_pooling(true)` produces (send, send_many, insert_event in the caller's
//! transaction), pulls batches in poll-only mode and runs workers (plain and cooperative)
//! with every event delivered exactly once per consumer, from more client connections than
//! the pooler has server connections; the default client, with its prepared statements,
//! fails there.
//!
//! These tests need pgbouncer (`scripts/install-deps.sh postgres`); without it they fail
//! rather than skip.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{wait_until, TestDb};
use pgq::{Client, ClientBuilder, Consumer, ErrorKind, NewEvent, Producer, Ticker, Worker};

const WAIT: Duration = Duration::from_secs(30);

/// A PgBouncer in front of the test server, stopped (and its directory removed) on drop.
struct Bouncer {
    dir: PathBuf,
    host: String,
    port: u16,
    /// Stops the pooler should this test process die without running `Drop`.
    watchdog: Option<Child>,
}

fn script() -> String {
    format!("{}/scripts/pgbouncer.sh", env!("CARGO_MANIFEST_DIR"))
}

impl Bouncer {
    /// Starts a pooler for the server `db` lives on.
    fn start(db: &TestDb) -> Bouncer {
        static N: AtomicUsize = AtomicUsize::new(0);
        // Under /tmp: as root the pooler runs as `postgres`, which must reach the directory.
        let dir = std::env::temp_dir().join(format!(
            "pgq-bouncer-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = &db.config;
        let host = match cfg.get_hosts().first() {
            Some(postgres::config::Host::Tcp(h)) => h.clone(),
            other => panic!("the test server must be reached over TCP, not {other:?}"),
        };
        let port = cfg.get_ports().first().copied().unwrap_or(5432);
        let user = cfg.get_user().expect("the test DSN names a user");
        let mut cmd = Command::new(script());
        cmd.env("PGQ_BOUNCER_POOL_SIZE", SERVER_POOL.to_string())
            .arg("start")
            .arg(&dir)
            .arg(&host)
            .arg(port.to_string())
            .arg(user);
        if let Some(pw) = cfg.get_password() {
            cmd.arg(String::from_utf8_lossy(pw).into_owned());
        }
        let out = cmd
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script()));
        assert!(
            out.status.success(),
            "{} start failed ({}): is pgbouncer installed? (scripts/install-deps.sh postgres)",
            script(),
            out.status
        );
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let listen = postgres::Config::from_str(&line)
            .unwrap_or_else(|e| panic!("pgbouncer.sh printed {line:?}: {e}"));
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while kill -0 {pid} 2>/dev/null && [ -d '{dir}' ]; do sleep 0.2; done; \
                 '{script}' stop '{dir}' >/dev/null 2>&1; rm -rf '{dir}'",
                pid = std::process::id(),
                dir = dir.display(),
                script = script(),
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the pgbouncer watchdog");
        let Some(postgres::config::Host::Tcp(lhost)) = listen.get_hosts().first().cloned() else {
            panic!("pgbouncer.sh printed no host: {line:?}");
        };
        Bouncer {
            dir,
            host: lhost,
            port: listen.get_ports()[0],
            watchdog: Some(watchdog),
        }
    }

    /// `db`'s settings with the pooler as the target.
    fn config(&self, db: &TestDb) -> postgres::Config {
        let mut cfg = postgres::Config::new();
        cfg.host(&self.host).port(self.port);
        cfg.dbname(db.config.get_dbname().expect("test database name"));
        cfg.user(db.config.get_user().expect("test user"));
        cfg
    }

    /// A client through the pooler; `pooling` sets `transaction_pooling`.
    fn client(&self, db: &TestDb, pool_size: u32, pooling: bool) -> Client {
        ClientBuilder::from_config(self.config(db))
            .pool_size(pool_size)
            .min_idle(0)
            .transaction_pooling(pooling)
            .build()
            .expect("connect through pgbouncer")
    }

    /// The pooler's log, for failure messages.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
        // The watchdog sees the directory gone and ends within its 0.2 s nap.
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.wait();
        }
    }
}

/// Server connections the pooler holds per database.
const SERVER_POOL: u32 = 2;

/// Clients through the pooler: more than `SERVER_POOL`, so server connections are shared.
const CLIENT_POOL: u32 = 6;
const _: () = assert!(CLIENT_POOL > SERVER_POOL);

fn setup(db: &TestDb, client: &Client, consumers: &[&str]) {
    // Admin calls go through the pooler too. The harness installed the schema directly;
    // installing again checks it (and adds pgq_coop next to the official extension).
    client.install().unwrap();
    assert!(client.create_queue("q").unwrap());
    for c in consumers {
        assert!(client.register_consumer("q", c).unwrap());
    }
    assert_eq!(client.queue_info("q").unwrap().name, "q");
    let _ = db;
}

/// Produces from `threads` threads at once through `client`: per thread `per_thread`
/// events each by Producer::send, by send_many, and by insert_event inside a caller
/// transaction (plus one rolled-back transaction whose event must never appear). Returns
/// the data of every committed event.
fn produce_concurrently(client: &Client, threads: usize, per_thread: usize) -> BTreeSet<String> {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let client = client.clone();
            thread::spawn(move || {
                let producer = Producer::new(&client, "q").unwrap();
                let mut sent = Vec::new();
                for i in 0..per_thread {
                    let data = format!("send-{t}-{i}");
                    producer.send(&NewEvent::new("t", data.as_str())).unwrap();
                    sent.push(data);
                }
                let many: Vec<String> = (0..per_thread).map(|i| format!("many-{t}-{i}")).collect();
                let evs: Vec<NewEvent> = many
                    .iter()
                    .map(|d| NewEvent::new("t", d.as_str()))
                    .collect();
                assert_eq!(producer.send_many(&evs).unwrap(), per_thread as u64);
                sent.extend(many);
                for i in 0..per_thread {
                    let mut conn = client.get().unwrap();
                    let mut tx = conn.transaction().unwrap();
                    // Business SQL and the event in one transaction: one server connection.
                    let n: i32 = tx
                        .query_one("select $1::int4 + 1", &[&1i32])
                        .unwrap()
                        .get(0);
                    assert_eq!(n, 2);
                    let data = format!("tx-{t}-{i}");
                    pgq::producer::insert_event(&mut tx, "q", &NewEvent::new("t", data.as_str()))
                        .unwrap();
                    tx.commit().unwrap();
                    sent.push(data);
                }
                let mut conn = client.get().unwrap();
                let mut tx = conn.transaction().unwrap();
                pgq::producer::insert_event(&mut tx, "q", &NewEvent::new("t", "rolled-back"))
                    .unwrap();
                tx.rollback().unwrap();
                sent
            })
        })
        .collect();
    let mut all = BTreeSet::new();
    for h in handles {
        for d in h.join().expect("producer thread") {
            assert!(all.insert(d.clone()), "{d} produced twice");
        }
    }
    all
}

/// Every (id, data) seen by one consumer, checked for exactly-once against `expected`.
fn assert_exactly_once(who: &str, seen: &[(i64, String)], expected: &BTreeSet<String>) {
    let mut by_id = BTreeMap::new();
    for (id, data) in seen {
        assert!(
            by_id.insert(*id, data.clone()).is_none(),
            "{who}: event {id} delivered twice"
        );
    }
    let datas: BTreeSet<String> = by_id.values().cloned().collect();
    assert_eq!(datas.len(), seen.len(), "{who}: an event delivered twice");
    assert_eq!(&datas, expected, "{who}: not every event, or others");
}

both_backends! {
    fn produce_pull_and_work_behind_transaction_pooling(db: &TestDb) {
        let bouncer = Bouncer::start(db);
        let client = bouncer.client(db, CLIENT_POOL, true);
        assert!(client.transaction_pooling());
        setup(db, &client, &["puller", "worker", "coop"]);

        // Ticks come from a ticker on a direct connection, as in production.
        let ticker = Ticker::builder(&db.client)
            .ticker_period(Duration::from_millis(20))
            .start()
            .unwrap();

        let seen_worker: Arc<Mutex<Vec<(i64, String)>>> = Arc::default();
        let s = seen_worker.clone();
        let worker = Worker::builder(&client, "q", "worker")
            .poll_interval(Duration::from_millis(20))
            .fetch_size(7) // several FETCHes per batch through the pooler
            .handler(move |b| {
                for ev in b.events() {
                    let ev = ev?;
                    s.lock().unwrap().push((ev.id, ev.data.unwrap_or_default()));
                }
                Ok(())
            })
            .start()
            .unwrap();
        let seen_coop: Arc<Mutex<Vec<(i64, String)>>> = Arc::default();
        let s = seen_coop.clone();
        let coop = Worker::builder(&client, "q", "coop")
            .subconsumer("sub", None)
            .workers(3)
            .poll_interval(Duration::from_millis(20))
            .handler(move |b| {
                for ev in b.events() {
                    let ev = ev?;
                    s.lock().unwrap().push((ev.id, ev.data.unwrap_or_default()));
                }
                Ok(())
            })
            .start()
            .unwrap();
        // Forced to poll only: no listener thread, no LISTEN connection.
        assert_eq!(worker.stats().threads, 1);
        assert_eq!(coop.stats().threads, 3);

        // The pull consumer runs while the producers do, on its own thread.
        let expected_total = 4 * 3 * 15;
        let puller = {
            let client = client.clone();
            thread::spawn(move || {
                let consumer = Consumer::new(&client, "q", "puller")
                    .unwrap()
                    .fetch_size(10)
                    .poll_interval(Duration::from_millis(20));
                let mut seen = Vec::new();
                let deadline = Instant::now() + WAIT;
                while seen.len() < expected_total && Instant::now() < deadline {
                    if let Some(batch) = consumer.wait_batch(Duration::from_millis(500)).unwrap() {
                        for ev in batch.events() {
                            let ev = ev.unwrap();
                            seen.push((ev.id, ev.data.unwrap_or_default()));
                        }
                        batch.finish().unwrap();
                    }
                }
                seen
            })
        };

        let expected = produce_concurrently(&client, 4, 15);
        assert_eq!(expected.len(), expected_total);

        let pulled = puller.join().expect("puller thread");
        assert_exactly_once("pull consumer", &pulled, &expected);
        wait_until("the worker to see every event", WAIT, || {
            seen_worker.lock().unwrap().len() >= expected_total
        });
        wait_until("the coop workers to see every event", WAIT, || {
            seen_coop.lock().unwrap().len() >= expected_total
        });
        worker.stop();
        coop.stop();
        worker.join().unwrap();
        coop.join().unwrap();
        assert_exactly_once("worker", &seen_worker.lock().unwrap(), &expected);
        assert_exactly_once("coop workers", &seen_coop.lock().unwrap(), &expected);
        // Same events, same ids, for every consumer.
        let ids = |v: &[(i64, String)]| v.iter().map(|(id, _)| *id).collect::<BTreeSet<_>>();
        assert_eq!(ids(&pulled), ids(&seen_worker.lock().unwrap()));
        assert_eq!(ids(&pulled), ids(&seen_coop.lock().unwrap()));
        for (name, stats) in [("worker", worker.stats()), ("coop", coop.stats())] {
            // Sub-consumers racing for the shared stream have (rarely, under load) hit a
            // deadlock in pgq_coop.next_batch on the official extension: retried by the
            // worker, nothing lost or doubled (asserted above). Any other error fails.
            let deadlock = stats
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("SQLSTATE 40P01"));
            let allowed = if name == "coop" && deadlock { 2 } else { 0 };
            assert!(
                stats.db_errors <= allowed,
                "{name}: {} errors, last {:?}\n{}",
                stats.db_errors,
                stats.last_error,
                bouncer.log()
            );
            assert!(!stats.listening, "{name} listens behind a transaction pooler");
            assert_eq!(stats.wakeups, 0);
        }
        drop(ticker);

        // No server connection was left inside a transaction by any of it.
        let mut su = db.superuser();
        let leftovers: i64 = su
            .query_one(
                "select count(*) from pg_catalog.pg_stat_activity \
                  where datname = current_database() and pid <> pg_backend_pid() \
                    and state = 'idle in transaction'",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(leftovers, 0, "a server connection was left inside a transaction");
    }
}

/// The default client caches prepared statements per connection; behind a transaction
/// pooler its next use of one lands on a server connection that never saw it.
#[test]
fn default_mode_fails_behind_transaction_pooling() {
    let db = TestDb::new(common::Backend::Ours);
    let bouncer = Bouncer::start(&db);
    let plain = bouncer.client(&db, 1, false);
    let pooled = bouncer.client(&db, 1, true);
    plain.create_queue("q").unwrap();
    // Another client holds a server connection in an open transaction, so the pooler has to
    // serve the next statement from the other server connection.
    let mut other = bouncer
        .config(&db)
        .connect(postgres::NoTls)
        .expect("connect through pgbouncer");
    let mut failure = None;
    for round in 0..20 {
        // Prepares (and caches) the statement on some server connection ...
        match plain.send("q", &NewEvent::new("t", "plain")) {
            Ok(_) => {}
            Err(e) => {
                failure = Some((round, e));
                break;
            }
        }
        other.batch_execute("begin; select 1").unwrap();
        // ... and uses it again, on whichever server connection the pooler picks now.
        let result = plain.send("q", &NewEvent::new("t", "plain"));
        // The transaction-pooling client in the same situation never fails.
        pooled
            .send("q", &NewEvent::new("t", "pooled"))
            .unwrap_or_else(|e| panic!("round {round}: transaction pooling mode failed: {e}"));
        other.batch_execute("commit").unwrap();
        if let Err(e) = result {
            failure = Some((round, e));
            break;
        }
    }
    let (round, e) = failure.unwrap_or_else(|| {
        panic!(
            "the default mode never failed behind the transaction pooler; is it in \
             transaction mode?\n{}",
            bouncer.log()
        )
    });
    let msg = e.to_string();
    assert!(
        msg.contains("prepared statement") && msg.contains("does not exist"),
        "round {round}: unexpected error: {msg}"
    );
    assert_eq!(e.sqlstate(), Some("26000"), "{msg}"); // invalid_sql_statement_name
}

/// The ticker needs a direct connection (a session advisory lock keeps it the only active
/// one): a transaction-pooling client is refused with a clear error, not run and broken.
#[test]
fn ticker_refuses_a_transaction_pooling_client() {
    let db = TestDb::new(common::Backend::Ours);
    let bouncer = Bouncer::start(&db);
    let client = bouncer.client(&db, 2, true);
    let e = Ticker::builder(&client).start().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let msg = e.to_string();
    assert!(
        msg.contains("transaction pooling") && msg.contains("direct connection"),
        "{msg}"
    );
    // The same database reached directly is fine, next to it.
    let ticker = Ticker::builder(&db.client).start().unwrap();
    drop(ticker);
    // Consumer::wait_batch on such a client polls only: it returns with no batch at its
    // deadline and never opens a LISTEN connection.
    client.create_queue("q").unwrap();
    client.register_consumer("q", "c").unwrap();
    let consumer = Consumer::new(&client, "q", "c").unwrap().poll_only(false); // asked for, but a transaction pooler rules it out
    assert!(consumer
        .wait_batch(Duration::from_millis(100))
        .unwrap()
        .is_none());
    let listening: i64 = db
        .superuser()
        .query_one(
            "select count(*) from pg_catalog.pg_stat_activity \
              where datname = current_database() and query ilike 'listen%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(listening, 0);
}

/// `pgqctl produce` and `pgqctl consume` with `--transaction-pooling` through the pooler.
#[test]
fn pgqctl_produce_and_consume_through_the_pooler() {
    use std::io::{BufRead, BufReader, Write};

    let db = TestDb::new(common::Backend::Ours);
    db.client.create_queue("q").unwrap();
    let bouncer = Bouncer::start(&db);
    let dsn = format!(
        "host={} port={} user='{}' dbname='{}'",
        bouncer.host,
        bouncer.port,
        db.config.get_user().unwrap(),
        db.config.get_dbname().unwrap()
    );
    let pgqctl = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgqctl"));
        cmd.arg("--dsn").arg(&dsn).args(args);
        for v in ["PGQ_DSN", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE"] {
            cmd.env_remove(v);
        }
        cmd
    };

    let mut consume = pgqctl(&["consume", "q", "c", "--register", "--transaction-pooling"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = consume.stdout.take().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded::<String>();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    wait_until("consumer registered", WAIT, || {
        !db.client
            .consumer_info(Some("q"), Some("c"))
            .unwrap()
            .is_empty()
    });

    let mut produce = pgqctl(&["produce", "q", "--type", "t", "--transaction-pooling"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input: String = (0..50).map(|i| format!("line {i}\n")).collect();
    produce
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = produce.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "produce: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        bouncer.log()
    );
    db.tick("q");
    let mut got = Vec::new();
    while got.len() < 50 {
        let line = rx
            .recv_timeout(WAIT)
            .expect("an event line from pgqctl consume");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        got.push(v["data"].as_str().unwrap().to_string());
    }
    assert_eq!(
        got,
        (0..50).map(|i| format!("line {i}")).collect::<Vec<_>>()
    );

    let kill = Command::new("kill")
        .args(["-INT", &consume.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut status = None;
    wait_until("pgqctl consume exits", WAIT, || {
        status = consume.try_wait().unwrap();
        status.is_some()
    });
    assert!(status.unwrap().success(), "{status:?}");
    reader.join().unwrap();
}
