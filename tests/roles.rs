//! The pgq roles, on both backends: a login in pgq_writer produces but cannot consume or
//! administer; one in pgq_reader consumes but cannot produce or
//! administer, and the WHERE filter it may hand to get_batch_cursor runs with its own
//! rights, not the schema owner's; one in pgq_admin may do everything.

mod common;

use common::{datas, TestDb};
use pgq::{Client, Consumer, ErrorKind, NewEvent};

/// A login role that is a member of `group`, and a client connected as it; dropped with
/// the guard (kept when the test failed).
struct Login {
    name: String,
    client: Client,
    db: String,
    admin: postgres::Config,
}

impl Login {
    fn new(db: &TestDb, group: &str) -> Login {
        // pgqt_<pid>_<n> is unique per test database; the role name must stay < 64 bytes.
        let prefix: Vec<&str> = db.name.split('_').take(3).collect();
        let name = format!("{}_{group}_login", prefix.join("_"));
        db.superuser()
            .batch_execute(&format!(
                "create role \"{name}\" login in role {group}; \
                 grant connect on database \"{db}\" to \"{name}\"",
                db = db.name
            ))
            .unwrap();
        let mut config = db.config.clone();
        config.user(&name);
        let client = pgq::ClientBuilder::from_config(config)
            .pool_size(2)
            .min_idle(0)
            .build()
            .unwrap();
        Login {
            name,
            client,
            db: db.name.clone(),
            admin: db.config.clone(),
        }
    }
}

impl Drop for Login {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        // Objects it owns (none are expected) and privileges go with it.
        if let Ok(mut c) = self.admin.connect(postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "drop owned by \"{n}\"; revoke connect on database \"{d}\" from \"{n}\"; \
                 drop role \"{n}\"",
                n = self.name,
                d = self.db
            ));
        }
    }
}

fn denied<T: std::fmt::Debug>(what: &str, r: pgq::Result<T>) {
    match r {
        Ok(v) => panic!("{what}: allowed ({v:?}), expected permission denied"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{what}: {e}"),
    }
}

both_backends! {
    fn writer_reader_and_admin_roles(db: &TestDb) {
        db.client.create_queue("q").unwrap();
        db.client.register_consumer("q", "c").unwrap();
        let writer = Login::new(db, "pgq_writer");
        let reader = Login::new(db, "pgq_reader");
        let admin = Login::new(db, "pgq_admin");

        // writer: produces, nothing else. The COPY path writes into the event table itself:
        // our schema grants pgq_writer INSERT there, the reference only pgq_admin.
        writer.client.send("q", &NewEvent::new("t", "single")).unwrap();
        let bulk = writer.client.send_many("q", &[NewEvent::new("t", "copy")]);
        match db.backend {
            common::Backend::Ours => assert_eq!(bulk.unwrap(), 1),
            common::Backend::Official => {
                denied("writer COPY on the reference", bulk);
                admin.client.send_many("q", &[NewEvent::new("t", "copy")]).unwrap();
            }
        }
        denied("writer create_queue", writer.client.create_queue("w"));
        denied("writer next_batch",
            Consumer::new(&writer.client, "q", "c").unwrap().next_batch().map(|b| b.is_some()));

        // reader: consumes, retries, nothing else
        db.tick("q");
        let consumer = Consumer::new(&reader.client, "q", "c").unwrap();
        let batch = consumer.next_batch().unwrap().expect("a batch");
        let got: Vec<_> = batch.events().map(|e| e.unwrap()).collect();
        assert_eq!(datas(&got), ["single", "copy"]);
        batch.retry(got[0].id, std::time::Duration::ZERO);
        batch.finish().unwrap();
        denied("reader send", reader.client.send("q", &NewEvent::new("t", "x")));
        denied("reader create_queue", reader.client.create_queue("r"));

        // the reader's cursor filter runs as the reader: the retry queue is not its to read
        let mut conn = reader.client.get().unwrap();
        let batch_id: Option<i64> = {
            db.tick("q");
            conn.query_one("select pgq.next_batch('q', 'c')", &[]).unwrap().get(0)
        };
        let batch_id = batch_id.expect("a batch (maybe empty)");
        let mut tx = conn.transaction().unwrap();
        let e = tx
            .query(
                "select * from pgq.get_batch_cursor($1, 'cur', 10, \
                 '(select count(*) from pgq.retry_queue) >= 0')",
                &[&batch_id],
            )
            .unwrap_err();
        assert_eq!(pgq::Error::from(e).kind(), ErrorKind::PermissionDenied);
        drop(tx);
        drop(conn);

        // admin: everything
        assert!(admin.client.create_queue("a").unwrap());
        admin.client.register_consumer("a", "c").unwrap();
        admin.client.send("a", &NewEvent::new("t", "by admin")).unwrap();
        admin.client.retry_events().unwrap();
        admin.client.tick_all().unwrap();
        let mut c = admin.client.get().unwrap();
        pgq::ticker::force_tick(&mut *c, "a").unwrap();
        pgq::ticker::tick_queue(&mut *c, "a").unwrap();
        drop(c);
        assert_eq!(datas(&common::consume_all(&admin.client, "a", "c")), ["by admin"]);
        admin.client.drop_queue("a", true).unwrap();

        // reader: a loop of finish_and_next reads the next batch ahead (our schema) with the
        // reader's rights alone
        db.client.register_consumer("q", "ahead").unwrap();
        for b in 0..3 {
            let evs: Vec<_> = (0..5).map(|i| NewEvent::new("t", format!("{b}{i}"))).collect();
            db.client.send_many("q", &evs).unwrap();
            db.tick("q");
        }
        // Spare connections in the reader's pool, idle (a look-ahead then opens none).
        drop((0..2).map(|_| reader.client.get().unwrap()).collect::<Vec<_>>());
        let consumer = Consumer::new(&reader.client, "q", "ahead").unwrap().fetch_size(2);
        let (mut seen, mut looked) = (Vec::new(), Vec::new());
        let mut next = consumer.next_batch().unwrap();
        while let Some(batch) = next {
            looked.push(batch.looked_ahead());
            seen.extend(batch.events().map(|e| e.unwrap().data.unwrap()));
            next = batch.finish_and_next(&consumer).unwrap();
        }
        assert_eq!(seen.len(), 15);
        let ours = db.backend == common::Backend::Ours;
        assert_eq!(looked, [false, false, ours], "read ahead per batch");
    }
}
