//! The ticker service against a real server: lifecycle and threads, one active ticker per
//! database with takeover, ticks and their notifications, the idle back-off, retry events,
//! maintenance (rotation, VACUUM), and surviving a server restart.

mod common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{datas, threads_named, wait_until, Backend, TestDb};
use pgq::{Consumer, NewEvent, Ticker, TickerState};
use postgres::fallible_iterator::FallibleIterator;

const DEADLINE: Duration = Duration::from_secs(20);

/// A ticker tuned for tests: fast rounds, fast takeover and reconnects, and no full rounds
/// after the first, so ticks come from the cheap due pre-check alone.
fn fast(builder: pgq::TickerBuilder) -> pgq::TickerBuilder {
    builder
        .ticker_period(Duration::from_millis(10))
        .full_round_every(Duration::from_secs(3600))
        .takeover_period(Duration::from_millis(50))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(300))
}

fn wait_active(t: &Ticker) {
    wait_until("the ticker to become active", DEADLINE, || t.is_active());
}

/// The newest tick id of `queue`.
fn last_tick(conn: &mut postgres::Client, queue: &str) -> i64 {
    conn.query_one(
        "select max(t.tick_id) from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue \
          where q.queue_name = $1",
        &[&queue],
    )
    .unwrap()
    .get::<_, Option<i64>>(0)
    .unwrap_or(0)
}

/// Sends, ticks and consumes one event, so that the next one counts as new by the event
/// sequence.
fn warm_up(db: &TestDb, queue: &str) {
    db.client
        .send(queue, &NewEvent::new("t", "warm-up"))
        .unwrap();
    db.tick(queue);
    assert_eq!(datas(&db.consume_all(queue, "c")), vec!["warm-up"]);
}

/// How many ticks `queue` has.
fn last_tick_count(conn: &mut postgres::Client, queue: &str) -> i64 {
    conn.query_one(
        "select count(*) from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue \
          where q.queue_name = $1",
        &[&queue],
    )
    .unwrap()
    .get(0)
}

#[test]
fn lifecycle_start_stop_join_drop() {
    let db = TestDb::new(Backend::Ours);
    let mut t = fast(Ticker::builder(&db.client).name("lc1"))
        .start()
        .unwrap();
    // (A thread sets its OS name itself, just after it starts.)
    wait_until("the named thread", DEADLINE, || {
        threads_named("pgq-ticker lc1") == vec!["pgq-ticker lc1"]
    });
    wait_active(&t);
    wait_until("a few rounds", DEADLINE, || t.stats().rounds >= 3);
    let s = t.stats();
    assert_eq!(s.active, 1);
    assert_eq!(s.databases.len(), 1);
    assert_eq!(s.databases[0].state, TickerState::Active);
    assert!(s.databases[0].active_since.is_some());
    assert!(s.databases[0].target.ends_with(&db.name), "{s:?}");

    t.stop();
    t.stop();
    t.join().unwrap();
    t.join().unwrap();
    assert!(t.is_stopped());
    assert!(!t.is_active());
    assert_eq!(t.stats().databases[0].state, TickerState::Stopped);
    assert!(threads_named("pgq-ticker lc1").is_empty());
    drop(t);

    // Dropping a running ticker stops and joins it: no thread is left afterwards.
    let t = fast(Ticker::builder(&db.client).name("lc2"))
        .start()
        .unwrap();
    wait_active(&t);
    drop(t);
    assert!(threads_named("pgq-ticker lc2").is_empty());

    // The lock was released: a new ticker becomes active at once.
    let t = fast(Ticker::builder(&db.client).name("lc3"))
        .start()
        .unwrap();
    wait_active(&t);
}

#[test]
fn stop_is_prompt_while_standby_or_unreachable() {
    let db = TestDb::new(Backend::Ours);
    let active = fast(Ticker::builder(&db.client).name("sp1"))
        .start()
        .unwrap();
    wait_active(&active);
    // A long takeover period: stop must not wait for it.
    let mut standby = Ticker::builder(&db.client)
        .name("sp2")
        .takeover_period(Duration::from_secs(3600))
        .start()
        .unwrap();
    wait_until("standby", DEADLINE, || standby.stats().standby == 1);
    let t0 = Instant::now();
    standby.join().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

    // Nobody listens on port 1: connecting fails, is counted, and never ends the thread.
    let mut down = pgq::TickerBuilder::new()
        .dsn("host=127.0.0.1 port=1 user=x dbname=x")
        .name("sp3")
        .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(20))
        .start()
        .unwrap();
    wait_until("connect errors", DEADLINE, || down.stats().errors >= 3);
    let s = down.stats();
    assert_eq!(s.databases[0].state, TickerState::Connecting);
    assert!(s.databases[0].last_error.is_some());
    assert_eq!(threads_named("pgq-ticker sp3").len(), 1);
    down.join().unwrap();
    assert!(threads_named("pgq-ticker sp3").is_empty());
}

both_backends! {
    fn ticks_due_queues_and_notifies(db: &TestDb) {
        db.client.create_queue("q").unwrap();
        db.client.create_queue("other").unwrap();
        db.client.set_queue_config_raw("q", "ticker_max_count", "1").unwrap();
        db.client.register_consumer("q", "c").unwrap();
        let mut listener = db.conn();
        listener.batch_execute("listen pgq_tick").unwrap();

        let ticker = fast(Ticker::builder(&db.client)).start().unwrap();
        wait_active(&ticker);
        let rounds = ticker.stats().rounds;
        wait_until("rounds", DEADLINE, || ticker.stats().rounds > rounds + 2);
        let before = last_tick(&mut db.conn(), "q");
        db.client.send("q", &NewEvent::new("t", "hello")).unwrap();

        // A notification names the queue and arrives after its tick committed. (The
        // official create_queue leaves the first tick to the ticker, so an earlier
        // notification for q may be waiting.)
        let deadline = Instant::now() + DEADLINE;
        let mut got = false;
        while !got && Instant::now() < deadline {
            let mut n = listener.notifications();
            let mut it = n.timeout_iter(Duration::from_millis(200));
            while let Some(note) = it.next().unwrap() {
                assert_eq!(note.channel(), "pgq_tick");
                if note.payload() == "q" && last_tick(&mut db.conn(), "q") > before {
                    got = true;
                    break;
                }
            }
        }
        assert!(got, "no notification for the tick after the event");
        assert!(last_tick(&mut db.conn(), "q") > before);
        let s = ticker.stats();
        assert!(s.ticks >= 1 && s.last_tick.is_some(), "{s:?}");
        assert_eq!(s.errors, 0, "{s:?}");

        let events = db.consume_all("q", "c");
        assert_eq!(datas(&events), vec!["hello"]);

        // Due by lag: fewer events than max_count, ticked once max_lag has passed.
        let mut conn = db.conn();
        db.client.set_queue_config_raw("other", "ticker_max_lag", "300 ms").unwrap();
        let before = last_tick(&mut conn, "other");
        db.client.send("other", &NewEvent::new("t", "lag")).unwrap();
        wait_until("a tick by lag", DEADLINE, || last_tick(&mut conn, "other") > before);
        // Due by force_tick.
        db.client.set_queue_config_raw("other", "ticker_max_lag", "1 hour").unwrap();
        let before = last_tick(&mut conn, "other");
        db.client.force_tick("other").unwrap();
        wait_until("a forced tick", DEADLINE, || last_tick(&mut conn, "other") > before);
        // A queue created while the ticker runs gets its ticks too.
        db.client.create_queue("late").unwrap();
        db.client.set_queue_config_raw("late", "ticker_max_count", "1").unwrap();
        let before = last_tick(&mut conn, "late");
        db.client.send("late", &NewEvent::new("t", "late")).unwrap();
        wait_until("a tick on a new queue", DEADLINE, || last_tick(&mut conn, "late") > before);
        assert_eq!(ticker.stats().errors, 0);
    }

    fn one_active_ticker_and_takeover(db: &TestDb) {
        db.client.create_queue("q").unwrap();
        let mut tickers: Vec<Ticker> = (0..3)
            .map(|i| fast(Ticker::builder(&db.client).name(format!("one{i}"))).start().unwrap())
            .collect();
        let active_count = |ts: &[Ticker]| ts.iter().filter(|t| t.is_active()).count();
        wait_until("one active, two standbys", DEADLINE, || {
            tickers.iter().filter(|t| t.stats().standby == 1).count() == 2
                && active_count(&tickers) == 1
        });
        // It stays that way while the active one ticks (and the standbys keep trying).
        let i = tickers.iter().position(|t| t.is_active()).unwrap();
        let rounds = tickers[i].stats().rounds;
        wait_until("active rounds", DEADLINE, || {
            assert_eq!(active_count(&tickers), 1);
            tickers[i].stats().rounds >= rounds + 20
        });
        for (j, t) in tickers.iter().enumerate() {
            if j != i {
                assert_eq!(t.stats().rounds, 0, "a standby ticked");
            }
        }

        // Stop the active one: a standby takes over within seconds.
        let mut gone = tickers.remove(i);
        let stopped_at = Instant::now();
        gone.join().unwrap();
        wait_until("takeover", Duration::from_secs(5), || active_count(&tickers) == 1);
        assert!(stopped_at.elapsed() < Duration::from_secs(5));
        let new = tickers.iter().position(|t| t.is_active()).unwrap();
        let r = tickers[new].stats().rounds;
        wait_until("the new active ticker ticks", DEADLINE, || {
            tickers[new].stats().rounds > r + 3
        });
        assert_eq!(tickers[new].stats().databases[0].takeovers, 1);
    }

    fn idle_queue_follows_the_idle_backoff(db: &TestDb) {
        db.client.create_queue("idle").unwrap();
        db.client.set_queue_config_raw("idle", "ticker_max_lag", "200 ms").unwrap();
        let ticker = fast(Ticker::builder(&db.client)).start().unwrap();
        let mut conn = db.conn();
        let ticks_and_span = |conn: &mut postgres::Client| -> (i64, f64) {
            let row = conn
                .query_one(
                    "select count(*) - 1, extract(epoch from now() - min(t.tick_time))::float8 \
                       from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue \
                      where q.queue_name = 'idle'",
                    &[],
                )
                .unwrap();
            (row.get(0), row.get(1))
        };
        // Idle ticks do come (every max_lag/2 at first) ...
        wait_until("two idle ticks", DEADLINE, || ticks_and_span(&mut conn).0 >= 2);
        let rounds = ticker.stats().rounds;
        wait_until("more rounds", DEADLINE, || ticker.stats().rounds >= rounds + 50);
        // ... but back off: after the first at 100 ms, each gap at least doubles, so within
        // `span` seconds there are at most log2(span / 0.1 + 1) of them, although the ticker
        // ran a round every 10 ms.
        let (ticks, span) = ticks_and_span(&mut conn);
        let bound = (span / 0.1 + 1.0).log2().floor() as i64 + 1;
        assert!(ticks <= bound, "{ticks} idle ticks in {span:.2}s, back-off allows {bound}");
        assert!(ticker.stats().rounds as i64 > 5 * bound);
    }

    fn one_busy_queue_among_many_is_ticked_by_the_precheck(db: &TestDb) {
        // Many queues that PGQ's rules leave alone (no events, and an idle back-off that
        // asks for no tick for half an hour once each has two ticks), and one that is due
        // after a single event. No full round after the first: only the pre-check (behind
        // its change gate) can find the busy queue.
        let n = 30;
        let mut conn = db.conn();
        for i in 0..n {
            let q = format!("mq{i}");
            db.client.create_queue(&q).unwrap();
            db.client.set_queue_config_raw(&q, "ticker_max_lag", "1 hour").unwrap();
            db.client.register_consumer(&q, "c").unwrap();
            while last_tick_count(&mut conn, &q) < 2 {
                conn.query_one("select pgq.ticker($1)", &[&q]).unwrap();
            }
        }
        db.client.set_queue_config_raw("mq17", "ticker_max_count", "1").unwrap();
        // (PGQ counts a queue's very first event as none: the sequence reads the same.)
        warm_up(db, "mq17");
        let all_ticks = |conn: &mut postgres::Client| -> i64 {
            conn.query_one("select count(*) from pgq.tick", &[]).unwrap().get(0)
        };
        let ticker = fast(Ticker::builder(&db.client)).eager(None).start().unwrap();
        wait_active(&ticker);
        let rounds = ticker.stats().rounds;
        wait_until("rounds", DEADLINE, || ticker.stats().rounds > rounds + 20);
        let before = all_ticks(&mut conn);
        let busy = last_tick(&mut conn, "mq17");

        db.client.send("mq17", &NewEvent::new("t", "one")).unwrap();
        wait_until("a tick on the busy queue", DEADLINE, || {
            last_tick(&mut conn, "mq17") > busy
        });
        let rounds = ticker.stats().rounds;
        wait_until("more rounds", DEADLINE, || ticker.stats().rounds > rounds + 20);
        // Exactly that one tick: none of the idle queues got one.
        assert_eq!(all_ticks(&mut conn), before + 1);
        assert_eq!(datas(&db.consume_all("mq17", "c")), vec!["one"]);
        assert_eq!(ticker.stats().errors, 0);
    }

    fn a_settings_change_is_seen_without_a_full_round(db: &TestDb) {
        // One event, and a ticker_max_lag of an hour: not due. Lowering ticker_max_lag
        // changes no event sequence, yet the next rounds see it (the change gate also
        // watches the queue rows) and tick.
        db.client.create_queue("q").unwrap();
        db.client.set_queue_config_raw("q", "ticker_max_lag", "1 hour").unwrap();
        db.client.register_consumer("q", "c").unwrap();
        let mut conn = db.conn();
        while last_tick_count(&mut conn, "q") < 2 {
            conn.query_one("select pgq.ticker('q')", &[]).unwrap();
        }
        warm_up(db, "q");
        let ticker = fast(Ticker::builder(&db.client)).eager(None).start().unwrap();
        wait_active(&ticker);
        db.client.send("q", &NewEvent::new("t", "x")).unwrap();
        let before = last_tick(&mut conn, "q");
        // A bounded negative check: rounds run, no tick.
        let rounds = ticker.stats().rounds;
        wait_until("rounds", DEADLINE, || ticker.stats().rounds > rounds + 20);
        assert_eq!(last_tick(&mut conn, "q"), before);

        db.client.set_queue_config_raw("q", "ticker_max_lag", "10 ms").unwrap();
        wait_until("a tick after the settings change", DEADLINE, || {
            last_tick(&mut conn, "q") > before
        });
        assert_eq!(datas(&db.consume_all("q", "c")), vec!["x"]);
        // (A pre-check given up on would count as an error.)
        assert_eq!(ticker.stats().errors, 0);
    }

    fn retry_events_are_moved_until_none_left(db: &TestDb) {
        db.client.create_queue("q").unwrap();
        db.client.set_queue_config_raw("q", "ticker_max_count", "1").unwrap();
        db.client.register_consumer("q", "c").unwrap();
        let n = 250; // more than one maint_retry_events() call moves
        let evs: Vec<NewEvent> = (0..n).map(|i| NewEvent::new("t", i.to_string())).collect();
        db.client.send_many("q", &evs).unwrap();
        db.tick("q");
        let c = Consumer::new(&db.client, "q", "c").unwrap();
        let b = c.next_batch().unwrap().unwrap();
        let mut seen = 0;
        for ev in b.events() {
            b.retry(ev.unwrap().id, Duration::ZERO);
            seen += 1;
        }
        assert_eq!(seen, n);
        b.finish().unwrap();

        let ticker = fast(Ticker::builder(&db.client))
            .retry_period(Duration::from_millis(20))
            .start()
            .unwrap();
        wait_until("retry events moved", DEADLINE, || {
            ticker.stats().retry_events_moved >= n as u64
        });
        let left: i64 = db
            .conn()
            .query_one("select count(*) from pgq.retry_queue", &[])
            .unwrap()
            .get(0);
        assert_eq!(left, 0);
        let mut again = Vec::new();
        wait_until("retried events redelivered", DEADLINE, || {
            again.extend(db.consume_all("q", "c"));
            again.len() >= n
        });
        assert_eq!(again.len(), n);
        assert!(again.iter().all(|e| e.retry == Some(1)));
    }

    fn maintenance_rotates_in_two_transactions(db: &TestDb) {
        db.client.create_queue("q").unwrap();
        db.client.set_queue_config_raw("q", "rotation_period", "0").unwrap();
        let table = |conn: &mut postgres::Client| -> (i32, Option<i64>, Option<i64>) {
            let row = conn
                .query_one(
                    "select queue_cur_table, queue_switch_step1, queue_switch_step2 \
                       from pgq.queue where queue_name = 'q'",
                    &[],
                )
                .unwrap();
            (row.get(0), row.get(1), row.get(2))
        };
        let mut conn = db.conn();
        let (start, _, _) = table(&mut conn);
        let ticker = fast(Ticker::builder(&db.client))
            .maint_period(Duration::from_millis(20))
            .start()
            .unwrap();
        // Two rotations: the second needs the first's step 2, so step 2 ran after step 1.
        let mut seen = vec![start];
        wait_until("two rotations", DEADLINE, || {
            let (cur, _, _) = table(&mut conn);
            if seen.last() != Some(&cur) {
                seen.push(cur);
            }
            seen.len() >= 3
        });
        // Step 2 records a later transaction than step 1.
        wait_until("step 2 after step 1", DEADLINE, || {
            let (_, s1, s2) = table(&mut conn);
            matches!((s1, s2), (Some(a), Some(b)) if b > a)
        });
        // The counters move when a run has completed, a moment after its effect is visible.
        wait_until("two maintenance runs counted", DEADLINE, || {
            let s = ticker.stats();
            s.maintenance_runs >= 2 && s.maintenance_calls >= 2
        });
        let s = ticker.stats();
        assert_eq!(s.errors, 0, "{s:?}");
    }

    fn ticks_as_a_pgq_admin_member(db: &TestDb) {
        // The usual deployment: the ticker logs in as a role with pgq_admin, not a superuser.
        let role = format!("{}_tk", &db.name[..db.name.len().min(50)]);
        let mut su = db.superuser();
        su.batch_execute(&format!("create role \"{role}\" login in role pgq_admin")).unwrap();
        db.client.create_queue("q").unwrap();
        db.client.set_queue_config_raw("q", "ticker_max_count", "1").unwrap();
        let mut cfg = db.config.clone();
        cfg.user(&role);
        let ticker = fast(pgq::TickerBuilder::new().config(cfg))
            .maint_period(Duration::from_millis(20))
            .start()
            .unwrap();
        wait_active(&ticker);
        let mut conn = db.conn();
        let before = last_tick(&mut conn, "q");
        db.client.send("q", &NewEvent::new("t", "x")).unwrap();
        wait_until("a tick", DEADLINE, || last_tick(&mut conn, "q") > before);
        wait_until("maintenance", DEADLINE, || ticker.stats().maintenance_runs >= 2);
        let s = ticker.stats();
        assert_eq!(s.errors, 0, "{s:?}");
        drop(ticker);
        su.batch_execute(&format!("drop role \"{role}\"")).unwrap();
    }

    fn a_failing_maintenance_operation_does_not_stop_the_others(db: &TestDb) {
        db.client.create_queue("q").unwrap();
        db.conn()
            .batch_execute(
                "create table maint_log (queue text); \
                 create function bad_maint(text) returns int language plpgsql \
                     as $$ begin raise exception 'bad_maint fails'; end $$; \
                 create function good_maint(text) returns int language sql \
                     as $$ insert into maint_log values ($1); select 0 $$; \
                 update pgq.queue set queue_extra_maint = \
                     array['public.bad_maint', 'public.good_maint'] where queue_name = 'q'",
            )
            .unwrap();
        let ticker = fast(Ticker::builder(&db.client))
            .maint_period(Duration::from_millis(20))
            .start()
            .unwrap();
        let mut conn = db.conn();
        wait_until("good_maint ran twice", DEADLINE, || {
            let n: i64 = conn
                .query_one("select count(*) from maint_log", &[])
                .unwrap()
                .get(0);
            n >= 2
        });
        let s = ticker.stats();
        assert!(s.errors >= 1, "{s:?}");
        assert!(s.databases[0].last_error.as_deref().unwrap_or("").contains("bad_maint fails"));
        assert!(ticker.is_active(), "a maintenance error is not a lost connection");
        assert_eq!(s.reconnects, 0);
    }
}

#[test]
fn not_installed_is_not_fatal() {
    // A database without PGQ: the ticker complains, counts, and starts ticking once PGQ
    // is installed.
    let db = TestDb::new(Backend::Ours);
    db.client
        .get()
        .unwrap()
        .batch_execute("drop schema pgq cascade")
        .unwrap();
    let ticker = fast(Ticker::builder(&db.client))
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(50))
        .start()
        .unwrap();
    wait_until("errors", DEADLINE, || ticker.stats().errors >= 2);
    let s = ticker.stats();
    assert_eq!(s.rounds, 0);
    assert!(
        s.databases[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("pgq"),
        "{s:?}"
    );
    db.client.install().unwrap();
    db.client.create_queue("q").unwrap();
    wait_until("rounds after install", DEADLINE, || {
        ticker.stats().rounds >= 3
    });
}

/// The ticker's server restarts twice under it: it reconnects with back-off and keeps
/// ticking; maintenance VACUUMs where asked (autovacuum off). Both backends, one cluster.
#[test]
fn survives_server_restart_and_vacuums() {
    let cluster = Cluster::start("ticker-restart");
    let mut su = cluster.superuser("postgres");
    su.batch_execute("alter system set autovacuum = off")
        .unwrap();
    // The cluster runs with synchronous_commit off, so an immediate stop could lose the
    // last commits; this test wants to count every event.
    su.batch_execute("alter system set synchronous_commit = on")
        .unwrap();
    su.batch_execute("select pg_reload_conf()").unwrap();
    wait_until("autovacuum off", DEADLINE, || {
        let v: String = su.query_one("show autovacuum", &[]).unwrap().get(0);
        v == "off"
    });
    drop(su);
    let (_, ours) = cluster.database("ours", Backend::Ours);
    let (_, official) = cluster.database("official", Backend::Official);
    for c in [&ours, &official] {
        c.create_queue("q").unwrap();
        c.set_queue_config_raw("q", "ticker_max_count", "1")
            .unwrap();
        c.register_consumer("q", "c").unwrap();
    }
    let ticker = fast(Ticker::builder(&ours).database(&official))
        .maint_period(Duration::from_millis(200))
        .start()
        .unwrap();
    wait_until("active on both", DEADLINE, || ticker.stats().active == 2);
    wait_until("vacuum ran", DEADLINE, || {
        ticker
            .stats()
            .databases
            .iter()
            .all(|d| d.tables_vacuumed > 0)
    });
    for db in ["ours", "official"] {
        let mut c = cluster.superuser(db);
        wait_until("vacuum visible in statistics", DEADLINE, || {
            let n: i64 = c
                .query_one(
                    "select coalesce(sum(vacuum_count), 0)::int8 from pg_stat_user_tables \
                      where schemaname = 'pgq' and relname = 'tick'",
                    &[],
                )
                .unwrap()
                .get(0);
            n > 0
        });
    }

    let mut sent = 0;
    for round in 1..=2u64 {
        cluster.restart();
        wait_until("reconnected", DEADLINE, || {
            let s = ticker.stats();
            s.reconnects >= 2 * round && s.active == 2
        });
        // New events still get ticked, on both databases.
        for c in [&ours, &official] {
            let before = last_tick(&mut c.get().unwrap(), "q");
            c.send("q", &NewEvent::new("t", format!("after restart {round}")))
                .unwrap();
            wait_until("a tick after the restart", DEADLINE, || {
                last_tick(&mut c.get().unwrap(), "q") > before
            });
        }
        sent += 1;
    }
    let s = ticker.stats();
    assert!(s.errors >= 2, "{s:?}");
    for c in [&ours, &official] {
        // A tick may have been taken while the event's transaction was still open (its
        // sequence value shows before the commit); a later tick then carries it.
        let mut events = Vec::new();
        wait_until("every event consumed", DEADLINE, || {
            events.extend(common::consume_all(c, "q", "c"));
            events.len() >= sent
        });
        assert_eq!(events.len(), sent, "{:?}", datas(&events));
    }
    drop(ticker);
    assert!(threads_named("pgq-ticker ours").is_empty());
}

// ---- pgqctl ticker ----------------------------------------------------------------------

/// A `key=value` DSN for `config` (pgqctl gets it as text, like a user would).
fn dsn_of(config: &postgres::Config) -> String {
    let mut parts = Vec::new();
    for h in config.get_hosts() {
        if let postgres::config::Host::Tcp(s) = h {
            parts.push(format!("host={s}"));
        }
    }
    if let Some(p) = config.get_ports().first() {
        parts.push(format!("port={p}"));
    }
    if let Some(u) = config.get_user() {
        parts.push(format!("user={u}"));
    }
    if let Some(d) = config.get_dbname() {
        parts.push(format!("dbname={d}"));
    }
    parts.join(" ")
}

/// A `pgqctl ticker` child process whose stderr goes to a file; killed on drop.
struct Daemon {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(args: &[&str]) -> Daemon {
        let log = std::path::PathBuf::from(format!(
            "{}/pgqctl-ticker-{}-{}.log",
            env!("CARGO_TARGET_TMPDIR"),
            std::process::id(),
            std::thread::current()
                .name()
                .unwrap_or("t")
                .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        ));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pgqctl"));
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
            .stderr(file)
            .spawn()
            .expect("start pgqctl ticker");
        Daemon { child, log }
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit; returns its status.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut status = None;
        wait_until("pgqctl ticker to exit", DEADLINE, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Whether a backend with `application_name` holds the active-ticker lock of this database.
fn holds_ticker_lock(conn: &mut postgres::Client, app: &str) -> bool {
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

/// Sends an event and waits until a tick covers it (a tick taken while the event's
/// transaction was still open does not).
fn send_and_see_tick(db: &TestDb, data: &str) {
    let id = db.client.send("q", &NewEvent::new("t", data)).unwrap();
    let mut conn = db.conn();
    wait_until("a tick that covers the event", DEADLINE, || {
        conn.query_one(
            "select exists (select 1 from pgq.tick t join pgq.queue q \
                               on q.queue_id = t.tick_queue and q.queue_name = 'q' \
                             where txid_visible_in_snapshot( \
                                   (select e.ev_txid from pgq.event_template e \
                                     where e.ev_id = $1 and e.ev_data = $2), \
                                   t.tick_snapshot))",
            &[&id, &data],
        )
        .unwrap()
        .get::<_, bool>(0)
    });
}

#[test]
fn pgqctl_ticker_ticks_reloads_and_stops_on_signals() {
    let db = TestDb::new(Backend::Ours);
    db.client.create_queue("q").unwrap();
    db.client
        .set_queue_config_raw("q", "ticker_max_count", "1")
        .unwrap();
    db.client.register_consumer("q", "c").unwrap();
    let mut d = Daemon::start(&[
        &dsn_of(&db.config),
        "ticker_period=10ms",
        "stats_period=50ms",
    ]);
    send_and_see_tick(&db, "one");
    // (1 tick, or 2 when one was taken just before the event's commit.)
    wait_until("a line of counters", DEADLINE, || {
        let log = d.log();
        log.contains("since the last report: 1 ticks")
            || log.contains("since the last report: 2 ticks")
    });
    assert!(holds_ticker_lock(&mut db.conn(), "pgqctl"), "{}", d.log());

    // Its threads: main, the signal forwarder, one ticker thread for the one database.
    let threads = |d: &Daemon| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", d.child.id()))
            .map(|dir| {
                dir.flatten()
                    .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
                    .map(|c| c.trim_end().to_string())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let expected = |names: &[String]| {
        names.len() == 3
            && names
                .iter()
                .filter(|n| n.starts_with("pgq-ticker "))
                .count()
                == 1
            && names.iter().any(|n| n == "pgqctl-signals")
    };
    assert!(expected(&threads(&d)), "{:?}", threads(&d));

    d.signal("-HUP");
    wait_until("reload logged", DEADLINE, || d.log().contains("reloading"));
    send_and_see_tick(&db, "two");
    // The old ticker's thread was joined before the new one started.
    assert!(expected(&threads(&d)), "{:?}", threads(&d));

    d.signal("-TERM");
    let status = d.wait_exit();
    assert!(status.success(), "{status}: {}", d.log());
    let log = d.log();
    assert!(log.contains("active on"), "{log}");
    assert!(log.contains("stopped:"), "{log}");
    assert!(!holds_ticker_lock(&mut db.conn(), "pgqctl"));
    assert_eq!(datas(&db.consume_all("q", "c")), vec!["one", "two"]);
}

#[test]
fn standby_takes_over_when_the_active_process_is_killed() {
    let db = TestDb::new(Backend::Ours);
    db.client.create_queue("q").unwrap();
    db.client
        .set_queue_config_raw("q", "ticker_max_count", "1")
        .unwrap();
    let d = Daemon::start(&[&dsn_of(&db.config), "ticker_period=10ms"]);
    let mut conn = db.conn();
    wait_until("pgqctl active", DEADLINE, || {
        holds_ticker_lock(&mut conn, "pgqctl")
    });

    let ticker = fast(Ticker::builder(&db.client)).start().unwrap();
    wait_until("standby", DEADLINE, || ticker.stats().standby == 1);
    send_and_see_tick(&db, "by pgqctl");
    assert_eq!(ticker.stats().rounds, 0);

    d.signal("-KILL");
    let killed = Instant::now();
    wait_until("takeover", Duration::from_secs(10), || ticker.is_active());
    assert!(killed.elapsed() < Duration::from_secs(10));
    send_and_see_tick(&db, "by the library");
    // The ticker counts a tick after its commit, which the query above may see first.
    wait_until("the library counts its tick", DEADLINE, || {
        ticker.stats().ticks >= 1
    });
}

#[test]
fn pgqctl_ticker_reads_a_pgqd_config_file() {
    let db = TestDb::new(Backend::Official);
    db.client.create_queue("q").unwrap();
    db.client
        .set_queue_config_raw("q", "ticker_max_count", "1")
        .unwrap();
    let mut base = db.config.clone();
    base.dbname("postgres");
    let base = dsn_of(&base).replace(" dbname=postgres", "");
    let path = format!(
        "{}/pgqd-{}.ini",
        env!("CARGO_TARGET_TMPDIR"),
        std::process::id()
    );
    std::fs::write(
        &path,
        format!(
            "# pgqd's format\n[pgqd]\nlogfile = /nonexistent/pgqd.log\nbase_connstr = {base}\n\
             database_list = {}\nticker_period = 0.01\nmaint_period = 60\n",
            db.name
        ),
    )
    .unwrap();
    let mut d = Daemon::start(&["--config", &path]);
    send_and_see_tick(&db, "x");
    d.signal("-INT");
    assert!(d.wait_exit().success(), "{}", d.log());

    std::fs::write(&path, "[pgqd]\nticker_perod = 1\n").unwrap();
    let mut bad = Daemon::start(&["--config", &path]);
    let status = bad.wait_exit();
    assert_eq!(status.code(), Some(1), "{}", bad.log());
    assert!(
        bad.log().contains("unknown setting \"ticker_perod\""),
        "{}",
        bad.log()
    );
    let _ = std::fs::remove_file(&path);
}

/// A multi-host DSN follows the read-write server: two clusters play primary and standby
/// (a read-only server is refused by target_session_attrs=read-write, as a hot standby is).
/// The ticker starts on the writable one, moves when that one turns read-only under it
/// (SQLSTATE 25006 ends the session), and moves back when that one goes down.
#[test]
fn multi_host_dsn_follows_the_read_write_server() {
    let a = Cluster::start("ticker-ha-a");
    let b = Cluster::start("ticker-ha-b");
    let mut clients = Vec::new();
    for c in [&a, &b] {
        let (_, client) = c.database("app", Backend::Ours);
        client.create_queue("q").unwrap();
        // Idle ticks every 100 ms or so show where the ticker runs, with no events needed.
        client
            .set_queue_config_raw("q", "ticker_max_lag", "50 ms")
            .unwrap();
        client
            .set_queue_config_raw("q", "ticker_idle_period", "100 ms")
            .unwrap();
        clients.push(client);
    }
    let read_only = |c: &Cluster, on: bool| {
        let mut su = c.superuser("postgres");
        let sql = if on {
            "alter system set default_transaction_read_only = on"
        } else {
            "alter system reset default_transaction_read_only"
        };
        su.batch_execute(sql).unwrap();
        su.batch_execute("select pg_reload_conf()").unwrap();
        let want = if on { "on" } else { "off" };
        wait_until("the setting to apply", DEADLINE, || {
            let mut fresh = c.superuser("postgres");
            let v: String = fresh
                .query_one("show default_transaction_read_only", &[])
                .unwrap()
                .get(0);
            v == want
        });
    };
    let ticks_on = |c: &Cluster| -> i64 {
        let mut conn = c.superuser("app");
        conn.batch_execute("set default_transaction_read_only = off")
            .unwrap();
        last_tick(&mut conn, "q")
    };
    let port = |c: &Cluster| c.config.get_ports()[0];
    read_only(&a, true);
    let dsn = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=postgres dbname=app",
        port(&a),
        port(&b)
    );
    let ticker = fast(pgq::TickerBuilder::new().dsn(&dsn)).start().unwrap();
    wait_active(&ticker);
    let (a0, b0) = (ticks_on(&a), ticks_on(&b));
    wait_until("ticks on b", DEADLINE, || ticks_on(&b) > b0 + 1);
    assert_eq!(ticks_on(&a), a0, "ticked the read-only server");

    // "Switchover": b turns read-only, a writable.
    read_only(&a, false);
    read_only(&b, true);
    let a1 = ticks_on(&a);
    wait_until("ticks on a", DEADLINE, || ticks_on(&a) > a1 + 1);
    let s = ticker.stats();
    assert!(s.reconnects >= 1, "{s:?}");

    // "Failover": a goes down, b is promoted.
    read_only(&b, false);
    a.stop();
    let b1 = ticks_on(&b);
    wait_until("ticks on b again", DEADLINE, || ticks_on(&b) > b1 + 1);
    assert!(ticker.stats().reconnects >= 2);
    drop(ticker);
}

/// A ticker whose role may not read a queue's event sequence (its privileges revoked) gives
/// the change gate and the pre-check up, reports that once and ticks with full rounds; once
/// the privilege is back it takes them up again by itself, without a reconnect.
#[test]
fn given_up_cheap_checks_are_taken_up_again() {
    let db = TestDb::new(Backend::Ours);
    db.client.create_queue("q").unwrap();
    db.client.register_consumer("q", "c").unwrap();
    let seq: String = db
        .conn()
        .query_one(
            "select queue_event_seq from pgq.queue where queue_name = 'q'",
            &[],
        )
        .unwrap()
        .get(0);
    // A login in pgq_admin: pgq.ticker() runs as the schema owner, but the gate and the
    // pre-check read the sequence with the login's own rights.
    let prefix: Vec<&str> = db.name.split('_').take(3).collect();
    let role = format!("{}_tk", prefix.join("_"));
    let mut su = db.superuser();
    su.batch_execute(&format!(
        "create role \"{role}\" login in role pgq_admin;
         grant connect on database \"{d}\" to \"{role}\";
         revoke all on sequence {seq} from pgq_admin, pgq_reader, pgq_writer, public",
        d = db.name
    ))
    .unwrap();
    let mut config = db.config.clone();
    config.user(&role);
    let client = pgq::ClientBuilder::from_config(config)
        .pool_size(1)
        .min_idle(0)
        .build()
        .unwrap();
    // Full rounds every 50 ms while nothing changes at first (backing off), and a given-up
    // check is tried again after 12 of those periods.
    // (Eager ticking is off: its rounds read the sequences too.)
    let ticker = fast(Ticker::builder(&client))
        .full_round_every(Duration::from_millis(50))
        .eager(None)
        .start()
        .unwrap();
    wait_active(&ticker);
    wait_until("the checks given up", DEADLINE, || {
        ticker.stats().databases[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("unavailable"))
    });
    // Every round is a full one now.
    let s0 = ticker.stats();
    wait_until("more rounds", DEADLINE, || {
        ticker.stats().rounds >= s0.rounds + 30
    });
    let s1 = ticker.stats();
    assert!(
        s1.full_rounds - s0.full_rounds >= s1.rounds - s0.rounds - 2,
        "{s0:?} {s1:?}"
    );
    let errors = s1.errors;

    su.batch_execute("select pgq.grant_perms('q')").unwrap();
    // Taken up again: most rounds are cheap checks again.
    wait_until("cheap rounds again", DEADLINE, || {
        let a = ticker.stats();
        let start = Instant::now();
        while ticker.stats().rounds < a.rounds + 30 && start.elapsed() < DEADLINE {
            std::thread::sleep(Duration::from_millis(10));
        }
        let b = ticker.stats();
        b.full_rounds - a.full_rounds <= 10
    });
    // Retries made while the privilege was still missing were not reported again, and the
    // ticker still ticks.
    assert_eq!(ticker.stats().errors, errors, "{:?}", ticker.stats());
    db.client.send("q", &NewEvent::new("t", "after")).unwrap();
    let mut conn = db.conn();
    let before = last_tick(&mut conn, "q");
    db.client.force_tick("q").unwrap();
    wait_until("a tick", DEADLINE, || last_tick(&mut conn, "q") > before);
    drop(ticker);
    drop(client);
    su.batch_execute(&format!(
        "drop owned by \"{role}\"; revoke connect on database \"{d}\" from \"{role}\"; \
         drop role \"{role}\"",
        d = db.name
    ))
    .unwrap();
}
