//! Per-batch costs: a stream of many small batches, and a batch sent back whole for retry.

use std::time::{Duration, Instant};

use pgq::{Client, Consumer, NewEvent};

use crate::consume::{drain, fill, Drained, Kind};
use crate::report::{fmt_ratio, Cmp, Report};
use crate::util::{connect, Res, Settings};

const SMALL_QUEUE: &str = "bench_small";
const RETRY_QUEUE: &str = "bench_retry";

/// The first tick of `queue` (where the consumers start again between rounds).
fn first_tick(client: &Client, queue: &str) -> Res<i64> {
    client
        .get()?
        .query_one(
            "select min(tick_id) from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue \
             where q.queue_name = $1",
            &[&queue],
        )?
        .get::<_, Option<i64>>(0)
        .ok_or_else(|| format!("queue {queue} has no tick").into())
}

fn batches_per_sec(d: &Drained) -> f64 {
    if d.secs > 0.0 {
        d.batches as f64 / d.secs
    } else {
        0.0
    }
}

/// Client + server CPU per batch, in microseconds.
fn cpu_us_per_batch(d: &Drained) -> f64 {
    if d.batches == 0 {
        return 0.0;
    }
    (d.cpu_secs + d.backend_cpu_secs) * 1e6 / d.batches as f64
}

/// Many small batches (`PGQ_BENCH_SMALL_EVENTS` events, a tick every
/// `PGQ_BENCH_SMALL_BATCH`): what a consumer pays per batch rather than per event. Each
/// consumer drains them as in the backlog benchmark (own process, best of
/// `PGQ_BENCH_CONSUME_ROUNDS`).
pub fn small(report: &mut Report, s: &Settings, backends: &[(&str, &str)]) -> Res<()> {
    if s.small_events == 0 {
        return Ok(());
    }
    let kinds = [Kind::Python, Kind::Pull(1000), Kind::Worker];
    let mut starts = Vec::new();
    for (dsn, label) in backends {
        eprintln!("  filling small batches, {label}");
        fill(dsn, SMALL_QUEUE, &kinds, s.small_events, s.small_batch)?;
        let client = Client::builder(dsn).pool_size(1).build()?;
        let tick = first_tick(&client, SMALL_QUEUE)?;
        starts.push((client, tick));
    }
    let mut best: Vec<Vec<Drained>> = vec![vec![Drained::default(); kinds.len()]; backends.len()];
    for round in 0..s.consume_rounds {
        for (ki, kind) in kinds.iter().enumerate() {
            for (bi, (dsn, label)) in backends.iter().enumerate() {
                if round > 0 {
                    let (client, tick) = &starts[bi];
                    client.register_consumer_at(SMALL_QUEUE, &kind.consumer_name(), *tick)?;
                }
                let d = drain(dsn, SMALL_QUEUE, *kind, s.small_events)?;
                eprintln!(
                    "    round {}/{} {:<13} {:<40} {:>5} batches in {:.2}s: {:.0} batches/s, \
                     {:.0} µs CPU/batch (client {:.2}s + server {:.2}s)",
                    round + 1,
                    s.consume_rounds,
                    label,
                    kind.label(),
                    d.batches,
                    d.secs,
                    batches_per_sec(&d),
                    cpu_us_per_batch(&d),
                    d.cpu_secs,
                    d.backend_cpu_secs
                );
                if d.events != s.small_events {
                    return Err(format!(
                        "{} on {label} consumed {} events, expected {}",
                        kind.label(),
                        d.events,
                        s.small_events
                    )
                    .into());
                }
                if batches_per_sec(&d) > batches_per_sec(&best[bi][ki]) {
                    best[bi][ki] = d;
                }
            }
        }
    }
    for (bi, (_, label)) in backends.iter().enumerate() {
        let group = format!(
            "consume {} batches of {} events, {label}",
            s.small_events / s.small_batch.max(1),
            s.small_batch
        );
        let py = &best[bi][0];
        for (ki, kind) in kinds.iter().enumerate() {
            let d = &best[bi][ki];
            let result = format!(
                "{:.0} batches/s · {:.0} µs CPU/batch",
                batches_per_sec(d),
                cpu_us_per_batch(d)
            );
            let (cmps, cpu) = if ki == 0 {
                (vec![], String::new())
            } else {
                (
                    vec![Cmp::new(batches_per_sec(py), "python3-pgq")],
                    format!(
                        "CPU/batch: {} less than python3-pgq",
                        fmt_ratio(cpu_us_per_batch(py) / cpu_us_per_batch(d).max(1e-9))
                    ),
                )
            };
            report.ratio_row_with(
                &group,
                kind.label(),
                result,
                batches_per_sec(d),
                &cmps,
                &cpu,
            );
        }
    }
    Ok(())
}

/// One batch of `PGQ_BENCH_RETRY_EVENTS` events, every one tagged for retry (a downstream
/// outage): how long `Batch::finish` takes to queue them. On our schema the library calls
/// `pgq.event_retry_many` once; on the official extension there is only `pgq.event_retry`,
/// one call per event (as python3-pgq makes), each of which reads the batch again.
pub fn retry(report: &mut Report, s: &Settings, backends: &[(&str, &str)]) -> Res<()> {
    if s.retry_events == 0 {
        return Ok(());
    }
    let group = format!(
        "finish a batch of {} events all tagged for retry",
        s.retry_events
    );
    let mut times = Vec::new();
    for (dsn, label) in backends {
        let client = Client::builder(dsn).pool_size(2).build()?;
        client.create_queue(RETRY_QUEUE)?;
        client.register_consumer(RETRY_QUEUE, "r")?;
        let evs: Vec<NewEvent> = (0..s.retry_events).map(crate::util::sample_event).collect();
        client.send_many(RETRY_QUEUE, &evs)?;
        client.force_tick(RETRY_QUEUE)?;
        client.tick_queue(RETRY_QUEUE)?;
        let start = first_tick(&client, RETRY_QUEUE)?;
        let mut best = Duration::MAX;
        for round in 0..s.consume_rounds.max(2) {
            client.register_consumer_at(RETRY_QUEUE, "r", start)?;
            connect(dsn)?.batch_execute("delete from pgq.retry_queue")?;
            let consumer = Consumer::new(&client, RETRY_QUEUE, "r")?;
            let batch = loop {
                let b = consumer.next_batch()?.ok_or("no batch with the events")?;
                if b.events().next().is_some() {
                    break b;
                }
                b.finish()?;
            };
            let mut n = 0u64;
            for ev in batch.events() {
                batch.retry(ev?.id, Duration::from_secs(3600));
                n += 1;
            }
            let t0 = Instant::now();
            batch.finish()?;
            let took = t0.elapsed();
            let queued: i64 = connect(dsn)?
                .query_one("select count(*) from pgq.retry_queue", &[])?
                .get(0);
            if n != s.retry_events || queued as u64 != n {
                return Err(format!(
                    "retry on {label}: {n} events tagged, {queued} queued, expected {}",
                    s.retry_events
                )
                .into());
            }
            eprintln!(
                "    round {} {:<13} finish with {n} retries: {:.1} ms",
                round + 1,
                label,
                took.as_secs_f64() * 1e3
            );
            best = best.min(took);
        }
        times.push((label.to_string(), best));
    }
    let official = times
        .iter()
        .find(|(l, _)| l.contains("official"))
        .map(|(_, t)| t.as_secs_f64());
    for (label, t) in &times {
        let how = if label.contains("official") {
            "one pgq.event_retry per event"
        } else {
            "pgq.event_retry_many"
        };
        let cmps = match official {
            // Ratio of speeds: official time / this time.
            Some(o) if !label.contains("official") => vec![Cmp::new(
                1.0 / o,
                "the official extension's event_retry per event",
            )],
            _ => vec![],
        };
        report.ratio_row(
            &group,
            format!("libpgq Batch::finish, {label} ({how})"),
            format!("{:.1} ms", t.as_secs_f64() * 1e3),
            1.0 / t.as_secs_f64().max(1e-9),
            &cmps,
        );
    }
    Ok(())
}
