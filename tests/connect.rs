//! Connecting from a DSN: key=value and URL forms, several hosts (the first unreachable),
//! and clear `Connect` errors for a malformed DSN, an unreachable server, an unknown
//! database and an unknown user.

mod common;

use std::time::Duration;

use common::{Backend, TestDb};
use pgq::{Client, ErrorKind};

fn host_port(db: &TestDb) -> (String, u16) {
    let host = match db.config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        other => panic!("the tests expect a TCP server, got {other:?}"),
    };
    (host, db.config.get_ports().first().copied().unwrap_or(5432))
}

fn user(db: &TestDb) -> String {
    db.config.get_user().unwrap_or("postgres").to_string()
}

fn works(client: &Client) {
    let v = client.version().unwrap().expect("pgq.version()");
    assert!(v.starts_with("3."), "{v}");
}

#[test]
fn key_value_url_and_several_hosts() {
    let db = TestDb::new(Backend::Ours);
    let (host, port) = host_port(&db);
    let user = user(&db);
    let name = &db.name;

    works(
        &Client::connect(&format!(
            "host={host} port={port} user={user} dbname={name}"
        ))
        .unwrap(),
    );
    works(&Client::connect(&format!("postgresql://{user}@{host}:{port}/{name}")).unwrap());
    works(
        &Client::connect(&format!(
            "postgres://{user}@{host}:{port}/{name}?application_name=pgq_test&connect_timeout=5"
        ))
        .unwrap(),
    );
    // Several hosts: the first refuses connections (port 1), the second is the server.
    works(
        &Client::builder(&format!(
            "host={host},{host} port=1,{port} user={user} dbname={name}"
        ))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap(),
    );
    works(
        &Client::connect(&format!(
            "postgresql://{user}@{host}:1,{host}:{port}/{name}"
        ))
        .unwrap(),
    );
}

#[test]
fn connection_failures_are_clear() {
    let db = TestDb::new(Backend::Ours);
    let (host, port) = host_port(&db);
    let user = user(&db);
    let cases = [
        (
            "malformed",
            "host=127.0.0.1 port=notanumber".to_string(),
            "invalid",
        ),
        ("malformed URL", "postgresql://[::1".to_string(), "invalid"),
        (
            "unreachable",
            format!("host={host} port=1 user={user} dbname=x connect_timeout=5"),
            "cannot connect",
        ),
        (
            "unknown database",
            format!("host={host} port={port} user={user} dbname=no_such_db_for_pgq"),
            "no_such_db_for_pgq",
        ),
        (
            "unknown user",
            format!(
                "host={host} port={port} user=no_such_user_for_pgq dbname={}",
                db.name
            ),
            "no_such_user_for_pgq",
        ),
    ];
    for (what, dsn, needle) in cases {
        let e = Client::connect(&dsn).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connect, "{what}: {e}");
        assert!(e.to_string().contains(needle), "{what}: {e}");
    }
}
