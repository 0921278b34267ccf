//! `pgqctl produce` and `pgqctl consume`, the built binary, against a real server.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{datas, wait_until, Backend, TestDb};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn dsn(db: &TestDb) -> String {
    let c = &db.config;
    let mut parts = Vec::new();
    for h in c.get_hosts() {
        if let postgres::config::Host::Tcp(s) = h {
            parts.push(format!("host={s}"));
        }
    }
    if let Some(p) = c.get_ports().first() {
        parts.push(format!("port={p}"));
    }
    if let Some(u) = c.get_user() {
        parts.push(format!("user='{u}'"));
    }
    if let Some(d) = c.get_dbname() {
        parts.push(format!("dbname='{d}'"));
    }
    parts.join(" ")
}

fn pgqctl(db: &TestDb, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgqctl"));
    cmd.arg("--dsn").arg(dsn(db)).args(args);
    for v in ["PGQ_DSN", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE"] {
        cmd.env_remove(v);
    }
    cmd
}

/// Runs `pgqctl produce ...` with `input` on stdin; returns (success, stdout, stderr).
fn produce(db: &TestDb, args: &[&str], input: &str) -> (bool, String, String) {
    let mut child = pgqctl(db, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn produce_lines_and_json_lines() {
    let db = TestDb::new(Backend::Ours);
    db.client.create_queue("q").unwrap();
    db.client.register_consumer("q", "c").unwrap();

    let (ok, out, err) = produce(&db, &["produce", "q", "--type", "line"], "a\nb\n\nc d\n");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "produced 4 events into queue q");
    db.tick("q");
    let evs = db.consume_all("q", "c");
    assert_eq!(datas(&evs), ["a", "b", "", "c d"]);
    assert!(evs.iter().all(|e| e.ev_type.as_deref() == Some("line")));

    let input = concat!(
        r#"{"type":"order","data":{"id":1},"extra1":"e1","extra4":"e4"}"#,
        "\n\n",
        r#"{"data":"plain"}"#,
        "\n"
    );
    let (ok, out, err) = produce(&db, &["produce", "q", "--json", "--type", "dflt"], input);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "produced 2 events into queue q");
    db.tick("q");
    let evs = db.consume_all("q", "c");
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[0].ev_type.as_deref(), Some("order"));
    assert_eq!(evs[0].data.as_deref(), Some(r#"{"id":1}"#));
    assert_eq!(evs[0].extra1.as_deref(), Some("e1"));
    assert_eq!(evs[0].extra4.as_deref(), Some("e4"));
    assert_eq!(evs[1].ev_type.as_deref(), Some("dflt"));
    assert_eq!(evs[1].data.as_deref(), Some("plain"));

    // A bad line: the events before it are in, nothing from it on.
    let input = "{\"data\":\"1\"}\n{\"data\":\"2\"}\n{\"data\":\n{\"data\":\"4\"}\n";
    let (ok, _, err) = produce(&db, &["produce", "q", "--json"], input);
    assert!(!ok);
    assert!(
        err.contains("line 3") && err.contains("invalid JSON"),
        "{err}"
    );
    assert!(
        err.contains("the 2 events before it were produced"),
        "{err}"
    );
    db.tick("q");
    assert_eq!(datas(&db.consume_all("q", "c")), ["1", "2"]);

    // Many lines: chunked COPY.
    let input: String = (0..2500).map(|i| format!("{i}\n")).collect();
    let (ok, out, err) = produce(&db, &["produce", "q"], &input);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "produced 2500 events into queue q");
    db.tick("q");
    let evs = db.consume_all("q", "c");
    let expected: Vec<String> = (0..2500).map(|i| i.to_string()).collect();
    assert_eq!(datas(&evs), expected);
    assert!(evs.iter().all(|e| e.ev_type.is_none()));

    // A missing queue is a clear error.
    let (ok, _, err) = produce(&db, &["produce", "nope"], "x\n");
    assert!(!ok);
    assert!(err.to_lowercase().contains("queue"), "{err}");
}

#[test]
fn consume_prints_json_lines_and_stops_on_sigint() {
    let db = TestDb::new(Backend::Ours);
    db.client.create_queue("q").unwrap();

    // Not registered and no --register: refused.
    let out = pgqctl(&db, &["consume", "q", "c"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--register"), "{err}");

    let mut child = pgqctl(&db, &["consume", "q", "c", "--register"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded::<String>();
    let reader = std::thread::spawn(move || {
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
    let (ok, _, err) = produce(&db, &["produce", "q", "--type", "t"], "one\ntwo\n");
    assert!(ok, "{err}");
    db.tick("q");
    let mut lines = Vec::new();
    for _ in 0..2 {
        lines.push(rx.recv_timeout(WAIT).expect("an event line"));
    }
    let v: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(v[0]["data"], "one");
    assert_eq!(v[1]["data"], "two");
    assert_eq!(v[0]["type"], "t");
    assert_eq!(v[0]["batch_id"], v[1]["batch_id"]);
    assert!(v[0]["id"].as_i64().is_some());
    assert!(v[0]["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(v[0]["retry"], Value::Null);
    wait_until("batch finished", WAIT, || {
        let info = db.client.consumer_info(Some("q"), Some("c")).unwrap();
        info[0].current_batch.is_none() && info[0].pending_events == Some(0)
    });

    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut status = None;
    wait_until("pgqctl consume exits", WAIT, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    assert!(status.unwrap().success(), "{status:?}");
    reader.join().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("registered consumer c on queue q"), "{err}");
}

#[test]
fn consume_ends_quietly_when_stdout_closes_and_keeps_the_batch() {
    let db = TestDb::new(Backend::Ours);
    db.client.create_queue("q").unwrap();
    db.client.register_consumer("q", "c").unwrap();
    let mut child = pgqctl(&db, &["consume", "q", "c", "--poll-only"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Nobody reads: closing the pipe makes the next write fail.
    drop(child.stdout.take());
    let (ok, _, err) = produce(&db, &["produce", "q"], "lost-on-stdout\n");
    assert!(ok, "{err}");
    db.tick("q");
    let mut status = None;
    wait_until("pgqctl consume exits", WAIT, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    assert!(status.unwrap().success(), "{status:?}");
    // The batch was not finished: the event is still there.
    assert_eq!(datas(&db.consume_all("q", "c")), ["lost-on-stdout"]);
}
