//! Test harness: a real PostgreSQL server, one fresh database per test.
//!
//! The server is `PGQ_TEST_DSN` (a superuser DSN) when set; otherwise a private throwaway
//! cluster is started once per test process with `scripts/pg-cluster.sh` under Cargo's
//! target tmp dir, and stopped by a watchdog when the process exits.
//!
//! Every test gets its own database (named after the test), so tests run in parallel; it is
//! dropped when the test passes and kept for inspection when it fails.
//!
//! Behaviour tests are written once and run on both backends with [`both_backends!`]:
//! `Backend::Ours` installs our schema through `pgq::Client::install`, `Backend::Official`
//! runs `CREATE EXTENSION pgq` (Debian package postgresql-15-pgq3).
#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

pub mod cluster;

use pgq::{Client, Event};

/// Which PGQ implementation a test database gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Our schema, installed by `pgq::Client::install`.
    Ours,
    /// The reference C/PLpgSQL extension, `CREATE EXTENSION pgq`.
    Official,
}

struct Server {
    /// Superuser settings, dbname = the maintenance database.
    config: postgres::Config,
}

static SERVER: OnceLock<Server> = OnceLock::new();
static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn server() -> &'static Server {
    SERVER.get_or_init(|| {
        let dsn = match std::env::var("PGQ_TEST_DSN") {
            Ok(dsn) if !dsn.trim().is_empty() => dsn,
            _ => start_private_cluster(),
        };
        let config = postgres::Config::from_str(&dsn)
            .unwrap_or_else(|e| panic!("bad test DSN {dsn:?}: {e}"));
        // PGQ's roles are cluster-wide; create them once up front so that parallel installs
        // into different databases do not race to create them.
        let mut c = config
            .connect(postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to test server {dsn:?}: {e}"));
        for role in ["pgq_reader", "pgq_writer", "pgq_admin"] {
            let sql = format!(
                "do $$ begin create role {role}; \
                 exception when duplicate_object then null; end $$"
            );
            c.batch_execute(&sql)
                .unwrap_or_else(|e| panic!("create role {role}: {e}"));
        }
        Server { config }
    })
}

// The watchdog is meant to outlive this process, so it is never waited for.
#[allow(clippy::zombie_processes)]
fn start_private_cluster() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let script = format!("{root}/scripts/pg-cluster.sh");
    let pid = std::process::id();
    let dir = format!("{}/pgq-cluster-{pid}", env!("CARGO_TARGET_TMPDIR"));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(&script)
        .args(["start", &dir])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    assert!(
        out.status.success(),
        "{script} start {dir} failed ({}); set PGQ_TEST_DSN to use an existing server",
        out.status
    );
    let dsn = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!dsn.is_empty(), "{script} printed no DSN");
    // Rust runs no destructors for statics at exit, so a detached watchdog stops the cluster
    // once this test process is gone (also after a panic or abort).
    let watchdog = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
         '{script}' stop '{dir}' >/dev/null 2>&1; rm -rf '{dir}'"
    );
    Command::new("sh")
        .args(["-c", &watchdog])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn cluster watchdog");
    dsn
}

/// A fresh database for one test.
pub struct TestDb {
    /// Database name.
    pub name: String,
    /// Which PGQ implementation is installed.
    pub backend: Backend,
    /// Settings to connect to this database as its owner.
    pub config: postgres::Config,
    /// A pooled client on the database.
    pub client: Client,
    /// Non-superuser owner role created for this test, if any.
    pub role: Option<String>,
}

fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let thread = std::thread::current();
    let test: String = thread
        .name()
        .unwrap_or("t")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let mut name = format!("{prefix}{}_{n}_{test}", std::process::id());
    name.truncate(63);
    name
}

fn superuser(dbname: &str) -> postgres::Client {
    let mut cfg = server().config.clone();
    cfg.dbname(dbname);
    cfg.connect(postgres::NoTls)
        .unwrap_or_else(|e| panic!("connect to test server as superuser: {e}"))
}

impl TestDb {
    /// A new database owned by the superuser, with `backend` installed.
    pub fn new(backend: Backend) -> TestDb {
        TestDb::create(backend, false)
    }

    /// A new database owned by a fresh non-superuser role, which installs PGQ itself and is
    /// the role `client` connects as. Only meaningful for `Backend::Ours` (the official
    /// extension needs a superuser to create).
    pub fn new_owner(backend: Backend) -> TestDb {
        TestDb::create(backend, true)
    }

    fn create(backend: Backend, as_owner: bool) -> TestDb {
        let name = unique_name("pgqt_");
        let maint_db = server()
            .config
            .get_dbname()
            .unwrap_or("postgres")
            .to_string();
        let mut admin = superuser(&maint_db);
        let role = if as_owner {
            let mut role = name.clone();
            role.truncate(57); // + "_owner" stays within the 63-byte identifier limit
            role.push_str("_owner");
            admin
                .batch_execute(&format!(
                    "create role \"{role}\" login nosuperuser nocreatedb nocreaterole"
                ))
                .expect("create owner role");
            Some(role)
        } else {
            None
        };
        let owner = match &role {
            Some(r) => format!(" owner \"{r}\""),
            None => String::new(),
        };
        admin
            .batch_execute(&format!("create database \"{name}\"{owner}"))
            .expect("create test database");
        let mut config = server().config.clone();
        config.dbname(&name);
        if let Some(r) = &role {
            config.user(r);
            config.password("");
        }
        if backend == Backend::Official {
            assert!(role.is_none(), "the official extension needs a superuser");
            superuser(&name)
                .batch_execute("create extension pgq")
                .expect("CREATE EXTENSION pgq (is postgresql-15-pgq3 installed?)");
        }
        let client = pgq::ClientBuilder::from_config(config.clone())
            .pool_size(16)
            .min_idle(0)
            .build()
            .expect("connect to the test database");
        if backend == Backend::Ours {
            client
                .install()
                .unwrap_or_else(|e| panic!("install our schema into {name}: {e}"));
        }
        TestDb {
            name,
            backend,
            config,
            client,
            role,
        }
    }

    /// A new, separate client (own pool) on this database.
    pub fn new_client(&self, pool_size: u32) -> Client {
        pgq::ClientBuilder::from_config(self.config.clone())
            .pool_size(pool_size)
            .min_idle(0)
            .build()
            .expect("connect to the test database")
    }

    /// A direct (unpooled) connection as the database's owner.
    pub fn conn(&self) -> postgres::Client {
        self.config
            .connect(postgres::NoTls)
            .expect("connect to the test database")
    }

    /// A direct connection as superuser.
    pub fn superuser(&self) -> postgres::Client {
        superuser(&self.name)
    }

    /// Forces and takes a tick on `queue`; returns the new tick id.
    pub fn tick(&self, queue: &str) -> i64 {
        let mut c = self.client.get().expect("pooled connection");
        pgq::ticker::force_tick(&mut *c, queue).expect("force_tick");
        pgq::ticker::tick_queue(&mut *c, queue)
            .expect("ticker(queue)")
            .expect("a forced tick must tick")
    }

    /// Drains every available batch for `consumer`, finishing each; returns all events.
    pub fn consume_all(&self, queue: &str, consumer: &str) -> Vec<Event> {
        consume_all(&self.client, queue, consumer)
    }
}

/// Drains every available batch for `consumer` through `client`, finishing each.
pub fn consume_all(client: &Client, queue: &str, consumer: &str) -> Vec<Event> {
    let c = pgq::Consumer::new(client, queue, consumer).expect("consumer");
    let mut out = Vec::new();
    while let Some(batch) = c.next_batch().expect("next_batch") {
        for ev in batch.events() {
            out.push(ev.expect("read event"));
        }
        batch.finish().expect("finish batch");
    }
    out
}

/// Like [`consume_all`], but returns the first error instead of panicking.
pub fn try_consume_all(client: &Client, queue: &str, consumer: &str) -> pgq::Result<Vec<Event>> {
    let c = pgq::Consumer::new(client, queue, consumer)?;
    let mut out = Vec::new();
    while let Some(batch) = c.next_batch()? {
        for ev in batch.events() {
            out.push(ev?);
        }
        batch.finish()?;
    }
    Ok(out)
}

/// The `ev_data` of each event, in order.
pub fn datas(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.data.clone().unwrap_or_default())
        .collect()
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed; database {} kept for inspection", self.name);
            return;
        }
        let maint_db = server()
            .config
            .get_dbname()
            .unwrap_or("postgres")
            .to_string();
        let mut admin = superuser(&maint_db);
        let _ = admin.batch_execute(&format!(
            "drop database if exists \"{}\" with (force)",
            self.name
        ));
        if let Some(r) = &self.role {
            let _ = admin.batch_execute(&format!("drop role if exists \"{r}\""));
        }
    }
}

/// Runs each body once per backend: `fn name(db: &TestDb) { .. }` becomes tests
/// `name::ours` and `name::official`.
#[macro_export]
macro_rules! both_backends {
    ($( $(#[$attr:meta])* fn $name:ident($db:ident : &TestDb) $body:block )*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                $(#[$attr])*
                fn run($db: &$crate::common::TestDb) $body

                #[test]
                fn ours() {
                    run(&$crate::common::TestDb::new($crate::common::Backend::Ours));
                }

                #[test]
                fn official() {
                    run(&$crate::common::TestDb::new($crate::common::Backend::Official));
                }
            }
        )*
    };
}

/// Names of this process's threads that start with `prefix` (Linux truncates a thread's
/// name to 15 bytes in /proc, so prefixes are kept short).
pub fn threads_named(prefix: &str) -> Vec<String> {
    let mut names = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return names;
    };
    for entry in dir.flatten() {
        if let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) {
            let comm = comm.trim_end().to_string();
            if comm.starts_with(prefix) {
                names.push(comm);
            }
        }
    }
    names
}

/// Waits for `cond` with a deadline instead of sleeping a fixed time.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A private cluster of its own, for tests that change cluster-wide state (roles, the xid
/// counter) the shared test server must not see. Started with scripts/pg-cluster.sh under
/// Cargo's target tmp dir; stopped and removed when dropped.
pub struct OwnCluster {
    /// The cluster's data directory.
    pub dir: std::path::PathBuf,
    script: std::path::PathBuf,
}

impl OwnCluster {
    /// Initialises and starts a fresh cluster; returns it and its superuser DSN.
    pub fn start(tag: &str) -> (OwnCluster, String) {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("pgq-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cluster = OwnCluster {
            dir,
            script: root.join("scripts/pg-cluster.sh"),
        };
        let dsn = cluster.action("start");
        (cluster, dsn)
    }

    /// Runs `scripts/pg-cluster.sh ACTION DIR` and returns what it printed (the DSN for
    /// start and restart).
    pub fn action(&self, action: &str) -> String {
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
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = Command::new(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
