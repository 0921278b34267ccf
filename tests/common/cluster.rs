//! A private PostgreSQL cluster owned by one test, for tests that restart or stop the server
//! (which the shared test server must never see). Started with `scripts/pg-cluster.sh`,
//! stopped and removed on drop.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::str::FromStr;

use super::Backend;

/// A cluster in `target/tmp`, running until dropped.
pub struct Cluster {
    dir: PathBuf,
    /// Superuser settings for the `postgres` database.
    pub config: postgres::Config,
}

fn script(action: &str, dir: &std::path::Path) -> String {
    let script = format!("{}/scripts/pg-cluster.sh", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(&script)
        .arg(action)
        .arg(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    assert!(
        out.status.success(),
        "{script} {action} {} failed ({})",
        dir.display(),
        out.status
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Cluster {
    /// initdb + start; `tag` names the directory.
    pub fn start(tag: &str) -> Cluster {
        let dir = PathBuf::from(format!(
            "{}/pgq-{tag}-{}",
            env!("CARGO_TARGET_TMPDIR"),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let dsn = script("start", &dir);
        let config =
            postgres::Config::from_str(&dsn).unwrap_or_else(|e| panic!("bad DSN {dsn:?}: {e}"));
        Cluster { dir, config }
    }

    /// Immediate stop and start on the same port (clients see their connections break).
    pub fn restart(&self) {
        script("restart", &self.dir);
    }

    /// Immediate stop (idempotent).
    pub fn stop(&self) {
        script("stop", &self.dir);
    }

    /// Starts a stopped cluster again, on the same port.
    pub fn start_again(&self) {
        script("restart", &self.dir);
    }

    /// A superuser connection to `dbname`.
    pub fn superuser(&self, dbname: &str) -> postgres::Client {
        let mut cfg = self.config.clone();
        cfg.dbname(dbname);
        cfg.connect(postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to private cluster: {e}"))
    }

    /// Creates database `name` with `backend` installed; returns its (superuser) settings
    /// and a client.
    pub fn database(&self, name: &str, backend: Backend) -> (postgres::Config, pgq::Client) {
        self.superuser("postgres")
            .batch_execute(&format!("create database \"{name}\""))
            .expect("create database");
        let mut cfg = self.config.clone();
        cfg.dbname(name);
        if backend == Backend::Official {
            self.superuser(name)
                .batch_execute("create extension pgq")
                .expect("create extension pgq");
        }
        let client = pgq::ClientBuilder::from_config(cfg.clone())
            .pool_size(4)
            .min_idle(0)
            .build()
            .expect("connect to the private cluster");
        if backend == Backend::Ours {
            client.install().expect("install our schema");
        }
        (cfg, client)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let script_path = format!("{}/scripts/pg-cluster.sh", env!("CARGO_MANIFEST_DIR"));
        let _ = Command::new(script_path)
            .arg("stop")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
