//! Event types: [`NewEvent`] to produce, [`Event`] as consumed.
//!
//! PGQ events have a type, a data payload and four extra text fields, all free-form text
//! (any of them may be NULL). Their meaning is up to the application; PGQ's change-capture
//! triggers, for example, put the operation in `ev_type` and the table name in `ev_extra1`.

use std::time::{Duration, SystemTime};

use postgres::types::{FromSql, Type};
use postgres::Row;

use crate::error::{Error, ErrorKind, Result};

/// An event to insert. Built with [`NewEvent::new`] and the builder-style setters; the
/// fields are public for struct-literal use too.
///
/// ```
/// let ev = pgq::NewEvent::new("order.created", r#"{"id": 42}"#)
///     .extra1("public.orders")
///     .extra2("eu-west");
/// assert_eq!(ev.ev_type.as_deref(), Some("order.created"));
/// assert_eq!(ev.extra3, None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewEvent {
    /// `ev_type`: what kind of event this is.
    pub ev_type: Option<String>,
    /// `ev_data`: the payload.
    pub data: Option<String>,
    /// `ev_extra1`.
    pub extra1: Option<String>,
    /// `ev_extra2`.
    pub extra2: Option<String>,
    /// `ev_extra3`.
    pub extra3: Option<String>,
    /// `ev_extra4`.
    pub extra4: Option<String>,
}

impl NewEvent {
    /// An event with a type and a payload, extras NULL.
    ///
    /// ```
    /// let ev = pgq::NewEvent::new("ping", "");
    /// assert_eq!(ev.data.as_deref(), Some(""));
    /// ```
    pub fn new(ev_type: impl Into<String>, data: impl Into<String>) -> NewEvent {
        NewEvent {
            ev_type: Some(ev_type.into()),
            data: Some(data.into()),
            ..NewEvent::default()
        }
    }

    /// Sets `ev_type` (`None` stores NULL).
    ///
    /// ```
    /// let ev = pgq::NewEvent::default().ev_type(None::<String>);
    /// assert_eq!(ev.ev_type, None);
    /// ```
    pub fn ev_type(mut self, v: impl Into<Option<String>>) -> NewEvent {
        self.ev_type = v.into();
        self
    }

    /// Sets `ev_data` (`None` stores NULL).
    ///
    /// ```
    /// let ev = pgq::NewEvent::default().data(Some("x".to_string()));
    /// assert_eq!(ev.data.as_deref(), Some("x"));
    /// ```
    pub fn data(mut self, v: impl Into<Option<String>>) -> NewEvent {
        self.data = v.into();
        self
    }

    /// Sets `ev_extra1`.
    ///
    /// ```
    /// let ev = pgq::NewEvent::new("t", "d").extra1("a");
    /// assert_eq!(ev.extra1.as_deref(), Some("a"));
    /// ```
    pub fn extra1(mut self, v: impl Into<String>) -> NewEvent {
        self.extra1 = Some(v.into());
        self
    }

    /// Sets `ev_extra2`.
    ///
    /// ```
    /// let ev = pgq::NewEvent::new("t", "d").extra2("b");
    /// assert_eq!(ev.extra2.as_deref(), Some("b"));
    /// ```
    pub fn extra2(mut self, v: impl Into<String>) -> NewEvent {
        self.extra2 = Some(v.into());
        self
    }

    /// Sets `ev_extra3`.
    ///
    /// ```
    /// let ev = pgq::NewEvent::new("t", "d").extra3("c");
    /// assert_eq!(ev.extra3.as_deref(), Some("c"));
    /// ```
    pub fn extra3(mut self, v: impl Into<String>) -> NewEvent {
        self.extra3 = Some(v.into());
        self
    }

    /// Sets `ev_extra4`.
    ///
    /// ```
    /// let ev = pgq::NewEvent::new("t", "d").extra4("d");
    /// assert_eq!(ev.extra4.as_deref(), Some("d"));
    /// ```
    pub fn extra4(mut self, v: impl Into<String>) -> NewEvent {
        self.extra4 = Some(v.into());
        self
    }

    /// The six text fields in column order: type, data, extra1..4.
    pub(crate) fn fields(&self) -> [&Option<String>; 6] {
        [
            &self.ev_type,
            &self.data,
            &self.extra1,
            &self.extra2,
            &self.extra3,
            &self.extra4,
        ]
    }

    /// Checks that no field contains a NUL byte (PostgreSQL text cannot store one).
    pub(crate) fn validate(&self) -> Result<()> {
        let fields = [
            ("ev_type", &self.ev_type),
            ("ev_data", &self.data),
            ("ev_extra1", &self.extra1),
            ("ev_extra2", &self.extra2),
            ("ev_extra3", &self.extra3),
            ("ev_extra4", &self.extra4),
        ];
        for (name, value) in fields {
            crate::client::check_text(format_args!("event field {name}"), value.as_deref())?;
        }
        Ok(())
    }
}

/// An event read from a batch.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// # let client = pgq::Client::connect("dbname=app")?;
/// let consumer = pgq::Consumer::new(&client, "orders", "mailer")?;
/// if let Some(batch) = consumer.next_batch()? {
///     for ev in batch.events() {
///         let ev = ev?;
///         println!("#{} {:?} retry={:?}: {:?}", ev.id, ev.ev_type, ev.retry, ev.data);
///     }
///     batch.finish()?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `ev_id`: unique within the queue; increasing but not gap-free and not commit-ordered.
    pub id: i64,
    /// `ev_time`: when the event was (first) inserted.
    pub time: SystemTime,
    /// `ev_txid`: the inserting transaction (for a retried event, the transaction that moved it
    /// back into the queue).
    pub txid: i64,
    /// `ev_retry`: `None` on first delivery, then the number of the retry attempt.
    pub retry: Option<i32>,
    /// `ev_type`.
    pub ev_type: Option<String>,
    /// `ev_data`.
    pub data: Option<String>,
    /// `ev_extra1`.
    pub extra1: Option<String>,
    /// `ev_extra2`.
    pub extra2: Option<String>,
    /// `ev_extra3`.
    pub extra3: Option<String>,
    /// `ev_extra4`.
    pub extra4: Option<String>,
}

/// Where each event column sits in a result row, found once per result (by name) so that
/// every row is then read by position: looking columns up by name for each of millions of
/// rows costs more than decoding them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventColumns([usize; 10]);

impl EventColumns {
    const NAMES: [&'static str; 10] = [
        "ev_id",
        "ev_time",
        "ev_txid",
        "ev_retry",
        "ev_type",
        "ev_data",
        "ev_extra1",
        "ev_extra2",
        "ev_extra3",
        "ev_extra4",
    ];

    /// The positions of the event columns in `columns`.
    pub(crate) fn find(columns: &[postgres::Column]) -> Result<EventColumns> {
        let mut at = [0; 10];
        for (slot, name) in at.iter_mut().zip(Self::NAMES) {
            *slot = columns
                .iter()
                .position(|c| c.name() == name)
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Other,
                        format!("unexpected event row from the server: no column {name}"),
                    )
                })?;
        }
        Ok(EventColumns(at))
    }
}

/// A time given as microseconds since the Unix epoch (as the simple-protocol queries select
/// timestamps: that text does not depend on the session's DateStyle).
pub(crate) fn time_from_micros(micros: i64) -> SystemTime {
    let d = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        SystemTime::UNIX_EPOCH + d
    } else {
        SystemTime::UNIX_EPOCH - d
    }
}

impl Event {
    /// Reads a row of the simple (text) protocol with the event columns in their usual order,
    /// `ev_time` given as microseconds since the Unix epoch.
    pub(crate) fn from_text_row(row: &postgres::SimpleQueryRow) -> Result<Event> {
        let bad = |what: &str| {
            Error::new(
                ErrorKind::Other,
                format!("unexpected event row from the server: {what}"),
            )
        };
        if row.len() != 10 {
            return Err(bad(&format!("{} columns", row.len())));
        }
        let text = |i: usize| row.get(i).map(str::to_string);
        let int = |i: usize| -> Result<Option<i64>> {
            row.get(i)
                .map(|v| {
                    v.parse::<i64>()
                        .map_err(|_| bad(&format!("column {i} is {v:?}")))
                })
                .transpose()
        };
        let required = |i: usize| int(i)?.ok_or_else(|| bad(&format!("column {i} is NULL")));
        Ok(Event {
            id: required(0)?,
            time: time_from_micros(required(1)?),
            txid: required(2)?,
            retry: int(3)?
                .map(|r| i32::try_from(r).map_err(|_| bad("ev_retry out of range")))
                .transpose()?,
            ev_type: text(4),
            data: text(5),
            extra1: text(6),
            extra2: text(7),
            extra3: text(8),
            extra4: text(9),
        })
    }

    /// Reads a row shaped like `pgq.get_batch_events` / `get_batch_cursor` output, whose
    /// columns are where `at` says.
    pub(crate) fn from_row_at(row: &Row, at: &EventColumns) -> Result<Event> {
        let conv = |e: postgres::Error| {
            Error::new(
                ErrorKind::Other,
                format!("unexpected event row from the server: {e}"),
            )
            .with_source(e)
        };
        let [id, time, txid, retry, ev_type, data, extra1, extra2, extra3, extra4] = at.0;
        Ok(Event {
            id: row.try_get(id).map_err(conv)?,
            time: row.try_get(time).map_err(conv)?,
            txid: row.try_get(txid).map_err(conv)?,
            retry: row.try_get(retry).map_err(conv)?,
            ev_type: text_at(row, ev_type).map_err(conv)?,
            data: text_at(row, data).map_err(conv)?,
            extra1: text_at(row, extra1).map_err(conv)?,
            extra2: text_at(row, extra2).map_err(conv)?,
            extra3: text_at(row, extra3).map_err(conv)?,
            extra4: text_at(row, extra4).map_err(conv)?,
        })
    }
}

/// A text column read straight into a `String`. `String`'s own `FromSql` first asks the
/// type's name (for the `ltree` extension types) and validates UTF-8 byte by byte; event
/// columns are plain text, and their bytes are usually ASCII, which is checked a word at a
/// time here. This is most of the cost of reading an event.
struct Text(String);

impl<'a> FromSql<'a> for Text {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Text, Box<dyn std::error::Error + Sync + Send>> {
        let s = if raw.is_ascii() {
            // SAFETY: ASCII is valid UTF-8.
            unsafe { std::str::from_utf8_unchecked(raw) }
        } else {
            std::str::from_utf8(raw)?
        };
        Ok(Text(s.to_owned()))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME)
    }
}

/// Column `i` of `row` as text (`None` for NULL).
fn text_at(row: &Row, i: usize) -> std::result::Result<Option<String>, postgres::Error> {
    Ok(row.try_get::<_, Option<Text>>(i)?.map(|t| t.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_columns_are_checked_utf8() {
        let read = |raw: &[u8]| Text::from_sql(&Type::TEXT, raw).map(|t| t.0);
        assert_eq!(read(b"order.created").unwrap(), "order.created");
        assert_eq!(read(b"").unwrap(), "");
        let mixed = "ünïcødé ✓ 😀 and ASCII after it, long enough for a word-wise check";
        assert_eq!(read(mixed.as_bytes()).unwrap(), mixed);
        assert!(read(b"bad \xff byte").is_err(), "0xff is never UTF-8");
        assert!(read(&[0xc3]).is_err(), "a truncated sequence is not UTF-8");
        assert!(Text::accepts(&Type::TEXT) && Text::accepts(&Type::VARCHAR));
        assert!(!Text::accepts(&Type::INT8) && !Text::accepts(&Type::BYTEA));
    }

    #[test]
    fn nul_is_rejected() {
        let ev = NewEvent::new("t", "a\0b");
        let e = ev.validate().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("ev_data"), "{e}");
        assert!(NewEvent::new("t", "ok").validate().is_ok());
    }
}
