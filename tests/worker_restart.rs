//! A server restart in the middle of a stream: the worker logs and counts the failure,
//! reconnects with backoff, resumes at its open batch, and delivers every event.
//!
//! The test owns its cluster (restarting the shared one would break the other tests), started
//! with scripts/pg-cluster.sh in Cargo's target tmp dir.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::wait_until;
use crossbeam_channel::bounded;
use parking_lot::Mutex;
use pgq::{NewEvent, Worker};

const WAIT: Duration = Duration::from_secs(60);

/// A private cluster, stopped and removed on drop (also when the test fails).
struct Cluster {
    dir: String,
}

impl Cluster {
    fn script(&self, action: &str) -> String {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg-cluster.sh");
        let out = Command::new(script)
            .args([action, &self.dir])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("run {script}: {e}"));
        assert!(out.status.success(), "pg-cluster.sh {action} failed");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Cluster {
    /// A new private cluster named `name` (plus this process id); returns it and its DSN.
    fn start(name: &str) -> (Cluster, String) {
        let dir = format!(
            "{}/{name}-{}",
            env!("CARGO_TARGET_TMPDIR"),
            std::process::id()
        );
        let _ = std::fs::remove_dir_all(&dir);
        let cluster = Cluster { dir };
        let dsn = cluster.script("start");
        (cluster, dsn)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.script("stop");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tick(client: &pgq::Client) {
    client.force_tick("q").unwrap();
    client.tick_queue("q").unwrap();
}

#[test]
fn server_restart_mid_stream_loses_and_skips_nothing() {
    let (cluster, dsn) = Cluster::start("worker-restart");
    let config = postgres::Config::from_str(&dsn).unwrap();
    // The throwaway cluster runs with synchronous_commit off and `restart` is an immediate
    // stop: make commits durable so the restart cannot lose committed work.
    let mut su = config.connect(postgres::NoTls).unwrap();
    su.batch_execute("alter system set synchronous_commit = on")
        .unwrap();
    su.batch_execute("select pg_reload_conf()").unwrap();
    drop(su);

    let client = pgq::ClientBuilder::from_config(config)
        .pool_size(4)
        .min_idle(0)
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    client.install().unwrap();
    client.create_queue("q").unwrap();
    client.register_consumer("q", "c").unwrap();
    let mut produced = BTreeSet::new();
    let mut send = |prefix: &str, n: usize| {
        for i in 0..n {
            produced.insert(
                client
                    .send("q", &NewEvent::new("t", format!("{prefix}{i}")))
                    .unwrap(),
            );
        }
        tick(&client);
    };
    for round in 0..3 {
        send(&format!("before{round}-"), 10);
    }

    let seen: Arc<Mutex<Vec<i64>>> = Arc::default();
    let (entered_tx, entered_rx) = bounded::<()>(1);
    let (go_tx, go_rx) = bounded::<()>(1);
    let s = seen.clone();
    let held = AtomicBool::new(false);
    let w = Worker::builder(&client, "q", "c")
        .fetch_size(3)
        .poll_interval(Duration::from_millis(50))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .handler(move |b| {
            let mut events = b.events();
            // Read the first event, then (first batch only) hold the batch open while the
            // test restarts the server under it.
            if let Some(ev) = events.next() {
                s.lock().push(ev?.id);
            }
            if !held.swap(true, Ordering::SeqCst) {
                entered_tx.send(()).ok();
                go_rx.recv().ok();
            }
            for ev in events {
                s.lock().push(ev?.id);
            }
            Ok(())
        })
        .start()
        .unwrap();
    entered_rx.recv_timeout(WAIT).unwrap();
    cluster.script("restart");
    go_tx.send(()).unwrap();

    // Produce more after the restart (the pool replaces its broken connections).
    for round in 0..2 {
        send(&format!("after{round}-"), 10);
    }
    wait_until("every event delivered", WAIT, || {
        let seen: BTreeSet<i64> = seen.lock().iter().copied().collect();
        produced.is_subset(&seen)
    });
    wait_until("all batches finished", WAIT, || {
        let info = client.consumer_info(Some("q"), Some("c")).unwrap();
        info[0].current_batch.is_none() && info[0].pending_events == Some(0)
    });
    let stats = w.stats();
    assert!(stats.db_errors >= 1, "{stats:?}");
    assert!(stats.reconnects >= 1, "{stats:?}");
    assert_eq!(stats.handler_errors + stats.handler_panics, 0, "{stats:?}");
    assert!(stats.listening || stats.threads == 2);
    w.stop();
    w.join().unwrap();
    // Nothing more than the produced events; the interrupted batch may repeat (at least
    // once), nothing is skipped.
    let seen: BTreeSet<i64> = seen.lock().iter().copied().collect();
    assert_eq!(seen, produced);
}

/// Sets or resets `default_transaction_read_only` server-wide and waits until new sessions
/// see it: a read-only server is refused by `target_session_attrs=read-write`, as a hot
/// standby is.
fn set_read_only(dsn: &str, on: bool) {
    let config = postgres::Config::from_str(dsn).unwrap();
    let mut su = config.connect(postgres::NoTls).unwrap();
    let sql = if on {
        "alter system set default_transaction_read_only = on"
    } else {
        "alter system reset default_transaction_read_only"
    };
    su.batch_execute(sql).unwrap();
    su.batch_execute("select pg_reload_conf()").unwrap();
    let want = if on { "on" } else { "off" };
    wait_until("the setting to apply", WAIT, || {
        let mut fresh = config.connect(postgres::NoTls).unwrap();
        let v: String = fresh
            .query_one("show default_transaction_read_only", &[])
            .unwrap()
            .get(0);
        v == want
    });
}

/// A multi-host DSN with target_session_attrs=read-write: the worker consumes from the
/// writable server and, when that one goes down and the other is promoted (turned
/// writable), reconnects there and goes on consuming.
#[test]
fn multi_host_dsn_follows_the_promoted_server() {
    let (a, dsn_a) = Cluster::start("worker-ha-a");
    let (_b, dsn_b) = Cluster::start("worker-ha-b");
    let mut clients = Vec::new();
    for dsn in [&dsn_a, &dsn_b] {
        let client = pgq::Client::connect(dsn).unwrap();
        client.install().unwrap();
        client.create_queue("q").unwrap();
        client.register_consumer("q", "c").unwrap();
        clients.push(client);
    }
    set_read_only(&dsn_b, true);
    let port = |dsn: &str| postgres::Config::from_str(dsn).unwrap().get_ports()[0];
    let dsn = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=postgres dbname=postgres \
         target_session_attrs=read-write",
        port(&dsn_a),
        port(&dsn_b)
    );
    let client = pgq::ClientBuilder::from_config(postgres::Config::from_str(&dsn).unwrap())
        .pool_size(4)
        .min_idle(0)
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    let w = Worker::builder(&client, "q", "c")
        .poll_interval(Duration::from_millis(50))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .handler(move |b| {
            for ev in b.events() {
                s.lock().push(ev?.data.unwrap_or_default());
            }
            Ok(())
        })
        .start()
        .unwrap();
    let produce_on = |c: &pgq::Client, prefix: &str| {
        for i in 0..3 {
            c.send("q", &NewEvent::new("t", format!("{prefix}{i}")))
                .unwrap();
        }
        tick(c);
    };
    produce_on(&clients[0], "a");
    wait_until("events from a", WAIT, || seen.lock().len() == 3);

    // Failover: a goes down, b is promoted.
    set_read_only(&dsn_b, false);
    drop(a);
    produce_on(&clients[1], "b");
    wait_until("events from b", WAIT, || seen.lock().len() == 6);
    let stats = w.stats();
    assert!(stats.db_errors >= 1, "{stats:?}");
    assert!(stats.reconnects >= 1, "{stats:?}");
    drop(w);
    assert_eq!(*seen.lock(), ["a0", "a1", "a2", "b0", "b1", "b2"]);
}
