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
            (select string_agg(x, E'\\n' order by x) from (
                select p.oid::regprocedure::text || '=' || md5(p.prosrc)
                       || coalesce(array_to_string(p.proacl, ','), '') as x
                  from pg_proc p where p.pronamespace = to_regnamespace('pgq')) f),
            (select string_agg(x, E'\\n' order by x) from (
                select c.relname || ':' || c.relkind::text
                       || coalesce(array_to_string(c.relacl, ','), '')
                       || coalesce(array_to_string(c.reloptions, ','), '') as x
                  from pg_class c where c.relnamespace = to_regnamespace('pgq')) r),
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

    // Make it look like an older libpgq revision: an older version row, constraints named
    // as revision 1 named them (one missing), a function that did not exist yet, another
    // with an older body.
    let mut su = db.superuser();
    su.batch_execute(
        "update pgq.libpgq_schema set version = '0';
         alter table pgq.retry_queue rename constraint rq_pkey to retry_queue_pkey;
         alter table pgq.retry_queue drop constraint rq_queue_id_fkey;
         alter table pgq.consumer rename constraint consumer_name_uq to consumer_co_name_key;
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
    let names: Vec<String> = su
        .query(
            "select conname::text from pg_constraint
              where conrelid in ('pgq.retry_queue'::regclass, 'pgq.consumer'::regclass)
                and contype in ('p', 'u', 'f') order by 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        names,
        [
            "consumer_name_uq",
            "consumer_pkey",
            "rq_pkey",
            "rq_queue_id_fkey"
        ]
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

/// `pgqctl schema` output (pgq::schema::sql) installs the same schema when fed to psql, and
/// feeding it again over an install with queued events keeps them.
#[test]
fn printed_schema_installs_with_psql() {
    let db = TestDb::new(Backend::Ours);
    wipe(&db);
    let host = match db.config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        other => panic!("the tests expect a TCP server, got {other:?}"),
    };
    let port = db.config.get_ports().first().copied().unwrap_or(5432);
    let run_psql = || {
        let psql = if std::path::Path::new("/usr/lib/postgresql/15/bin/psql").exists() {
            "/usr/lib/postgresql/15/bin/psql"
        } else {
            "psql"
        };
        let mut child = std::process::Command::new(psql)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
            .env("PGHOST", &host)
            .env("PGPORT", port.to_string())
            .env("PGUSER", db.config.get_user().unwrap_or("postgres"))
            .env("PGDATABASE", &db.name)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run psql");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(pgq::schema::sql().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run_psql();
    assert_eq!(
        db.client.install().unwrap(),
        InstallOutcome::AlreadyCurrent {
            version: pgq::schema::SCHEMA_VERSION.to_string()
        }
    );
    db.client.create_queue("q").unwrap();
    db.client.register_consumer("q", "c").unwrap();
    db.client.send("q", &NewEvent::new("t", "kept")).unwrap();
    run_psql();
    db.tick("q");
    assert_eq!(datas(&db.consume_all("q", "c")), ["kept"]);
}

/// A database installed with libpgq's first released schema (tests/fixtures/schema-rev1.sql)
/// and in use (queued, retried, unticked events, an open batch) upgrades to this revision
/// with everything intact: the real upgrade path users take.
#[test]
fn upgrade_from_revision_1_keeps_everything() {
    let db = TestDb::new(Backend::Ours);
    wipe(&db);
    let mut su = db.superuser();
    su.batch_execute(include_str!("fixtures/schema-rev1.sql"))
        .expect("install revision 1");
    // One statement per transaction (a multi-statement string would be one transaction,
    // and a tick cannot see events of its own transaction).
    for sql in [
        "select pgq.create_queue('q')",
        "select pgq.register_consumer('q', 'a')",
        "select pgq.register_consumer('q', 'b')",
        "select pgq.insert_event('q', 't', 'e' || i) from generate_series(1, 5) i",
        "select pgq.force_tick('q')",
        "select pgq.ticker('q')",
    ] {
        su.batch_execute(sql).unwrap();
    }
    let a_batch: i64 = su
        .query_one("select pgq.next_batch('q', 'a')", &[])
        .unwrap()
        .get(0);
    let retried: i64 = su
        .query_one(
            "select ev_id from pgq.get_batch_events($1) where ev_data = 'e2'",
            &[&a_batch],
        )
        .unwrap()
        .get(0);
    su.execute("select pgq.event_retry($1, $2, 0)", &[&a_batch, &retried])
        .unwrap();
    su.execute("select pgq.finish_batch($1)", &[&a_batch])
        .unwrap();
    let b_batch: i64 = su
        .query_one("select pgq.next_batch('q', 'b')", &[])
        .unwrap()
        .get(0);
    su.batch_execute("select pgq.insert_event('q', 't', 'late')")
        .unwrap();
    // Older than whatever revision this library is (the lead bumps it at release).
    su.batch_execute("update pgq.libpgq_schema set version = '0'")
        .unwrap();

    let outcome = db.client.install().unwrap();
    assert!(
        matches!(outcome, InstallOutcome::Upgraded { .. }),
        "{outcome:?}"
    );
    let c = &db.client;
    let b = Consumer::new(c, "q", "b").unwrap();
    let again = b.next_batch().unwrap().expect("b's open batch");
    assert_eq!(again.id(), b_batch);
    let got: Vec<_> = again.events().map(|e| e.unwrap()).collect();
    assert_eq!(datas(&got), ["e1", "e2", "e3", "e4", "e5"]);
    again.finish().unwrap();
    assert_eq!(c.retry_events().unwrap(), 1);
    db.tick("q");
    let a_got = db.consume_all("q", "a");
    assert_eq!(datas(&a_got), ["e2", "late"]);
    assert_eq!(a_got[0].retry, Some(1));
    assert_eq!(datas(&db.consume_all("q", "b")), ["late"]);
    // and it is the current schema now: a fresh install would look the same
    let fresh = TestDb::new(Backend::Ours);
    let mut fresh_su = fresh.superuser();
    fresh.client.create_queue("q").unwrap();
    let shape = |conn: &mut postgres::Client| -> String {
        conn.query_one(
            "select string_agg(conname, ',' order by conname) from pg_constraint
              where connamespace = 'pgq'::regnamespace",
            &[],
        )
        .unwrap()
        .get(0)
    };
    assert_eq!(shape(&mut su), shape(&mut fresh_su));
    let funcs = |conn: &mut postgres::Client| -> String {
        conn.query_one(
            "select string_agg(oid::regprocedure::text || md5(prosrc), ','
                               order by oid::regprocedure::text)
               from pg_proc where pronamespace = 'pgq'::regnamespace",
            &[],
        )
        .unwrap()
        .get(0)
    };
    assert_eq!(funcs(&mut su), funcs(&mut fresh_su));
}
