//! libpgq demo: install PGQ, create a queue, produce, tick, consume, retry, and show status.
//!
//! ```sh
//! scripts/demo.sh                         # on a private throwaway cluster
//! cargo run --example demo -- "host=localhost user=me dbname=scratch"
//! ```
//!
//! The DSN comes from the first argument or `PGQ_DSN`. The demo (re)creates the queue
//! `demo_orders` and the table `demo_order` in that database. It checks what it prints, and
//! exits non-zero if PGQ did not behave as described.

use std::time::Duration;

use pgq::{Client, Consumer, Event, InstallOutcome, NewEvent};

const QUEUE: &str = "demo_orders";

fn main() {
    if let Err(e) = run() {
        eprintln!("demo failed: {e}");
        std::process::exit(1);
    }
}

/// Fails the demo with a message (a demo that prints wrong claims is worse than none).
fn check(cond: bool, what: &str) -> pgq::Result<()> {
    if cond {
        Ok(())
    } else {
        Err(pgq::Error::new(pgq::ErrorKind::Other, what.to_string()))
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn show(ev: &Event) -> String {
    format!(
        "#{} {}{} {}",
        ev.id,
        ev.ev_type.as_deref().unwrap_or("-"),
        match ev.retry {
            Some(n) => format!(" (retry {n})"),
            None => String::new(),
        },
        ev.data.as_deref().unwrap_or("-"),
    )
}

/// Takes one batch for `consumer`, prints it, finishes it; `retry_type` tags matching
/// events for retry. Returns the events.
fn consume_one(
    client: &Client,
    consumer: &str,
    retry_type: Option<&str>,
) -> pgq::Result<Vec<Event>> {
    let c = Consumer::new(client, QUEUE, consumer)?;
    let Some(batch) = c.next_batch()? else {
        println!("  {consumer}: no batch");
        return Ok(Vec::new());
    };
    println!(
        "  {consumer}: batch {} (ticks {} -> {})",
        batch.id(),
        batch
            .prev_tick_id()
            .map(|t| t.to_string())
            .unwrap_or_else(|| "-".into()),
        batch.tick_id()
    );
    let mut events = Vec::new();
    for ev in batch.events() {
        let ev = ev?;
        let retry =
            retry_type.is_some() && ev.ev_type.as_deref() == retry_type && ev.retry.is_none();
        println!(
            "    {}{}",
            show(&ev),
            if retry { "   -> tagged for retry" } else { "" }
        );
        if retry {
            batch.retry(ev.id, Duration::ZERO);
        }
        events.push(ev);
    }
    batch.finish()?;
    Ok(events)
}

fn run() -> pgq::Result<()> {
    let dsn = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("PGQ_DSN").ok())
        .ok_or_else(|| pgq::Error::invalid_input("usage: demo DSN (or set PGQ_DSN)"))?;
    let client = Client::connect(&dsn)?;

    println!("1. install PGQ");
    match client.install()? {
        InstallOutcome::Installed { version } => {
            println!("  installed our schema, revision {version}")
        }
        InstallOutcome::Upgraded { from, to } => println!("  upgraded our schema {from} -> {to}"),
        InstallOutcome::AlreadyCurrent { version } => {
            println!("  schema revision {version} already there")
        }
        InstallOutcome::OfficialExtension { version } => {
            println!("  the official pgq extension {version} is installed; using it")
        }
    }
    println!(
        "  pgq.version() = {}",
        client.version()?.unwrap_or_default()
    );

    println!("2. create queue {QUEUE} and register consumers mailer and audit");
    if client.queue_info(QUEUE).is_ok() {
        client.drop_queue(QUEUE, true)?; // a fresh start when the demo runs again
    }
    client.create_queue(QUEUE)?;
    client.register_consumer(QUEUE, "mailer")?;
    client.register_consumer(QUEUE, "audit")?;

    println!("3. produce");
    let id = client.send(QUEUE, &NewEvent::new("order.created", r#"{"order": 1}"#))?;
    println!("  sent event #{id} on its own");

    // An event inserted in the same transaction as business data commits with it...
    let mut conn = client.get()?;
    conn.batch_execute("create table if not exists demo_order (id int primary key, item text)")?;
    conn.batch_execute("truncate demo_order")?;
    let mut tx = conn.transaction()?;
    tx.execute("insert into demo_order values (2, 'teapot')", &[])?;
    pgq::producer::insert_event(
        &mut tx,
        QUEUE,
        &NewEvent::new("order.created", r#"{"order": 2}"#).extra1("demo_order"),
    )?;
    tx.commit()?;
    println!("  committed order 2 and its event in one transaction");

    // ...and vanishes with it on rollback.
    let mut tx = conn.transaction()?;
    tx.execute("insert into demo_order values (3, 'kettle')", &[])?;
    pgq::producer::insert_event(
        &mut tx,
        QUEUE,
        &NewEvent::new("order.created", r#"{"order": 3}"#),
    )?;
    drop(tx); // rolled back
    drop(conn);
    println!("  rolled back order 3 and its event");

    let many: Vec<NewEvent> = (4..=6)
        .map(|n| NewEvent::new("order.paid", format!(r#"{{"order": {n}}}"#)))
        .collect();
    let n = client.send_many(QUEUE, &many)?;
    println!("  sent {n} more events in one transaction (COPY)");

    println!("4. tick (a ticker thread or pgqd does this in production)");
    client.force_tick(QUEUE)?;
    let tick = client.tick_queue(QUEUE)?;
    println!(
        "  tick {}",
        tick.map(|t| t.to_string()).unwrap_or_else(|| "-".into())
    );
    check(tick.is_some(), "a forced tick must tick")?;

    println!("5. consume: each consumer gets the batch independently");
    let mailer = consume_one(&client, "mailer", Some("order.paid"))?;
    let audit = consume_one(&client, "audit", None)?;
    let datas = |evs: &[Event]| evs.iter().map(|e| e.data.clone()).collect::<Vec<_>>();
    check(
        mailer.len() == 5,
        "mailer should get the 5 committed events",
    )?;
    check(
        datas(&mailer) == datas(&audit),
        "both consumers see the same events",
    )?;
    check(
        !mailer
            .iter()
            .any(|e| e.data.as_deref() == Some(r#"{"order": 3}"#)),
        "the rolled-back event must not be delivered",
    )?;

    println!("6. retry: due retry events go back into the queue, for mailer only");
    let moved = client.retry_events()?;
    println!("  moved {moved} retry events back");
    client.force_tick(QUEUE)?;
    client.tick_queue(QUEUE)?;
    let again = consume_one(&client, "mailer", None)?;
    let audit_again = consume_one(&client, "audit", None)?;
    check(
        again.len() == 3 && again.iter().all(|e| e.retry == Some(1)),
        "mailer gets the 3 retried events back with retry = 1",
    )?;
    check(
        audit_again.is_empty(),
        "audit does not see mailer's retries",
    )?;

    println!("7. status");
    let q = client.queue_info(QUEUE)?;
    println!(
        "  queue {}: last tick {}, {} new events, ticker lag {}",
        q.name,
        opt(q.last_tick_id),
        q.ev_new,
        opt(q.ticker_lag.map(|d| format!("{d:.1?}")))
    );
    for c in client.consumer_info(Some(QUEUE), None)? {
        println!(
            "  consumer {}: last tick {}, lag {}, pending events {}",
            c.consumer_name,
            opt(c.last_tick),
            opt(c.lag.map(|d| format!("{d:.1?}"))),
            opt(c.pending_events)
        );
    }
    println!(
        "done: every committed event reached every consumer once; the rolled-back one never did"
    );
    Ok(())
}
