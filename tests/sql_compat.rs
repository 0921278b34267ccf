//! SQL compatibility: every script in `tests/sql/*.sql` is run with `psql` on a fresh
//! database with our schema and on one with the official extension, and the two transcripts
//! (statements echoed, results, errors, notices) must be identical. This is what "SQL
//! written for the official pgq runs on ours with the same results" means in practice.
//!
//! Scripts must not print anything that legitimately differs between two databases (times,
//! txids, snapshots, `version()`); they select the columns that matter instead.
//!
//! A failure prints a unified-style diff (official = `-`, ours = `+`) and keeps both
//! transcripts under Cargo's target tmp dir.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{Backend, TestDb};

/// `psql` from the PostgreSQL 15 install the harness uses, else from `PATH`.
fn psql() -> PathBuf {
    let pg15 = Path::new("/usr/lib/postgresql/15/bin/psql");
    if pg15.exists() {
        pg15.to_path_buf()
    } else {
        PathBuf::from("psql")
    }
}

/// Runs `script` (relative to the crate root) against `db` and returns the transcript:
/// stdout and stderr in one stream, in the order psql wrote them.
fn run_script(db: &TestDb, script: &str, out: &Path) -> String {
    let file = File::create(out).unwrap_or_else(|e| panic!("create {}: {e}", out.display()));
    let err = file.try_clone().expect("clone output file handle");
    let cfg = &db.config;
    let host = match cfg.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let mut cmd = Command::new(psql());
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["-X", "-a", "-q", "-v", "ON_ERROR_STOP=0", "-f", script])
        .env("PGHOST", host)
        .env("PGPORT", port.to_string())
        .env("PGUSER", cfg.get_user().unwrap_or("postgres"))
        .env("PGDATABASE", &db.name)
        .env("PGTZ", "UTC")
        .env("PGDATESTYLE", "ISO")
        .env("PGCLIENTENCODING", "UTF8")
        .env_remove("PGOPTIONS")
        .env_remove("PGSERVICE")
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err);
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run psql ({:?}): {e}", psql()));
    assert!(
        status.success(),
        "psql -f {script} failed on {:?} ({status}); see {}",
        db.backend,
        out.display()
    );
    std::fs::read_to_string(out).unwrap_or_else(|e| panic!("read {}: {e}", out.display()))
}

/// A line diff (longest common subsequence) of `a` (official) and `b` (ours), printed as
/// hunks with three lines of context and the line numbers of both sides.
fn diff(a: &str, b: &str) -> String {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    let (n, m) = (a.len(), b.len());
    // lcs[i][j] = length of the LCS of a[i..] and b[j..]
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // (tag, line index in a, line index in b, text)
    let mut ops: Vec<(char, usize, usize, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', i, j, a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', i, j, a[i]));
            i += 1;
        } else {
            ops.push(('+', i, j, b[j]));
            j += 1;
        }
    }
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != ' ').collect();
    let mut out = String::new();
    let mut k = 0;
    while k < changed.len() {
        let start = changed[k].saturating_sub(3);
        let mut end = changed[k] + 3;
        while k + 1 < changed.len() && changed[k + 1] <= end + 3 {
            k += 1;
            end = changed[k] + 3;
        }
        let end = end.min(ops.len() - 1);
        out.push_str(&format!(
            "@@ official line {}, ours line {} @@\n",
            ops[start].1 + 1,
            ops[start].2 + 1
        ));
        for op in &ops[start..=end] {
            out.push(op.0);
            out.push_str(op.3);
            out.push('\n');
        }
        k += 1;
    }
    out
}

fn scripts() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sql"))
        .collect();
    names.sort();
    names
}

/// Runs one script on both backends; `Err(report)` when the transcripts differ.
fn compare(name: &str) -> Result<usize, String> {
    let script = format!("tests/sql/{name}");
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let stem = name.trim_end_matches(".sql");
    let runs: Vec<(String, PathBuf)> = [Backend::Official, Backend::Ours]
        .into_iter()
        .map(|backend| {
            let db = TestDb::new(backend);
            let out = tmp.join(format!("sql_compat-{stem}-{backend:?}.out"));
            (run_script(&db, &script, &out), out)
        })
        .collect();
    let (official, official_path) = &runs[0];
    let (ours, ours_path) = &runs[1];
    assert!(
        official.lines().count() > 10,
        "{script} printed almost nothing on the official extension: {official}"
    );
    if official == ours {
        Ok(official.lines().count())
    } else {
        Err(format!(
            "{script}: our schema answers differently from the official extension\n\
             (- official {}, + ours {})\n{}",
            official_path.display(),
            ours_path.display(),
            diff(official, ours)
        ))
    }
}

#[test]
fn scripts_give_identical_output_on_both_backends() {
    let names = scripts();
    assert!(!names.is_empty(), "no tests/sql/*.sql scripts found");
    // Every script in its own pair of databases, one run at a time: txids and snapshots are
    // the cluster's, so a transaction open in another run's database would show up in this
    // run's tick snapshots and could change a rotation decision (seen as a rare flake).
    let results: Vec<Result<usize, String>> = names.iter().map(|n| compare(n)).collect();
    let mut failures = Vec::new();
    for (name, result) in names.iter().zip(results) {
        match result {
            Ok(lines) => eprintln!("tests/sql/{name}: identical ({lines} lines)"),
            Err(report) => failures.push(report),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} scripts differ:\n\n{}",
        failures.len(),
        names.len(),
        failures.join("\n\n")
    );
}

#[test]
fn diff_shows_changed_lines_with_context() {
    let d = diff("a\nb\nc\nd\n", "a\nb\nX\nd\n");
    assert!(d.contains("-c\n+X\n"), "{d}");
    assert!(d.contains(" b\n"), "{d}");
    assert_eq!(diff("same\n", "same\n"), "");
}
