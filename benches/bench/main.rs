//! libpgq benchmarks against the reference PGQ (official extension, pgqd, python3-pgq).
//!
//!     scripts/bench.sh [SERVER_DSN]          # the usual way: throwaway cluster, release build
//!     cargo bench --bench bench -- SERVER_DSN
//!
//! SERVER_DSN (or PGQ_BENCH_DSN) is a superuser DSN; the benchmark creates the databases
//! `pgq_bench_ours` (our schema) and `pgq_bench_official` (CREATE EXTENSION pgq) there,
//! drops them at the end, and prints every figure as it goes, then a Markdown table for
//! BENCHMARKS.md. Sizes come from PGQ_BENCH_* environment variables (see util.rs and
//! BENCHMARKS.md). Consumers run as child processes of this binary
//! (`bench child pull|gbe ...`) so that each one's peak memory can be measured.

mod batches;
mod consume;
mod produce;
mod report;
mod runtime;
mod util;

use std::time::Instant;

use util::{drop_database, fresh_database, Backend, Res, Settings};

const DB_OURS: &str = "pgq_bench_ours";
const DB_OFFICIAL: &str = "pgq_bench_official";

fn main() {
    // `cargo bench` passes --bench; everything else that is not a flag is ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let res = if args.first().map(String::as_str) == Some("child") {
        consume::child(&args[1..])
    } else {
        run(args.first().cloned())
    };
    if let Err(e) = res {
        eprintln!("bench: error: {e}");
        std::process::exit(1);
    }
}

/// The 1-minute load average, to show how busy the machine was.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map(|kib| format!("{:.0} GiB RAM", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem}")
}

fn run(dsn: Option<String>) -> Res<()> {
    let dsn = dsn
        .or_else(|| std::env::var("PGQ_BENCH_DSN").ok())
        .filter(|d| !d.trim().is_empty())
        .ok_or(
            "usage: bench SERVER_DSN (or set PGQ_BENCH_DSN); scripts/bench.sh starts a cluster",
        )?;
    let s = Settings::from_env()?;
    let t_all = Instant::now();
    let server_version: String = util::connect(&dsn)?
        .query_one("select current_setting('server_version')", &[])?
        .get(0);
    eprintln!("bench: machine: {}", machine());
    eprintln!("bench: PostgreSQL {server_version}; settings {s:?}");

    let ours_dsn = fresh_database(&dsn, DB_OURS, Backend::Ours)?;
    let official_dsn = fresh_database(&dsn, DB_OFFICIAL, Backend::Official)?;
    let mut report = report::Report::default();
    let load_start = loadavg();

    if s.wants("produce") || s.wants("produce-cost") || s.wants("bulk") {
        for d in [&ours_dsn, &official_dsn] {
            produce::prepare(d, &pgq::Client::connect(d)?)?;
        }
    }
    if s.wants("produce") {
        produce::single(&mut report, &s, &ours_dsn, &official_dsn)?;
    }
    if s.wants("produce") || s.wants("produce-cost") {
        produce::cost(&mut report, &s, &ours_dsn)?;
    }
    if s.wants("bulk") {
        produce::bulk(&mut report, &s, &ours_dsn, &official_dsn)?;
    }
    if s.wants("consume") {
        consume::backlog(
            &mut report,
            &s,
            &[
                (&ours_dsn, Backend::Ours.label()),
                (&official_dsn, Backend::Official.label()),
            ],
        )?;
    }
    let both = [
        (ours_dsn.as_str(), Backend::Ours.label()),
        (official_dsn.as_str(), Backend::Official.label()),
    ];
    if s.wants("small") {
        batches::small(&mut report, &s, &both)?;
    }
    if s.wants("retry") {
        batches::retry(&mut report, &s, &both)?;
    }
    if s.wants("bigbatch") {
        consume::big_batch(&mut report, &s, &ours_dsn, Backend::Ours.label())?;
    }

    if s.wants("latency") {
        runtime::latency(&mut report, &s, &dsn, &ours_dsn, DB_OFFICIAL, &official_dsn)?;
    }
    if s.wants("idle") {
        runtime::idle(
            &mut report,
            &s,
            &dsn,
            DB_OURS,
            &ours_dsn,
            DB_OFFICIAL,
            &official_dsn,
        )?;
    }
    if s.wants("queues") {
        runtime::many_queues(
            &mut report,
            &s,
            &dsn,
            DB_OURS,
            &ours_dsn,
            DB_OFFICIAL,
            &official_dsn,
        )?;
    }

    report.note(format!(
        "load average (1 min) of the machine: {load_start} at the start, {} at the end",
        loadavg()
    ));

    drop_database(&dsn, DB_OURS)?;
    drop_database(&dsn, DB_OFFICIAL)?;

    println!();
    println!(
        "Machine: {}; PostgreSQL {server_version}; run took {:.0}s.",
        machine(),
        t_all.elapsed().as_secs_f64()
    );
    println!(
        "Settings: PGQ_BENCH_SECS={} PGQ_BENCH_ROUNDS={} PGQ_BENCH_EVENTS={} PGQ_BENCH_BATCH={} PGQ_BENCH_CONSUME_ROUNDS={} PGQ_BENCH_BIG_BATCH={} PGQ_BENCH_SMALL_EVENTS={} PGQ_BENCH_SMALL_BATCH={} PGQ_BENCH_RETRY_EVENTS={} PGQ_BENCH_LATENCY_RATE={} PGQ_BENCH_LATENCY_SECS={} PGQ_BENCH_IDLE_SECS={} PGQ_BENCH_QUEUES={}",
        s.secs, s.rounds, s.events, s.batch, s.consume_rounds, s.big_batch, s.small_events, s.small_batch, s.retry_events, s.latency_rate, s.latency_secs, s.idle_secs, s.queues
    );
    println!();
    print!("{}", report.markdown());
    Ok(())
}
