//! A consumer whose connection dies in the middle of a batch (server-side termination, as
//! after a crash or a network cut) gets a clear ConnectionLost error, and the very same batch
//! again from the next call, with nothing lost and the retries it had tagged not applied;
//! also when the connection dies during finish. Both backends.

mod common;

use std::time::Duration;

use common::{datas, TestDb};
use pgq::{Consumer, ErrorKind, NewEvent};

fn setup(db: &TestDb) {
    db.client.create_queue("q").unwrap();
    db.client.register_consumer("q", "c").unwrap();
    let events: Vec<NewEvent> = (0..50).map(|i| NewEvent::new("t", i.to_string())).collect();
    db.client.send_many("q", &events).unwrap();
    db.tick("q");
}

fn kill(db: &TestDb, pid: i32) {
    let killed: bool = db
        .superuser()
        .query_one("select pg_terminate_backend($1)", &[&pid])
        .unwrap()
        .get(0);
    assert!(killed, "terminate backend {pid}");
}

both_backends! {
    fn connection_lost_mid_batch_redelivers_it(db: &TestDb) {
        setup(db);
        let consumer = Consumer::new(&db.client, "q", "c").unwrap().fetch_size(10);
        let batch = consumer.next_batch().unwrap().expect("a batch");
        let id = batch.id();
        let pid: i32 = batch.with_client(|c| c.query_one("select pg_backend_pid()", &[]))
            .unwrap()
            .get(0);
        let mut events = batch.events();
        let first: Vec<_> = (&mut events).take(15).map(|e| e.unwrap()).collect();
        batch.retry(first[0].id, Duration::ZERO);
        kill(db, pid);
        // The rest of the batch cannot be read: one clear error, then the iterator ends.
        let rest: Vec<_> = events.collect();
        let err = rest.iter().find_map(|r| r.as_ref().err()).expect("an error after the kill");
        assert_eq!(err.kind(), ErrorKind::ConnectionLost, "{err}");
        drop(batch);

        // Same batch, all events, and the tagged retry was never queued.
        let again = consumer.next_batch().unwrap().expect("the batch again");
        assert_eq!(again.id(), id);
        let all: Vec<_> = again.events().map(|e| e.unwrap()).collect();
        assert_eq!(all.len(), 50);
        assert_eq!(all[..15], first[..]);
        again.finish().unwrap();
        let retries: i64 = db.conn().query_one("select count(*) from pgq.retry_queue", &[])
            .unwrap().get(0);
        assert_eq!(retries, 0);
        assert!(drained(&consumer));
    }

    fn connection_lost_before_finish_commits_redelivers_it(db: &TestDb) {
        setup(db);
        let consumer = Consumer::new(&db.client, "q", "c").unwrap();
        let batch = consumer.next_batch().unwrap().expect("a batch");
        let id = batch.id();
        let got: Vec<_> = batch.events().map(|e| e.unwrap()).collect();
        assert_eq!(got.len(), 50);
        let pid: i32 = batch.with_client(|c| c.query_one("select pg_backend_pid()", &[]))
            .unwrap()
            .get(0);
        kill(db, pid);
        let err = batch.finish().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionLost, "{err}");
        let again = consumer.next_batch().unwrap().expect("the batch again");
        assert_eq!(again.id(), id);
        assert_eq!(datas(&again.events().map(|e| e.unwrap()).collect::<Vec<_>>()), datas(&got));
        again.finish().unwrap();
    }
}

/// True when `consumer` has nothing left: no batch, or an empty one (a tick with no
/// events), which is finished too.
fn drained(consumer: &Consumer) -> bool {
    match consumer.next_batch().unwrap() {
        None => true,
        Some(b) => {
            let empty = b.events().next().is_none();
            b.finish().unwrap();
            empty
        }
    }
}
