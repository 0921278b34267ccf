//! With autovacuum off, maint_tables_to_vacuum() and the vacuum part of maint_operations()
//! list the same tables on our schema as on the official extension, including those of PGQ
//! add-ons when present. Needs a cluster of its own: autovacuum is a server-wide setting.

mod common;

use std::str::FromStr;
use std::time::Duration;

use common::{wait_until, OwnCluster};

fn list(conn: &mut postgres::Client, sql: &str) -> Vec<String> {
    conn.query(sql, &[])
        .unwrap()
        .iter()
        .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
        .collect()
}

#[test]
fn vacuum_lists_match_the_reference_with_autovacuum_off() {
    let (_cluster, dsn) = OwnCluster::start("vacuum");
    let server = postgres::Config::from_str(&dsn).unwrap();
    let mut su = server.connect(postgres::NoTls).unwrap();
    su.batch_execute("alter system set autovacuum = off")
        .unwrap();
    su.batch_execute("select pg_reload_conf()").unwrap();
    wait_until("autovacuum off", Duration::from_secs(10), || {
        let mut c = server.connect(postgres::NoTls).unwrap();
        let v: String = c
            .query_one("select current_setting('autovacuum')", &[])
            .unwrap()
            .get(0);
        v == "off"
    });
    for role in ["pgq_reader", "pgq_writer", "pgq_admin"] {
        su.batch_execute(&format!("create role {role}")).unwrap();
    }

    let mut answers = Vec::new();
    for name in ["official", "ours"] {
        su.batch_execute(&format!("create database {name}"))
            .unwrap();
        let mut cfg = server.clone();
        cfg.dbname(name);
        let mut c = cfg.connect(postgres::NoTls).unwrap();
        if name == "official" {
            c.batch_execute("create extension pgq").unwrap();
        } else {
            pgq::schema::install(&mut c).unwrap();
        }
        c.batch_execute("select pgq.create_queue('q')").unwrap();
        let plain = list(&mut c, "select * from pgq.maint_tables_to_vacuum()");
        assert!(plain.contains(&"pgq.tick".to_string()), "{name}: {plain:?}");
        // Tables of the add-ons appear once they exist.
        c.batch_execute(
            "create schema pgq_ext; create table pgq_ext.completed_batch (x int);
             create schema londiste; create table londiste.completed (x int);",
        )
        .unwrap();
        let with_addons = list(&mut c, "select * from pgq.maint_tables_to_vacuum()");
        let ops = list(
            &mut c,
            "select func_arg from pgq.maint_operations() where func_name = 'vacuum'",
        );
        answers.push((name, plain, with_addons, ops));
    }
    let (_, plain_ref, addons_ref, ops_ref) = &answers[0];
    let (_, plain, addons, ops) = &answers[1];
    assert_eq!(plain, plain_ref);
    assert_eq!(addons, addons_ref);
    assert_eq!(ops, ops_ref);
    assert!(
        addons.contains(&"londiste.completed".to_string()),
        "{addons:?}"
    );
}
