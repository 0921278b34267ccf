//! `pgqctl ticker`: a pgqd replacement daemon on top of [`pgq::Ticker`].
//!
//! Databases come from DSNs on the command line, or from a pgqd-style config file
//! (`--config FILE`, section `[pgqd]`: `base_connstr`, `initial_database`, `database_list`,
//! `ticker_period`, `retry_period`, `maint_period`, `check_period`), and our own
//! `idle_ticker_period`, `takeover_period`, `eager_min_lag` (a duration, or `off` for PGQ's
//! tick rules only, like pgqd) and `stats_period` (a line of counters is logged that often,
//! 60 s by default). With a config file and no
//! `database_list`, every database of the cluster that has a `pgq` schema is ticked, as
//! pgqd does, and the list is checked again every `check_period`.
//!
//! SIGINT and SIGTERM stop cleanly (the ticker's locks are released, a standby elsewhere
//! takes over); SIGHUP re-reads the config file and restarts the ticker with it.

use std::collections::BTreeMap;
use std::io::Write;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::RecvTimeoutError;
use pgq::{Ticker, TickerBuilder};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::{connection_config, describe, rfc3339, usage, with_causes, Failure, Res};

/// The settings `pgqctl ticker KEY=VALUE` and the config file take, besides connections.
pub(crate) const SETTINGS: &[&str] = &[
    "ticker_period",
    "idle_ticker_period",
    "retry_period",
    "maint_period",
    "check_period",
    "stats_period",
    "takeover_period",
    "eager_min_lag",
];

/// What the daemon runs: databases and periods.
#[derive(Debug, Clone)]
struct Plan {
    databases: Vec<postgres::Config>,
    periods: BTreeMap<&'static str, Duration>,
    /// Set when the databases are discovered (config file without `database_list`).
    discover: Option<Discovery>,
}

#[derive(Debug, Clone)]
struct Discovery {
    base: postgres::Config,
    initial_database: String,
}

/// Default for `check_period` (pgqd's).
const DEFAULT_CHECK_PERIOD: Duration = Duration::from_secs(60);

/// Default for `stats_period`: how often a line of counters is logged.
const DEFAULT_STATS_PERIOD: Duration = Duration::from_secs(60);

/// Runs the daemon until SIGINT or SIGTERM.
pub(crate) fn run(dsn: Option<&str>, rest: &[String], config_file: Option<&str>) -> Res<()> {
    init_logging();
    // Command-line KEY=VALUE settings override the file's.
    let mut cli_periods = BTreeMap::new();
    let mut dsns: Vec<String> = dsn.map(|d| vec![d.to_string()]).unwrap_or_default();
    for arg in rest {
        match arg.split_once('=') {
            Some((k, v)) if SETTINGS.contains(&k) => {
                let key = SETTINGS.iter().find(|s| **s == k).copied().unwrap_or("");
                cli_periods.insert(key, parse_setting(k, v).map_err(usage)?);
            }
            _ => dsns.push(arg.clone()),
        }
    }
    if config_file.is_some() && !dsns.is_empty() {
        return Err(usage(
            "give the databases either as DSNs or in the --config file, not both",
        ));
    }
    let load = || -> Res<Plan> {
        let mut plan = match config_file {
            Some(path) => plan_from_file(path)?,
            None => plan_from_dsns(&dsns)?,
        };
        plan.periods
            .extend(cli_periods.iter().map(|(k, v)| (*k, *v)));
        Ok(plan)
    };
    let mut plan = load()?;

    // Signals arrive on signal-hook's thread and are forwarded into a channel, so the main
    // loop can wait for a signal or the next database check with one deadline.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| Failure::Run(format!("cannot install signal handlers: {e}")))?;
    let handle = signals.handle();
    let (sig_tx, sig_rx) = crossbeam_channel::unbounded();
    let forwarder = std::thread::Builder::new()
        .name("pgqctl-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig_tx.send(sig).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| Failure::Run(format!("cannot start the signal thread: {e}")))?;

    let mut databases = resolve(&plan);
    let mut ticker = start(&plan, &databases)?;
    let mut next_check = Instant::now() + period(&plan, "check_period", DEFAULT_CHECK_PERIOD);
    let mut next_stats = Instant::now() + period(&plan, "stats_period", DEFAULT_STATS_PERIOD);
    let mut last_logged = pgq::TickerStats::default();
    let result = loop {
        let mut deadline = next_stats;
        if plan.discover.is_some() {
            deadline = deadline.min(next_check);
        }
        let got = sig_rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        match got {
            Ok(SIGHUP) => {
                log::info!("SIGHUP: reloading");
                match load() {
                    Ok(p) => {
                        plan = p;
                        databases = resolve(&plan);
                        // Stop first: the new ticker needs the same locks.
                        drop(ticker);
                        ticker = start(&plan, &databases)?;
                        last_logged = pgq::TickerStats::default();
                    }
                    Err(e) => log::error!("reload failed, keeping the running setup: {e}"),
                }
            }
            Ok(sig) => {
                log::info!("signal {sig}: stopping");
                break Ok(());
            }
            Err(RecvTimeoutError::Timeout) if Instant::now() >= next_stats => {
                next_stats = Instant::now() + period(&plan, "stats_period", DEFAULT_STATS_PERIOD);
                if let Some(t) = &ticker {
                    let s = t.stats();
                    log_stats(&s, &last_logged);
                    last_logged = s;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                next_check = Instant::now() + period(&plan, "check_period", DEFAULT_CHECK_PERIOD);
                let now = resolve(&plan);
                let names = |dbs: &[postgres::Config]| -> Vec<String> {
                    dbs.iter()
                        .map(|c| c.get_dbname().unwrap_or("").to_string())
                        .collect()
                };
                if names(&now) != names(&databases) {
                    log::info!("the set of PGQ databases changed; restarting the ticker");
                    databases = now;
                    drop(ticker);
                    ticker = start(&plan, &databases)?;
                    last_logged = pgq::TickerStats::default();
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                break Err(Failure::Run("the signal thread ended".into()))
            }
        }
    };
    if let Some(mut t) = ticker {
        t.stop();
        let _ = t.join();
        let s = t.stats();
        log::info!(
            "stopped: {} ticks in {} rounds, {} retry events moved, {} maintenance runs, {} errors, {} reconnects",
            s.ticks,
            s.rounds,
            s.retry_events_moved,
            s.maintenance_runs,
            s.errors,
            s.reconnects
        );
    }
    handle.close();
    let _ = forwarder.join();
    result
}

/// One line with what happened since the previous one (pgqd logs the same kind of line).
fn log_stats(s: &pgq::TickerStats, before: &pgq::TickerStats) {
    let since = |now: u64, then: u64| now.saturating_sub(then);
    log::info!(
        "active on {} of {} database(s); since the last report: {} ticks, {} retry events \
         moved, {} maintenance runs, {} errors, {} reconnects",
        s.active,
        s.databases.len(),
        since(s.ticks, before.ticks),
        since(s.retry_events_moved, before.retry_events_moved),
        since(s.maintenance_runs, before.maintenance_runs),
        since(s.errors, before.errors),
        since(s.reconnects, before.reconnects)
    );
}

fn period(plan: &Plan, key: &str, default: Duration) -> Duration {
    plan.periods.get(key).copied().unwrap_or(default)
}

/// The databases to tick now: the plan's list, or the discovered ones.
fn resolve(plan: &Plan) -> Vec<postgres::Config> {
    match &plan.discover {
        None => plan.databases.clone(),
        Some(d) => match discover(d) {
            Ok(dbs) => dbs,
            Err(e) => {
                log::error!("cannot list the databases: {e}");
                Vec::new()
            }
        },
    }
}

fn start(plan: &Plan, databases: &[postgres::Config]) -> Res<Option<Ticker>> {
    if databases.is_empty() {
        log::warn!("no database to tick (yet)");
        return Ok(None);
    }
    let mut b = TickerBuilder::new();
    for db in databases {
        b = b.config(db.clone());
    }
    b = b
        .ticker_period(period(
            plan,
            "ticker_period",
            pgq::ticker::service::DEFAULT_TICKER_PERIOD,
        ))
        .retry_period(period(
            plan,
            "retry_period",
            pgq::ticker::service::DEFAULT_RETRY_PERIOD,
        ))
        .maint_period(period(
            plan,
            "maint_period",
            pgq::ticker::service::DEFAULT_MAINT_PERIOD,
        ))
        .takeover_period(period(
            plan,
            "takeover_period",
            pgq::ticker::service::DEFAULT_TAKEOVER_PERIOD,
        ))
        .idle_ticker_period(period(
            plan,
            "idle_ticker_period",
            pgq::ticker::service::DEFAULT_IDLE_TICKER_PERIOD,
        ));
    match plan.periods.get("eager_min_lag") {
        None => {}
        Some(d) if d.is_zero() => b = b.eager(None),
        Some(d) => b = b.eager(Some(*d)),
    }
    let names: Vec<String> = databases.iter().map(describe).collect();
    log::info!("ticking {}", names.join("; "));
    Ok(Some(b.start()?))
}

fn plan_from_dsns(dsns: &[String]) -> Res<Plan> {
    let mut databases = Vec::new();
    if dsns.is_empty() {
        databases.push(connection_config(None)?);
    }
    for d in dsns {
        databases.push(connection_config(Some(d))?);
    }
    Ok(Plan {
        databases,
        periods: BTreeMap::new(),
        discover: None,
    })
}

/// Reads a pgqd config file. Unknown keys are an error (a typo should not be ignored);
/// pgqd's logging and daemon keys are accepted and ignored, since pgqctl logs to stderr and
/// leaves daemonizing to the service manager.
fn plan_from_file(path: &str) -> Res<Plan> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Run(format!("cannot read {path}: {e}")))?;
    let mut section = String::new();
    let mut values = BTreeMap::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            continue;
        }
        if section != "pgqd" {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(Failure::Run(format!(
                "{path}:{}: expected KEY = VALUE, got {line:?}",
                n + 1
            )));
        };
        values.insert(k.trim().to_string(), v.trim().to_string());
    }
    let mut periods = BTreeMap::new();
    let mut base = String::new();
    let mut initial = "template1".to_string();
    let mut list = Vec::new();
    for (k, v) in &values {
        match k.as_str() {
            "base_connstr" => base = v.clone(),
            "initial_database" => initial = v.clone(),
            "database_list" => {
                list = v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            }
            "logfile" | "pidfile" | "syslog" | "syslog_ident" => {}
            k if SETTINGS.contains(&k) => {
                let key = SETTINGS.iter().find(|s| **s == k).copied().unwrap_or("");
                let d = parse_setting(k, v).map_err(|m| Failure::Run(format!("{path}: {m}")))?;
                periods.insert(key, d);
            }
            other => {
                return Err(Failure::Run(format!(
                    "{path}: unknown setting {other:?} in [pgqd]"
                )))
            }
        }
    }
    let base_config = connection_config(Some(&base))?;
    let with_db = |db: &str| {
        let mut c = base_config.clone();
        c.dbname(db);
        c
    };
    if list.is_empty() {
        return Ok(Plan {
            databases: Vec::new(),
            periods,
            discover: Some(Discovery {
                base: base_config,
                initial_database: initial,
            }),
        });
    }
    Ok(Plan {
        databases: list.iter().map(|d| with_db(d)).collect(),
        periods,
        discover: None,
    })
}

/// The cluster's databases that have a `pgq` schema (pgqd's rule), in name order.
fn discover(d: &Discovery) -> Result<Vec<postgres::Config>, String> {
    let mut cfg = d.base.clone();
    cfg.dbname(&d.initial_database);
    let mut conn = cfg
        .connect(postgres::NoTls)
        .map_err(|e| format!("{}: {}", describe(&cfg), with_causes(&e)))?;
    let rows = conn
        .query(
            "select datname from pg_catalog.pg_database \
              where datallowconn and not datistemplate order by datname",
            &[],
        )
        .map_err(|e| with_causes(&e))?;
    let mut found = Vec::new();
    for row in rows {
        let name: String = row.get(0);
        let mut c = d.base.clone();
        c.dbname(&name);
        let has_pgq = c.connect(postgres::NoTls).and_then(|mut conn| {
            conn.query_one(
                "select exists (select 1 from pg_catalog.pg_namespace where nspname = 'pgq')",
                &[],
            )
            .map(|r| r.get::<_, bool>(0))
        });
        match has_pgq {
            Ok(true) => found.push(c),
            Ok(false) => {}
            Err(e) => log::warn!("skipping database {name:?}: {}", with_causes(&e)),
        }
    }
    Ok(found)
}

/// `20ms`, `1.5s`, `2min`, or a plain number of seconds as pgqd takes them (`0.05`).
/// A setting's value: a period, or for `eager_min_lag` also `off` (stored as zero: eager
/// ticking off, PGQ's tick rules only, like pgqd).
fn parse_setting(key: &str, value: &str) -> Result<Duration, String> {
    if key == "eager_min_lag" && value.trim().eq_ignore_ascii_case("off") {
        return Ok(Duration::ZERO);
    }
    parse_period(key, value)
}

fn parse_period(key: &str, value: &str) -> Result<Duration, String> {
    let v = value.trim();
    let (num, unit) = match v.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (v[..i].trim(), v[i..].trim()),
        None => (v, "s"),
    };
    let scale = match unit {
        "ms" => 0.001,
        "s" | "sec" => 1.0,
        "min" | "m" => 60.0,
        _ => {
            return Err(format!(
                "{key}: unknown unit {unit:?} in {value:?} (ms, s, min)"
            ))
        }
    };
    let n = f64::from_str(num)
        .ok()
        .filter(|n| n.is_finite() && *n > 0.0)
        .ok_or_else(|| {
            format!("{key} needs a positive duration like 20ms or 1.5s, got {value:?}")
        })?;
    Ok(Duration::from_secs_f64((n * scale).min(1e9)))
}

// ---- logging ------------------------------------------------------------------------------

/// Lines on stderr: `2026-01-01T00:00:00.000Z INFO message`. The level comes from
/// `PGQ_LOG` (error, warn, info, debug, trace, off; default info); debug and trace lines
/// come from libpgq only.
struct StderrLog {
    level: AtomicU8,
}

static LOGGER: StderrLog = StderrLog {
    level: AtomicU8::new(3),
};

impl log::Log for StderrLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        let level = metadata.level() as u8;
        // Other crates' debug output (every statement the driver runs) would drown ours.
        let ours = metadata.target().starts_with("pgq");
        level <= self.level.load(Ordering::Relaxed) && (ours || level <= log::Level::Info as u8)
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let line = format!(
                "{} {} {}\n",
                rfc3339(SystemTime::now()),
                record.level(),
                record.args()
            );
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

pub(super) fn init_logging() {
    let level = match std::env::var("PGQ_LOG").ok().as_deref().map(str::trim) {
        Some("error") => log::LevelFilter::Error,
        Some("warn") => log::LevelFilter::Warn,
        Some("debug") => log::LevelFilter::Debug,
        Some("trace") => log::LevelFilter::Trace,
        Some("off") => log::LevelFilter::Off,
        _ => log::LevelFilter::Info,
    };
    LOGGER.level.store(level as u8, Ordering::Relaxed);
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        assert_eq!(parse_period("k", "20ms"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_period("k", "1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_period("k", "0.05"), Ok(Duration::from_millis(50)));
        assert_eq!(parse_period("k", "2 min"), Ok(Duration::from_secs(120)));
        assert!(parse_period("k", "0").is_err());
        assert!(parse_period("k", "-1").is_err());
        assert!(parse_period("k", "5 parsecs").is_err());
        assert!(parse_period("k", "").is_err());
        assert_eq!(parse_setting("eager_min_lag", "off"), Ok(Duration::ZERO));
        assert_eq!(
            parse_setting("eager_min_lag", "5ms"),
            Ok(Duration::from_millis(5))
        );
        assert!(parse_setting("ticker_period", "off").is_err());
    }
}
