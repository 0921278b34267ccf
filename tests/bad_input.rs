//! Bad input, on both backends: unknown queues and consumers, empty and over-long names,
//! names that need quoting, NULLs through the SQL API, NUL bytes in events. Every failure
//! must be a clear error of the right [`ErrorKind`] and leave the catalog exactly as it was.

mod common;

use common::{datas, Backend, TestDb};
use pgq::{Consumer, ErrorKind, NewEvent};

/// Everything a failed call could have changed: the catalog tables, the retry queue and
/// every event row, as one text to compare before and after.
fn catalog(db: &TestDb) -> String {
    let mut conn = db.superuser();
    let mut out: String = conn
        .query_one(
            "select concat_ws(E'\\n',
                (select string_agg(q::text, ',' order by queue_id) from pgq.queue q),
                (select string_agg(c::text, ',' order by co_id) from pgq.consumer c),
                (select string_agg(s::text, ',' order by sub_id) from pgq.subscription s),
                (select string_agg(t.tick_queue || ':' || t.tick_id, ','
                        order by t.tick_queue, t.tick_id) from pgq.tick t),
                (select string_agg(r::text, ',' order by ev_owner, ev_id) from pgq.retry_queue r))",
            &[],
        )
        .expect("read catalog")
        .get(0);
    let queues: Vec<String> = conn
        .query(
            "select queue_data_pfx from pgq.queue order by queue_id",
            &[],
        )
        .expect("list queues")
        .iter()
        .map(|r| r.get(0))
        .collect();
    for pfx in queues {
        let rows: Option<String> = conn
            .query_one(
                format!(
                    "select string_agg(e.ev_id || ':' || coalesce(e.ev_data, '<null>'), ',' \
                     order by e.ev_id) from {pfx} e"
                )
                .as_str(),
                &[],
            )
            .expect("read events")
            .get(0);
        out.push('\n');
        out.push_str(&rows.unwrap_or_default());
    }
    out
}

fn setup(db: &TestDb) {
    db.client.create_queue("q").unwrap();
    db.client.register_consumer("q", "c").unwrap();
    db.client.send("q", &NewEvent::new("t", "before")).unwrap();
}

/// Asserts `result` failed with `kind` and changed nothing.
#[track_caller]
fn refused<T: std::fmt::Debug>(
    db: &TestDb,
    before: &str,
    what: &str,
    kind: ErrorKind,
    result: pgq::Result<T>,
) {
    match result {
        Ok(v) => panic!("{what}: succeeded with {v:?}, expected a {kind:?} error"),
        Err(e) => {
            assert_eq!(e.kind(), kind, "{what}: {e}");
            assert!(!e.to_string().trim().is_empty(), "{what}: empty message");
        }
    }
    assert_eq!(catalog(db), before, "{what} changed the catalog");
}

both_backends! {
    fn unknown_queue_and_consumer(db: &TestDb) {
        setup(db);
        let c = &db.client;
        let before = catalog(db);
        refused(db, &before, "send", ErrorKind::NoSuchQueue, c.send("nope", &NewEvent::new("t", "d")));
        refused(db, &before, "send_many", ErrorKind::NoSuchQueue,
            c.send_many("nope", &[NewEvent::new("t", "d")]));
        refused(db, &before, "drop_queue", ErrorKind::NoSuchQueue, c.drop_queue("nope", false));
        refused(db, &before, "drop_queue force", ErrorKind::NoSuchQueue, c.drop_queue("nope", true));
        refused(db, &before, "register_consumer", ErrorKind::NoSuchQueue,
            c.register_consumer("nope", "c"));
        refused(db, &before, "register_consumer_at", ErrorKind::NoSuchQueue,
            c.register_consumer_at("nope", "c", 1));
        refused(db, &before, "register_consumer_at unknown tick", ErrorKind::NoSuchTick,
            c.register_consumer_at("q", "c", 999_999));
        refused(db, &before, "queue_info", ErrorKind::NoSuchQueue, c.queue_info("nope"));
        refused(db, &before, "set_queue_config", ErrorKind::NoSuchQueue,
            c.set_queue_config_raw("nope", "ticker_max_count", "5"));
        refused(db, &before, "set_queue_config unknown parameter", ErrorKind::InvalidInput,
            c.set_queue_config_raw("q", "no_such_param", "5"));
        refused(db, &before, "set_queue_config bad value", ErrorKind::InvalidInput,
            c.set_queue_config_raw("q", "ticker_max_count", "many"));
        refused(db, &before, "tick_queue", ErrorKind::NoSuchQueue, c.tick_queue("nope"));
        let consumer = Consumer::new(c, "nope", "c").unwrap();
        refused(db, &before, "next_batch unknown queue", ErrorKind::NotSubscribed,
            consumer.next_batch().map(|b| b.map(|b| b.id())));
        let consumer = Consumer::new(c, "q", "nobody").unwrap();
        refused(db, &before, "next_batch unknown consumer", ErrorKind::NotSubscribed,
            consumer.next_batch().map(|b| b.map(|b| b.id())));
        // not errors: nothing to remove, nothing to show
        assert_eq!(c.unregister_consumer("nope", "c").unwrap(), 0);
        assert_eq!(c.unregister_consumer("q", "nobody").unwrap(), 0);
        assert!(c.consumer_info(Some("nope"), None).unwrap().is_empty());
        assert!(c.batch_info(123_456).unwrap().is_none());
        assert_eq!(catalog(db), before);
    }

    fn empty_long_and_control_character_names(db: &TestDb) {
        setup(db);
        let c = &db.client;
        let before = catalog(db);
        let long = "x".repeat(1000);
        for (label, name) in [("empty", ""), ("1000 characters", long.as_str()),
                              ("NUL", "a\0b"), ("newline", "a\nb")] {
            refused(db, &before, &format!("create_queue {label}"), ErrorKind::InvalidInput,
                c.create_queue(name));
            refused(db, &before, &format!("drop_queue {label}"), ErrorKind::InvalidInput,
                c.drop_queue(name, true));
            refused(db, &before, &format!("register queue {label}"), ErrorKind::InvalidInput,
                c.register_consumer(name, "c"));
            refused(db, &before, &format!("register consumer {label}"), ErrorKind::InvalidInput,
                c.register_consumer("q", name));
            refused(db, &before, &format!("unregister consumer {label}"), ErrorKind::InvalidInput,
                c.unregister_consumer("q", name));
            refused(db, &before, &format!("send {label}"), ErrorKind::InvalidInput,
                c.send(name, &NewEvent::new("t", "d")));
            refused(db, &before, &format!("send_many {label}"), ErrorKind::InvalidInput,
                c.send_many(name, &[NewEvent::new("t", "d")]));
            refused(db, &before, &format!("queue_info {label}"), ErrorKind::InvalidInput,
                c.queue_info(name));
            refused(db, &before, &format!("set_queue_config {label}"), ErrorKind::InvalidInput,
                c.set_queue_config_raw(name, "ticker_max_count", "5"));
            refused(db, &before, &format!("Consumer::new queue {label}"), ErrorKind::InvalidInput,
                Consumer::new(c, name, "c").map(|_| ()));
            refused(db, &before, &format!("Consumer::new consumer {label}"), ErrorKind::InvalidInput,
                Consumer::new(c, "q", name).map(|_| ()));
        }
    }

    fn names_that_need_quoting_work(db: &TestDb) {
        let c = &db.client;
        // The longest name the schema and the library take: 500 two-byte characters.
        let longest = "ü".repeat(pgq::client::MAX_NAME_LEN);
        let names = [
            longest.as_str(),
            "with space",
            "it's",
            "\"double\"",
            "MixedCase",
            "mixedcase",
            "Ünïcødé ✓ очередь 队列",
            "semi;colon",
            "'); drop table pgq.queue; --",
            "back\\slash",
            "pgq.event_1_0",
            "%s %I %L $1",
        ];
        for q in names {
            assert!(c.create_queue(q).unwrap(), "create {q:?}");
            for co in names {
                assert!(c.register_consumer(q, co).unwrap(), "register {co:?} on {q:?}");
            }
            c.send(q, &NewEvent::new(q, format!("single for {q}"))).unwrap();
            c.send_many(q, &[NewEvent::new(q, format!("copy for {q}"))]).unwrap();
        }
        let mut listed: Vec<String> = c.queues().unwrap().into_iter().map(|q| q.name).collect();
        listed.sort();
        let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(listed, want, "MixedCase and mixedcase are two queues");
        for q in names {
            db.tick(q);
            for co in names {
                let got = db.consume_all(q, co);
                assert_eq!(datas(&got), [format!("single for {q}"), format!("copy for {q}")],
                    "{co:?} on {q:?}");
                assert!(got.iter().all(|e| e.ev_type.as_deref() == Some(q)));
            }
            assert_eq!(c.consumer_info(Some(q), None).unwrap().len(), names.len());
        }
        for q in names {
            c.drop_queue(q, true).unwrap();
        }
        assert!(c.queues().unwrap().is_empty());
    }

    fn null_event_fields_round_trip(db: &TestDb) {
        setup(db);
        let c = &db.client;
        c.send("q", &NewEvent::default()).unwrap();
        c.send_many("q", &[NewEvent::default(), NewEvent::new("t", "")]).unwrap();
        db.tick("q");
        let got = db.consume_all("q", "c");
        assert_eq!(got.len(), 4);
        for e in &got[1..3] {
            assert_eq!((e.ev_type.as_deref(), e.data.as_deref()), (None, None), "{e:?}");
            assert_eq!(e.extra1, None);
            assert_eq!(e.extra4, None);
        }
        assert_eq!(got[3].data.as_deref(), Some(""), "empty is not NULL");
    }

    fn nul_bytes_in_events_are_refused(db: &TestDb) {
        setup(db);
        let c = &db.client;
        let before = catalog(db);
        let bad = [
            NewEvent::new("t\0", "d"),
            NewEvent::new("t", "d\0"),
            NewEvent::new("t", "d").extra1("\0"),
            NewEvent::new("t", "d").extra2("a\0"),
            NewEvent::new("t", "d").extra3("\0b"),
            NewEvent::new("t", "d").extra4("a\0b"),
        ];
        for ev in &bad {
            let e = c.send("q", ev).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
            assert!(e.to_string().contains("NUL"), "{e}");
            refused(db, &before, "send_many with one bad event", ErrorKind::InvalidInput,
                c.send_many("q", &[NewEvent::new("t", "fine"), ev.clone()]));
        }
        assert_eq!(catalog(db), before);
    }

    fn nulls_through_the_sql_api(db: &TestDb) {
        setup(db);
        let before = catalog(db);
        let mut conn = db.conn();
        let none: Option<&str> = None;
        // (call, the error kind the library gives the server's answer)
        let calls: [(&str, ErrorKind); 10] = [
            ("select pgq.create_queue($1)", ErrorKind::InvalidInput),
            ("select pgq.drop_queue($1, true)", ErrorKind::NoSuchQueue),
            ("select pgq.set_queue_config($1, 'ticker_max_count', '1')", ErrorKind::InvalidInput),
            ("select pgq.set_queue_config('q', $1, '1')", ErrorKind::InvalidInput),
            ("select pgq.register_consumer($1, 'c')", ErrorKind::NoSuchQueue),
            ("select pgq.register_consumer('q', $1)", ErrorKind::InvalidInput),
            ("select pgq.insert_event($1, 't', 'd')", ErrorKind::InvalidInput),
            ("select pgq.current_event_table($1)", ErrorKind::NoSuchQueue),
            ("select pgq.next_batch($1, 'c')", ErrorKind::NotSubscribed),
            ("select pgq.ticker($1::text)", ErrorKind::NoSuchQueue),
        ];
        for (sql, kind) in calls {
            let e = pgq::Error::from(conn.execute(sql, &[&none]).unwrap_err());
            assert_eq!(e.kind(), kind, "{sql}: {e}");
            assert_eq!(catalog(db), before, "{sql} changed the catalog");
        }
        // NULL where the reference answers rather than fails
        let r: Option<i32> = conn.query_one("select pgq.drop_queue($1)", &[&none]).unwrap().get(0);
        assert_eq!(r, None);
        let r: i32 = conn.query_one("select pgq.unregister_consumer('q', $1)", &[&none]).unwrap().get(0);
        assert_eq!(r, 0);
        let r: Option<i64> = conn.query_one("select pgq.force_tick($1)", &[&none]).unwrap().get(0);
        assert_eq!(r, None);
        let n: i64 = conn.query_one("select count(*) from pgq.get_queue_info($1)", &[&none]).unwrap().get(0);
        assert_eq!(n, 1, "NULL means all queues");
        assert_eq!(catalog(db), before);
    }
}

/// Our schema also refuses, at the SQL level, names the library refuses before sending (the
/// reference accepts them).
#[test]
fn our_schema_refuses_empty_and_long_names() {
    let db = TestDb::new(Backend::Ours);
    setup(&db);
    let before = catalog(&db);
    let mut conn = db.conn();
    let long = "y".repeat(1000);
    for sql in [
        "select pgq.create_queue($1)",
        "select pgq.register_consumer('q', $1)",
        "select pgq.register_consumer_at('q', $1, null)",
    ] {
        for name in ["", "   ", long.as_str()] {
            let e = pgq::Error::from(conn.execute(sql, &[&name]).unwrap_err());
            assert!(e.message().starts_with("Invalid "), "{sql} {name:?}: {e}");
            assert_eq!(catalog(&db), before, "{sql} {name:?} changed the catalog");
        }
    }
    let e = pgq::Error::from(
        conn.execute(
            "select pgq.set_queue_config('q', 'ticker_max_count', null)",
            &[],
        )
        .unwrap_err(),
    );
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert_eq!(catalog(&db), before);
}
