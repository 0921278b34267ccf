//! Admin API: install, queues, configuration, consumers, status.

mod common;

use std::time::Duration;

use common::{Backend, TestDb};
use pgq::admin::QueueParam;
use pgq::{ErrorKind, InstallOutcome, NewEvent};

both_backends! {
    fn install_is_idempotent(db: &TestDb) {
        let again = db.client.install().expect("second install");
        match (db.backend, again) {
            (Backend::Ours, InstallOutcome::AlreadyCurrent { version }) => {
                assert_eq!(version, pgq::schema::SCHEMA_VERSION)
            }
            (Backend::Official, InstallOutcome::OfficialExtension { version }) => {
                assert!(!version.is_empty())
            }
            (b, other) => panic!("{b:?}: unexpected second install outcome {other:?}"),
        }
        // installing over an existing install keeps queues and events
        db.client.create_queue("kept").unwrap();
        db.client.send("kept", &NewEvent::new("t", "d")).unwrap();
        db.client.install().expect("third install");
        let q = db.client.queue_info("kept").unwrap();
        assert_eq!(q.name, "kept");
        let n: i64 = db.conn().query_one("select count(*) from pgq.event_template", &[])
            .map(|r| r.get(0)).unwrap_or(-1);
        assert!(n == 1 || n == -1, "event lost by reinstall: {n}");
    }

    fn version_matches_api_level(db: &TestDb) {
        let v = db.client.version().unwrap().expect("pgq.version() answers");
        assert!(v.starts_with("3."), "pgq.version() = {v}");
    }

    fn create_queue_reports_created(db: &TestDb) {
        assert!(db.client.create_queue("orders").unwrap());
        assert!(!db.client.create_queue("orders").unwrap());
        let q = db.client.queue_info("orders").unwrap();
        assert_eq!(q.name, "orders");
        assert_eq!(q.ntables, 3);
        assert_eq!(q.cur_table, 0);
        assert_eq!(q.rotation_period, Duration::from_secs(7200));
        assert!(!q.external_ticker);
        assert!(!q.ticker_paused);
        assert_eq!(q.ticker_max_count, 500);
        assert_eq!(q.ticker_max_lag, Duration::from_secs(3));
        assert_eq!(q.ticker_idle_period, Duration::from_secs(60));
        assert_eq!(q.ev_new, 0);
        // create_queue makes the first tick
        assert!(q.last_tick_id.is_some(), "{q:?}");
        assert!(q.ticker_lag.is_some());
        // the queue row and its tables exist
        let mut c = db.conn();
        let n: i64 = c
            .query_one("select count(*) from pgq.queue where queue_name = 'orders'", &[])
            .unwrap()
            .get(0);
        assert_eq!(n, 1);
        let ticks: i64 = c
            .query_one(
                "select count(*) from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue \
                 where q.queue_name = 'orders'",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(ticks, 1);
    }

    fn queues_lists_all_sorted(db: &TestDb) {
        for q in ["b", "a", "c"] {
            db.client.create_queue(q).unwrap();
        }
        let names: Vec<String> = db.client.queues().unwrap().into_iter().map(|q| q.name).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let e = db.client.queue_info("nope").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoSuchQueue);
    }

    fn set_queue_config_typed(db: &TestDb) {
        db.client.create_queue("cfg").unwrap();
        let c = &db.client;
        c.set_queue_config("cfg", QueueParam::TickerMaxCount(7)).unwrap();
        c.set_queue_config("cfg", QueueParam::TickerMaxLag(Duration::from_millis(1500))).unwrap();
        c.set_queue_config("cfg", QueueParam::TickerIdlePeriod(Duration::from_secs(17))).unwrap();
        c.set_queue_config("cfg", QueueParam::RotationPeriod(Duration::from_secs(90))).unwrap();
        c.set_queue_config("cfg", QueueParam::TickerPaused(true)).unwrap();
        c.set_queue_config("cfg", QueueParam::ExternalTicker(true)).unwrap();
        let q = c.queue_info("cfg").unwrap();
        assert_eq!(q.ticker_max_count, 7);
        assert_eq!(q.ticker_max_lag, Duration::from_millis(1500));
        assert_eq!(q.ticker_idle_period, Duration::from_secs(17));
        assert_eq!(q.rotation_period, Duration::from_secs(90));
        assert!(q.ticker_paused);
        assert!(q.external_ticker);
        c.set_queue_config("cfg", QueueParam::TickerPaused(false)).unwrap();
        c.set_queue_config("cfg", QueueParam::ExternalTicker(false)).unwrap();
        let q = c.queue_info("cfg").unwrap();
        assert!(!q.ticker_paused);
        assert!(!q.external_ticker);
    }

    fn set_queue_config_raw_and_errors(db: &TestDb) {
        db.client.create_queue("cfg").unwrap();
        let c = &db.client;
        c.set_queue_config_raw("cfg", "ticker_max_count", "42").unwrap();
        c.set_queue_config_raw("cfg", "ticker_max_lag", "4 seconds").unwrap();
        let q = c.queue_info("cfg").unwrap();
        assert_eq!(q.ticker_max_count, 42);
        assert_eq!(q.ticker_max_lag, Duration::from_secs(4));

        let e = c.set_queue_config_raw("cfg", "no_such_param", "1").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        // names are given without the column's queue_ prefix
        let e = c.set_queue_config_raw("cfg", "queue_ticker_max_count", "1").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        let e = c.set_queue_config_raw("cfg", "disable_insert", "true").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        let e = c.set_queue_config_raw("cfg", "ticker_max_count", "many").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        let e = c.set_queue_config_raw("nope", "ticker_max_count", "1").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoSuchQueue, "{e}");
        let e = c.set_queue_config_raw("cfg", "", "1").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        // nothing changed by the failures
        let q = c.queue_info("cfg").unwrap();
        assert_eq!(q.ticker_max_count, 42);
    }

    fn register_and_unregister(db: &TestDb) {
        let c = &db.client;
        c.create_queue("q").unwrap();
        assert!(c.register_consumer("q", "c1").unwrap());
        assert!(!c.register_consumer("q", "c1").unwrap());
        assert!(c.register_consumer("q", "c2").unwrap());
        let all = c.consumer_info(None, None).unwrap();
        let names: Vec<_> = all.iter().map(|i| i.consumer_name.as_str()).collect();
        assert_eq!(names, ["c1", "c2"]);
        let info = &all[0];
        assert_eq!(info.queue_name, "q");
        assert_eq!(info.current_batch, None);
        assert_eq!(info.next_tick, None);
        assert_eq!(info.pending_events, Some(0));
        let last_tick = c.queue_info("q").unwrap().last_tick_id;
        assert_eq!(info.last_tick, last_tick);

        assert_eq!(c.consumer_info(Some("q"), None).unwrap().len(), 2);
        assert_eq!(c.consumer_info(Some("q"), Some("c2")).unwrap().len(), 1);
        assert_eq!(c.consumer_info(None, Some("c2")).unwrap().len(), 1);
        assert_eq!(c.consumer_info(Some("nope"), None).unwrap().len(), 0);

        assert_eq!(c.unregister_consumer("q", "c1").unwrap(), 1);
        assert_eq!(c.unregister_consumer("q", "c1").unwrap(), 0);
        let names: Vec<_> = c
            .consumer_info(Some("q"), None)
            .unwrap()
            .into_iter()
            .map(|i| i.consumer_name)
            .collect();
        assert_eq!(names, ["c2"]);

        let e = c.register_consumer("nope", "c1").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoSuchQueue, "{e}");
    }

    fn consumer_info_tracks_pending_and_batch(db: &TestDb) {
        let c = &db.client;
        c.create_queue("q").unwrap();
        c.register_consumer("q", "c").unwrap();
        for i in 0..5 {
            c.send("q", &NewEvent::new("t", i.to_string())).unwrap();
        }
        db.tick("q");
        let info = &c.consumer_info(Some("q"), Some("c")).unwrap()[0];
        assert!(info.pending_events.unwrap_or(0) >= 5, "{info:?}");
        let batch = c.next_batch("q", "c").unwrap().expect("batch");
        let info = &c.consumer_info(Some("q"), Some("c")).unwrap()[0];
        assert_eq!(info.current_batch, Some(batch.id()));
        assert_eq!(info.next_tick, Some(batch.tick_id()));

        let b = c.batch_info(batch.id()).unwrap().expect("open batch has info");
        assert_eq!(b.queue_name, "q");
        assert_eq!(b.consumer_name, "c");
        assert_eq!(b.tick_id, batch.tick_id());
        assert_eq!(Some(b.prev_tick_id), batch.prev_tick_id());
        assert!(b.batch_end >= b.batch_start);
        batch.finish().unwrap();

        let info = &c.consumer_info(Some("q"), Some("c")).unwrap()[0];
        assert_eq!(info.current_batch, None);
        assert_eq!(c.batch_info(987_654).unwrap(), None);
    }

    fn drop_queue_rules(db: &TestDb) {
        let c = &db.client;
        c.create_queue("q").unwrap();
        c.register_consumer("q", "c").unwrap();
        c.send("q", &NewEvent::new("t", "d")).unwrap();
        let qid: i32 = db.conn()
            .query_one("select queue_id from pgq.queue where queue_name = 'q'", &[])
            .unwrap()
            .get(0);

        let e = c.drop_queue("q", false).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConsumersAttached, "{e}");
        assert!(e.to_string().contains("consumers still attached"), "{e}");
        assert_eq!(c.queue_info("q").unwrap().name, "q");

        c.drop_queue("q", true).unwrap();
        assert_eq!(c.queue_info("q").unwrap_err().kind(), ErrorKind::NoSuchQueue);
        assert!(c.consumer_info(Some("q"), None).unwrap().is_empty());
        let tables: i64 = db.conn()
            .query_one(
                "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace \
                 where n.nspname = 'pgq' and c.relname like $1",
                &[&format!("event\\_{qid}%")],
            )
            .unwrap()
            .get(0);
        assert_eq!(tables, 0, "event tables left behind");

        let e = c.drop_queue("q", false).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoSuchQueue, "{e}");
        // a queue without consumers drops without force, and can be re-created
        c.create_queue("q2").unwrap();
        c.drop_queue("q2", false).unwrap();
        assert!(c.create_queue("q2").unwrap());
    }

    fn ticker_steps(db: &TestDb) {
        let c = &db.client;
        c.create_queue("a").unwrap();
        c.create_queue("paused").unwrap();
        c.create_queue("ext").unwrap();
        c.set_queue_config("paused", QueueParam::TickerPaused(true)).unwrap();
        c.set_queue_config("ext", QueueParam::ExternalTicker(true)).unwrap();
        c.set_queue_config("a", QueueParam::TickerMaxCount(3)).unwrap();
        c.set_queue_config("a", QueueParam::TickerMaxLag(Duration::from_secs(3600))).unwrap();
        c.set_queue_config("a", QueueParam::TickerIdlePeriod(Duration::from_secs(3600))).unwrap();

        // With a single tick there is no previous gap to back off from, so the first
        // ticker call after create_queue may tick; after that an idle queue is not due.
        let _ = c.tick_queue("a").unwrap();
        assert_eq!(c.tick_queue("a").unwrap(), None);
        c.send("a", &NewEvent::new("t", "1")).unwrap();
        assert_eq!(c.tick_queue("a").unwrap(), None, "1 event < max_count 3");
        // (the reference counts new events from sequence values, which may lag by one)
        for i in 2..=4 {
            c.send("a", &NewEvent::new("t", i.to_string())).unwrap();
        }
        let before = c.queue_info("a").unwrap().last_tick_id.unwrap();
        assert_eq!(c.tick_all().unwrap(), 1, "only 'a' is due");
        let after = c.queue_info("a").unwrap().last_tick_id.unwrap();
        assert!(after > before);

        // force_tick makes any queue due; it returns the tick before
        assert_eq!(c.force_tick("a").unwrap(), after);
        let t = c.tick_queue("a").unwrap().expect("forced tick");
        assert!(t > after);

        let e = c.tick_queue("paused").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TickerDisabled, "{e}");
        let e = c.tick_queue("ext").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TickerDisabled, "{e}");
        let e = c.tick_queue("nope").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoSuchQueue, "{e}");
        let e = c.force_tick("nope").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoSuchQueue, "{e}");
        // paused and external queues are skipped by tick_all even when forced
        c.force_tick("paused").unwrap();
        c.force_tick("ext").unwrap();
        assert_eq!(c.tick_all().unwrap(), 0);
    }

    fn maintenance_rotates_when_due(db: &TestDb) {
        let c = &db.client;
        c.create_queue("q").unwrap();
        c.register_consumer("q", "c").unwrap();
        assert_eq!(c.queue_info("q").unwrap().cur_table, 0);
        // nothing due yet: no rotation
        c.maintenance().unwrap();
        assert_eq!(c.queue_info("q").unwrap().cur_table, 0);

        c.set_queue_config("q", QueueParam::RotationPeriod(Duration::ZERO)).unwrap();
        // Step 1 rotates only once the slowest consumer's last tick snapshot lies past the
        // previous switch; transactions of parallel tests (txids are cluster-wide) can hold
        // that back for a moment, so tick, consume and retry until it happens.
        c.send("q", &NewEvent::new("t", "1")).unwrap();
        let mut seen = 0;
        let mut last = None;
        common::wait_until("rotation", Duration::from_secs(30), || {
            db.tick("q");
            seen += db.consume_all("q", "c").len();
            last = Some(c.maintenance().unwrap());
            c.queue_info("q").unwrap().cur_table == 1
        });
        assert_eq!(seen, 1);
        let r = last.unwrap();
        assert!(r.function_calls >= 1, "{r:?}");
        // step 2 ran in the same maintenance pass
        let step2: Option<i64> = db
            .conn()
            .query_one("select queue_switch_step2 from pgq.queue where queue_name = 'q'", &[])
            .unwrap()
            .get(0);
        assert!(step2.is_some());
        // the consumer has not moved past the new switch, so no further rotation
        let again = c.maintenance().unwrap();
        assert_eq!(c.queue_info("q").unwrap().cur_table, 1, "{again:?}");
    }
}

#[test]
fn database_owner_without_superuser_can_install_and_use() {
    let db = TestDb::new_owner(Backend::Ours);
    let mut conn = db.conn();
    let is_super: bool = conn
        .query_one(
            "select rolsuper from pg_roles where rolname = current_user",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!is_super, "the test must run as a non-superuser");
    let c = &db.client;
    c.create_queue("q").unwrap();
    c.register_consumer("q", "c").unwrap();
    c.send("q", &NewEvent::new("t", "one")).unwrap();
    c.send_many(
        "q",
        &[NewEvent::new("t", "two"), NewEvent::new("t", "three")],
    )
    .unwrap();
    db.tick("q");
    c.retry_events().unwrap();
    c.maintenance().unwrap();
    let got = common::datas(&db.consume_all("q", "c"));
    assert_eq!(got, ["one", "two", "three"]);
}
