//! Consume throughput: drain a backlog with a no-op handler, each consumer in its own
//! process so that its peak memory can be read.

use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use pgq::{Client, Consumer};

use crate::report::{fmt_ratio, Cmp, Report};
use crate::util::{
    connect, cpu_time, human_rate, peak_rss_kib, proc_cpu_time, sample_event, Res, Settings,
};

pub const QUEUE: &str = "bench_backlog";
pub const BIG_QUEUE: &str = "bench_big";

/// How a consumer process reads its batches.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// SkyTools' python3-pgq `pgq.Consumer` (pgq_lazy_fetch = 300, its default).
    Python,
    /// libpgq's pull API, `Batch::events` + `Batch::finish_and_next` with this fetch size.
    Pull(usize),
    /// `pgq.get_batch_events(batch)` read in full into a Vec, from Rust.
    GetBatchEvents,
    /// libpgq's `Worker` (defaults: LISTEN + poll, fetch_size 1000) with a no-op handler.
    Worker,
    /// The C ABI's pull consumer (benches/c_consume.c) with this fetch size.
    C(usize),
    /// Prototype of a pipelined read: the batch's SQL from `pgq.batch_event_sql` run as one
    /// streamed query (rows are decoded while the server still sends, no round trip per
    /// fetch_size rows; memory bounded by the socket buffers rather than by a fetch size, and
    /// the connection is busy until the last row, so no work can run between two events).
    Stream,
    /// libpgq's Go binding (bindings/go, benches/go_consume) pulling with this fetch size.
    Go(usize),
    /// libpgq's Python binding (bindings/python) pulling with this fetch size.
    PyLibpgq(usize),
}

impl Kind {
    pub fn consumer_name(self) -> String {
        match self {
            Kind::Python => "c_python".into(),
            Kind::Pull(n) => format!("c_pull_{n}"),
            Kind::GetBatchEvents => "c_gbe".into(),
            Kind::Worker => "c_worker".into(),
            Kind::C(n) => format!("c_capi_{n}"),
            Kind::PyLibpgq(n) => format!("c_pybinding_{n}"),
            Kind::Stream => "c_stream".into(),
            Kind::Go(n) => format!("c_go_{n}"),
        }
    }

    pub fn label(self) -> String {
        match self {
            Kind::Python => "python3-pgq Consumer (lazy fetch 300)".into(),
            Kind::Pull(n) => format!("libpgq Consumer pull, fetch_size {n}"),
            Kind::GetBatchEvents => "pgq.get_batch_events read in full (Rust)".into(),
            Kind::Worker => "libpgq Worker, defaults".into(),
            Kind::C(n) => format!("libpgq C ABI pull (C program), fetch_size {n}"),
            Kind::PyLibpgq(n) => format!("libpgq Python binding pull, fetch_size {n}"),
            Kind::Stream => "prototype: batch_event_sql streamed, unbounded (query_raw)".into(),
            Kind::Go(n) => format!("libpgq Go binding pull, fetch_size {n}"),
        }
    }
}

/// What one consumer process reports.
#[derive(Debug, Clone, Default)]
pub struct Drained {
    pub events: u64,
    pub batches: u64,
    pub secs: f64,
    pub cpu_secs: f64,
    pub peak_rss_kib: u64,
    /// CPU time of the consumer's PostgreSQL backend.
    pub backend_cpu_secs: f64,
}

impl Drained {
    fn to_json(&self) -> String {
        serde_json::json!({
            "events": self.events,
            "batches": self.batches,
            "secs": self.secs,
            "cpu_secs": self.cpu_secs,
            "peak_rss_kib": self.peak_rss_kib,
            "backend_cpu_secs": self.backend_cpu_secs,
        })
        .to_string()
    }

    fn from_json(line: &str) -> Res<Drained> {
        let v: serde_json::Value = serde_json::from_str(line.trim())
            .map_err(|e| format!("bad consumer report {line:?}: {e}"))?;
        let num = |k: &str| v.get(k).and_then(|x| x.as_f64()).unwrap_or(0.0);
        Ok(Drained {
            events: num("events") as u64,
            batches: num("batches") as u64,
            secs: num("secs"),
            cpu_secs: num("cpu_secs"),
            peak_rss_kib: num("peak_rss_kib") as u64,
            backend_cpu_secs: num("backend_cpu_secs"),
        })
    }

    pub fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.events as f64 / self.secs
        } else {
            0.0
        }
    }

    /// Client + server CPU per event, in microseconds.
    pub fn cpu_us_per_event(&self) -> f64 {
        if self.events == 0 {
            return 0.0;
        }
        (self.cpu_secs + self.backend_cpu_secs) * 1e6 / self.events as f64
    }

    pub fn cell(&self) -> String {
        format!(
            "{} · {:.1} MiB peak RSS · {:.2} µs CPU/ev",
            human_rate(self.rate()),
            self.peak_rss_kib as f64 / 1024.0,
            self.cpu_us_per_event()
        )
    }
}

/// Creates `queue` with every consumer in `kinds` registered, then produces `total` events
/// (COPY, 1000 per transaction) with a tick after every `per_batch` events.
pub fn fill(dsn: &str, queue: &str, kinds: &[Kind], total: u64, per_batch: u64) -> Res<()> {
    let client = Client::builder(dsn).pool_size(2).build()?;
    client.create_queue(queue)?;
    for k in kinds {
        client.register_consumer(queue, &k.consumer_name())?;
    }
    let tick = || -> Res<()> {
        client.force_tick(queue)?;
        client.tick_queue(queue)?;
        Ok(())
    };
    let t0 = Instant::now();
    let mut made = 0u64;
    let mut since_tick = 0u64;
    while made < total {
        // At most 1000 per transaction, and never past the next tick.
        let n = 1000.min(total - made).min(per_batch.max(1) - since_tick);
        let evs: Vec<_> = (made..made + n).map(sample_event).collect();
        client.send_many(queue, &evs)?;
        made += n;
        since_tick += n;
        if since_tick >= per_batch {
            tick()?;
            since_tick = 0;
        }
    }
    if since_tick > 0 {
        tick()?;
    }
    eprintln!(
        "    filled {queue}: {total} events, one tick per {per_batch}, in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    // Fresh statistics so every consumer sees the same plans.
    connect(dsn)?.batch_execute("analyze")?;
    Ok(())
}

/// Drains the backlog as consumer `kind` in a child process.
pub fn drain(dsn: &str, queue: &str, kind: Kind, expected: u64) -> Res<Drained> {
    let consumer = kind.consumer_name();
    let mut cmd = match kind {
        Kind::Python => {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python_consumer.py");
            let mut c = Command::new("/usr/bin/python3");
            c.args([script, dsn, queue, &consumer]);
            c
        }
        Kind::Pull(n) => {
            let mut c = Command::new(std::env::current_exe()?);
            c.args(["child", "pull", dsn, queue, &consumer, &n.to_string()]);
            c
        }
        Kind::GetBatchEvents => {
            let mut c = Command::new(std::env::current_exe()?);
            c.args(["child", "gbe", dsn, queue, &consumer, "0"]);
            c
        }
        Kind::Worker => {
            let mut c = Command::new(std::env::current_exe()?);
            c.args([
                "child",
                "worker",
                dsn,
                queue,
                &consumer,
                &expected.to_string(),
            ]);
            c
        }
        Kind::Stream => {
            let mut c = Command::new(std::env::current_exe()?);
            c.args(["child", "stream", dsn, queue, &consumer, "0"]);
            c
        }
        Kind::C(n) => return drain_external(&c_consumer_path()?, &[], dsn, queue, &consumer, n),
        Kind::Go(n) => {
            let program = std::env::var("PGQ_BENCH_GO_CONSUMER")?;
            return drain_external(&program, &[], dsn, queue, &consumer, n);
        }
        Kind::PyLibpgq(n) => {
            return drain_external(
                "/usr/bin/python3",
                &[PY_BINDING_SCRIPT],
                dsn,
                queue,
                &consumer,
                n,
            )
        }
    };
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot start consumer {consumer}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("consumer {consumer} failed ({}): {stdout}", out.status).into());
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| format!("consumer {consumer} printed no report: {stdout}"))?;
    Drained::from_json(line)
}

/// Where scripts/bench.sh built benches/c_consume.c (PGQ_BENCH_C_CONSUMER).
pub fn c_consumer_path() -> Res<String> {
    std::env::var("PGQ_BENCH_C_CONSUMER")
        .ok()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| "PGQ_BENCH_C_CONSUMER is not set".into())
}

const EXTERNAL_APP: &str = "pgq_bench_external";

const PY_BINDING_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/benches/python_libpgq_consumer.py"
);

/// The Python binding can run when its sources are here and LIBPGQ_PATH names the library.
fn python_binding_available() -> bool {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/bindings/python/src/libpgq");
    std::path::Path::new(src).is_dir() && std::env::var("LIBPGQ_PATH").is_ok_and(|p| !p.is_empty())
}

/// Runs a consumer program that prints its report, then keeps its connections open until its
/// stdin is closed, so that its server backends' CPU time can be read here.
fn drain_external(
    program: &str,
    pre_args: &[&str],
    dsn: &str,
    queue: &str,
    consumer: &str,
    fetch: usize,
) -> Res<Drained> {
    use std::io::{BufRead, BufReader};
    let app_dsn = crate::util::dsn_with_param(dsn, "application_name", EXTERNAL_APP);
    let mut child = Command::new(program)
        .args(pre_args)
        .args([&app_dsn, queue, consumer, &fetch.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut report = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if line.trim_start().starts_with('{') {
            report = Some(Drained::from_json(&line)?);
            break;
        }
    }
    let mut d = match report {
        Some(d) => d,
        None => {
            let status = child.wait()?;
            return Err(format!("{program} printed no report ({status})").into());
        }
    };
    d.backend_cpu_secs = backend_cpu_of(dsn, EXTERNAL_APP)?;
    drop(child.stdin.take());
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("{program} failed: {status}").into());
    }
    Ok(d)
}

/// Entry point of a consumer child process: `child pull|gbe DSN QUEUE CONSUMER FETCH`.
pub fn child(args: &[String]) -> Res<()> {
    let [kind, dsn, queue, consumer, fetch] = args else {
        return Err(format!("usage: child pull|gbe DSN QUEUE CONSUMER FETCH, got {args:?}").into());
    };
    let fetch: usize = fetch.parse()?;
    let t0 = Instant::now();
    let mut d = Drained::default();
    let backend_pid: i32;
    const WORKER_APP: &str = "pgq_bench_worker";
    const PULL_APP: &str = "pgq_bench_pull";
    match kind.as_str() {
        "pull" => {
            // The recommended loop: finish_and_next, so that each batch is read ahead while
            // the one before is handled (on our schema, on a second pooled connection). The
            // backends measured are the pool's, found by application name.
            let mut config = postgres::Config::from_str(dsn)?;
            config.application_name(PULL_APP);
            let client = pgq::ClientBuilder::from_config(config)
                .pool_size(2)
                .build()?;
            let c = Consumer::new(&client, queue, consumer)?.fetch_size(fetch);
            let mut next = c.next_batch()?;
            while let Some(batch) = next {
                for ev in batch.events() {
                    std::hint::black_box(ev?);
                    d.events += 1;
                }
                next = batch.finish_and_next(&c)?;
                d.batches += 1;
            }
            d.backend_cpu_secs = backend_cpu_of(dsn, PULL_APP)?;
        }
        "gbe" => {
            let mut conn = connect(dsn)?;
            backend_pid = conn.query_one("select pg_backend_pid()", &[])?.get(0);
            while let Some(b) = pgq::consumer::next_batch(&mut conn, queue, consumer)? {
                let events = pgq::consumer::get_batch_events(&mut conn, b.batch_id)?;
                d.events += events.len() as u64;
                std::hint::black_box(events);
                pgq::consumer::finish_batch(&mut conn, b.batch_id)?;
                d.batches += 1;
            }
            d.backend_cpu_secs = backend_cpu(backend_pid);
        }
        "stream" => {
            let mut conn = connect(dsn)?;
            backend_pid = conn.query_one("select pg_backend_pid()", &[])?.get(0);
            while let Some(b) = pgq::consumer::next_batch(&mut conn, queue, consumer)? {
                let mut tx = conn.transaction()?;
                let sql: String = tx
                    .query_one("select pgq.batch_event_sql($1)", &[&b.batch_id])?
                    .get(0);
                {
                    use postgres::fallible_iterator::FallibleIterator;
                    let no_params: [&(dyn postgres::types::ToSql + Sync); 0] = [];
                    let mut rows = tx.query_raw(sql.as_str(), no_params)?;
                    while let Some(row) = rows.next()? {
                        std::hint::black_box(decode(&row)?);
                        d.events += 1;
                    }
                }
                pgq::consumer::finish_batch(&mut tx, b.batch_id)?;
                tx.commit()?;
                d.batches += 1;
            }
            d.backend_cpu_secs = backend_cpu(backend_pid);
        }
        "worker" => {
            // `fetch` is the number of events to expect here.
            let expected = fetch as u64;
            let mut config = postgres::Config::from_str(dsn)?;
            config.application_name(WORKER_APP);
            let client = pgq::ClientBuilder::from_config(config).build()?;
            let seen = Arc::new(AtomicU64::new(0));
            let worker = {
                let seen = Arc::clone(&seen);
                pgq::Worker::builder(&client, queue, consumer)
                    .handler(move |batch| {
                        let mut n = 0;
                        for ev in batch.events() {
                            std::hint::black_box(ev?);
                            n += 1;
                        }
                        seen.fetch_add(n, Ordering::Relaxed);
                        Ok(())
                    })
                    .start()?
            };
            // Done when the last batch is finished (stats count finished batches' events).
            let deadline = Instant::now() + std::time::Duration::from_secs(600);
            while worker.stats().events < expected {
                // is_running() can be false for a moment right after start(): the threads
                // count themselves once they run.
                let gone = !worker.is_running() && t0.elapsed().as_secs() >= 2;
                if Instant::now() > deadline || gone {
                    return Err(format!(
                        "worker stopped at {} of {expected} events: {:?}",
                        worker.stats().events,
                        worker.stats().last_error
                    )
                    .into());
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            d.secs = t0.elapsed().as_secs_f64();
            let stats = worker.stats();
            d.events = seen.load(Ordering::Relaxed);
            d.batches = stats.batches;
            d.backend_cpu_secs = backend_cpu_of(dsn, WORKER_APP)?;
            worker.stop();
            worker.join()?;
            d.cpu_secs = cpu_time().as_secs_f64();
            d.peak_rss_kib = peak_rss_kib();
            println!("{}", d.to_json());
            return Ok(());
        }
        other => return Err(format!("unknown child kind {other:?}").into()),
    }
    d.secs = t0.elapsed().as_secs_f64();
    d.cpu_secs = cpu_time().as_secs_f64();
    d.peak_rss_kib = peak_rss_kib();
    println!("{}", d.to_json());
    Ok(())
}

/// The same conversion work as `pgq::Event` gets (by column name, all ten columns).
#[allow(clippy::type_complexity)]
fn decode(
    row: &postgres::Row,
) -> Res<(
    i64,
    std::time::SystemTime,
    i64,
    Option<i32>,
    [Option<String>; 6],
)> {
    Ok((
        row.try_get("ev_id")?,
        row.try_get("ev_time")?,
        row.try_get("ev_txid")?,
        row.try_get("ev_retry")?,
        [
            row.try_get("ev_type")?,
            row.try_get("ev_data")?,
            row.try_get("ev_extra1")?,
            row.try_get("ev_extra2")?,
            row.try_get("ev_extra3")?,
            row.try_get("ev_extra4")?,
        ],
    ))
}

fn backend_cpu(pid: i32) -> f64 {
    proc_cpu_time(&format!("/proc/{pid}/stat")).as_secs_f64()
}

/// CPU seconds of the server backends whose sessions have this application name.
fn backend_cpu_of(dsn: &str, app: &str) -> Res<f64> {
    let mut admin = connect(dsn)?;
    let pids: Vec<i32> = admin
        .query(
            "select pid from pg_stat_activity where application_name = $1",
            &[&app],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(pids.into_iter().map(backend_cpu).sum())
}

/// The consumers of the backlog benchmark: python3-pgq first, get_batch_events fourth (the
/// baselines); the C ABI consumer when scripts/bench.sh built it.
pub fn kinds() -> Vec<Kind> {
    let mut k = vec![
        Kind::Python,
        Kind::Pull(100), // the default before 1000: kept for comparison
        Kind::Pull(1000),
        Kind::GetBatchEvents,
        Kind::Stream,
        Kind::Worker,
    ];
    if c_consumer_path().is_ok() {
        // fetch_size 1000: fewer round trips, so the per-event cost of the ABI shows most.
        k.push(Kind::C(1000));
    }
    // Built by scripts/bench.sh from benches/go_consume when Go is installed.
    if std::env::var("PGQ_BENCH_GO_CONSUMER").is_ok_and(|p| !p.is_empty()) {
        k.push(Kind::Go(1000));
    }
    if python_binding_available() {
        k.push(Kind::PyLibpgq(1000));
    }
    k
}

/// The backlog benchmark: both backends are filled first, then every consumer drains each
/// backend in turn (interleaved, so load from elsewhere hits all alike), `rounds` times
/// (consumers are moved back to the start between rounds); the best round is reported.
pub fn backlog(report: &mut Report, s: &Settings, backends: &[(&str, &str)]) -> Res<()> {
    let kinds = kinds();
    let mut starts = Vec::new();
    for (dsn, label) in backends {
        eprintln!("  filling the backlog, {label}");
        let client = Client::builder(dsn).pool_size(1).build()?;
        fill(dsn, QUEUE, &kinds, s.events, s.batch)?;
        let first_tick = client
            .get()?
            .query_one(
                "select min(tick_id) from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue \
                 where q.queue_name = $1",
                &[&QUEUE],
            )?
            .get::<_, Option<i64>>(0)
            .ok_or("backlog queue has no tick")?;
        starts.push((client, first_tick));
    }
    // results[backend][kind] = one Drained per round
    let mut results: Vec<Vec<Vec<Drained>>> = vec![vec![Vec::new(); kinds.len()]; backends.len()];
    for round in 0..s.consume_rounds {
        for (ki, kind) in kinds.iter().enumerate() {
            for (bi, (dsn, label)) in backends.iter().enumerate() {
                if round > 0 {
                    let (client, tick) = &starts[bi];
                    client.register_consumer_at(QUEUE, &kind.consumer_name(), *tick)?;
                }
                let d = drain(dsn, QUEUE, *kind, s.events)?;
                eprintln!(
                    "    round {}/{} {:<13} {:<48} {:>7} ev in {:>3} batches, {:.2}s, cpu {:.2}s + server {:.2}s, {}",
                    round + 1,
                    s.consume_rounds,
                    label,
                    kind.label(),
                    d.events,
                    d.batches,
                    d.secs,
                    d.cpu_secs,
                    d.backend_cpu_secs,
                    d.cell()
                );
                if d.events != s.events {
                    return Err(format!(
                        "{} on {label} consumed {} events, expected {}",
                        kind.label(),
                        d.events,
                        s.events
                    )
                    .into());
                }
                results[bi][ki].push(d);
            }
        }
    }
    // The best round by rate, with its own memory and CPU figures: best[backend][kind].
    let best: Vec<Vec<Drained>> = results
        .iter()
        .map(|per_kind| {
            per_kind
                .iter()
                .map(|rounds| {
                    rounds
                        .iter()
                        .max_by(|a, b| a.rate().total_cmp(&b.rate()))
                        .cloned()
                        .unwrap_or_default()
                })
                .collect()
        })
        .collect();
    // The targets are against the reference: python3-pgq and the official extension's
    // get_batch_events, both on the official extension when it was measured. The same
    // baselines on the row's own backend are shown too (on our schema, get_batch_events is
    // our own function, faster than the official one).
    let reference = backends
        .iter()
        .position(|(_, label)| *label == crate::util::Backend::Official.label());
    for (bi, (_, label)) in backends.iter().enumerate() {
        let group = format!("consume {}k backlog, {label}", s.events / 1000);
        let med = &best[bi];
        let py = med[0].rate();
        let gbe = med[3].rate();
        let py_cpu = med[0].cpu_us_per_event();
        // The reference's rates, when measured on another backend than this one.
        let reference = reference
            .filter(|&r| r != bi)
            .map(|r| (best[r][0].rate(), best[r][3].rate()));
        for (ki, kind) in kinds.iter().enumerate() {
            let d = &med[ki];
            let cmps = match (kind, reference) {
                (Kind::Python, _) => vec![],
                (Kind::Pull(_) | Kind::Worker, Some((ref_py, ref_gbe))) => vec![
                    Cmp::target(ref_py, "python3-pgq on the official ext", 5.0),
                    Cmp::target(ref_gbe, "the official ext's get_batch_events", 2.0),
                    Cmp::new(py, "python3-pgq on this schema"),
                    Cmp::new(gbe, "this schema's get_batch_events"),
                ],
                (Kind::Pull(_) | Kind::Worker, _) => vec![
                    Cmp::target(py, "python3-pgq", 5.0),
                    Cmp::target(gbe, "get_batch_events", 2.0),
                ],
                (Kind::GetBatchEvents, _) => vec![Cmp::new(py, "python3-pgq")],
                (Kind::Stream, _) => vec![
                    Cmp::new(py, "python3-pgq"),
                    Cmp::new(gbe, "get_batch_events"),
                ],
                (Kind::PyLibpgq(_), _) => vec![Cmp::new(py, "python3-pgq")],
                (Kind::Go(_), _) => {
                    let rate_of = |want: Kind| {
                        kinds
                            .iter()
                            .position(|k| {
                                std::mem::discriminant(k) == std::mem::discriminant(&want)
                            })
                            .map(|i| med[i].rate())
                            .unwrap_or(0.0)
                    };
                    vec![
                        Cmp::new(rate_of(Kind::C(0)), "C ABI pull"),
                        Cmp::new(py, "python3-pgq"),
                    ]
                }
                (Kind::C(n), _) => {
                    // The same pull consumer in Rust, same fetch size.
                    let rust = kinds
                        .iter()
                        .position(|k| matches!(k, Kind::Pull(m) if m == n))
                        .map(|i| med[i].rate())
                        .unwrap_or(0.0);
                    vec![
                        Cmp::target(rust, "Rust pull, same fetch_size", 0.8),
                        Cmp::new(py, "python3-pgq"),
                    ]
                }
            };
            // CPU per event does not depend on how busy the machine is; wall time does.
            let cpu = if matches!(kind, Kind::Python) || d.cpu_us_per_event() <= 0.0 {
                String::new()
            } else {
                format!(
                    "CPU/ev: {} less than python3-pgq",
                    fmt_ratio(py_cpu / d.cpu_us_per_event())
                )
            };
            report.ratio_row_with(&group, kind.label(), d.cell(), d.rate(), &cmps, &cpu);
        }
    }
    Ok(())
}

/// One batch holding the whole backlog: memory of a streamed read vs a read in full.
pub fn big_batch(report: &mut Report, s: &Settings, dsn: &str, backend: &str) -> Res<()> {
    if s.big_batch == 0 {
        return Ok(());
    }
    let group = format!("one {}k-event batch, {backend}", s.big_batch / 1000);
    eprintln!("  {group}");
    let kinds = [
        Kind::Pull(pgq::consumer::DEFAULT_FETCH_SIZE),
        Kind::GetBatchEvents,
    ];
    fill(dsn, BIG_QUEUE, &kinds, s.big_batch, u64::MAX)?;
    for kind in kinds {
        let d = drain(dsn, BIG_QUEUE, kind, s.big_batch)?;
        if d.events != s.big_batch {
            return Err(format!("{} consumed {} events", kind.label(), d.events).into());
        }
        report.row(&group, kind.label(), d.cell());
    }
    Ok(())
}
