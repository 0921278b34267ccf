//! A ticker and a consumer worker in one process: events are handled moments after they
//! commit, a failing event is retried, and the worker stops cleanly.
//!
//! ```sh
//! cargo run --example worker -- "host=localhost user=me dbname=scratch"
//! ```
//!
//! The DSN comes from the first argument or `PGQ_DSN`. The example installs PGQ if missing
//! and (re)creates the queue `example_jobs`.

use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use pgq::{Client, NewEvent, Ticker, Worker};

const QUEUE: &str = "example_jobs";

fn main() {
    if let Err(e) = run() {
        eprintln!("example failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> pgq::Result<()> {
    let dsn = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("PGQ_DSN").ok())
        .ok_or_else(|| pgq::Error::invalid_input("usage: worker DSN (or set PGQ_DSN)"))?;
    let client = Client::connect(&dsn)?;
    client.install()?;
    let _ = client.drop_queue(QUEUE, true);
    client.create_queue(QUEUE)?;
    client.register_consumer(QUEUE, "printer")?;

    // The ticker cuts batches and announces them with NOTIFY pgq_tick.
    let ticker = Ticker::builder(&client).start()?;

    // The handler runs on the worker's thread, once per batch; `done` tells main what it saw.
    let (done_tx, done_rx) = bounded::<String>(64);
    let worker = Worker::builder(&client, QUEUE, "printer")
        .handler(move |batch| {
            for ev in batch.events() {
                let ev = ev?;
                let data = ev.data.clone().unwrap_or_default();
                if data == "flaky" && ev.retry.is_none() {
                    println!("batch {}: event {} failed, retry in 1 s", batch.id(), ev.id);
                    batch.retry(ev.id, Duration::from_secs(1));
                    continue;
                }
                println!(
                    "batch {}: event {} {:?} (attempt {})",
                    batch.id(),
                    ev.id,
                    data,
                    ev.retry.unwrap_or(0) + 1
                );
                let _ = done_tx.try_send(data);
            }
            Ok(()) // finishes the batch: the retry and the position commit together
        })
        .start()?;

    let started = Instant::now();
    for data in ["hello", "flaky", "world"] {
        client.send(QUEUE, &NewEvent::new("greeting", data))?;
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match done_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(d) => seen.push(d),
            Err(_) => {
                return Err(pgq::Error::new(
                    pgq::ErrorKind::Other,
                    format!("only {seen:?} arrived within 30 s"),
                ))
            }
        }
    }
    println!(
        "all 3 handled after {:.1} s (the flaky one after its retry)",
        started.elapsed().as_secs_f64()
    );
    println!("worker: {:?}", worker.stats());
    println!("ticker: {:?}", ticker.stats());
    worker.stop();
    worker.join()?;
    drop(ticker);
    Ok(())
}
