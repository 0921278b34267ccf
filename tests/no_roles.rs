//! A database owner on a cluster where the pgq roles do not exist and who may not create
//! them (a managed PostgreSQL, say): the install still works and the owner uses the queues;
//! once an administrator creates the roles, installing again grants them their privileges.
//! Runs on a private cluster, since the shared test server has the roles.

mod common;

use std::str::FromStr;

use common::{datas, OwnCluster};
use pgq::{InstallOutcome, NewEvent};

fn roles(su: &mut postgres::Client) -> i64 {
    su.query_one(
        "select count(*) from pg_roles where rolname in ('pgq_reader', 'pgq_writer', 'pgq_admin')",
        &[],
    )
    .unwrap()
    .get(0)
}

#[test]
fn owner_without_createrole_installs_and_roles_get_grants_later() {
    let (_cluster, dsn) = OwnCluster::start("noroles");
    let server = postgres::Config::from_str(&dsn).unwrap();
    let mut su = server.connect(postgres::NoTls).unwrap();
    su.batch_execute("create role app login nosuperuser nocreaterole nocreatedb")
        .unwrap();
    su.batch_execute("create database app owner app").unwrap();
    let mut cfg = server.clone();
    cfg.dbname("app").user("app");
    let client = pgq::ClientBuilder::from_config(cfg)
        .pool_size(2)
        .min_idle(0)
        .build()
        .unwrap();

    assert!(matches!(
        client.install().unwrap(),
        InstallOutcome::Installed { .. }
    ));
    assert_eq!(roles(&mut su), 0, "the owner could not have created them");
    client.create_queue("q").unwrap();
    client.register_consumer("q", "c").unwrap();
    client.send("q", &NewEvent::new("t", "one")).unwrap();
    client.send_many("q", &[NewEvent::new("t", "two")]).unwrap();
    client.force_tick("q").unwrap();
    client.tick_queue("q").unwrap();
    client.retry_events().unwrap();
    client.maintenance().unwrap();
    assert_eq!(
        datas(&common::consume_all(&client, "q", "c")),
        ["one", "two"]
    );

    // An administrator adds the roles and a reader login; the next install grants them.
    su.batch_execute(
        "create role pgq_reader nologin; create role pgq_writer nologin;
         create role pgq_admin nologin; create role reader login in role pgq_reader;",
    )
    .unwrap();
    let mut rcfg = server.clone();
    rcfg.dbname("app").user("reader");
    let reader = pgq::ClientBuilder::from_config(rcfg)
        .pool_size(2)
        .min_idle(0)
        .build()
        .unwrap();
    client.send("q", &NewEvent::new("t", "three")).unwrap();
    client.force_tick("q").unwrap();
    client.tick_queue("q").unwrap();
    let denied = common::try_consume_all(&reader, "q", "c");
    assert_eq!(
        denied.unwrap_err().kind(),
        pgq::ErrorKind::PermissionDenied,
        "before the grants"
    );
    assert!(matches!(
        client.install().unwrap(),
        InstallOutcome::AlreadyCurrent { .. }
    ));
    assert_eq!(
        datas(&common::consume_all(&reader, "q", "c")),
        ["three"],
        "after the grants"
    );
}
