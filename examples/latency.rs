//! Latency probe: end-to-end latency from an event's commit to its handler, with the default
//! [`Ticker`](pgq::Ticker) and [`Worker`](pgq::Worker) settings, and what both cost while idle.
//!
//! ```sh
//! dsn=$(scripts/pg-cluster.sh start /tmp/pg-latency)   # a throwaway cluster
//! cargo run --release --example latency -- "$dsn"
//! ```
//!
//! The DSN (first argument or `PGQ_DSN`) must be allowed to create databases: the probe
//! works in a fresh database `pgq_latency` with libpgq's schema and drops it at the end.
//! It produces `PGQ_LATENCY_RATE` events per second (1000), one per transaction, for
//! `PGQ_LATENCY_SECS` seconds (10), and prints the p50/p90/p99/max latency from the moment
//! `send` returned (the commit) to the moment the handler saw the event. Then it stays idle
//! for `PGQ_LATENCY_IDLE_SECS` (10) and prints the CPU time the ticker, worker and listener
//! threads used meanwhile (from /proc/self/task), and the ticks written.
//!
//! To compare with other settings: `PGQ_LATENCY_TICKER_PERIOD_MS=5`, `PGQ_LATENCY_EAGER=off`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pgq::{Client, NewEvent, Ticker, Worker};

const DB: &str = "pgq_latency";
const QUEUE: &str = "latency";

fn main() {
    if let Err(e) = run() {
        eprintln!("latency probe failed: {e}");
        std::process::exit(1);
    }
}

fn env_num(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time (user + system) of this process's threads whose names start with one of
/// `prefixes`, from /proc/self/task/*/stat (Linux only; zero elsewhere).
fn threads_cpu(prefixes: &[&str]) -> Duration {
    let tick = 100.0; // USER_HZ, 100 on every Linux platform Rust supports
    let mut total = 0u64;
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    for entry in dir.flatten() {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if !prefixes.iter().any(|p| comm.starts_with(p)) {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // Fields after the ")" closing the name: state is field 3, utime 14, stime 15.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            for i in [11, 12] {
                total += f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
        }
    }
    Duration::from_secs_f64(total as f64 / tick)
}

/// CPU time of a server process (the ticker's backend), when it runs on this host as a user
/// whose /proc entry we may read.
fn process_cpu(pid: i32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(t as f64 / 100.0))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn run() -> pgq::Result<()> {
    let dsn = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("PGQ_DSN").ok())
        .ok_or_else(|| pgq::Error::invalid_input("usage: latency DSN (or set PGQ_DSN)"))?;
    let rate = env_num("PGQ_LATENCY_RATE", 1000.0).max(1.0);
    let secs = env_num("PGQ_LATENCY_SECS", 10.0).max(0.1);
    let idle_secs = env_num("PGQ_LATENCY_IDLE_SECS", 10.0).max(1.0);

    let mut admin = Client::connect(&dsn)?.get()?;
    admin.batch_execute(&format!("drop database if exists {DB}"))?;
    admin.batch_execute(&format!("create database {DB}"))?;
    let result = probe(&dsn, rate, secs, idle_secs);
    admin.batch_execute(&format!("drop database if exists {DB} with (force)"))?;
    result
}

fn probe(dsn: &str, rate: f64, secs: f64, idle_secs: f64) -> pgq::Result<()> {
    let mut cfg: postgres::Config = dsn
        .parse()
        .map_err(|e| pgq::Error::invalid_input(format!("bad DSN: {e}")))?;
    cfg.dbname(DB);
    let client = pgq::ClientBuilder::from_config(cfg).build()?;
    client.install()?;
    client.create_queue(QUEUE)?;
    client.register_consumer(QUEUE, "probe")?;

    // Commit and handler times by event id.
    let committed: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let seen: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();

    // Defaults unless asked otherwise (to compare settings).
    let mut builder = Ticker::builder(&client).name("probe");
    if let Ok(ms) = std::env::var("PGQ_LATENCY_TICKER_PERIOD_MS") {
        let ms: u64 = ms
            .parse()
            .map_err(|_| pgq::Error::invalid_input("PGQ_LATENCY_TICKER_PERIOD_MS: not a number"))?;
        builder = builder.ticker_period(Duration::from_millis(ms));
    }
    if std::env::var("PGQ_LATENCY_EAGER").as_deref() == Ok("off") {
        builder = builder.eager(None);
    }
    let ticker = builder.start()?;
    let seen_by_handler = Arc::clone(&seen);
    let worker = Worker::builder(&client, QUEUE, "probe")
        .handler(move |batch| {
            for ev in batch.events() {
                let ev = ev?;
                seen_by_handler.lock().insert(ev.id, Instant::now());
            }
            Ok(())
        })
        .start()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ticker.is_active() || !worker.stats().listening {
        if Instant::now() > deadline {
            return Err(pgq::Error::new(
                pgq::ErrorKind::Other,
                "ticker or worker not ready",
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    let n = (rate * secs) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    println!("producing {n} events at {rate} ev/s, one per transaction ...");
    let producer = pgq::Producer::new(&client, QUEUE)?;
    let start = Instant::now();
    let mut late = 0u64;
    for i in 0..n {
        let due = start + interval * i as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > Duration::from_millis(10) {
            late += 1;
        }
        let id = producer.send(&NewEvent::new("probe", i.to_string()))?;
        committed.lock().insert(id, Instant::now());
    }
    let produced_in = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().len() < n as usize && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }

    let mut lat: Vec<Duration> = {
        let c = committed.lock();
        let s = seen.lock();
        c.iter()
            .filter_map(|(id, t)| s.get(id).map(|h| h.saturating_duration_since(*t)))
            .collect()
    };
    lat.sort();
    println!(
        "produced {n} in {:.2} s ({late} sends more than 10 ms behind schedule); handled {}",
        produced_in.as_secs_f64(),
        lat.len()
    );
    println!(
        "commit -> handler latency: p50 {}  p90 {}  p99 {}  max {}",
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.90)),
        ms(percentile(&lat, 0.99)),
        ms(percentile(&lat, 1.0)),
    );
    let ts = ticker.stats();
    let ws = worker.stats();
    println!(
        "ticks while producing: {} ({:.0}/s); batches: {}",
        ts.ticks,
        ts.ticks as f64 / produced_in.as_secs_f64(),
        ws.batches
    );

    // Idle: let the ticker reach its idle period first (it slows down after 5 s without
    // events), then measure.
    std::thread::sleep(Duration::from_secs(6));
    let mut conn = client.get()?;
    let backend: Option<i32> = conn
        .query_opt(
            "select pid from pg_stat_activity where datname = $1 \
              and application_name = 'libpgq ticker'",
            &[&DB],
        )?
        .map(|r| r.get(0));
    let count_ticks = |conn: &mut pgq::PooledConnection| -> pgq::Result<i64> {
        Ok(conn.query_one("select count(*) from pgq.tick", &[])?.get(0))
    };
    let prefixes = ["pgq-ticker", "pgq-worker", "pgq-listener"];
    let (cpu0, ticks0, rounds0) = (
        threads_cpu(&prefixes),
        count_ticks(&mut conn)?,
        ticker.stats().rounds,
    );
    let server0 = backend.and_then(process_cpu);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(idle_secs));
    let idle = t0.elapsed();
    let cpu = threads_cpu(&prefixes).saturating_sub(cpu0);
    let ticks = count_ticks(&mut conn)? - ticks0;
    let rounds = ticker.stats().rounds - rounds0;
    println!(
        "idle {:.1} s: ticker + worker threads used {} CPU ({:.3}%), {rounds} ticker rounds, \
         {ticks} ticks written",
        idle.as_secs_f64(),
        ms(cpu),
        cpu.as_secs_f64() / idle.as_secs_f64() * 100.0
    );
    if let (Some(pid), Some(before)) = (backend, server0) {
        if let Some(after) = process_cpu(pid) {
            let used = after.saturating_sub(before);
            println!(
                "idle: the ticker's server backend used {} CPU ({:.3}%)",
                ms(used),
                used.as_secs_f64() / idle.as_secs_f64() * 100.0
            );
        }
    }
    drop(conn);
    drop(worker);
    drop(ticker);
    Ok(())
}
