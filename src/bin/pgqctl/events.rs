//! `pgqctl produce` and `pgqctl consume`: events in from stdin, events out as JSON lines.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::bounded;
use pgq::NewEvent;
use serde_json::{json, Map, Value};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::{connection_config, describe, rfc3339, usage, with_causes, Failure, Res};

/// Events sent per COPY (and per transaction).
const CHUNK: usize = 1000;

/// How `produce` reads its input.
pub struct ProduceOptions<'a> {
    pub queue: &'a str,
    pub ev_type: Option<&'a str>,
    pub json: bool,
    /// The DSN is a PgBouncer in transaction pooling mode.
    pub transaction_pooling: bool,
}

fn client(dsn: Option<&str>, pool_size: u32, transaction_pooling: bool) -> Res<pgq::Client> {
    let config = connection_config(dsn)?;
    pgq::ClientBuilder::from_config(config.clone())
        .pool_size(pool_size)
        .transaction_pooling(transaction_pooling)
        .min_idle(0)
        .build()
        .map_err(|e| {
            Failure::Run(format!(
                "cannot connect to {}: {}",
                describe(&config),
                with_causes(&e)
            ))
        })
}

/// One JSON input line: an object with `type`, `data`, `extra1`..`extra4` (all optional).
/// Strings are taken as they are; other values (objects, numbers) as their JSON text.
fn event_from_json(line: &str, default_type: Option<&str>) -> Result<NewEvent, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(map) = value else {
        return Err("expected a JSON object like {\"type\": ..., \"data\": ...}".to_string());
    };
    let mut ev = NewEvent {
        ev_type: default_type.map(str::to_string),
        ..NewEvent::default()
    };
    for (k, v) in map {
        let text = match v {
            Value::Null => None,
            Value::String(s) => Some(s),
            other => Some(other.to_string()),
        };
        match k.as_str() {
            "type" => ev.ev_type = text,
            "data" => ev.data = text,
            "extra1" => ev.extra1 = text,
            "extra2" => ev.extra2 = text,
            "extra3" => ev.extra3 = text,
            "extra4" => ev.extra4 = text,
            _ => {
                return Err(format!(
                    "unknown key {k:?} (allowed: type, data, extra1, extra2, extra3, extra4)"
                ))
            }
        }
    }
    Ok(ev)
}

/// `pgqctl produce`: every stdin line becomes an event (with `--json`, every non-empty line
/// is a JSON object). Events go in with COPY, [`CHUNK`] per transaction, and a partial chunk
/// is sent whenever the input has nothing more buffered, so a slow pipe is not held back.
/// A bad line stops the command after sending the events before it.
pub fn produce(
    dsn: Option<&str>,
    opts: &ProduceOptions<'_>,
    input: impl Read,
    out: &mut impl Write,
) -> Res<()> {
    let client = client(dsn, 1, opts.transaction_pooling)?;
    let producer = pgq::Producer::new(&client, opts.queue)?;
    let mut reader = BufReader::with_capacity(1 << 20, input);
    let mut chunk: Vec<NewEvent> = Vec::with_capacity(CHUNK);
    let mut sent: u64 = 0;
    let mut line_no: u64 = 0;
    let mut line = String::new();
    let flush = |chunk: &mut Vec<NewEvent>, sent: &mut u64| -> Res<()> {
        if !chunk.is_empty() {
            *sent += producer.send_many(chunk).map_err(|e| {
                Failure::Run(format!(
                    "{e}; {} events were produced before this chunk",
                    *sent
                ))
            })?;
            chunk.clear();
        }
        Ok(())
    };
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(|e| {
            let _ = flush(&mut chunk, &mut sent);
            Failure::Run(format!(
                "reading line {} of stdin: {e}; {sent} events were produced",
                line_no + 1
            ))
        })?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let text = line.strip_suffix('\n').unwrap_or(&line);
        let text = text.strip_suffix('\r').unwrap_or(text);
        let ev = if opts.json {
            if text.trim().is_empty() {
                continue;
            }
            event_from_json(text, opts.ev_type)
        } else {
            Ok(NewEvent {
                ev_type: opts.ev_type.map(str::to_string),
                data: Some(text.to_string()),
                ..NewEvent::default()
            })
        };
        let ev = ev.and_then(|ev| {
            if [
                &ev.ev_type,
                &ev.data,
                &ev.extra1,
                &ev.extra2,
                &ev.extra3,
                &ev.extra4,
            ]
            .iter()
            .any(|f| f.as_deref().is_some_and(|s| s.contains('\0')))
            {
                Err("contains a NUL byte, which PostgreSQL text cannot store".to_string())
            } else {
                Ok(ev)
            }
        });
        match ev {
            Ok(ev) => chunk.push(ev),
            Err(msg) => {
                flush(&mut chunk, &mut sent)?;
                return Err(Failure::Run(format!(
                    "line {line_no}: {msg}; the {sent} events before it were produced, \
                     nothing from this line on"
                )));
            }
        }
        if chunk.len() >= CHUNK || reader.buffer().is_empty() {
            flush(&mut chunk, &mut sent)?;
        }
    }
    flush(&mut chunk, &mut sent)?;
    writeln!(out, "produced {sent} events into queue {}", opts.queue)?;
    Ok(())
}

/// One event as a JSON object (the line `consume` prints).
fn event_json(batch_id: i64, ev: &pgq::Event) -> Value {
    let mut m = Map::new();
    m.insert("batch_id".into(), json!(batch_id));
    m.insert("id".into(), json!(ev.id));
    m.insert("time".into(), json!(rfc3339(ev.time)));
    m.insert("txid".into(), json!(ev.txid));
    m.insert("retry".into(), json!(ev.retry));
    m.insert("type".into(), json!(ev.ev_type));
    m.insert("data".into(), json!(ev.data));
    m.insert("extra1".into(), json!(ev.extra1));
    m.insert("extra2".into(), json!(ev.extra2));
    m.insert("extra3".into(), json!(ev.extra3));
    m.insert("extra4".into(), json!(ev.extra4));
    Value::Object(m)
}

/// `pgqctl consume`: a [`pgq::Worker`] whose handler prints each event as one JSON line and
/// flushes stdout before the batch is finished (so every finished event has been written).
/// Runs until SIGINT or SIGTERM (the running batch is completed first) or until stdout is
/// closed. Database trouble is logged and retried, never fatal.
pub fn consume(
    dsn: Option<&str>,
    queue: &str,
    consumer: &str,
    register: bool,
    poll_only: bool,
    transaction_pooling: bool,
) -> Res<()> {
    if queue.is_empty() || consumer.is_empty() {
        return Err(usage("queue and consumer names must not be empty"));
    }
    // Database trouble is retried in the background; say so on stderr.
    super::ticker::init_logging();
    let client = client(dsn, 2, transaction_pooling)?;
    if register && client.register_consumer(queue, consumer)? {
        eprintln!("pgqctl: registered consumer {consumer} on queue {queue}");
    }
    // Registered? Fail now rather than retry forever in the background.
    let subscribed = client.consumer_info(Some(queue), Some(consumer))?;
    if subscribed.is_empty() {
        return Err(Failure::Run(format!(
            "consumer {consumer} is not registered on queue {queue} (use --register)"
        )));
    }

    // One channel ends the wait: a signal, or the handler finding stdout closed.
    let (done_tx, done_rx) = bounded::<Option<Failure>>(2);
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| Failure::Run(format!("cannot install signal handlers: {e}")))?;
    let signal_handle = signals.handle();
    let sig_tx = done_tx.clone();
    let sig_thread = std::thread::Builder::new()
        .name("pgqctl-signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                let _ = sig_tx.send(None);
            }
        })
        .map_err(|e| Failure::Run(format!("cannot start the signal thread: {e}")))?;

    let broken = Arc::new(AtomicBool::new(false));
    let b = broken.clone();
    let worker = pgq::Worker::builder(&client, queue, consumer)
        .poll_only(poll_only)
        .error_policy(pgq::ErrorPolicy::Stop)
        .handler(move |batch| {
            let stdout = io::stdout();
            let mut out = io::BufWriter::new(stdout.lock());
            let id = batch.id();
            for ev in batch.events() {
                let ev = ev?;
                let line = event_json(id, &ev);
                let written = serde_json::to_writer(&mut out, &line)
                    .map_err(io::Error::from)
                    .and_then(|()| out.write_all(b"\n"));
                if let Err(e) = written {
                    return Err(stdout_closed(&b, &done_tx, e));
                }
            }
            if let Err(e) = out.flush() {
                return Err(stdout_closed(&b, &done_tx, e));
            }
            Ok(())
        })
        .start()?;
    let failure = done_rx.recv().ok().flatten();
    worker.stop();
    let result = worker.join();
    signal_handle.close();
    let _ = sig_thread.join();
    if let Some(f) = failure {
        return Err(f);
    }
    match result {
        // Stopped because stdout went away: that is how `consume | head` ends.
        Err(_) if broken.load(Ordering::SeqCst) => Err(Failure::Pipe),
        Err(e) => Err(e.into()),
        Ok(()) => Ok(()),
    }
}

fn stdout_closed(
    broken: &AtomicBool,
    done: &crossbeam_channel::Sender<Option<Failure>>,
    e: io::Error,
) -> pgq::worker::HandlerError {
    broken.store(true, Ordering::SeqCst);
    let failure = Failure::from(io::Error::new(e.kind(), e.to_string()));
    let _ = done.try_send(Some(failure));
    Box::new(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines() {
        let ev = event_from_json(
            r#"{"type":"order","data":{"id":1},"extra1":"x","extra4":null}"#,
            None,
        )
        .unwrap();
        assert_eq!(ev.ev_type.as_deref(), Some("order"));
        assert_eq!(ev.data.as_deref(), Some(r#"{"id":1}"#));
        assert_eq!(ev.extra1.as_deref(), Some("x"));
        assert_eq!(ev.extra4, None);
        let ev = event_from_json(r#"{"data":"d"}"#, Some("dflt")).unwrap();
        assert_eq!(ev.ev_type.as_deref(), Some("dflt"));
        assert!(event_from_json("[1]", None).unwrap_err().contains("object"));
        assert!(event_from_json("{", None)
            .unwrap_err()
            .contains("invalid JSON"));
        assert!(event_from_json(r#"{"tpye":"x"}"#, None)
            .unwrap_err()
            .contains("unknown key"));
    }
}
