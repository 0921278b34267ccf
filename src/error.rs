//! The one error type of the library.
//!
//! Every fallible call returns [`Result<T>`]. An [`Error`] carries a coarse [`ErrorKind`] to
//! branch on, the server's SQLSTATE when PostgreSQL sent one, a message meant for a human, and
//! the underlying error as its [`source`](std::error::Error::source).
//!
//! PGQ's SQL functions report most failures with `RAISE EXCEPTION` (SQLSTATE `P0001`), so the
//! kind is derived from the server's message text: "No such queue" and its variants become
//! [`ErrorKind::NoSuchQueue`], "Not subscriber to queue: q/c" becomes
//! [`ErrorKind::NotSubscribed`], and so on. Both our schema and the official extension use the
//! same messages, so the mapping works on either backend.

use std::fmt;

/// `std::result::Result` with this crate's [`Error`].
///
/// ```
/// fn check(name: &str) -> pgq::Result<()> {
///     if name.is_empty() {
///         return Err(pgq::Error::invalid_input("queue name must not be empty"));
///     }
///     Ok(())
/// }
/// assert!(check("").is_err());
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, coarsely; match on this rather than on message text.
///
/// ```
/// use pgq::ErrorKind;
/// let err = pgq::Error::invalid_input("bad name");
/// assert_eq!(err.kind(), ErrorKind::InvalidInput);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Could not connect to the server (unreachable, refused, bad credentials, bad DSN).
    Connect,
    /// No pooled connection became available within the pool's timeout.
    Pool,
    /// An established connection broke while in use.
    ConnectionLost,
    /// The named queue does not exist.
    NoSuchQueue,
    /// The consumer is not registered on the queue.
    NotSubscribed,
    /// The queue cannot be dropped because consumers are still registered (use `force`).
    ConsumersAttached,
    /// The batch id is unknown (already finished, or never existed).
    NoSuchBatch,
    /// The event is not part of the given batch.
    NoSuchEvent,
    /// A cooperative sub-consumer still has an open batch (unregister it with
    /// [`BatchHandling::Release`](crate::coop::BatchHandling::Release), or finish the batch).
    BatchOpen,
    /// The tick id given to `register_consumer_at` does not exist for the queue.
    NoSuchTick,
    /// Inserts into the queue are disabled (`queue_disable_insert`).
    InsertDisabled,
    /// The queue's ticker is paused or external, so `ticker(queue)` refuses to tick it.
    TickerDisabled,
    /// The PGQ schema is missing from the database, or is not usable by this library.
    NotInstalled,
    /// Rejected before reaching the server, or refused by the server as invalid data
    /// (bad name, unknown parameter, NUL byte, NULL where a value is needed, ...).
    InvalidInput,
    /// The server did not give permission (SQLSTATE class 42501).
    PermissionDenied,
    /// Any other error reported by the server.
    Database,
    /// A [`Worker`](crate::Worker)'s handler returned an error or panicked; the batch was
    /// left unfinished and is delivered again.
    Handler,
    /// Anything else (I/O while streaming, unexpected results).
    Other,
}

impl ErrorKind {
    fn describe(self) -> &'static str {
        match self {
            ErrorKind::Connect => "cannot connect to PostgreSQL",
            ErrorKind::Pool => "no database connection available",
            ErrorKind::ConnectionLost => "database connection lost",
            ErrorKind::NoSuchQueue => "no such queue",
            ErrorKind::NotSubscribed => "consumer not registered",
            ErrorKind::ConsumersAttached => "consumers still attached",
            ErrorKind::NoSuchBatch => "no such batch",
            ErrorKind::NoSuchEvent => "no such event",
            ErrorKind::BatchOpen => "subconsumer has an open batch",
            ErrorKind::NoSuchTick => "no such tick",
            ErrorKind::InsertDisabled => "inserts disabled",
            ErrorKind::TickerDisabled => "ticker disabled for queue",
            ErrorKind::NotInstalled => "PGQ not installed",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::Database => "database error",
            ErrorKind::Handler => "handler failed",
            ErrorKind::Other => "error",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// An error from this library.
///
/// `Display` gives one line a user can act on; [`kind`](Error::kind) is for code,
/// [`sqlstate`](Error::sqlstate) is the five-character code the server sent, if any.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// let client = pgq::Client::connect("host=localhost dbname=app")?;
/// match client.create_queue("orders") {
///     Ok(created) => println!("created: {created}"),
///     Err(e) if e.kind() == pgq::ErrorKind::PermissionDenied => eprintln!("ask the DBA: {e}"),
///     Err(e) => return Err(e),
/// }
/// # Ok(()) }
/// ```
pub struct Error {
    kind: ErrorKind,
    message: String,
    sqlstate: Option<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// Creates an error of the given kind with a message.
    ///
    /// ```
    /// let e = pgq::Error::new(pgq::ErrorKind::Other, "something odd");
    /// assert_eq!(e.to_string(), "something odd");
    /// ```
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            sqlstate: None,
            source: None,
        }
    }

    /// Shorthand for an [`ErrorKind::InvalidInput`] error.
    ///
    /// ```
    /// let e = pgq::Error::invalid_input("queue name is empty");
    /// assert_eq!(e.kind(), pgq::ErrorKind::InvalidInput);
    /// ```
    pub fn invalid_input(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidInput, message)
    }

    /// Attaches an underlying cause, returned by [`source`](std::error::Error::source).
    ///
    /// ```
    /// use std::error::Error as _;
    /// let io = std::io::Error::new(std::io::ErrorKind::Other, "disk");
    /// let e = pgq::Error::new(pgq::ErrorKind::Other, "write failed").with_source(io);
    /// assert!(e.source().is_some());
    /// ```
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        self.source = Some(Box::new(source));
        self
    }

    /// Prefixes the message with what was being done, e.g. `"create_queue(\"orders\")"`.
    pub(crate) fn context(mut self, what: impl fmt::Display) -> Error {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// The kind of failure.
    ///
    /// ```
    /// let e = pgq::Error::invalid_input("x");
    /// assert_eq!(e.kind(), pgq::ErrorKind::InvalidInput);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The SQLSTATE the server reported (e.g. `"P0001"` for a PGQ `RAISE`), if any.
    ///
    /// ```
    /// assert_eq!(pgq::Error::invalid_input("x").sqlstate(), None);
    /// ```
    pub fn sqlstate(&self) -> Option<&str> {
        self.sqlstate.as_deref()
    }

    /// The human-readable message, without the kind prefix that `Display` may add.
    ///
    /// ```
    /// assert_eq!(pgq::Error::invalid_input("bad").message(), "bad");
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(s) = &self.sqlstate {
            d.field("sqlstate", s);
        }
        if let Some(s) = &self.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(state) = &self.sqlstate {
            write!(f, " (SQLSTATE {state})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| &**s as &(dyn std::error::Error + 'static))
    }
}

/// Classifies a server message raised by PGQ's SQL functions (ours or the reference's).
fn kind_from_server_message(sqlstate: &str, msg: &str) -> ErrorKind {
    let lower = msg.to_ascii_lowercase();
    if lower.starts_with("no such queue")
        || lower.starts_with("no such event queue")
        || lower.starts_with("event queue not created yet")
        || lower.starts_with("event queue not found")
        || lower.starts_with("queue not found")
    {
        return ErrorKind::NoSuchQueue;
    }
    if lower.starts_with("not subscriber to queue") || lower.starts_with("consumer not registered")
    {
        return ErrorKind::NotSubscribed;
    }
    if lower.starts_with("cannot drop queue, consumers still attached") {
        return ErrorKind::ConsumersAttached;
    }
    if lower.starts_with("subconsumer has an open batch") {
        return ErrorKind::BatchOpen;
    }
    if lower.starts_with("event not found") {
        return ErrorKind::NoSuchEvent;
    }
    if lower.contains("batch not found") || (lower.contains("batch") && lower.contains("not found"))
    {
        return ErrorKind::NoSuchBatch;
    }
    if lower.contains("tick not found") {
        return ErrorKind::NoSuchTick;
    }
    if lower.starts_with("insert into queue disallowed")
        || lower.starts_with("writing to queue disabled")
    {
        return ErrorKind::InsertDisabled;
    }
    if lower.starts_with("ticker has been paused") || lower.contains("external tick source") {
        return ErrorKind::TickerDisabled;
    }
    if lower.starts_with("cannot change parameter")
        || lower.starts_with("invalid null value")
        || lower.starts_with("queue name must not be null")
        || lower.starts_with("invalid queue name")
        || lower.starts_with("invalid consumer name")
    {
        return ErrorKind::InvalidInput;
    }
    match sqlstate {
        // 3F000 invalid_schema_name / 42883 undefined_function on pgq.*: schema missing.
        "3F000" => ErrorKind::NotInstalled,
        "42883" if lower.contains("pgq.") || lower.contains("pgq_coop.") => ErrorKind::NotInstalled,
        "42501" => ErrorKind::PermissionDenied,
        "28000" | "28P01" => ErrorKind::Connect,
        "3D000" => ErrorKind::Connect,
        s if s.starts_with("08") => ErrorKind::ConnectionLost,
        s if s.starts_with("57P") => ErrorKind::ConnectionLost,
        // data exceptions and integrity violations are caused by the values we were given
        s if s.starts_with("22") || s.starts_with("23") => ErrorKind::InvalidInput,
        _ => ErrorKind::Database,
    }
}

impl From<postgres::Error> for Error {
    fn from(err: postgres::Error) -> Error {
        if let Some(db) = err.as_db_error() {
            let state = db.code().code().to_string();
            let kind = kind_from_server_message(&state, db.message());
            let mut message = db.message().to_string();
            if let Some(detail) = db.detail() {
                message.push_str(" (");
                message.push_str(detail);
                message.push(')');
            }
            if let Some(hint) = db.hint() {
                message.push_str("; hint: ");
                message.push_str(hint);
            }
            if kind == ErrorKind::NotInstalled {
                message.push_str(
                    "; is PGQ installed in this database? run pgq::Client::install or `pgqctl install`",
                );
            }
            return Error {
                kind,
                message,
                sqlstate: Some(state),
                source: Some(Box::new(err)),
            };
        }
        // A closed connection, or an I/O error on the socket (the server went away, the
        // backend was terminated, the network broke): the connection is gone either way.
        let io = std::error::Error::source(&err)
            .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some());
        let kind = if err.is_closed() || io {
            ErrorKind::ConnectionLost
        } else {
            ErrorKind::Database
        };
        Error {
            kind,
            message: err.to_string(),
            sqlstate: err.code().map(|c| c.code().to_string()),
            source: Some(Box::new(err)),
        }
    }
}

impl From<r2d2::Error> for Error {
    fn from(err: r2d2::Error) -> Error {
        Error {
            kind: ErrorKind::Pool,
            message: format!("could not get a database connection from the pool: {err}"),
            sqlstate: None,
            source: Some(Box::new(err)),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Error {
        Error {
            kind: ErrorKind::Other,
            message: err.to_string(),
            sqlstate: None,
            source: Some(Box::new(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_messages_map_to_kinds() {
        let cases = [
            ("No such queue", ErrorKind::NoSuchQueue),
            ("No such event queue", ErrorKind::NoSuchQueue),
            ("Event queue not created yet", ErrorKind::NoSuchQueue),
            ("Event queue not found", ErrorKind::NoSuchQueue),
            ("no such queue", ErrorKind::NoSuchQueue),
            ("Not subscriber to queue: q/c", ErrorKind::NotSubscribed),
            (
                "cannot drop queue, consumers still attached",
                ErrorKind::ConsumersAttached,
            ),
            ("batch not found", ErrorKind::NoSuchBatch),
            ("batch_retry: batch 5 not found", ErrorKind::NoSuchBatch),
            ("event not found", ErrorKind::NoSuchEvent),
            ("event not found: 5 in batch 1", ErrorKind::NoSuchEvent),
            (
                "cannot reposition, tick not found: 9",
                ErrorKind::NoSuchTick,
            ),
            ("Insert into queue disallowed", ErrorKind::InsertDisabled),
            ("Writing to queue disabled", ErrorKind::InsertDisabled),
            (
                "Ticker has been paused for this queue",
                ErrorKind::TickerDisabled,
            ),
            (
                "This queue has external tick source.",
                ErrorKind::TickerDisabled,
            ),
            ("cannot change parameter \"x\"", ErrorKind::InvalidInput),
            ("Queue name must not be NULL", ErrorKind::InvalidInput),
            (
                "Invalid queue name: must not be empty",
                ErrorKind::InvalidInput,
            ),
            ("something else", ErrorKind::Database),
        ];
        for (msg, kind) in cases {
            assert_eq!(kind_from_server_message("P0001", msg), kind, "{msg}");
        }
        assert_eq!(
            kind_from_server_message("3F000", "schema \"pgq\" does not exist"),
            ErrorKind::NotInstalled
        );
        assert_eq!(
            kind_from_server_message("23502", "null value in column"),
            ErrorKind::InvalidInput
        );
    }

    #[test]
    fn display_includes_sqlstate() {
        let mut e = Error::new(ErrorKind::NoSuchQueue, "No such queue");
        e.sqlstate = Some("P0001".into());
        assert_eq!(e.to_string(), "No such queue (SQLSTATE P0001)");
    }
}
