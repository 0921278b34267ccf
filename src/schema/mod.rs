//! Our own PGQ schema and its installer.
//!
//! The schema is plain SQL and PL/pgSQL in `src/schema/sql/`, one file per function family,
//! compiled into the library. It speaks the SQL API of the official pgq 3.x extension (same
//! function names, arguments, result columns, catalog tables and error messages), so PGQ
//! tools such as `pgqd` and `python3-pgq` work on it, and it needs neither superuser nor a C
//! extension: a database owner can install it.
//!
//! [`install`] is all-or-nothing (one transaction), idempotent, records the installed
//! schema version, and upgrades an older install of ours in place: tables and queued events
//! stay, functions are replaced. When the database already has the official `pgq`
//! extension, it reports that and leaves the extension alone; the library then works on the
//! extension, and only our `pgq_coop` schema (cooperative consumers, which the extension
//! does not have) is added or upgraded next to it.

use postgres::GenericClient;

use crate::{Error, ErrorKind, Result};

/// Revision of the SQL in `src/schema/sql`. Bump it whenever that SQL changes, so that
/// [`install`] upgrades databases that have an older revision.
pub const SCHEMA_VERSION: &str = "9";

/// The SQL files, in install order.
const PARTS: &[(&str, &str)] = &[
    ("00_tables.sql", include_str!("sql/00_tables.sql")),
    ("10_internal.sql", include_str!("sql/10_internal.sql")),
    ("20_admin.sql", include_str!("sql/20_admin.sql")),
    ("30_produce.sql", include_str!("sql/30_produce.sql")),
    ("40_consume.sql", include_str!("sql/40_consume.sql")),
    ("50_ticker.sql", include_str!("sql/50_ticker.sql")),
    ("60_info.sql", include_str!("sql/60_info.sql")),
    ("70_coop.sql", COOP_SQL),
    ("90_grants.sql", include_str!("sql/90_grants.sql")),
];

/// What [`install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallOutcome {
    /// The schema was not there and has been installed.
    Installed {
        /// The schema revision now installed ([`SCHEMA_VERSION`]).
        version: String,
    },
    /// An older install of ours was upgraded in place; queued events were kept.
    Upgraded {
        /// The revision that was installed before.
        from: String,
        /// The revision now installed ([`SCHEMA_VERSION`]).
        to: String,
    },
    /// The current revision was already installed; nothing changed.
    AlreadyCurrent {
        /// The installed revision.
        version: String,
    },
    /// The database has the official `pgq` extension; it was left alone and the library
    /// uses it as it is.
    OfficialExtension {
        /// The extension's version (`pg_extension.extversion`).
        version: String,
    },
}

/// The complete install script, as `pgqctl schema` prints it: one transaction that creates
/// or upgrades the schema and records its revision. Run it with `psql -1 -f` or similar.
///
/// ```
/// let sql = pgq::schema::sql();
/// assert!(sql.contains("create or replace function pgq.next_batch"));
/// ```
pub fn sql() -> String {
    let mut out = String::from("-- libpgq PGQ schema, revision ");
    out.push_str(SCHEMA_VERSION);
    out.push_str("\nbegin;\n");
    out.push_str(&body());
    out.push_str(&record_version_sql());
    out.push_str("commit;\n");
    out
}

fn body() -> String {
    let mut out = String::new();
    for (name, text) in PARTS {
        out.push_str("\n-- ==== ");
        out.push_str(name);
        out.push_str(" ====\n");
        out.push_str(text);
    }
    out
}

fn record_version_sql() -> String {
    format!(
        "\ninsert into pgq.libpgq_schema (singleton, version) values (true, '{v}')\n    \
         on conflict (singleton) do update set version = '{v}', upgraded_at = now();\n\
         -- Anyone may read the revision (producers look at it to choose their insert path).\n\
         grant select on pgq.libpgq_schema to public;\n",
        v = SCHEMA_VERSION
    )
}

/// Install or upgrade the PGQ schema in the connected database, in one transaction.
///
/// Safe to call at every start of an application: when the current revision is installed it
/// only checks and returns [`InstallOutcome::AlreadyCurrent`] (after granting privileges to
/// pgq roles an administrator created since an install that could not create them). On a
/// database with the official extension it returns [`InstallOutcome::OfficialExtension`]
/// after adding or upgrading our `pgq_coop` schema there (skipped with a warning when this
/// role may not). Concurrent installers wait for each other. When called on a connection
/// that is inside a transaction, the install runs in a savepoint of it.
///
/// Errors: a `pgq` schema that neither libpgq nor the official extension made (for example
/// the reference installed from plain SQL) is refused rather than modified, as is a newer
/// libpgq revision than this library knows.
///
/// ```no_run
/// # fn main() -> pgq::Result<()> {
/// let mut conn = postgres::Client::connect("host=localhost dbname=app", postgres::NoTls)?;
/// match pgq::schema::install(&mut conn)? {
///     pgq::schema::InstallOutcome::OfficialExtension { version } => {
///         println!("using the official pgq extension {version}")
///     }
///     outcome => println!("{outcome:?}"),
/// }
/// # Ok(()) }
/// ```
pub fn install(client: &mut impl GenericClient) -> Result<InstallOutcome> {
    let mut tx = client.transaction()?;
    // One installer at a time; the lock goes with the transaction.
    tx.execute("select pg_advisory_xact_lock(hashtext('pgq'), 0)", &[])?;

    if let Some(row) = tx.query_opt(
        "select extversion from pg_catalog.pg_extension where extname = 'pgq'",
        &[],
    )? {
        let version: String = row.get(0);
        log::info!("database has the official pgq extension {version}; leaving it alone");
        install_coop_on_extension(&mut tx)?;
        tx.commit()?;
        return Ok(InstallOutcome::OfficialExtension { version });
    }

    let existing = installed_version(&mut tx)?;
    let outcome = match existing {
        None => InstallOutcome::Installed {
            version: SCHEMA_VERSION.to_string(),
        },
        Some(v) if v == SCHEMA_VERSION => {
            // Roles an administrator created after an install without CREATEROLE get
            // their grants now; otherwise nothing changes.
            if missing_role_grants(&mut tx)? {
                tx.batch_execute(GRANTS)?;
                tx.commit()?;
                log::info!("libpgq schema {v}: granted privileges to pgq roles added since");
            }
            return Ok(InstallOutcome::AlreadyCurrent { version: v });
        }
        Some(v) => {
            if parse_revision(&v) > parse_revision(SCHEMA_VERSION) {
                return Err(Error::new(
                    ErrorKind::Other,
                    format!(
                        "the database has libpgq schema revision {v}, newer than this \
                         library's revision {SCHEMA_VERSION}; upgrade the library"
                    ),
                ));
            }
            InstallOutcome::Upgraded {
                from: v,
                to: SCHEMA_VERSION.to_string(),
            }
        }
    };

    let mut script = body();
    script.push_str(&record_version_sql());
    tx.batch_execute(&script)?;
    tx.commit()?;
    log::info!("libpgq schema: {outcome:?}");
    Ok(outcome)
}

/// The privileges part of the schema, re-run on its own when pgq roles lack their grants.
const GRANTS: &str = include_str!("sql/90_grants.sql");

/// True when a pgq role exists but lacks the privileges the install grants it, which
/// happens when the roles were created after an install by an owner without CREATEROLE.
fn missing_role_grants(tx: &mut postgres::Transaction<'_>) -> Result<bool> {
    let row = tx.query_one(
        "select coalesce(bool_or(not has_function_privilege(r.rolname, f.fn, 'execute')), false)
           from (values ('pgq_reader', 'pgq.next_batch(text,text)'),
                        ('pgq_writer', 'pgq.insert_event(text,text,text)'),
                        ('pgq_admin', 'pgq.create_queue(text)')) f (role, fn)
           join pg_catalog.pg_roles r on r.rolname = f.role",
        &[],
    )?;
    Ok(row.get(0))
}

/// The official extension has no `pgq_coop` (SkyTools ships it separately); ours works on
/// top of the extension's public functions and tables, so it is installed there too, in
/// its own revision table. Lack of privileges, a newer revision, or a `pgq_coop` schema
/// that is not ours leave it as it is, with a warning: the pgq part works regardless.
fn install_coop_on_extension(tx: &mut postgres::Transaction<'_>) -> Result<()> {
    let row = tx.query_one(
        "select to_regnamespace('pgq_coop') is not null,
                to_regclass('pgq_coop.libpgq_schema') is not null,
                has_table_privilege('pgq.subscription', 'select, insert, update, delete')
                    and has_table_privilege('pgq.consumer', 'select, insert')",
        &[],
    )?;
    let (schema, ours, privileged): (bool, bool, bool) = (row.get(0), row.get(1), row.get(2));
    if schema && !ours {
        log::warn!("pgq_coop exists but libpgq did not install it; leaving it alone");
        return Ok(());
    }
    if ours {
        let current: Option<String> = tx
            .query_opt("select version from pgq_coop.libpgq_schema", &[])?
            .map(|r| r.get(0));
        match current {
            Some(v) if v == SCHEMA_VERSION => return Ok(()),
            Some(v) if parse_revision(&v) > parse_revision(SCHEMA_VERSION) => {
                log::warn!(
                    "pgq_coop has libpgq revision {v}, newer than this library's \
                     {SCHEMA_VERSION}; leaving it alone"
                );
                return Ok(());
            }
            _ => {}
        }
    }
    if !privileged {
        log::warn!(
            "not installing pgq_coop on the pgq extension: this role may not modify \
             pgq.subscription and pgq.consumer"
        );
        return Ok(());
    }
    let mut sp = tx.transaction()?;
    let script = format!(
        "{COOP_SQL}\ncreate table if not exists pgq_coop.libpgq_schema (\n    \
         singleton boolean primary key default true check (singleton),\n    \
         version text not null,\n    \
         installed_at timestamptz not null default now(),\n    \
         upgraded_at timestamptz\n);\n\
         insert into pgq_coop.libpgq_schema (singleton, version) values (true, '{v}')\n    \
         on conflict (singleton) do update set version = '{v}', upgraded_at = now();\n",
        v = SCHEMA_VERSION
    );
    match sp.batch_execute(&script) {
        Ok(()) => {
            sp.commit()?;
            log::info!("pgq_coop revision {SCHEMA_VERSION} installed on the pgq extension");
            Ok(())
        }
        Err(e) if e.code() == Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => {
            log::warn!("not installing pgq_coop on the pgq extension: {e}");
            sp.rollback()?;
            Ok(())
        }
        Err(e) => Err(Error::from(e).context("install pgq_coop on the pgq extension")),
    }
}

const COOP_SQL: &str = include_str!("sql/70_coop.sql");

/// The libpgq schema revision installed, `None` when there is no pgq schema at all (or an
/// empty one). Errors for a foreign pgq schema.
fn installed_version(tx: &mut postgres::Transaction<'_>) -> Result<Option<String>> {
    let row = tx.query_one(
        "select to_regclass('pgq.libpgq_schema') is not null,
                to_regclass('pgq.queue') is not null",
        &[],
    )?;
    let (ours, any_pgq): (bool, bool) = (row.get(0), row.get(1));
    if ours {
        let version = tx
            .query_opt("select version from pgq.libpgq_schema", &[])?
            .map(|r| r.get::<_, String>(0))
            // Tables exist but the version row does not: an interrupted manual install.
            .unwrap_or_else(|| "0".to_string());
        return Ok(Some(version));
    }
    if any_pgq {
        return Err(Error::new(
            ErrorKind::Other,
            "the database has a pgq schema that neither libpgq nor the pgq extension \
             installed (the reference pgq loaded from plain SQL?); refusing to modify it",
        ));
    }
    Ok(None)
}

fn parse_revision(v: &str) -> u64 {
    v.trim().parse().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_is_one_transaction_with_every_part() {
        let s = sql();
        assert!(s.contains("\nbegin;\n"));
        assert!(s.trim_end().ends_with("commit;"));
        for (name, _) in PARTS {
            assert!(s.contains(name), "missing {name}");
        }
    }

    #[test]
    fn revisions_compare_numerically() {
        assert!(parse_revision("10") > parse_revision("9"));
        assert_eq!(parse_revision("garbage"), 0);
    }
}
