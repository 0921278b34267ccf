//! `pgqctl`: administer PGQ in a PostgreSQL database from the command line.
//!
//! A thin shell over [`pgq::admin`]: every subcommand is one library call (or two), so the
//! command line and the library cannot drift apart. Run `pgqctl --help` for the manual.

use std::env;
use std::fmt;
use std::io::{self, Write};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgq::admin::{self, ConsumerInfo, QueueInfo};
use pgq::schema::InstallOutcome;
use serde_json::{json, Value};

// In a directory of its own so cargo does not take it for a binary.
#[path = "pgqctl/events.rs"]
mod events;
#[path = "pgqctl/ticker.rs"]
mod ticker;

/// The subcommands: name, usage, description (lines of the help text).
const COMMANDS: &[(&str, &str, &str)] = &[
    (
        "install",
        "install",
        "Install PGQ into the database, or upgrade an older install of ours;\n\
         does nothing when it is current. Leaves the official pgq extension\n\
         alone if it is there (libpgq works on it too).",
    ),
    (
        "schema",
        "schema",
        "Print the SQL that `install` runs (needs no database).",
    ),
    ("create-queue", "create-queue QUEUE", "Create a queue."),
    (
        "drop-queue",
        "drop-queue QUEUE [--force]",
        "Drop a queue and its events. Refused while consumers are registered,\n\
         unless --force unregisters them.",
    ),
    (
        "config",
        "config QUEUE [KEY=VALUE...]",
        "Set queue settings (all or none), or show them when no KEY=VALUE is\n\
         given. Keys: ticker_max_count, ticker_max_lag, ticker_idle_period,\n\
         ticker_paused, rotation_period, external_ticker. Intervals in\n\
         PostgreSQL syntax ('500 ms', '2 hours').",
    ),
    (
        "register",
        "register QUEUE CONSUMER [--at TICK]",
        "Register a consumer: it sees the events after the newest tick.\n\
         With --at, reposition it to tick TICK (dropping its open batch).",
    ),
    (
        "unregister",
        "unregister QUEUE CONSUMER",
        "Unregister a consumer and delete its retry events.",
    ),
    (
        "status",
        "status [QUEUE] [--json]",
        "Queues and their consumers: last tick, ticker lag, new events,\n\
         consumer lag and pending events, as tables; --json prints one JSON\n\
         document instead.",
    ),
    (
        "produce",
        "produce QUEUE [--type T] [--json] [--transaction-pooling]",
        "Insert events read from stdin, one per line, with the bulk path\n\
         in chunks of 1000 per transaction. Each line is the event's data, with\n\
         type T (NULL without --type). With --json each non-empty line is a\n\
         JSON object with keys type, data, extra1..extra4 (strings, or any JSON\n\
         value, stored as its JSON text). A bad line stops the command; the\n\
         events before it are in the queue. --transaction-pooling: the DSN is a\n\
         PgBouncer in pool_mode=transaction (unnamed statements only).",
    ),
    (
        "consume",
        "consume QUEUE CONSUMER [--register] [--poll-only] [--transaction-pooling]",
        "Print each event as one JSON line (batch_id, id, time, txid, retry,\n\
         type, data, extra1..extra4) and finish each batch after its events\n\
         were written, until SIGINT or SIGTERM (the current batch completes\n\
         first). Needs a ticker (pgqctl ticker, or pgqd). --register registers\n\
         the consumer first. Waits with LISTEN pgq_tick, or only polls with\n\
         --poll-only. Behind PgBouncer in pool_mode=transaction use\n\
         --transaction-pooling (unnamed statements only, and polls). Database\n\
         errors are logged and retried.",
    ),
    (
        "ticker",
        "ticker [DSN...] [KEY=VALUE...] [--config FILE]",
        "Run the ticker daemon (a pgqd replacement) until SIGINT or SIGTERM:\n\
         ticks, retry events and maintenance for each database (--dsn, the DSN\n\
         arguments, or PGQ_DSN). With several tickers on one database one is\n\
         active, the others take over when it goes. KEY=VALUE: ticker_period,\n\
         idle_ticker_period, retry_period, maint_period, takeover_period,\n\
         stats_period (20ms, 1.5s, 2min), eager_min_lag (a duration, or off:\n\
         tick by PGQ's rules only, like pgqd).\n\
         --config FILE reads a pgqd config ([pgqd] base_connstr,\n\
         database_list, initial_database, *_period, check_period; without\n\
         database_list every database with PGQ). SIGHUP re-reads it. Logs to\n\
         stderr; PGQ_LOG=debug for more.",
    ),
];

const HELP_HEAD: &str = "\
pgqctl - administer PGQ queues in a PostgreSQL database

USAGE:
    pgqctl [--dsn DSN] COMMAND [ARGS...]
    pgqctl COMMAND --help

COMMANDS:
";

const HELP_TAIL: &str = "
OPTIONS:
    --dsn DSN       The database: a URL (postgresql://user@host:port/db) or key=value
                    pairs (host=... port=... user=... dbname=...).
    -h, --help      Show this help, or a command's.
    -V, --version   Show pgqctl's version and the schema version it installs.

CONNECTION:
    The DSN comes from --dsn, else the PGQ_DSN environment variable. Whatever it leaves
    out is taken, as libpq does, from PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD,
    PGAPPNAME and PGCONNECT_TIMEOUT, then from libpq's defaults (the local socket
    directory or localhost, port 5432, your OS user name, a database named like the
    user). TLS is not supported yet.

EXIT STATUS:
    0 on success, 1 when the command failed (one line on stderr says why), 2 for a
    usage error.

EXAMPLES:
    pgqctl --dsn postgresql://app@localhost/app install
    export PGQ_DSN='host=db1 user=app dbname=app'
    pgqctl create-queue orders
    pgqctl config orders ticker_max_lag='500 ms' ticker_max_count=1000
    pgqctl register orders mailer
    pgqctl status
    pgqctl status orders --json
    seq 1 100 | pgqctl produce orders --type number
    pgqctl consume orders mailer --register
";

fn help() -> String {
    let mut text = HELP_HEAD.to_string();
    for (_, usage, desc) in COMMANDS {
        text.push_str(&format!("    {usage}\n"));
        for line in desc.lines() {
            text.push_str(&format!("        {}\n", line.trim()));
        }
    }
    text.push_str(HELP_TAIL);
    text
}

fn command_usage(command: &str) -> Option<&'static str> {
    COMMANDS.iter().find(|c| c.0 == command).map(|c| c.1)
}

/// `pgqctl COMMAND --help`.
fn command_help(command: &str) -> Res<String> {
    let (_, usage_line, desc) = COMMANDS
        .iter()
        .find(|c| c.0 == command)
        .ok_or_else(|| usage(format!("unknown command {command:?}")))?;
    let mut text = format!("usage: pgqctl [--dsn DSN] {usage_line}\n\n");
    for line in desc.lines() {
        text.push_str(line.trim());
        text.push('\n');
    }
    text.push_str(
        "\nThe database comes from --dsn, PGQ_DSN or the libpq variables (see pgqctl --help).\n",
    );
    Ok(text)
}

/// A failure to report: the message is printed as one line; usage errors exit with 2.
#[derive(Debug)]
enum Failure {
    Usage(String),
    Run(String),
    /// stdout was closed by its reader: stop quietly.
    Pipe,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(m) => write!(f, "{m} (see pgqctl --help)"),
            Failure::Run(m) => f.write_str(m),
            Failure::Pipe => f.write_str("output closed"),
        }
    }
}

impl From<pgq::Error> for Failure {
    fn from(e: pgq::Error) -> Failure {
        Failure::Run(e.to_string())
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        if e.kind() == io::ErrorKind::BrokenPipe {
            // `pgqctl schema | head`: the reader has all it wanted.
            return Failure::Pipe;
        }
        Failure::Run(format!("cannot write output: {e}"))
    }
}

fn usage(msg: impl Into<String>) -> Failure {
    Failure::Usage(msg.into())
}

type Res<T> = Result<T, Failure>;

/// The command line, split into options and positional arguments. Options may appear
/// anywhere; `--` ends them.
#[derive(Debug, Default)]
struct Args {
    dsn: Option<String>,
    help: bool,
    version: bool,
    json: bool,
    force: bool,
    at: Option<String>,
    ev_type: Option<String>,
    register: bool,
    poll_only: bool,
    transaction_pooling: bool,
    config: Option<String>,
    positional: Vec<String>,
}

fn parse_args(raw: impl IntoIterator<Item = String>) -> Res<Args> {
    let mut args = Args::default();
    let mut it = raw.into_iter();
    let mut options_done = false;
    while let Some(a) = it.next() {
        if options_done || !a.starts_with('-') || a == "-" {
            args.positional.push(a);
            continue;
        }
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = |what: &str| -> Res<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it
                    .next()
                    .ok_or_else(|| usage(format!("{name} needs a value ({what})"))),
            }
        };
        match name.as_str() {
            "--" => options_done = true,
            "--dsn" => args.dsn = Some(value("a connection string")?),
            "--at" => args.at = Some(value("a tick id")?),
            "--type" => args.ev_type = Some(value("an event type")?),
            "--register" => args.register = true,
            "--poll-only" => args.poll_only = true,
            "--transaction-pooling" => args.transaction_pooling = true,
            "--config" => args.config = Some(value("a file")?),
            "-h" | "--help" => args.help = true,
            "-V" | "--version" => args.version = true,
            "--json" => args.json = true,
            "--force" => args.force = true,
            _ => return Err(usage(format!("unknown option {a:?}"))),
        }
        if inline.is_some()
            && matches!(
                name.as_str(),
                "--help"
                    | "--version"
                    | "--json"
                    | "--force"
                    | "--register"
                    | "--poll-only"
                    | "--transaction-pooling"
            )
        {
            return Err(usage(format!("{name} takes no value")));
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    match run(env::args().skip(1)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Pipe) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever the server put in its message.
            let line = e.to_string().replace('\n', " ");
            eprintln!("pgqctl: error: {line}");
            match e {
                Failure::Usage(_) => ExitCode::from(2),
                Failure::Run(_) | Failure::Pipe => ExitCode::from(1),
            }
        }
    }
}

fn run(raw: impl IntoIterator<Item = String>) -> Res<()> {
    let args = parse_args(raw)?;
    let mut out = io::stdout().lock();
    if args.version {
        writeln!(
            out,
            "pgqctl {} (installs PGQ schema revision {})",
            env!("CARGO_PKG_VERSION"),
            pgq::schema::SCHEMA_VERSION
        )?;
        return Ok(());
    }
    let Some(command) = args.positional.first().map(String::as_str) else {
        if args.help {
            out.write_all(help().as_bytes())?;
            return Ok(());
        }
        return Err(usage("no command given"));
    };
    let rest = &args.positional[1..];
    if args.help {
        out.write_all(command_help(command)?.as_bytes())?;
        return Ok(());
    }
    let allowed: &[&str] = match command {
        "status" => &["--json"],
        "drop-queue" => &["--force"],
        "register" => &["--at"],
        "produce" => &["--type", "--json", "--transaction-pooling"],
        "consume" => &["--register", "--poll-only", "--transaction-pooling"],
        "ticker" => &["--config"],
        _ => &[],
    };
    for (flag, set) in [
        ("--json", args.json),
        ("--force", args.force),
        ("--at", args.at.is_some()),
        ("--type", args.ev_type.is_some()),
        ("--register", args.register),
        ("--poll-only", args.poll_only),
        ("--transaction-pooling", args.transaction_pooling),
        ("--config", args.config.is_some()),
    ] {
        if set && !allowed.contains(&flag) {
            return Err(usage(format!("{command} does not take {flag}")));
        }
    }

    match command {
        "schema" => {
            arity(command, rest, 0, 0)?;
            let sql = pgq::schema::sql();
            out.write_all(sql.as_bytes())?;
            if !sql.ends_with('\n') {
                writeln!(out)?;
            }
            Ok(())
        }
        "install" => {
            arity(command, rest, 0, 0)?;
            let mut conn = connect(args.dsn.as_deref())?;
            let msg = match admin::install(&mut conn)? {
                InstallOutcome::Installed { version } => {
                    format!("installed the PGQ schema, revision {version}")
                }
                InstallOutcome::Upgraded { from, to } => {
                    format!("upgraded the PGQ schema from revision {from} to {to}; queued events kept")
                }
                InstallOutcome::AlreadyCurrent { version } => {
                    format!("the PGQ schema is current (revision {version}); nothing to do")
                }
                InstallOutcome::OfficialExtension { version } => format!(
                    "the official pgq extension {version} is installed; left it alone (libpgq works on it)"
                ),
            };
            writeln!(out, "{msg}")?;
            Ok(())
        }
        "create-queue" => {
            arity(command, rest, 1, 1)?;
            let mut conn = connect(args.dsn.as_deref())?;
            let q = &rest[0];
            if admin::create_queue(&mut conn, q)? {
                writeln!(out, "created queue {q}")?;
            } else {
                writeln!(out, "queue {q} already exists")?;
            }
            Ok(())
        }
        "drop-queue" => {
            arity(command, rest, 1, 1)?;
            let mut conn = connect(args.dsn.as_deref())?;
            let q = &rest[0];
            admin::drop_queue(&mut conn, q, args.force)?;
            writeln!(out, "dropped queue {q}")?;
            Ok(())
        }
        "config" => {
            arity(command, rest, 1, usize::MAX)?;
            let q = &rest[0];
            let mut pairs = Vec::new();
            for kv in &rest[1..] {
                let Some((k, v)) = kv.split_once('=') else {
                    return Err(usage(format!("expected KEY=VALUE, got {kv:?}")));
                };
                if k.is_empty() {
                    return Err(usage(format!("empty key in {kv:?}")));
                }
                pairs.push((k, v));
            }
            let mut conn = connect(args.dsn.as_deref())?;
            if pairs.is_empty() {
                let info = admin::queue_info(&mut conn, q)?;
                print_config(&mut out, &info)?;
                return Ok(());
            }
            // All settings or none.
            let mut tx = conn.transaction().map_err(pgq::Error::from)?;
            for (k, v) in &pairs {
                admin::set_queue_config_raw(&mut tx, q, k, v)?;
            }
            tx.commit().map_err(pgq::Error::from)?;
            for (k, v) in &pairs {
                writeln!(out, "{q}: {k} = {v}")?;
            }
            Ok(())
        }
        "register" => {
            arity(command, rest, 2, 2)?;
            let (q, c) = (&rest[0], &rest[1]);
            let at =
                match &args.at {
                    Some(t) => Some(i64::from_str(t).map_err(|_| {
                        usage(format!("--at needs a tick id (an integer), got {t:?}"))
                    })?),
                    None => None,
                };
            let mut conn = connect(args.dsn.as_deref())?;
            match at {
                Some(tick) => {
                    admin::register_consumer_at(&mut conn, q, c, tick)?;
                    writeln!(out, "consumer {c} on queue {q} positioned at tick {tick}")?;
                }
                None => {
                    if admin::register_consumer(&mut conn, q, c)? {
                        writeln!(out, "registered consumer {c} on queue {q}")?;
                    } else {
                        writeln!(out, "consumer {c} was already registered on queue {q}")?;
                    }
                }
            }
            Ok(())
        }
        "unregister" => {
            arity(command, rest, 2, 2)?;
            let (q, c) = (&rest[0], &rest[1]);
            let mut conn = connect(args.dsn.as_deref())?;
            if admin::unregister_consumer(&mut conn, q, c)? > 0 {
                writeln!(out, "unregistered consumer {c} from queue {q}")?;
                Ok(())
            } else {
                Err(Failure::Run(format!(
                    "consumer {c} is not registered on queue {q}"
                )))
            }
        }
        "status" => {
            arity(command, rest, 0, 1)?;
            let queue = rest.first().map(String::as_str);
            let mut conn = connect(args.dsn.as_deref())?;
            // One snapshot for queues and consumers, so the two tables agree.
            let mut tx = conn
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(pgq::Error::from)?;
            let queues = match queue {
                Some(q) => vec![admin::queue_info(&mut tx, q)?],
                None => admin::queues(&mut tx)?,
            };
            let consumers = admin::consumer_info(&mut tx, queue, None)?;
            tx.commit().map_err(pgq::Error::from)?;
            if args.json {
                let doc = status_json(&queues, &consumers);
                serde_json::to_writer_pretty(&mut out, &doc).map_err(|e| {
                    match e.io_error_kind() {
                        Some(kind) => Failure::from(io::Error::from(kind)),
                        None => Failure::Run(format!("cannot write JSON: {e}")),
                    }
                })?;
                writeln!(out)?;
            } else {
                print_status(&mut out, &queues, &consumers)?;
            }
            Ok(())
        }
        "produce" => {
            arity(command, rest, 1, 1)?;
            let opts = events::ProduceOptions {
                queue: &rest[0],
                ev_type: args.ev_type.as_deref(),
                json: args.json,
                transaction_pooling: args.transaction_pooling,
            };
            events::produce(args.dsn.as_deref(), &opts, io::stdin().lock(), &mut out)
        }
        "consume" => {
            arity(command, rest, 2, 2)?;
            drop(out); // the workers print events; this thread holds no stdout lock
            events::consume(
                args.dsn.as_deref(),
                &rest[0],
                &rest[1],
                args.register,
                args.poll_only,
                args.transaction_pooling,
            )
        }
        "ticker" => ticker::run(args.dsn.as_deref(), rest, args.config.as_deref()),
        _ => Err(usage(format!("unknown command {command:?}"))),
    }
}

fn arity(command: &str, rest: &[String], min: usize, max: usize) -> Res<()> {
    let what = command_usage(command).unwrap_or(command);
    if rest.len() < min {
        return Err(usage(format!("missing arguments: usage: pgqctl {what}")));
    }
    if rest.len() > max {
        return Err(usage(format!(
            "unexpected argument {:?}: usage: pgqctl {what}",
            rest[max]
        )));
    }
    Ok(())
}

// ---- connecting ---------------------------------------------------------------------------

/// Builds the connection settings: the DSN (from `--dsn` or `PGQ_DSN`), completed like libpq
/// completes a conninfo, from the PG* environment variables and then libpq's defaults.
fn connection_config(dsn: Option<&str>) -> Res<postgres::Config> {
    let env_dsn = env::var("PGQ_DSN").ok().filter(|s| !s.trim().is_empty());
    let dsn = dsn.map(str::to_string).or(env_dsn).unwrap_or_default();
    let mut config = if dsn.trim().is_empty() {
        postgres::Config::new()
    } else {
        postgres::Config::from_str(&dsn)
            .map_err(|e| Failure::Run(format!("invalid DSN: {}", with_causes(&e))))?
    };
    let var = |name: &str| env::var(name).ok().filter(|v| !v.is_empty());
    if config.get_hosts().is_empty() {
        let hosts = var("PGHOST").unwrap_or_else(|| {
            // libpq's default on Debian: the server's socket directory, if there is one.
            if std::path::Path::new("/var/run/postgresql").is_dir() {
                "/var/run/postgresql".to_string()
            } else {
                "localhost".to_string()
            }
        });
        for h in hosts.split(',') {
            config.host(h);
        }
    }
    if config.get_ports().is_empty() {
        if let Some(p) = var("PGPORT") {
            for p in p.split(',') {
                let port = u16::from_str(p.trim())
                    .map_err(|_| Failure::Run(format!("PGPORT={p:?} is not a port number")))?;
                config.port(port);
            }
        }
    }
    if config.get_user().is_none() {
        let user = var("PGUSER")
            .or_else(|| var("USER"))
            .or_else(|| var("LOGNAME"))
            .ok_or_else(|| {
                Failure::Run("no database user: give user= in the DSN or set PGUSER".to_string())
            })?;
        config.user(&user);
    }
    if config.get_dbname().is_none() {
        let db = var("PGDATABASE").unwrap_or_else(|| config.get_user().unwrap_or("").to_string());
        config.dbname(&db);
    }
    if config.get_password().is_none() {
        if let Some(pw) = var("PGPASSWORD") {
            config.password(pw);
        }
    }
    if config.get_application_name().is_none() {
        config.application_name(&var("PGAPPNAME").unwrap_or_else(|| "pgqctl".to_string()));
    }
    if config.get_connect_timeout().is_none() {
        let secs = match var("PGCONNECT_TIMEOUT") {
            Some(s) => u64::from_str(s.trim()).map_err(|_| {
                Failure::Run(format!(
                    "PGCONNECT_TIMEOUT={s:?} is not a number of seconds"
                ))
            })?,
            None => 10,
        };
        if secs > 0 {
            config.connect_timeout(Duration::from_secs(secs));
        }
    }
    Ok(config)
}

/// Where we tried to connect, for error messages (never the password).
fn describe(config: &postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(s) => s.clone(),
            postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    format!(
        "database {:?} on {}{} as {:?}",
        config.get_dbname().unwrap_or(""),
        hosts.join(","),
        if ports.is_empty() {
            String::new()
        } else {
            format!(" port {}", ports.join(","))
        },
        config.get_user().unwrap_or("")
    )
}

fn connect(dsn: Option<&str>) -> Res<postgres::Client> {
    let config = connection_config(dsn)?;
    config.connect(postgres::NoTls).map_err(|e| {
        Failure::Run(format!(
            "cannot connect to {}: {}",
            describe(&config),
            with_causes(&e)
        ))
    })
}

/// An error's text followed by its causes' (postgres' own Display is terse for
/// connection and parse errors).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        src = s.source();
    }
    msg
}

// ---- output -------------------------------------------------------------------------------

/// A human duration: `850ms`, `4.2s`, `3m05s`, `2h10m`, `3d04h`.
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    if ms < 1000 {
        format!("{ms}ms")
    } else if s < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if s < 86400 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}d{:02}h", s / 86400, (s % 86400) / 3600)
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".to_string())
}

fn opt_human(v: Option<Duration>) -> String {
    v.map(human).unwrap_or_else(|| "-".to_string())
}

/// RFC 3339 UTC time with milliseconds; hand-rolled to keep pgqctl's dependencies small.
fn rfc3339(t: SystemTime) -> String {
    let (neg, d) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (false, d),
        Err(e) => (true, e.duration()),
    };
    let mut secs = d.as_secs() as i64;
    let mut millis = d.subsec_millis() as i64;
    if neg {
        secs = -secs;
        if millis > 0 {
            secs -= 1;
            millis = 1000 - millis;
        }
    }
    let days = secs.div_euclid(86400);
    let sod = secs.rem_euclid(86400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

fn secs(d: Duration) -> Value {
    json!(d.as_secs_f64())
}

fn opt_secs(d: Option<Duration>) -> Value {
    d.map(secs).unwrap_or(Value::Null)
}

fn status_json(queues: &[QueueInfo], consumers: &[ConsumerInfo]) -> Value {
    let queues: Vec<Value> = queues
        .iter()
        .map(|q| {
            json!({
                "queue": q.name,
                "last_tick_id": q.last_tick_id,
                "ticker_lag_seconds": opt_secs(q.ticker_lag),
                "new_events": q.ev_new,
                "events_per_second": q.ev_per_sec,
                "consumers": consumers.iter().filter(|c| c.queue_name == q.name).count(),
                "ticker_paused": q.ticker_paused,
                "external_ticker": q.external_ticker,
                "ticker_max_count": q.ticker_max_count,
                "ticker_max_lag_seconds": secs(q.ticker_max_lag),
                "ticker_idle_period_seconds": secs(q.ticker_idle_period),
                "rotation_period_seconds": secs(q.rotation_period),
                "ntables": q.ntables,
                "cur_table": q.cur_table,
                "switch_time": rfc3339(q.switch_time),
            })
        })
        .collect();
    let consumers: Vec<Value> = consumers
        .iter()
        .map(|c| {
            json!({
                "queue": c.queue_name,
                "consumer": c.consumer_name,
                "lag_seconds": opt_secs(c.lag),
                "last_seen_seconds": opt_secs(c.last_seen),
                "last_tick": c.last_tick,
                "current_batch": c.current_batch,
                "next_tick": c.next_tick,
                "pending_events": c.pending_events,
            })
        })
        .collect();
    json!({ "queues": queues, "consumers": consumers })
}

/// Prints rows as an aligned table; columns listed in `right` are right-aligned (numbers).
fn table(
    out: &mut impl Write,
    headers: &[&str],
    rows: &[Vec<String>],
    right: &[usize],
) -> io::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: &[String]| -> io::Result<()> {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let pad = widths[i] - cell.chars().count();
            if right.contains(&i) {
                s.push_str(&" ".repeat(pad));
                s.push_str(cell);
            } else {
                s.push_str(cell);
                if i + 1 < cells.len() {
                    s.push_str(&" ".repeat(pad));
                }
            }
        }
        writeln!(out, "{}", s.trim_end())
    };
    let head: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    line(out, &head)?;
    for row in rows {
        line(out, row)?;
    }
    Ok(())
}

fn print_status(
    out: &mut impl Write,
    queues: &[QueueInfo],
    consumers: &[ConsumerInfo],
) -> io::Result<()> {
    if queues.is_empty() {
        writeln!(out, "no queues")?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|q| {
            let mut state = String::new();
            if q.ticker_paused {
                state.push_str("paused");
            }
            if q.external_ticker {
                if !state.is_empty() {
                    state.push(',');
                }
                state.push_str("external ticker");
            }
            vec![
                q.name.clone(),
                opt(q.last_tick_id),
                opt_human(q.ticker_lag),
                q.ev_new.to_string(),
                q.ev_per_sec
                    .map(|r| format!("{r:.1}"))
                    .unwrap_or_else(|| "-".into()),
                consumers
                    .iter()
                    .filter(|c| c.queue_name == q.name)
                    .count()
                    .to_string(),
                if state.is_empty() { "-".into() } else { state },
            ]
        })
        .collect();
    table(
        out,
        &[
            "QUEUE",
            "LAST TICK",
            "TICK LAG",
            "NEW EVENTS",
            "EV/S",
            "CONSUMERS",
            "TICKER",
        ],
        &rows,
        &[1, 2, 3, 4, 5],
    )?;
    writeln!(out)?;
    if consumers.is_empty() {
        writeln!(out, "no consumers")?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = consumers
        .iter()
        .map(|c| {
            vec![
                c.queue_name.clone(),
                c.consumer_name.clone(),
                opt_human(c.lag),
                opt_human(c.last_seen),
                opt(c.last_tick),
                opt(c.current_batch),
                opt(c.pending_events),
            ]
        })
        .collect();
    table(
        out,
        &[
            "QUEUE",
            "CONSUMER",
            "LAG",
            "LAST SEEN",
            "LAST TICK",
            "BATCH",
            "PENDING",
        ],
        &rows,
        &[2, 3, 4, 5, 6],
    )
}

fn print_config(out: &mut impl Write, q: &QueueInfo) -> io::Result<()> {
    let rows = vec![
        vec![
            "ticker_max_count".to_string(),
            q.ticker_max_count.to_string(),
        ],
        vec!["ticker_max_lag".to_string(), human(q.ticker_max_lag)],
        vec![
            "ticker_idle_period".to_string(),
            human(q.ticker_idle_period),
        ],
        vec!["ticker_paused".to_string(), q.ticker_paused.to_string()],
        vec!["rotation_period".to_string(), human(q.rotation_period)],
        vec!["external_ticker".to_string(), q.external_ticker.to_string()],
    ];
    writeln!(out, "queue {}:", q.name)?;
    table(out, &["KEY", "VALUE"], &rows, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Res<Args> {
        parse_args(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn options_anywhere() {
        let a = args(&["status", "--json", "--dsn", "host=x", "q"]).unwrap();
        assert_eq!(a.positional, ["status", "q"]);
        assert!(a.json);
        assert_eq!(a.dsn.as_deref(), Some("host=x"));
        let a = args(&[
            "--dsn=host=y dbname=z",
            "drop-queue",
            "--force",
            "--",
            "--weird",
        ])
        .unwrap();
        assert_eq!(a.dsn.as_deref(), Some("host=y dbname=z"));
        assert_eq!(a.positional, ["drop-queue", "--weird"]);
        assert!(a.force);
    }

    #[test]
    fn bad_options() {
        assert!(matches!(args(&["--nope"]), Err(Failure::Usage(_))));
        assert!(matches!(args(&["status", "--dsn"]), Err(Failure::Usage(_))));
        assert!(matches!(args(&["--json=1"]), Err(Failure::Usage(_))));
        assert!(matches!(
            args(&["--transaction-pooling=yes"]),
            Err(Failure::Usage(_))
        ));
        // Only produce and consume take --transaction-pooling.
        let e = run(["status", "--transaction-pooling"].map(String::from)).unwrap_err();
        assert!(
            e.to_string()
                .contains("does not take --transaction-pooling"),
            "{e}"
        );
        let a = args(&["consume", "q", "c", "--transaction-pooling"]).unwrap();
        assert!(a.transaction_pooling && !a.poll_only);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_millis(850)), "850ms");
        assert_eq!(human(Duration::from_millis(4200)), "4.2s");
        assert_eq!(human(Duration::from_secs(185)), "3m05s");
        assert_eq!(human(Duration::from_secs(2 * 3600 + 600)), "2h10m");
        assert_eq!(human(Duration::from_secs(3 * 86400 + 4 * 3600)), "3d04h");
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // leap day 2000
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000Z");
        let t = UNIX_EPOCH - Duration::from_millis(1);
        assert_eq!(rfc3339(t), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn tables_align() {
        let mut buf = Vec::new();
        let rows = vec![
            vec!["a".to_string(), "1".to_string(), "x".to_string()],
            vec![
                "long name".to_string(),
                "12345".to_string(),
                "y".to_string(),
            ],
        ];
        table(&mut buf, &["NAME", "N", "Z"], &rows, &[1]).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(
            text,
            "NAME           N  Z\n\
             a              1  x\n\
             long name  12345  y\n"
        );
    }

    #[test]
    fn every_command_has_help() {
        for c in [
            "install",
            "schema",
            "create-queue",
            "drop-queue",
            "config",
            "register",
            "unregister",
            "status",
        ] {
            let h = command_help(c).unwrap();
            assert!(
                h.starts_with(&format!("usage: pgqctl [--dsn DSN] {c}")),
                "{h}"
            );
            assert!(h.lines().count() >= 4, "{c}: {h}");
            assert!(
                help().contains(&format!("\n    {c}")),
                "{c} missing from --help"
            );
        }
        assert!(command_help("nope").is_err());
    }
}
