//! Shared helpers: settings from the environment, databases, timing, process figures.

use std::str::FromStr;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Res<T> = std::result::Result<T, BoxError>;

/// Benchmark sizes; every one can be set from the environment (see BENCHMARKS.md).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Seconds each produce variant runs per round (PGQ_BENCH_SECS).
    pub secs: f64,
    /// Interleaved rounds per produce variant; the best rate is reported (PGQ_BENCH_ROUNDS).
    pub rounds: usize,
    /// Size of the consume backlog (PGQ_BENCH_EVENTS).
    pub events: u64,
    /// Events per batch (one tick every this many events) in the backlog (PGQ_BENCH_BATCH).
    pub batch: u64,
    /// Rounds of the backlog drain per consumer; the best is reported
    /// (PGQ_BENCH_CONSUME_ROUNDS).
    pub consume_rounds: usize,
    /// Events of the single huge batch used for the memory-bound row (PGQ_BENCH_BIG_BATCH).
    pub big_batch: u64,
    /// Events of the small-batch benchmark (PGQ_BENCH_SMALL_EVENTS; 0 skips it).
    pub small_events: u64,
    /// Events per batch there (PGQ_BENCH_SMALL_BATCH).
    pub small_batch: u64,
    /// Events of the batch sent back whole for retry (PGQ_BENCH_RETRY_EVENTS; 0 skips it).
    pub retry_events: u64,
    /// Produce rate of the latency benchmark, events per second (PGQ_BENCH_LATENCY_RATE).
    pub latency_rate: f64,
    /// Seconds the latency benchmark produces (PGQ_BENCH_LATENCY_SECS).
    pub latency_secs: f64,
    /// Seconds the idle and many-queue measurements last (PGQ_BENCH_IDLE_SECS).
    pub idle_secs: f64,
    /// Queues of the many-queue benchmark, 5 consumers each (PGQ_BENCH_QUEUES).
    pub queues: u64,
    /// Which groups to run (PGQ_BENCH_ONLY, comma separated; empty = all).
    pub only: Vec<String>,
}

fn env_or<T: FromStr>(name: &str, default: T) -> Res<T> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .replace('_', "")
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a valid number").into()),
        _ => Ok(default),
    }
}

impl Settings {
    pub fn from_env() -> Res<Settings> {
        let only = std::env::var("PGQ_BENCH_ONLY").unwrap_or_default();
        Ok(Settings {
            secs: env_or("PGQ_BENCH_SECS", 1.0)?,
            rounds: env_or::<usize>("PGQ_BENCH_ROUNDS", 3)?.max(1),
            events: env_or::<u64>("PGQ_BENCH_EVENTS", 1_000_000)?.max(1000),
            batch: env_or::<u64>("PGQ_BENCH_BATCH", 10_000)?.max(1000),
            consume_rounds: env_or::<usize>("PGQ_BENCH_CONSUME_ROUNDS", 1)?.max(1),
            big_batch: env_or::<u64>("PGQ_BENCH_BIG_BATCH", 200_000)?,
            small_events: env_or::<u64>("PGQ_BENCH_SMALL_EVENTS", 20_000)?,
            small_batch: env_or::<u64>("PGQ_BENCH_SMALL_BATCH", 10)?.max(1),
            retry_events: env_or::<u64>("PGQ_BENCH_RETRY_EVENTS", 5000)?,
            latency_rate: env_or::<f64>("PGQ_BENCH_LATENCY_RATE", 1000.0)?.clamp(1.0, 100_000.0),
            latency_secs: env_or::<f64>("PGQ_BENCH_LATENCY_SECS", 5.0)?.max(0.5),
            idle_secs: env_or::<f64>("PGQ_BENCH_IDLE_SECS", 10.0)?.max(1.0),
            queues: env_or::<u64>("PGQ_BENCH_QUEUES", 1000)?.max(1),
            only: only
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        })
    }

    pub fn wants(&self, group: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|g| g == group)
    }
}

/// `dsn` with its database replaced by `dbname` (URL or key=value form).
pub fn dsn_with_db(dsn: &str, dbname: &str) -> String {
    let d = dsn.trim();
    if let Some(rest) = d
        .strip_prefix("postgresql://")
        .or_else(|| d.strip_prefix("postgres://"))
    {
        let scheme = &d[..d.len() - rest.len()];
        let (before_q, query) = match rest.find('?') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let authority = match before_q.find('/') {
            Some(i) => &before_q[..i],
            None => before_q,
        };
        format!("{scheme}{authority}/{dbname}{query}")
    } else {
        // libpq and rust-postgres both let a later key win.
        format!("{d} dbname={dbname}")
    }
}

/// `dsn` with one more connection parameter (URL or key=value form).
pub fn dsn_with_param(dsn: &str, key: &str, value: &str) -> String {
    let d = dsn.trim();
    if d.starts_with("postgresql://") || d.starts_with("postgres://") {
        let sep = if d.contains('?') { '&' } else { '?' };
        format!("{d}{sep}{key}={value}")
    } else {
        format!("{d} {key}={value}")
    }
}

pub fn connect(dsn: &str) -> Res<postgres::Client> {
    let config = postgres::Config::from_str(dsn)?;
    Ok(config.connect(postgres::NoTls)?)
}

/// PGQ backend of a benchmark database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// libpgq's own PL/pgSQL schema.
    Ours,
    /// The official extension (postgresql-15-pgq3).
    Official,
}

impl Backend {
    pub fn label(self) -> &'static str {
        match self {
            Backend::Ours => "our schema",
            Backend::Official => "official ext",
        }
    }
}

/// (Re)creates database `name` on the server and installs PGQ into it; returns its DSN.
pub fn fresh_database(server_dsn: &str, name: &str, backend: Backend) -> Res<String> {
    let mut admin = connect(server_dsn)?;
    admin.batch_execute(&format!("drop database if exists {name} with (force)"))?;
    admin.batch_execute(&format!("create database {name}"))?;
    let dsn = dsn_with_db(server_dsn, name);
    match backend {
        Backend::Ours => {
            let client = pgq::Client::connect(&dsn)?;
            client.install()?;
        }
        Backend::Official => {
            connect(&dsn)?.batch_execute("create extension pgq")?;
        }
    }
    Ok(dsn)
}

pub fn drop_database(server_dsn: &str, name: &str) -> Res<()> {
    connect(server_dsn)?.batch_execute(&format!("drop database if exists {name} with (force)"))?;
    Ok(())
}

/// An operation one benchmark thread repeats; returns how many units (events) it did.
pub type Op = Box<dyn FnMut() -> Res<u64> + Send>;

/// Runs `threads` threads, each with its own state made by `setup` (outside the timed
/// window), repeating its op until `secs` have passed; returns units per second.
pub fn run_timed<F>(threads: usize, secs: f64, setup: F) -> Res<f64>
where
    F: Fn() -> Res<Op> + Send + Sync + 'static,
{
    let setup = Arc::new(setup);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let mut handles = Vec::new();
    for i in 0..threads {
        let setup = Arc::clone(&setup);
        let barrier = Arc::clone(&barrier);
        handles.push(thread::Builder::new().name(format!("bench-{i}")).spawn(
            move || -> Res<(u64, Duration)> {
                let op = setup();
                // Always reach the barrier, even after a failed setup, so nobody hangs.
                barrier.wait();
                let mut op = op?;
                let start = Instant::now();
                let deadline = start + Duration::from_secs_f64(secs);
                let mut units = 0;
                while Instant::now() < deadline {
                    units += op()?;
                }
                Ok((units, start.elapsed()))
            },
        )?);
    }
    barrier.wait();
    let mut total = 0.0;
    for h in handles {
        let (units, took) = h.join().map_err(|_| "benchmark thread panicked")??;
        total += units as f64 / took.as_secs_f64();
    }
    Ok(total)
}

/// The best (highest) rate of several rounds: on a shared machine load from elsewhere only
/// ever slows a round down, so the best round is the closest to the code's own speed.
pub fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Peak resident set size of this process in KiB (VmHWM), 0 if unknown.
pub fn peak_rss_kib() -> u64 {
    status_field("VmHWM:")
}

fn status_field(name: &str) -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) this process has used so far.
pub fn cpu_time() -> Duration {
    proc_cpu_time("/proc/self/stat")
}

/// CPU time (user + system) of the thread or process whose `stat` file is `path`.
pub fn proc_cpu_time(path: &str) -> Duration {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Duration::ZERO;
    };
    // Fields after the command name, which is in parentheses and may contain spaces.
    let Some(rest) = text.rfind(')').map(|i| &text[i + 1..]) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of proc(5); counted from the state field (3) they
    // are at 11 and 12. Units are USER_HZ ticks, which Linux fixes at 100 per second.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// A realistic small event: a type, a ~100-byte JSON payload and one extra field.
pub fn sample_event(i: u64) -> pgq::NewEvent {
    pgq::NewEvent::new(
        "order.created",
        format!(
            r#"{{"order_id": {i}, "customer": "c-{}", "total": "{}.{:02}", "currency": "EUR", "items": 3}}"#,
            i % 9973,
            i % 1000,
            i % 100
        ),
    )
    .extra1("public.orders")
}

pub fn human_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k/s", r / 1e3)
    } else {
        format!("{r:.0} /s")
    }
}
