//! Large payloads: a 100 MB `ev_data` goes in through `send` (insert_event) and through the
//! COPY bulk path, and comes out intact through a streamed batch read, on both backends.
//!
//! The backends run one after the other in a single test, so at most one set of 100 MB
//! buffers (ours, the client's, the server's) exists at a time. The payload mixes ordinary
//! text with every character COPY has to escape (tab, newline, carriage return, backslash)
//! and multi-byte UTF-8, so the escaping is checked at scale too.

mod common;

use common::{Backend, TestDb};
use pgq::{Consumer, NewEvent};

const SIZE: usize = 100 * 1024 * 1024;

/// A deterministic 100 MB string: a 1 MiB block of random printable ASCII, tabs, newlines,
/// carriage returns and backslashes (all of which COPY escapes), repeated, then multi-byte
/// UTF-8 at the end. Random text is what the server's TOAST compression gives up on quickly;
/// a repetition 1 MiB apart is far outside its window.
fn payload(seed: u64) -> String {
    const BLOCK: usize = 1024 * 1024;
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let block: Vec<u8> = (0..BLOCK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 100 {
                0 => b'\t',
                1 => b'\n',
                2 => b'\r',
                3 => b'\\',
                n => b' ' + (n % 95) as u8,
            }
        })
        .collect();
    let tail = "é€✓\\N\t";
    let mut bytes = Vec::with_capacity(SIZE);
    while bytes.len() + BLOCK <= SIZE - tail.len() {
        bytes.extend_from_slice(&block);
    }
    bytes.extend_from_slice(&block[..SIZE - tail.len() - bytes.len()]);
    bytes.extend_from_slice(tail.as_bytes());
    assert_eq!(bytes.len(), SIZE);
    String::from_utf8(bytes).expect("ASCII plus a UTF-8 tail")
}

fn round_trip(backend: Backend) {
    let db = TestDb::new(backend);
    let c = &db.client;
    c.create_queue("big").unwrap();
    c.register_consumer("big", "reader").unwrap();

    // One payload at a time: send it, drop it, make the next.
    let single = payload(1);
    let single_len = single.len();
    c.send("big", &NewEvent::new("single", single)).unwrap();
    let bulk = payload(2);
    let bulk_len = bulk.len();
    let small = NewEvent::new("small", "after the big one");
    assert_eq!(
        c.send_many("big", &[NewEvent::new("bulk", bulk), small])
            .unwrap(),
        2
    );
    db.tick("big");

    // Streamed read, one row per fetch; each payload is compared and dropped before the
    // next is fetched.
    let consumer = Consumer::new(c, "big", "reader").unwrap().fetch_size(1);
    let batch = consumer.next_batch().unwrap().expect("a batch");
    let mut types = Vec::new();
    for ev in batch.events() {
        let ev = ev.unwrap();
        let data = ev.data.unwrap_or_default();
        match ev.ev_type.as_deref() {
            Some("single") => {
                assert_eq!(data.len(), single_len, "{backend:?}: single length");
                assert!(data == payload(1), "{backend:?}: single payload differs");
            }
            Some("bulk") => {
                assert_eq!(data.len(), bulk_len, "{backend:?}: bulk length");
                assert!(data == payload(2), "{backend:?}: bulk payload differs");
            }
            Some("small") => assert_eq!(data, "after the big one"),
            other => panic!("{backend:?}: unexpected event type {other:?}"),
        }
        types.push(ev.ev_type.unwrap_or_default());
    }
    assert_eq!(types, ["single", "bulk", "small"], "{backend:?}");
    batch.finish().unwrap();
    assert!(
        db.consume_all("big", "reader").is_empty(),
        "{backend:?}: delivered once"
    );
}

#[test]
fn hundred_megabyte_events_round_trip_on_both_backends() {
    round_trip(Backend::Ours);
    round_trip(Backend::Official);
}
