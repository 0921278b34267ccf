//! `pgqctl`, the built binary, against a real server: every subcommand, its output, its
//! errors (one line on stderr, exit 1; usage errors exit 2) and where it takes the DSN from.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{wait_until, Backend, TestDb};
use pgq::NewEvent;

/// The key=value DSN of a test database (pgqctl gets it as text, like a user would).
fn dsn_of(config: &postgres::Config) -> String {
    let mut parts = Vec::new();
    for h in config.get_hosts() {
        match h {
            postgres::config::Host::Tcp(s) => parts.push(format!("host={s}")),
            postgres::config::Host::Unix(p) => parts.push(format!("host={}", p.display())),
        }
    }
    if let Some(p) = config.get_ports().first() {
        parts.push(format!("port={p}"));
    }
    if let Some(u) = config.get_user() {
        parts.push(format!("user='{}'", u.replace('\'', "\\'")));
    }
    if let Some(d) = config.get_dbname() {
        parts.push(format!("dbname='{}'", d.replace('\'', "\\'")));
    }
    parts.join(" ")
}

fn dsn(db: &TestDb) -> String {
    dsn_of(&db.config)
}

/// Runs pgqctl with a clean environment for the connection variables.
fn pgqctl(args: &[&str]) -> Output {
    pgqctl_env(args, &[])
}

fn pgqctl_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgqctl"));
    cmd.args(args);
    for v in [
        "PGQ_DSN",
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGPASSWORD",
        "PGAPPNAME",
    ] {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run pgqctl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
#[track_caller]
fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "pgqctl failed ({}): stdout {:?} stderr {:?}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    assert_eq!(stderr(&o), "", "pgqctl succeeded but wrote to stderr");
    stdout(&o)
}

/// Asserts the exit code and a one-line error on stderr containing `needle`; returns it.
#[track_caller]
fn fails(o: Output, code: i32, needle: &str) -> String {
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "expected exit {code}: stdout {:?} stderr {err:?}",
        stdout(&o)
    );
    assert_eq!(err.lines().count(), 1, "error must be one line: {err:?}");
    assert!(err.starts_with("pgqctl: error: "), "{err:?}");
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    assert_eq!(stdout(&o), "", "nothing on stdout after an error");
    err
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad JSON ({e}): {text}"))
}

#[test]
fn help_and_usage_errors() {
    let help = ok(pgqctl(&["--help"]));
    for c in [
        "install",
        "schema",
        "create-queue",
        "drop-queue",
        "config",
        "register",
        "unregister",
        "status",
        "PGQ_DSN",
        "PGHOST",
    ] {
        assert!(help.contains(c), "--help does not mention {c}");
    }
    let h = ok(pgqctl(&["drop-queue", "--help"]));
    assert!(
        h.starts_with("usage: pgqctl [--dsn DSN] drop-queue QUEUE [--force]"),
        "{h}"
    );
    assert!(ok(pgqctl(&["-V"])).contains(pgq::schema::SCHEMA_VERSION));

    fails(pgqctl(&[]), 2, "no command");
    fails(pgqctl(&["frobnicate"]), 2, "unknown command \"frobnicate\"");
    fails(pgqctl(&["status", "--bogus"]), 2, "unknown option");
    fails(
        pgqctl(&["create-queue"]),
        2,
        "usage: pgqctl create-queue QUEUE",
    );
    fails(
        pgqctl(&["create-queue", "a", "b"]),
        2,
        "unexpected argument \"b\"",
    );
    fails(
        pgqctl(&["create-queue", "q", "--force"]),
        2,
        "does not take --force",
    );
    fails(pgqctl(&["config", "q", "novalue"]), 2, "KEY=VALUE");
    fails(pgqctl(&["register", "q", "c", "--at", "x"]), 2, "tick id");
    fails(pgqctl(&["status", "--dsn"]), 2, "--dsn needs a value");
}

#[test]
fn schema_prints_the_install_sql() {
    let out = ok(pgqctl(&["schema"]));
    let sql = pgq::schema::sql();
    assert_eq!(out.trim_end(), sql.trim_end());
    assert!(out.contains("pgq.next_batch"));
}

#[test]
fn install_fresh_again_and_on_the_official_extension() {
    // A database without PGQ: TestDb installs it, so make our own empty one next to it.
    let db = TestDb::new(Backend::Ours);
    let fresh = format!("{}_x", &db.name[..db.name.len().min(60)]);
    let mut su = db.superuser();
    su.batch_execute(&format!("create database \"{fresh}\""))
        .unwrap();
    let mut cfg = db.config.clone();
    cfg.dbname(&fresh);
    let fresh_dsn = dsn_of(&cfg);

    // Not installed yet: admin commands say so.
    fails(
        pgqctl(&["--dsn", &fresh_dsn, "status"]),
        1,
        "pgqctl install",
    );
    let out = ok(pgqctl(&["--dsn", &fresh_dsn, "install"]));
    assert!(out.starts_with("installed the PGQ schema"), "{out}");
    let out = ok(pgqctl(&["--dsn", &fresh_dsn, "install"]));
    assert!(out.contains("nothing to do"), "{out}");
    let mut c = cfg.connect(postgres::NoTls).unwrap();
    let v: String = c.query_one("select pgq.version()", &[]).unwrap().get(0);
    assert!(v.starts_with("3."), "{v}");
    drop(c);
    su.batch_execute(&format!("drop database \"{fresh}\" with (force)"))
        .unwrap();

    let official = TestDb::new(Backend::Official);
    let out = ok(pgqctl(&["--dsn", &dsn(&official), "install"]));
    assert!(out.contains("official pgq extension"), "{out}");
    let n: i64 = official
        .conn()
        .query_one(
            "select count(*) from pg_extension where extname = 'pgq'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the extension is left in place");
}

both_backends! {
    fn queue_lifecycle_and_status(db: &TestDb) {
        let d = dsn(db);
        let run = |args: &[&str]| {
            let mut all = vec!["--dsn", d.as_str()];
            all.extend_from_slice(args);
            pgqctl(&all)
        };

        assert_eq!(ok(run(&["status"])), "no queues\n");
        assert_eq!(ok(run(&["create-queue", "orders"])), "created queue orders\n");
        assert_eq!(ok(run(&["create-queue", "orders"])), "queue orders already exists\n");
        // A name that needs quoting in SQL goes through untouched.
        ok(run(&["create-queue", "we\"ird q"]));

        let out = ok(run(&["config", "orders", "ticker_max_count=42", "ticker_max_lag=250 ms"]));
        assert_eq!(out, "orders: ticker_max_count = 42\norders: ticker_max_lag = 250 ms\n");
        let q = db.client.queue_info("orders").unwrap();
        assert_eq!(q.ticker_max_count, 42);
        assert_eq!(q.ticker_max_lag, std::time::Duration::from_millis(250));
        let shown = ok(run(&["config", "orders"]));
        assert!(shown.contains("ticker_max_count    42"), "{shown}");
        assert!(shown.contains("ticker_max_lag      250ms"), "{shown}");
        // All or nothing: a bad key after a good one changes nothing.
        fails(run(&["config", "orders", "ticker_max_count=7", "bogus=1"]), 1, "bogus");
        assert_eq!(db.client.queue_info("orders").unwrap().ticker_max_count, 42);
        fails(run(&["config", "orders", "ticker_max_count=many"]), 1, "many");

        assert_eq!(
            ok(run(&["register", "orders", "mailer"])),
            "registered consumer mailer on queue orders\n"
        );
        assert!(ok(run(&["register", "orders", "mailer"])).contains("already registered"));
        ok(run(&["register", "we\"ird q", "c'1"]));

        for i in 0..3 {
            db.client.send("orders", &NewEvent::new("t", format!("e{i}"))).unwrap();
        }

        // pgqctl shows what the library reads (`ev_new` and `pending_events` are the
        // server's sequence-based estimates, which differ in detail between backends).
        let lib_q = db.client.queue_info("orders").unwrap();
        let lib_c = db.client.consumer_info(Some("orders"), Some("mailer")).unwrap();
        assert!(lib_q.ev_new > 0, "events were sent: {lib_q:?}");
        let pending = lib_c[0].pending_events;

        let table = ok(run(&["status"]));
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("QUEUE"), "{table}");
        assert!(lines[0].contains("NEW EVENTS"), "{table}");
        let orders = lines.iter().find(|l| l.starts_with("orders ")).expect("orders row");
        let cols: Vec<&str> = orders.split_whitespace().collect();
        assert_eq!(cols[1], lib_q.last_tick_id.unwrap().to_string(), "last tick: {orders}");
        assert_eq!(cols[3], lib_q.ev_new.to_string(), "new events: {orders}");
        assert!(table.contains("we\"ird q"), "{table}");
        let mailer = lines
            .iter()
            .find(|l| l.starts_with("orders ") && l.contains("mailer"))
            .expect("consumer row");
        let pending_text = pending.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        assert!(mailer.trim_end().ends_with(&format!(" {pending_text}")), "{mailer}");
        // Number columns are right-aligned under their headers.
        let end = lines[0].find("LAST TICK").unwrap() + "LAST TICK".len();
        for row in &lines[1..3] {
            assert!(row.as_bytes()[end - 1].is_ascii_digit(), "misaligned: {row:?}\n{table}");
            assert_eq!(row.as_bytes()[end], b' ', "misaligned: {row:?}\n{table}");
        }

        let doc = json(&ok(run(&["status", "--json"])));
        let queues = doc["queues"].as_array().unwrap();
        assert_eq!(queues.len(), 2);
        let o = queues.iter().find(|q| q["queue"] == "orders").unwrap();
        assert_eq!(o["new_events"], lib_q.ev_new);
        assert_eq!(o["last_tick_id"], lib_q.last_tick_id.unwrap());
        assert_eq!(o["ticker_max_count"], 42);
        assert_eq!(o["ticker_max_lag_seconds"], 0.25);
        assert_eq!(o["consumers"], 1);
        assert!(o["switch_time"].as_str().unwrap().ends_with('Z'));
        let consumers = doc["consumers"].as_array().unwrap();
        assert_eq!(consumers.len(), 2);
        let m = consumers.iter().find(|c| c["consumer"] == "mailer").unwrap();
        assert_eq!(m["queue"], "orders");
        assert_eq!(m["pending_events"], serde_json::json!(pending));
        assert_eq!(m["last_tick"], serde_json::json!(lib_c[0].last_tick));
        assert!(m["lag_seconds"].as_f64().unwrap() >= 0.0);

        // One queue only.
        let doc = json(&ok(run(&["status", "we\"ird q", "--json"])));
        assert_eq!(doc["queues"].as_array().unwrap().len(), 1);
        assert_eq!(doc["consumers"][0]["consumer"], "c'1");
        fails(run(&["status", "nosuch"]), 1, "nosuch");

        // After a tick and a finished batch the consumer has nothing pending.
        db.tick("orders");
        assert_eq!(db.consume_all("orders", "mailer").len(), 3);
        let doc = json(&ok(run(&["status", "orders", "--json"])));
        assert_eq!(doc["consumers"][0]["pending_events"], 0);
        assert_eq!(doc["consumers"][0]["last_tick"], doc["queues"][0]["last_tick_id"]);
        assert_eq!(doc["queues"][0]["new_events"], db.client.queue_info("orders").unwrap().ev_new);

        // register --at repositions to an existing tick.
        let first = db.client.queue_info("orders").unwrap().last_tick_id.unwrap();
        let out = ok(run(&["register", "orders", "mailer", "--at", &first.to_string()]));
        assert!(out.contains(&format!("tick {first}")), "{out}");

        fails(run(&["drop-queue", "orders"]), 1, "consumers still attached");
        assert!(db.client.queue_info("orders").is_ok(), "queue survived the refused drop");
        assert_eq!(
            ok(run(&["unregister", "orders", "mailer"])),
            "unregistered consumer mailer from queue orders\n"
        );
        fails(run(&["unregister", "orders", "mailer"]), 1, "not registered");
        assert_eq!(ok(run(&["drop-queue", "orders"])), "dropped queue orders\n");
        fails(run(&["drop-queue", "orders"]), 1, "No such");
        // --force takes the consumers with it.
        ok(run(&["drop-queue", "--force", "we\"ird q"]));
        assert_eq!(ok(run(&["status"])), "no queues\n");
        assert_eq!(ok(run(&["status", "--json"])).trim(), "{\n  \"consumers\": [],\n  \"queues\": []\n}");
    }
}

#[test]
fn dsn_from_environment() {
    let db = TestDb::new(Backend::Ours);
    db.client.create_queue("envq").unwrap();
    let d = dsn(&db);

    // PGQ_DSN.
    assert!(ok(pgqctl_env(&["status"], &[("PGQ_DSN", &d)])).contains("envq"));
    // --dsn wins over PGQ_DSN.
    assert!(ok(pgqctl_env(
        &["--dsn", &d, "status"],
        &[("PGQ_DSN", "host=127.0.0.1 port=1")]
    ))
    .contains("envq"));

    // The libpq variables, alone and filling what a DSN leaves out.
    let cfg = &db.config;
    let host = match &cfg.get_hosts()[0] {
        postgres::config::Host::Tcp(s) => s.clone(),
        postgres::config::Host::Unix(p) => p.display().to_string(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432).to_string();
    let user = cfg.get_user().unwrap().to_string();
    let vars = [
        ("PGHOST", host.as_str()),
        ("PGPORT", port.as_str()),
        ("PGUSER", user.as_str()),
        ("PGDATABASE", db.name.as_str()),
    ];
    assert!(ok(pgqctl_env(&["status"], &vars)).contains("envq"));
    let partial = format!("dbname='{}'", db.name);
    assert!(ok(pgqctl_env(&["--dsn", &partial, "status"], &vars[..3])).contains("envq"));

    // Connection failures are one line naming where it tried.
    fails(
        pgqctl(&[
            "--dsn",
            "host=127.0.0.1 port=1 user=nobody dbname=x",
            "status",
        ]),
        1,
        "cannot connect to database \"x\" on 127.0.0.1 port 1",
    );
    fails(pgqctl(&["--dsn", "nonsense=1", "status"]), 1, "invalid DSN");
}

const DEADLINE: Duration = Duration::from_secs(20);

/// `pgqctl ticker ARGS...` running in the background; killed (and reaped) when dropped.
struct Ticker(std::process::Child);

impl Ticker {
    fn start(args: &[&str]) -> Ticker {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgqctl"));
        cmd.arg("ticker").args(args);
        for v in [
            "PGQ_DSN",
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGQ_LOG",
        ] {
            cmd.env_remove(v);
        }
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start pgqctl ticker");
        Ticker(child)
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether a session with `application_name` holds this database's active-ticker lock.
fn ticker_active(conn: &mut postgres::Client, app: &str) -> bool {
    conn.query_one(
        "select exists (select 1 from pg_locks l join pg_stat_activity a on a.pid = l.pid \
          where l.locktype = 'advisory' and l.granted and l.objid = 2 and l.objsubid = 2 \
            and l.database = (select oid from pg_database where datname = current_database()) \
            and a.application_name = $1)",
        &[&app],
    )
    .unwrap()
    .get(0)
}

/// The id of the first tick of `queue` whose snapshot sees event `id` (None: no tick covers
/// it yet), and the time from the tick before it, in seconds.
fn covering_tick(conn: &mut postgres::Client, queue: &str, id: i64) -> Option<(i64, f64)> {
    conn.query_opt(
        "select t.tick_id, extract(epoch from t.tick_time - \
                (select p.tick_time from pgq.tick p where p.tick_queue = t.tick_queue \
                    and p.tick_id < t.tick_id order by p.tick_id desc limit 1))::float8 \
           from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue \
          where q.queue_name = $1 \
            and txid_visible_in_snapshot((select e.ev_txid from pgq.event_template e \
                                           where e.ev_id = $2), t.tick_snapshot) \
          order by t.tick_id limit 1",
        &[&queue, &id],
    )
    .unwrap()
    .map(|r| (r.get(0), r.get(1)))
}

/// A queue with a consumer that has seen one event already (PGQ counts a queue's very first
/// event as none), just ticked, so that one more event is new and its tick by PGQ's rules
/// is due `ticker_max_lag` after that tick.
fn queue_with_history(db: &TestDb, queue: &str, max_lag: &str) {
    db.client.create_queue(queue).unwrap();
    db.client
        .set_queue_config_raw(queue, "ticker_max_lag", max_lag)
        .unwrap();
    db.client.register_consumer(queue, "c").unwrap();
    db.client
        .send(queue, &NewEvent::new("t", "warm-up"))
        .unwrap();
    db.tick(queue);
    assert_eq!(common::datas(&db.consume_all(queue, "c")), vec!["warm-up"]);
}

#[test]
fn ticker_eager_min_lag_off_and_default() {
    let db = TestDb::new(Backend::Ours);
    let mut conn = db.conn();

    // eager_min_lag=off: PGQ's rules only. One new event (ticker_max_count is 500) waits
    // for the queue's ticker_max_lag, 3 s after the tick before it.
    queue_with_history(&db, "slow", "3 s");
    let app = "pgqctl_eager_off";
    let off = Ticker::start(&[
        &format!("{} application_name={app}", dsn(&db)),
        "ticker_period=10ms",
        "eager_min_lag=off",
    ]);
    wait_until("the ticker to become active", DEADLINE, || {
        ticker_active(&mut conn, app)
    });
    // A fresh tick to count from, made by the daemon (a forced tick is due at once).
    let last = |conn: &mut postgres::Client| -> i64 {
        conn.query_one(
            "select max(t.tick_id) from pgq.tick t join pgq.queue q \
               on q.queue_id = t.tick_queue where q.queue_name = 'slow'",
            &[],
        )
        .unwrap()
        .get(0)
    };
    let before = last(&mut conn);
    conn.execute("select pgq.force_tick('slow')", &[]).unwrap();
    wait_until("the forced tick", DEADLINE, || last(&mut conn) > before);
    let ticked_at = Instant::now();
    let id = db.client.send("slow", &NewEvent::new("t", "one")).unwrap();
    // A bounded negative check: for 1.5 s (of the 3 s) no tick covers it ...
    while ticked_at.elapsed() < Duration::from_millis(1500) {
        assert_eq!(covering_tick(&mut conn, "slow", id), None);
        std::thread::sleep(Duration::from_millis(50));
    }
    // ... and then one does, no earlier than ticker_max_lag after the tick before it
    // (server times).
    let mut covering = None;
    wait_until("a tick by ticker_max_lag", DEADLINE, || {
        covering = covering_tick(&mut conn, "slow", id);
        covering.is_some()
    });
    let (_, gap) = covering.unwrap();
    assert!(gap >= 3.0, "ticked {gap:.3}s after the previous tick");
    assert_eq!(common::datas(&db.consume_all("slow", "c")), vec!["one"]);
    drop(off);

    // The default: eager ticking. The queue's ticker_max_lag is an hour, so a tick within
    // the deadline is the eager one.
    queue_with_history(&db, "fast", "1 hour");
    let app = "pgqctl_eager_default";
    let _eager = Ticker::start(&[&format!("{} application_name={app}", dsn(&db))]);
    wait_until("the ticker to become active", DEADLINE, || {
        ticker_active(&mut conn, app)
    });
    let id = db.client.send("fast", &NewEvent::new("t", "two")).unwrap();
    wait_until("an eager tick", DEADLINE, || {
        covering_tick(&mut conn, "fast", id).is_some()
    });
    assert_eq!(common::datas(&db.consume_all("fast", "c")), vec!["two"]);
}

#[test]
fn ticker_applies_idle_ticker_period() {
    // With an idle period of an hour (and retries and maintenance as rare), the ticker's
    // session goes quiet once nothing has happened for a few seconds; with the default
    // (100 ms) it would run a round every 100 ms and never be idle for a second.
    let db = TestDb::new(Backend::Ours);
    db.client.create_queue("q").unwrap();
    let app = "pgqctl_idle_period";
    let _t = Ticker::start(&[
        &format!("{} application_name={app}", dsn(&db)),
        "ticker_period=10ms",
        "idle_ticker_period=60min",
        "retry_period=60min",
        "maint_period=60min",
    ]);
    let mut conn = db.conn();
    wait_until("the ticker to become active", DEADLINE, || {
        ticker_active(&mut conn, app)
    });
    wait_until(
        "the ticker's session to be quiet for 1.5 s",
        DEADLINE,
        || {
            conn.query_one(
                "select coalesce(bool_and(state = 'idle' \
                     and now() - state_change > interval '1.5 s'), false) \
               from pg_stat_activity where application_name = $1",
                &[&app],
            )
            .unwrap()
            .get(0)
        },
    );
}
