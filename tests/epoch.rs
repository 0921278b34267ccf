//! 64-bit txids across an xid epoch boundary, on both backends.
//!
//! PGQ compares txids and snapshots as 64-bit values (epoch << 32 | xid). This test makes its
//! own throwaway cluster, freezes it and moves it with `pg_resetwal -e 7 -x 2^32-32768` to
//! just before the end of epoch 7, so every txid is far above 2^32 and, halfway through, the
//! 32-bit xid wraps and the epoch becomes 8. Producing, ticking, consuming, a transaction
//! open across the wrap, and a rotation must all keep working on our schema and on the
//! official extension.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

use common::datas;
use pgq::{Client, NewEvent};

const EPOCH: i64 = 7;
/// The first xid of a pg_xact page (32768 xids each), 32768 xids before the wrap: starting
/// on a page boundary lets the server create the commit-log page it needs.
const START_XID: i64 = (1 << 32) - 32768;

fn bindir() -> PathBuf {
    match std::env::var_os("PG_BINDIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from("/usr/lib/postgresql/15/bin"),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a server program as the cluster's OS user, as scripts/pg-cluster.sh does.
fn as_owner(program: &str, args: &[&str]) {
    let path = bindir().join(program);
    let mut cmd = if is_root() {
        let user = std::env::var("PGQ_CLUSTER_USER").unwrap_or_else(|_| "postgres".into());
        let mut c = Command::new("runuser");
        c.args(["-u", &user, "--"]).arg(&path);
        c
    } else {
        Command::new(&path)
    };
    let out = cmd
        .args(args)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", path.display()));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private cluster, stopped and removed when dropped.
struct Cluster {
    dir: PathBuf,
    script: PathBuf,
}

impl Cluster {
    fn pg_cluster(&self, action: &str) -> String {
        let out = Command::new(&self.script)
            .arg(action)
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/pg-cluster.sh");
        assert!(out.status.success(), "pg-cluster.sh {action} failed");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A fresh cluster moved to epoch `EPOCH`, xid `START_XID`; returns it and its DSN.
    fn start_near_wrap() -> (Cluster, String) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("pgq-epoch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cluster = Cluster {
            dir,
            script: root.join("scripts/pg-cluster.sh"),
        };
        let dsn = cluster.pg_cluster("start");
        // Every row initdb made must be frozen, or it would look like it came from the
        // future once the xid counter jumps (template0 is frozen by initdb and closed).
        for db in ["postgres", "template1"] {
            let mut cfg = postgres::Config::from_str(&dsn).unwrap();
            cfg.dbname(db);
            let mut c = cfg.connect(postgres::NoTls).expect("connect");
            c.batch_execute("vacuum freeze").expect("vacuum freeze");
        }
        let dir = cluster.dir.to_string_lossy().into_owned();
        as_owner(
            "pg_ctl",
            &["stop", "-D", &dir, "-m", "fast", "-w", "-t", "60"],
        );
        let epoch = EPOCH.to_string();
        let xid = START_XID.to_string();
        as_owner("pg_resetwal", &["-e", &epoch, "-x", &xid, &dir]);
        let dsn = cluster.pg_cluster("start");
        (cluster, dsn)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Side {
    name: &'static str,
    config: postgres::Config,
    client: Client,
}

impl Side {
    fn conn(&self) -> postgres::Client {
        self.config.connect(postgres::NoTls).expect("connect")
    }

    fn tick(&self) {
        let mut c = self.client.get().unwrap();
        pgq::ticker::force_tick(&mut *c, "q").unwrap();
        pgq::ticker::tick_queue(&mut *c, "q")
            .unwrap()
            .expect("tick");
    }

    fn consume(&self) -> Vec<String> {
        datas(&common::consume_all(&self.client, "q", "c"))
    }
}

fn txid(conn: &mut postgres::Client) -> i64 {
    conn.query_one("select txid_current()", &[]).unwrap().get(0)
}

#[test]
fn produce_tick_consume_across_an_xid_epoch_wrap() {
    let (_cluster, dsn) = Cluster::start_near_wrap();
    let server = postgres::Config::from_str(&dsn).unwrap();
    let mut su = server.connect(postgres::NoTls).expect("connect");
    assert_eq!(txid(&mut su) >> 32, EPOCH, "pg_resetwal -e took effect");
    for role in ["pgq_reader", "pgq_writer", "pgq_admin"] {
        su.batch_execute(&format!("create role {role}")).unwrap();
    }

    let mut sides = Vec::new();
    for name in ["ours", "official"] {
        su.batch_execute(&format!("create database {name}"))
            .unwrap();
        let mut config = server.clone();
        config.dbname(name);
        if name == "official" {
            let mut c = config.connect(postgres::NoTls).unwrap();
            c.batch_execute("create extension pgq").unwrap();
        }
        let client = pgq::ClientBuilder::from_config(config.clone())
            .pool_size(4)
            .min_idle(0)
            .build()
            .unwrap();
        if name == "ours" {
            client.install().unwrap();
        }
        client.create_queue("q").unwrap();
        client.register_consumer("q", "c").unwrap();
        sides.push(Side {
            name,
            config,
            client,
        });
    }

    // Before the wrap: an ordinary round trip, and a transaction left open.
    let mut open = Vec::new();
    for s in &sides {
        s.client.send("q", &NewEvent::new("t", "before")).unwrap();
        s.tick();
        assert_eq!(s.consume(), ["before"], "{}", s.name);
        let mut conn = s.conn();
        conn.batch_execute("begin").unwrap();
        pgq::producer::insert_event(&mut conn, "q", &NewEvent::new("t", "open across")).unwrap();
        open.push(conn);
    }
    let before = txid(&mut su);
    assert!(before < (EPOCH + 1) << 32, "wrapped too early: {before}");

    // Burn xids until the 32-bit counter wraps (bounded: the wrap is < 32768 away).
    for _ in 0..10 {
        if txid(&mut su) >> 32 > EPOCH {
            break;
        }
        su.batch_execute(
            "do $$ begin for i in 1..5000 loop perform txid_current(); commit; end loop; end $$",
        )
        .unwrap();
    }
    let after = txid(&mut su);
    assert_eq!(after >> 32, EPOCH + 1, "the epoch advanced: {after}");
    assert!(
        after & 0xffff_ffff < 1 << 20,
        "the 32-bit xid wrapped: {after}"
    );

    // After the wrap: the open transaction commits, new events arrive; ticks and batches
    // straddle the wrap. Then rotate and go on.
    for (s, mut conn) in sides.iter().zip(open) {
        s.client.send("q", &NewEvent::new("t", "after")).unwrap();
        conn.batch_execute("commit").unwrap();
        s.tick();
        assert_eq!(s.consume(), ["open across", "after"], "{}", s.name);

        let mut c = s.conn();
        let txids: Vec<i64> = c
            .query("select ev_txid from pgq.event_template order by ev_id", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(txids.len(), 3, "{}", s.name);
        assert!(
            txids[0] >> 32 == EPOCH && txids[1] >> 32 == EPOCH,
            "{}: {txids:?}",
            s.name
        );
        assert_eq!(txids[2] >> 32, EPOCH + 1, "{}: {txids:?}", s.name);

        s.client
            .set_queue_config_raw("q", "rotation_period", "0")
            .unwrap();
        let table = |c: &mut postgres::Client| -> i32 {
            c.query_one("select queue_cur_table from pgq.queue", &[])
                .unwrap()
                .get(0)
        };
        let t0 = table(&mut c);
        c.batch_execute("select pgq.maint_rotate_tables_step1('q')")
            .unwrap();
        c.batch_execute("select pgq.maint_rotate_tables_step2()")
            .unwrap();
        assert_ne!(table(&mut c), t0, "{}: rotated after the wrap", s.name);
        s.client.send("q", &NewEvent::new("t", "rotated")).unwrap();
        s.tick();
        assert_eq!(s.consume(), ["rotated"], "{}", s.name);
    }
}
