//! Producing: single events, bulk COPY, inside the caller's transaction, refusals.

mod common;

use std::time::{Duration, SystemTime};

use common::{datas, TestDb};
use pgq::{ErrorKind, NewEvent};

fn setup(db: &TestDb) {
    db.client.create_queue("q").unwrap();
    db.client.register_consumer("q", "c").unwrap();
}

/// Calls of the function `pgq.<name>` counted in the server's statistics (with
/// `track_functions = 'pl'`), read afresh.
fn pgq_function_calls(c: &mut postgres::Client, name: &str) -> i64 {
    c.batch_execute("select pg_stat_clear_snapshot()").unwrap();
    c.query_one(
        "select coalesce(sum(calls), 0)::int8 from pg_stat_user_functions \
          where schemaname = 'pgq' and funcname = $1",
        &[&name],
    )
    .unwrap()
    .get(0)
}

fn queue_event_count(db: &TestDb, queue: &str) -> i64 {
    let mut c = db.conn();
    let pfx: String = c
        .query_one(
            "select queue_data_pfx from pgq.queue where queue_name = $1",
            &[&queue],
        )
        .unwrap()
        .get(0);
    c.query_one(format!("select count(*) from {pfx}").as_str(), &[])
        .unwrap()
        .get(0)
}

both_backends! {
    fn send_round_trips_all_fields(db: &TestDb) {
        setup(db);
        let before = SystemTime::now() - Duration::from_secs(5);
        let full = NewEvent::new("type.a", "payload ü")
            .extra1("e1")
            .extra2("e2")
            .extra3("e3")
            .extra4("e4");
        let nulls = NewEvent::default();
        let id1 = db.client.send("q", &full).unwrap();
        let id2 = db.client.send("q", &nulls).unwrap();
        assert!(id2 > id1);
        db.tick("q");
        let evs = db.consume_all("q", "c");
        assert_eq!(evs.len(), 2);
        let a = &evs[0];
        assert_eq!(a.id, id1);
        assert_eq!(a.ev_type.as_deref(), Some("type.a"));
        assert_eq!(a.data.as_deref(), Some("payload ü"));
        assert_eq!(a.extra1.as_deref(), Some("e1"));
        assert_eq!(a.extra2.as_deref(), Some("e2"));
        assert_eq!(a.extra3.as_deref(), Some("e3"));
        assert_eq!(a.extra4.as_deref(), Some("e4"));
        assert_eq!(a.retry, None);
        assert!(a.time > before && a.time < SystemTime::now() + Duration::from_secs(5));
        let b = &evs[1];
        assert_eq!(b.id, id2);
        assert_eq!((b.ev_type.as_ref(), b.data.as_ref(), b.extra1.as_ref()), (None, None, None));
        assert_eq!((b.extra2.as_ref(), b.extra3.as_ref(), b.extra4.as_ref()), (None, None, None));
        assert_ne!(a.txid, b.txid, "separate sends are separate transactions");
    }

    fn insert_in_callers_transaction(db: &TestDb) {
        setup(db);
        let mut conn = db.client.get().unwrap();
        {
            let mut tx = conn.transaction().unwrap();
            let txid: i64 = tx.query_one("select txid_current()", &[]).unwrap().get(0);
            pgq::producer::insert_event(&mut tx, "q", &NewEvent::new("t", "committed")).unwrap();
            pgq::producer::insert_events(
                &mut tx,
                "q",
                &[NewEvent::new("t", "bulk1"), NewEvent::new("t", "bulk2")],
            )
            .unwrap();
            tx.commit().unwrap();
            db.tick("q");
            let evs = db.consume_all("q", "c");
            assert_eq!(datas(&evs), ["committed", "bulk1", "bulk2"]);
            assert!(evs.iter().all(|e| e.txid == txid), "all in the caller's transaction");
        }
        {
            let mut tx = conn.transaction().unwrap();
            pgq::producer::insert_event(&mut tx, "q", &NewEvent::new("t", "rolled back")).unwrap();
            pgq::producer::insert_events(&mut tx, "q", &[NewEvent::new("t", "bulk rolled back")])
                .unwrap();
            tx.rollback().unwrap();
        }
        db.client.send("q", &NewEvent::new("t", "after")).unwrap();
        db.tick("q");
        assert_eq!(datas(&db.consume_all("q", "c")), ["after"]);
    }

    fn bulk_copy_escaping_and_count(db: &TestDb) {
        setup(db);
        let tricky = [
            "tab\there",
            "new\nline",
            "cr\rlf\r\n",
            "back\\slash",
            "\\N",
            "\\.",
            "",
            "ünïcødé ✓ 𝄞",
            "trailing\\",
            "\t\n\\",
        ];
        let mut evs: Vec<NewEvent> = tricky
            .iter()
            .map(|s| NewEvent::new(*s, *s).extra1(*s).extra2(*s).extra3(*s).extra4(*s))
            .collect();
        evs.push(NewEvent::default());
        evs.push(NewEvent::new("t", "x").ev_type(None::<String>));
        let n = db.client.send_many("q", &evs).unwrap();
        assert_eq!(n, evs.len() as u64);
        // many more, to check count and id uniqueness
        let many: Vec<NewEvent> = (0..5000).map(|i| NewEvent::new("n", i.to_string())).collect();
        assert_eq!(db.client.send_many("q", &many).unwrap(), 5000);
        assert_eq!(db.client.send_many("q", &[]).unwrap(), 0);
        db.tick("q");
        let got = db.consume_all("q", "c");
        assert_eq!(got.len(), evs.len() + 5000);
        for (sent, ev) in evs.iter().zip(&got) {
            assert_eq!(ev.ev_type, sent.ev_type);
            assert_eq!(ev.data, sent.data);
            assert_eq!(ev.extra1, sent.extra1);
            assert_eq!(ev.extra2, sent.extra2);
            assert_eq!(ev.extra3, sent.extra3);
            assert_eq!(ev.extra4, sent.extra4);
        }
        let rest: Vec<String> = datas(&got[evs.len()..]);
        let want: Vec<String> = (0..5000).map(|i| i.to_string()).collect();
        assert_eq!(rest, want);
        let mut ids: Vec<i64> = got.iter().map(|e| e.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), got.len(), "ev_id unique");
        // one COPY = one transaction
        let first_txid = got[evs.len()].txid;
        assert!(got[evs.len()..].iter().all(|e| e.txid == first_txid));
    }

    fn disabled_queue_refuses_inserts(db: &TestDb) {
        setup(db);
        db.client.send("q", &NewEvent::new("t", "before")).unwrap();
        let mut su = db.superuser();
        su.execute("update pgq.queue set queue_disable_insert = true where queue_name = 'q'", &[])
            .unwrap();
        let n0 = queue_event_count(db, "q");
        let e = db.client.send("q", &NewEvent::new("t", "no")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InsertDisabled, "{e}");
        let e = db.client.send_many("q", &[NewEvent::new("t", "no")]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InsertDisabled, "{e}");
        assert_eq!(queue_event_count(db, "q"), n0, "nothing inserted");

        // a replica (e.g. a replication apply process) may still write
        let mut tx = su.transaction().unwrap();
        tx.batch_execute("set local session_replication_role = replica").unwrap();
        pgq::producer::insert_event(&mut tx, "q", &NewEvent::new("t", "replica1")).unwrap();
        pgq::producer::insert_events(&mut tx, "q", &[NewEvent::new("t", "replica2")]).unwrap();
        tx.commit().unwrap();
        su.execute("update pgq.queue set queue_disable_insert = false where queue_name = 'q'", &[])
            .unwrap();
        db.tick("q");
        assert_eq!(datas(&db.consume_all("q", "c")), ["before", "replica1", "replica2"]);
    }

    fn unknown_queue_and_nul_bytes(db: &TestDb) {
        setup(db);
        let e = db.client.send("nope", &NewEvent::new("t", "d")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoSuchQueue, "{e}");
        let e = db.client.send_many("nope", &[NewEvent::new("t", "d")]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoSuchQueue, "{e}");
        let e = db.client.send("q", &NewEvent::new("t", "nul\0byte")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        let e = db
            .client
            .send_many("q", &[NewEvent::new("t", "ok"), NewEvent::new("t", "x").extra3("\0")])
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        assert_eq!(queue_event_count(db, "q"), 0, "nothing inserted");
    }

    fn producer_handle(db: &TestDb) {
        setup(db);
        let p = pgq::Producer::new(&db.client, "q").unwrap();
        assert_eq!(p.queue(), "q");
        p.send(&NewEvent::new("t", "1")).unwrap();
        p.send_many(&[NewEvent::new("t", "2"), NewEvent::new("t", "3")]).unwrap();
        db.tick("q");
        assert_eq!(datas(&db.consume_all("q", "c")), ["1", "2", "3"]);
    }
}

/// Rotation steps 1 and 2, each in its own transaction (step 2 is recorded only once no
/// older snapshot of this database is left, which here is at once). Step 1 waits until the
/// consumer's position is past the previous rotation, and ticks see transactions of the
/// whole cluster (other tests run beside this one): tick, read and try again until it
/// rotates.
fn rotate(db: &TestDb) {
    let mut su = db.superuser();
    su.execute(
        "update pgq.queue set queue_rotation_period = '0' where queue_name = 'q'",
        &[],
    )
    .unwrap();
    let before = current_table(db);
    common::wait_until("a rotation", Duration::from_secs(20), || {
        db.tick("q");
        db.consume_all("q", "c");
        su.query_one("select pgq.maint_rotate_tables_step1('q')", &[])
            .unwrap();
        current_table(db) != before
    });
    su.query_one("select pgq.maint_rotate_tables_step2()", &[])
        .unwrap();
}

/// The table each event (by ev_data) sits in.
fn tables_of(db: &TestDb) -> Vec<(String, String)> {
    let mut c = db.conn();
    let pfx: String = c
        .query_one(
            "select queue_data_pfx from pgq.queue where queue_name = 'q'",
            &[],
        )
        .unwrap()
        .get(0);
    c.query(
        format!("select ev_data, tableoid::regclass::text from {pfx} order by ev_id").as_str(),
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

fn current_table(db: &TestDb) -> String {
    db.conn()
        .query_one(
            "select queue_data_pfx || '_' || queue_cur_table from pgq.queue where queue_name = 'q'",
            &[],
        )
        .unwrap()
        .get(0)
}

both_backends! {
    fn pooled_sends_follow_rotation(db: &TestDb) {
        setup(db);
        // One pooled connection, so the second round reuses what the first one learnt.
        let client = db.new_client(1);
        let t0 = current_table(db);
        client.send("q", &NewEvent::new("t", "a1")).unwrap();
        client.send_many("q", &[NewEvent::new("t", "a2"), NewEvent::new("t", "a3")]).unwrap();
        // Two rotations, so the remembered table is neither current nor the previous one.
        rotate(db);
        let t1 = current_table(db);
        assert_ne!(t0, t1, "rotated");
        client.send("q", &NewEvent::new("t", "b1")).unwrap();
        rotate(db);
        let t2 = current_table(db);
        assert_ne!(t1, t2, "rotated again");
        client.send("q", &NewEvent::new("t", "c1")).unwrap();
        client.send_many("q", &[NewEvent::new("t", "c2"), NewEvent::new("t", "c3")]).unwrap();
        let where_: Vec<(String, String)> = tables_of(db)
            .into_iter()
            .filter(|(d, _)| d.starts_with('c'))
            .collect();
        assert_eq!(
            where_,
            ["c1", "c2", "c3"].map(|d| (d.to_string(), t2.clone())),
            "events after the rotation are in the new current table"
        );
        db.tick("q");
        assert_eq!(datas(&db.consume_all("q", "c")), ["c1", "c2", "c3"]);
    }

    fn send_many_splits_big_sends_in_one_transaction(db: &TestDb) {
        setup(db);
        let events: Vec<NewEvent> =
            (0..12_001).map(|i| NewEvent::new("bulk", i.to_string())).collect();
        assert_eq!(db.client.send_many("q", &events).unwrap(), 12_001);
        let txids: i64 = db
            .conn()
            .query_one(
                format!(
                    "select count(distinct ev_txid) from {}",
                    current_table(db)
                )
                .as_str(),
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(txids, 1, "one transaction");
        db.tick("q");
        let got = db.consume_all("q", "c");
        assert_eq!(got.len(), 12_001);
        assert!(got.windows(2).all(|w| w[0].id < w[1].id), "ids increase in send order");
        assert_eq!(
            datas(&got),
            (0..12_001).map(|i| i.to_string()).collect::<Vec<_>>()
        );
    }

    fn per_transaction_limit_still_applies_to_send(db: &TestDb) {
        setup(db);
        db.superuser()
            .execute("update pgq.queue set queue_per_tx_limit = 1 where queue_name = 'q'", &[])
            .unwrap();
        db.client.send("q", &NewEvent::new("t", "one")).unwrap();
        db.client.send("q", &NewEvent::new("t", "two")).unwrap();
        let mut conn = db.conn();
        let mut tx = conn.transaction().unwrap();
        pgq::producer::insert_event(&mut tx, "q", &NewEvent::new("t", "x")).unwrap();
        let e = pgq::producer::insert_event(&mut tx, "q", &NewEvent::new("t", "y")).unwrap_err();
        assert!(e.to_string().contains("allows max 1 events"), "{e}");
        drop(tx);
        db.tick("q");
        assert_eq!(datas(&db.consume_all("q", "c")), ["one", "two"]);
    }
}

/// On our schema `Client::send` does not call `pgq.insert_event` at all (it inserts into the
/// table directly); a queue with a per-transaction limit still goes through the function.
/// Counted with the server's function statistics.
#[test]
fn send_inserts_directly_on_our_schema() {
    let db = TestDb::new(common::Backend::Ours);
    setup(&db);
    db.client.create_queue("limited").unwrap();
    let mut su = db.superuser();
    su.batch_execute(&format!(
        "alter database \"{}\" set track_functions = 'pl'; \
         update pgq.queue set queue_per_tx_limit = 10 where queue_name = 'limited'",
        db.name
    ))
    .unwrap();
    // A new pool: its sessions start with the setting.
    let client = db.new_client(1);
    for i in 0..10 {
        client
            .send("q", &NewEvent::new("t", i.to_string()))
            .unwrap();
    }
    client.send_many("q", &[NewEvent::new("t", "m")]).unwrap();
    client
        .send("limited", &NewEvent::new("t", "via insert_event"))
        .unwrap();
    // The session's statistics reach the server when it goes idle (within about a second).
    let calls = || pgq_function_calls(&mut db.conn(), "insert_event");
    common::wait_until(
        "insert_event's call to be counted",
        Duration::from_secs(20),
        || calls() >= 1,
    );
    assert_eq!(
        calls(),
        1,
        "only the limited queue's event went through pgq.insert_event"
    );
    db.tick("q");
    assert_eq!(db.consume_all("q", "c").len(), 11);
}

/// Rotation step 2 waits while a session holds a snapshot taken before step 1 (a writer
/// with such a snapshot may still insert into the old table): libpgq's schema only.
#[test]
fn step2_waits_for_snapshots_older_than_step1() {
    let db = TestDb::new(common::Backend::Ours);
    setup(&db);
    let step2 = |c: &mut postgres::Client| -> Option<i64> {
        c.query_one("select pgq.maint_rotate_tables_step2()", &[])
            .unwrap();
        c.query_one(
            "select queue_switch_step2 from pgq.queue where queue_name = 'q'",
            &[],
        )
        .unwrap()
        .get(0)
    };
    let t0 = current_table(&db);
    let mut old = db.conn();
    let mut old_tx = old
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .start()
        .unwrap();
    // The snapshot, taken by a first query.
    old_tx.query_one("select 1", &[]).unwrap();
    let mut su = db.superuser();
    su.execute(
        "update pgq.queue set queue_rotation_period = '0' where queue_name = 'q'",
        &[],
    )
    .unwrap();
    common::wait_until("step 1 to switch tables", Duration::from_secs(20), || {
        db.tick("q");
        db.consume_all("q", "c");
        su.query_one("select pgq.maint_rotate_tables_step1('q')", &[])
            .unwrap();
        current_table(&db) != t0
    });
    assert_eq!(step2(&mut su), None, "an older snapshot is still there");
    assert_eq!(step2(&mut su), None, "still there");
    old_tx.commit().unwrap();
    assert!(
        step2(&mut su).is_some(),
        "recorded once the snapshot is gone"
    );
}

/// A lease from `pgq._direct_lease` (schema revision 9): `(table, from, until)`.
fn lease(c: &mut impl postgres::GenericClient) -> Option<(String, i64, i64)> {
    c.query_opt(
        "select table_name, lease_from, lease_until from pgq._direct_lease('q')",
        &[],
    )
    .unwrap()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
}

/// Inserts one event as `Client::send` does with a lease; whether it went in.
fn leased_insert(
    c: &mut postgres::Client,
    (table, from, until): &(String, i64, i64),
    data: &str,
) -> bool {
    c.query_opt(
        format!(
            "insert into {table} (ev_type, ev_data) select 't', $1::text \
              where pg_catalog.txid_current() >= $2::int8 and pg_catalog.txid_current() < $3::int8 \
             returning ev_id"
        )
        .as_str(),
        &[&data, from, until],
    )
    .unwrap()
    .is_some()
}

/// A direct producer's lease ends with the commit of anything that changes where or whether
/// it may insert: a rotation (step 1), `queue_disable_insert` (also when a replaying session
/// sets it), `queue_per_tx_limit`. Other settings leave it alone.
#[test]
fn leases_end_when_the_queue_changes() {
    let db = TestDb::new(common::Backend::Ours);
    setup(&db);
    let mut c = db.conn();
    let mut su = db.superuser();
    let t0 = current_table(&db);

    let l0 = lease(&mut c).expect("a lease");
    assert_eq!(l0.0, t0);
    assert!(l0.2 > l0.1, "{l0:?}");
    assert!(leased_insert(&mut c, &l0, "a"));
    db.client
        .set_queue_config("q", pgq::admin::QueueParam::TickerMaxCount(7))
        .unwrap();
    assert!(
        leased_insert(&mut c, &l0, "b"),
        "other settings keep the lease"
    );

    rotate(&db);
    assert!(
        !leased_insert(&mut c, &l0, "lost"),
        "a rotation ends the lease"
    );
    let l1 = lease(&mut c).expect("a new lease");
    assert_eq!(l1.0, current_table(&db));
    assert_ne!(l1.0, t0);
    assert!(leased_insert(&mut c, &l1, "c"));

    let mut tx = su.transaction().unwrap();
    tx.batch_execute(
        "set local session_replication_role = replica; \
         update pgq.queue set queue_disable_insert = true where queue_name = 'q'",
    )
    .unwrap();
    tx.commit().unwrap();
    assert!(
        !leased_insert(&mut c, &l1, "lost"),
        "disabling inserts ends the lease"
    );
    assert_eq!(lease(&mut c), None, "no lease while inserts are disabled");
    su.execute(
        "update pgq.queue set queue_disable_insert = false where queue_name = 'q'",
        &[],
    )
    .unwrap();

    let l2 = lease(&mut c).expect("a lease again");
    assert!(leased_insert(&mut c, &l2, "d"));
    su.execute(
        "update pgq.queue set queue_per_tx_limit = 5 where queue_name = 'q'",
        &[],
    )
    .unwrap();
    assert!(
        !leased_insert(&mut c, &l2, "lost"),
        "a per-transaction limit ends the lease"
    );
    assert_eq!(lease(&mut c), None);

    db.tick("q");
    assert_eq!(datas(&db.consume_all("q", "c")), ["c", "d"]);
}

/// Ending leases costs transaction ids (a span of them, `pgq._direct_lease_span()`): only
/// an UPDATE that changes a queue's table or insert rules pays it, once per statement however
/// many queues it changes.
#[test]
fn leases_end_once_per_changing_statement() {
    let db = TestDb::new(common::Backend::Ours);
    setup(&db);
    db.client.create_queue("q2").unwrap();
    let mut su = db.superuser();
    let span: i64 = su
        .query_one("select pgq._direct_lease_span()", &[])
        .unwrap()
        .get(0);
    let mut ids_used_by = |sql: &str| -> i64 {
        let before: i64 = su.query_one("select txid_current()", &[]).unwrap().get(0);
        su.batch_execute(sql).unwrap();
        let after: i64 = su.query_one("select txid_current()", &[]).unwrap().get(0);
        after - before
    };
    let other = ids_used_by(
        "update pgq.queue set queue_ticker_max_count = 7, queue_disable_insert = false",
    );
    assert!(
        other < span / 2,
        "{other} ids for a change that ends no lease"
    );
    let both = ids_used_by("update pgq.queue set queue_disable_insert = true");
    assert!(
        (span..2 * span).contains(&both),
        "{both} ids for one statement that changes two queues (span {span})"
    );
    let one = ids_used_by("select pgq.set_queue_config('q', 'ticker_max_count', '8')");
    assert!(
        one < span / 2,
        "{one} ids for set_queue_config of another setting"
    );
}

/// A lease is never granted from a queue row whose change is still in progress: the lookup
/// waits for it and answers from the committed row. A lookup holds no lock afterwards, even
/// inside a transaction that stays open.
#[test]
fn lease_lookups_wait_for_changes_and_hold_nothing() {
    let db = TestDb::new(common::Backend::Ours);
    setup(&db);
    let mut su = db.superuser();
    let mut change = su.transaction().unwrap();
    change
        .execute(
            "update pgq.queue set queue_disable_insert = true where queue_name = 'q'",
            &[],
        )
        .unwrap();
    let mut looker = db.conn();
    let pid: i32 = looker
        .query_one("select pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    std::thread::scope(|s| {
        let lookup = s.spawn(move || lease(&mut looker));
        let mut watch = db.conn();
        let waiting = |watch: &mut postgres::Client| {
            watch
                .query_one(
                    "select coalesce(bool_or(wait_event_type = 'Lock'), false) \
                       from pg_stat_activity where pid = $1",
                    &[&pid],
                )
                .unwrap()
                .get::<_, bool>(0)
        };
        common::wait_until(
            "the lookup to wait for the change (or to answer)",
            Duration::from_secs(20),
            || lookup.is_finished() || waiting(&mut watch),
        );
        assert!(
            !lookup.is_finished(),
            "the lookup answered without waiting for the change: {:?}",
            lookup.join()
        );
        change.commit().unwrap();
        assert_eq!(
            lookup.join().unwrap(),
            None,
            "the lookup answered from the committed change"
        );
    });

    su.execute(
        "update pgq.queue set queue_disable_insert = false where queue_name = 'q'",
        &[],
    )
    .unwrap();
    let mut c = db.conn();
    let mut open = c.transaction().unwrap();
    assert!(lease(&mut open).is_some());
    su.batch_execute(
        "set lock_timeout = '5s'; \
         update pgq.queue set queue_ticker_max_count = 9, queue_cur_table = queue_cur_table \
          where queue_name = 'q'; \
         update pgq.queue set queue_disable_insert = true where queue_name = 'q'",
    )
    .expect("the queue row is not locked by the lookup's open transaction");
    open.commit().unwrap();
}

both_backends! {
    fn pooled_sends_survive_a_queue_dropped_and_made_again(db: &TestDb) {
        setup(db);
        let client = db.new_client(1);
        client.send("q", &NewEvent::new("t", "old")).unwrap();
        client.send_many("q", &[NewEvent::new("t", "old2")]).unwrap();
        db.client.drop_queue("q", true).unwrap();
        db.client.create_queue("q").unwrap();
        db.client.register_consumer("q", "c").unwrap();
        // The connection remembers a table that is gone now: a send in several chunks first,
        // then single ones.
        let many: Vec<NewEvent> = (0..6000).map(|i| NewEvent::new("m", i.to_string())).collect();
        assert_eq!(client.send_many("q", &many).unwrap(), 6000);
        client.send("q", &NewEvent::new("t", "new1")).unwrap();
        client.send_many("q", &[NewEvent::new("t", "new2"), NewEvent::new("t", "new3")]).unwrap();
        client.send("q", &NewEvent::new("t", "new4")).unwrap();
        db.tick("q");
        let got = datas(&db.consume_all("q", "c"));
        assert_eq!(got.len(), 6004);
        assert_eq!(got[..6000], (0..6000).map(|i| i.to_string()).collect::<Vec<_>>()[..]);
        assert_eq!(got[6000..], ["new1", "new2", "new3", "new4"]);
    }
}

/// Makes every event inserted into `queue`'s tables carry the inserting backend's pid in
/// `ev_extra4` (a trigger on each event table).
fn record_inserting_backend(db: &TestDb, queue: &str) {
    let mut su = db.superuser();
    let (pfx, ntables): (String, i32) = {
        let r = su
            .query_one(
                "select queue_data_pfx, queue_ntables from pgq.queue where queue_name = $1",
                &[&queue],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    su.batch_execute(
        "create or replace function public.record_backend() returns trigger \
         language plpgsql as $$ begin \
             new.ev_extra4 := pg_catalog.pg_backend_pid()::text; return new; end $$",
    )
    .unwrap();
    for n in 0..ntables {
        su.batch_execute(&format!(
            "create trigger record_backend before insert on {pfx}_{n} \
             for each row execute function public.record_backend()"
        ))
        .unwrap();
    }
}

/// Runs `body(t)` on `n` threads at once, `t` = 0..n, and waits for all of them.
fn in_threads(n: usize, body: impl Fn(usize) + Sync) {
    std::thread::scope(|s| {
        for t in 0..n {
            let body = &body;
            s.spawn(move || body(t));
        }
    });
}

both_backends! {
    /// Threads that share a client and send in turns each keep talking to one server
    /// backend (the connection a thread used is kept for it between sends).
    fn sending_threads_keep_their_connections(db: &TestDb) {
        setup(db);
        record_inserting_backend(db, "q");
        const THREADS: usize = 4;
        const WARM_UP: usize = 5;
        const ROUNDS: usize = 60;
        let client = db.new_client(THREADS as u32);
        let barrier = std::sync::Barrier::new(THREADS);
        in_threads(THREADS, |t| {
            for r in 0..ROUNDS {
                barrier.wait();
                client
                    .send("q", &NewEvent::new(format!("t{t}"), r.to_string()))
                    .unwrap();
            }
        });
        db.tick("q");
        let events = db.consume_all("q", "c");
        assert_eq!(events.len(), THREADS * ROUNDS);
        for t in 0..THREADS {
            let mut per_backend = std::collections::HashMap::<String, usize>::new();
            for ev in &events {
                let round: usize = ev.data.as_deref().unwrap().parse().unwrap();
                if ev.ev_type.as_deref() == Some(format!("t{t}").as_str()) && round >= WARM_UP {
                    *per_backend.entry(ev.extra4.clone().unwrap()).or_default() += 1;
                }
            }
            let most = per_backend.values().copied().max().unwrap();
            // All of them but for a stall of more than a second on a loaded machine.
            assert!(
                most * 10 >= (ROUNDS - WARM_UP) * 9,
                "thread {t} sent through these backends: {per_backend:?}"
            );
        }
    }

    /// Connections kept for their threads go back to the pool within about a second when
    /// the client goes quiet, so r2d2's idle handling applies to them again.
    fn kept_connections_go_back_to_the_pool(db: &TestDb) {
        setup(db);
        let client = db.new_client(4);
        in_threads(4, |t| {
            for i in 0..20 {
                client.send("q", &NewEvent::new("t", format!("{t}.{i}"))).unwrap();
            }
        });
        common::wait_until(
            "every connection idle in the pool",
            Duration::from_secs(20),
            || {
                let state = client.pool().state();
                state.idle_connections == state.connections
            },
        );
        assert!(client.pool().state().connections >= 1);
    }

    /// A connection kept for one thread is lent to another that needs one: with a pool of
    /// one, another thread gets it at once (not after the kept time), and threads sending
    /// at once through that one connection all get through.
    fn a_kept_connection_goes_to_whoever_needs_it(db: &TestDb) {
        setup(db);
        let client = pgq::ClientBuilder::from_config(db.config.clone())
            .pool_size(1)
            .min_idle(0)
            // Shorter than the time a connection is kept for its thread: a thread that had
            // to wait for it would fail.
            .connect_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        client.send("q", &NewEvent::new("t", "main")).unwrap();
        in_threads(1, |_| {
            let mut conn = client.get().unwrap();
            conn.batch_execute("select 1").unwrap();
        });
        client.send("q", &NewEvent::new("t", "main again")).unwrap();

        let client = pgq::ClientBuilder::from_config(db.config.clone())
            .pool_size(1)
            .min_idle(0)
            .build()
            .unwrap();
        in_threads(4, |t| {
            for i in 0..50 {
                client.send("q", &NewEvent::new("t", format!("{t}.{i}"))).unwrap();
                if i % 10 == 0 {
                    // A plain check-out in between.
                    client.get().unwrap().batch_execute("select 1").unwrap();
                }
            }
        });
        db.tick("q");
        assert_eq!(db.consume_all("q", "c").len(), 2 + 4 * 50);
    }
}

/// The pooled connections of one client share their insert lease and renew it shortly before
/// it ends: with four threads sending, the server is asked for a lease about once per span of
/// transaction ids, not once per span per connection. Counted with the server's function
/// statistics against the transaction ids the server used meanwhile (other tests' included).
#[test]
fn pooled_connections_share_their_insert_lease() {
    let db = TestDb::new(common::Backend::Ours);
    setup(&db);
    let mut su = db.superuser();
    su.batch_execute(&format!(
        "alter database \"{}\" set track_functions = 'pl'",
        db.name
    ))
    .unwrap();
    let span: i64 = su
        .query_one("select pgq._direct_lease_span()", &[])
        .unwrap()
        .get(0);
    let txid = |c: &mut postgres::Client| -> i64 {
        c.query_one("select txid_current()", &[]).unwrap().get(0)
    };
    let (threads, per_thread) = (4, 3000);
    let mut config = db.config.clone();
    config.application_name("lease-sharing");
    let client = pgq::ClientBuilder::from_config(config)
        .pool_size(threads)
        .min_idle(0)
        .build()
        .unwrap();
    let before = txid(&mut su);
    std::thread::scope(|s| {
        for t in 0..threads {
            let client = &client;
            s.spawn(move || {
                let p = pgq::Producer::new(client, "q").unwrap();
                for i in 0..per_thread {
                    p.send(&NewEvent::new("t", format!("{t}-{i}"))).unwrap();
                }
            });
        }
    });
    let used = txid(&mut su) - before;
    // The sessions report their statistics when they end.
    drop(client);
    let mut c = db.conn();
    common::wait_until(
        "the senders' sessions to end",
        Duration::from_secs(20),
        || {
            c.query_one(
                "select count(*) from pg_stat_activity where application_name = 'lease-sharing'",
                &[],
            )
            .unwrap()
            .get::<_, i64>(0)
                == 0
        },
    );
    let lookups = pgq_function_calls(&mut c, "_direct_lease");
    let events = i64::from(threads) * per_thread;
    assert!(used >= events, "{used} txids for {events} events");
    // Each connection renewing its own lease would take about `threads` lookups per span.
    let bound = i64::from(threads) + 2 * used / span;
    assert!(
        (1..=bound).contains(&lookups),
        "{lookups} lease lookups for {used} txids (span {span}); at most {bound} expected"
    );
    db.tick("q");
    assert_eq!(db.consume_all("q", "c").len() as i64, events);
}
