//! Installing our schema: idempotent, all or nothing, concurrent installers, upgrading an
//! older install in place with queued events, consumers, open batches and retries intact,
//! refusing foreign and newer schemas, leaving the official extension alone, and the
//! security properties of what it installs.

mod common;

use std::time::Duration;

use common::{datas, Backend, TestDb};
use pgq::{Consumer, ErrorKind, InstallOutcome, NewEvent};

/// Every object in schema pgq with its definition, to show an install changed nothing.
fn schema_fingerprint(conn: &mut postgres::Client) -> String {
    conn.query_one(
        "select concat_ws(E'\\n',
            (select string_agg(p.oid::regprocedure::text || '=' || md5(p.prosrc)
                               || coalesce(array_to_string(p.proacl, ','), ''), E'\\n' order by 1)
               from pg_proc p where p.pronamespace = to_regnamespace('pgq')),
            (select string_agg(c.relname || ':' || c.relkind::text
                               || coalesce(array_to_string(c.relacl, ','), ''), E'\\n' order by 1)
               from pg_class c where c.relnamespace = to_regnamespace('pgq')),
            (select string_agg(e.extname || ' ' || e.extversion, ',') from pg_extension e
              where e.extname = 'pgq'))",
        &[],
    )
    .expect("fingerprint")
    .get::<_, Option<String>>(0)
    .unwrap_or_default()
}

/// Removes every trace of PGQ from the test database, leaving an empty one.
fn wipe(db: &TestDb) {
    db.superuser()
        .batch_execute("drop schema pgq cascade")
        .expect("drop schema pgq");
}

#[test]
fn install_fresh_then_again_is_a_no_op() {
    let db = TestDb::new(Backend::Ours);
    wipe(&db);
    let outcome = db.client.install().unwrap();
    assert_eq!(
        outcome,
        InstallOutcome::Installed {
            version: pgq::schema::SCHEMA_VERSION.to_string()
        }
    );
    let mut su = db.superuser();
    let before = schema_fingerprint(&mut su);
    for _ in 0..2 {
        assert_eq!(
            db.client.install().unwrap(),
            InstallOutcome::AlreadyCurrent {
                version: pgq::schema::SCHEMA_VERSION.to_string()
            }
        );
    }
    assert_eq!(schema_fingerprint(&mut su), before);
}

#[test]
fn concurrent_installers_install_once() {
    let db = TestDb::new(Backend::Ours);
    wipe(&db);
    let outcomes: Vec<InstallOutcome> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let client = db.new_client(1);
                s.spawn(move || client.install().expect("concurrent install"))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let installed = outcomes
        .iter()
        .filter(|o| matches!(o, InstallOutcome::Installed { .. }))
        .count();
    let current = outcomes
        .iter()
        .filter(|o| matches!(o, InstallOutcome::AlreadyCurrent { .. }))
        .count();
    assert_eq!((installed, current), (1, 3), "{outcomes:?}");
    db.client.create_queue("q").unwrap();
}

#[test]
fn failed_install_leaves_nothing_behind() {
    let db = TestDb::new(Backend::Ours);
    wipe(&db);
    // A view where the install expects to create (and then alter) the retry table: the
    // install gets most of the way, then fails, and must roll back completely.
    let mut su = db.superuser();
    su.batch_execute(
        "create schema pgq;
         create view pgq.retry_queue as select 1 as x;",
    )
    .unwrap();
    let before = schema_fingerprint(&mut su);
    let e = db.client.install().unwrap_err();
    assert!(
        e.to_string().contains("retry_queue"),
        "expected the install to trip over the view: {e}"
    );
    assert_eq!(schema_fingerprint(&mut su), before, "nothing may remain");
    let n: i64 = su
        .query_one(
            "select count(*) from pg_class where relnamespace = 'pgq'::regnamespace",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "only the view itself");
}

#[test]
fn upgrade_from_an_older_revision_keeps_everything() {
    let db = TestDb::new(Backend::Ours);
    let c = &db.client;
    c.create_queue("q").unwrap();
    for name in ["a", "b", "r"] {
        c.register_consumer("q", name).unwrap();
    }
    for d in ["e1", "e2", "e3"] {
        c.send("q", &NewEvent::new("t", d)).unwrap();
    }
    db.tick("q");
    // a: finished everything. b: holds an open batch. r: retries e2, due right away.
    assert_eq!(datas(&db.consume_all("q", "a")), ["e1", "e2", "e3"]);
    let b = Consumer::new(c, "q", "b").unwrap();
    let open = b.next_batch().unwrap().expect("batch for b");
    let open_id = open.id();
    drop(open);
    let r = Consumer::new(c, "q", "r").unwrap();
    let batch = r.next_batch().unwrap().expect("batch for r");
    for ev in batch.events() {
        let ev = ev.unwrap();
        if ev.data.as_deref() == Some("e2") {
            batch.retry(ev.id, Duration::ZERO);
        }
    }
    batch.finish().unwrap();
    // e4: inserted, not yet ticked.
    c.send("q", &NewEvent::new("t", "e4")).unwrap();

    // Make it look like an older libpgq revision: an older version row, a function that
    // did not exist yet, another with an older body.
    let mut su = db.superuser();
    su.batch_execute(
        "update pgq.libpgq_schema set version = '0';
         drop function pgq.get_batch_info(bigint);
         create or replace function pgq.version() returns text
             language sql as $$ select '3.5.0 (libpgq 0)' $$;",
    )
    .unwrap();
    let retries_before: i64 = su
        .query_one("select count(*) from pgq.retry_queue", &[])
        .unwrap()
        .get(0);
    assert_eq!(retries_before, 1);

    assert_eq!(
        c.install().unwrap(),
        InstallOutcome::Upgraded {
            from: "0".to_string(),
            to: pgq::schema::SCHEMA_VERSION.to_string()
        }
    );
    let v = c.version().unwrap().unwrap();
    assert!(
        v.contains(&format!("libpgq {}", pgq::schema::SCHEMA_VERSION)),
        "{v}"
    );
    // the function that was missing is back, and sees b's open batch
    let info = c
        .batch_info(open_id)
        .unwrap()
        .expect("b's batch is still open");
    assert_eq!(info.consumer_name, "b");

    // b gets the same open batch again, then e4 like everyone else
    let again = b.next_batch().unwrap().expect("b's open batch");
    assert_eq!(again.id(), open_id);
    let got: Vec<_> = again.events().map(|e| e.unwrap()).collect();
    assert_eq!(datas(&got), ["e1", "e2", "e3"]);
    again.finish().unwrap();
    // the retry comes back to r only
    assert_eq!(c.retry_events().unwrap(), 1);
    db.tick("q");
    assert_eq!(datas(&db.consume_all("q", "a")), ["e4"]);
    assert_eq!(datas(&db.consume_all("q", "b")), ["e4"]);
    let r_got = db.consume_all("q", "r");
    assert_eq!(datas(&r_got), ["e2", "e4"]);
    assert_eq!(r_got[0].retry, Some(1));
}

#[test]
fn newer_and_foreign_schemas_are_refused_unchanged() {
    let db = TestDb::new(Backend::Ours);
    db.client.create_queue("q").unwrap();
    let mut su = db.superuser();
    su.batch_execute("update pgq.libpgq_schema set version = '999'")
        .unwrap();
    let before = schema_fingerprint(&mut su);
    let e = db.client.install().unwrap_err();
    assert!(e.to_string().contains("newer"), "{e}");
    assert_eq!(schema_fingerprint(&mut su), before);

    // A pgq schema neither we nor CREATE EXTENSION made (the reference loaded as plain SQL).
    wipe(&db);
    su.batch_execute(
        "create schema pgq;
         create table pgq.queue (queue_id serial primary key, queue_name text);",
    )
    .unwrap();
    let before = schema_fingerprint(&mut su);
    let e = db.client.install().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Other, "{e}");
    assert!(e.to_string().contains("refusing"), "{e}");
    assert_eq!(schema_fingerprint(&mut su), before);
}

#[test]
fn official_extension_is_reported_and_left_alone() {
    let db = TestDb::new(Backend::Official);
    db.client.create_queue("q").unwrap();
    db.client.send("q", &NewEvent::new("t", "kept")).unwrap();
    let mut su = db.superuser();
    let before = schema_fingerprint(&mut su);
    match db.client.install().unwrap() {
        InstallOutcome::OfficialExtension { version } => assert!(!version.is_empty()),
        other => panic!("expected OfficialExtension, got {other:?}"),
    }
    assert_eq!(
        schema_fingerprint(&mut su),
        before,
        "install changed the extension"
    );
    let ours: bool = su
        .query_one("select to_regclass('pgq.libpgq_schema') is not null", &[])
        .unwrap()
        .get(0);
    assert!(!ours, "our version table must not appear");
    db.client.register_consumer("q", "c").unwrap();
    db.client.send("q", &NewEvent::new("t", "after")).unwrap();
    db.tick("q");
    // registration starts at the last tick, which "kept" came after
    assert_eq!(datas(&db.consume_all("q", "c")), ["kept", "after"]);
}

#[test]
fn owner_without_superuser_installs_upgrades_and_uses() {
    let db = TestDb::new_owner(Backend::Ours);
    let mut conn = db.conn();
    let (is_super, create_role): (bool, bool) = conn
        .query_one(
            "select rolsuper, rolcreaterole from pg_roles where rolname = current_user",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert!(!is_super && !create_role, "must run as a plain owner");
    let owner: String = conn
        .query_one(
            "select nspowner::regrole::text from pg_namespace where nspname = 'pgq'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(Some(owner.trim_matches('"')), db.role.as_deref());
    let c = &db.client;
    c.create_queue("q").unwrap();
    c.register_consumer("q", "c").unwrap();
    c.send("q", &NewEvent::new("t", "one")).unwrap();
    // the owner can upgrade its own install too
    conn.batch_execute("update pgq.libpgq_schema set version = '0'")
        .unwrap();
    assert!(matches!(
        c.install().unwrap(),
        InstallOutcome::Upgraded { .. }
    ));
    c.send_many("q", &[NewEvent::new("t", "two")]).unwrap();
    db.tick("q");
    c.maintenance().unwrap();
    assert_eq!(datas(&db.consume_all("q", "c")), ["one", "two"]);
}

/// Every SECURITY DEFINER function pins search_path, and PUBLIC cannot run the functions
/// that change state (only the pgq roles and the owner can).
#[test]
fn definer_functions_pin_search_path_and_are_not_public() {
    let db = TestDb::new(Backend::Ours);
    let mut conn = db.conn();
    let unpinned: Vec<String> = conn
        .query(
            "select p.oid::regprocedure::text from pg_proc p
              where p.pronamespace = 'pgq'::regnamespace and p.prosecdef
                and not exists (select 1 from unnest(p.proconfig) c
                                 where c like 'search\\_path=%')
              order by 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        unpinned.is_empty(),
        "SECURITY DEFINER without search_path: {unpinned:?}"
    );
    let public_writers: Vec<String> = conn
        .query(
            "select p.oid::regprocedure::text from pg_proc p
              where p.pronamespace = 'pgq'::regnamespace
                and p.proname in ('create_queue', 'drop_queue', 'insert_event',
                    'insert_event_raw', 'register_consumer', 'next_batch', 'finish_batch',
                    'ticker', 'maint_rotate_tables_step1', 'set_queue_config')
                and has_function_privilege('public', p.oid, 'execute')
              order by 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        public_writers.is_empty(),
        "PUBLIC may execute {public_writers:?}"
    );
}
