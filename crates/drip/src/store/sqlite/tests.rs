//! Unit tests of the store's parts (codec, batches, failures).

use super::*;
use crate::core::{Limit, Rate, Window};
use crate::core::{State, WindowLog};
use rusqlite::Connection;
use rusqlite::types::ValueRef;

#[test]
fn state_round_trips() {
    let state = State {
        tat: u128::MAX - 7,
        windows: vec![
            WindowLog::from_entries([(1, 2), (u64::MAX, 3)]),
            WindowLog::default(),
            WindowLog::from_entries([(5, 1)]),
        ],
    };
    let mut buf = Vec::new();
    encode_windows(&state.windows, &mut buf);
    assert_eq!(buf.len(), 3 * 4 + 3 * 16);
    let tat = state.tat.to_le_bytes();
    let back = decode_state(ValueRef::Blob(&tat), ValueRef::Blob(&buf)).unwrap();
    assert_eq!(back, state);
    assert!(decode_state(ValueRef::Blob(&tat[..15]), ValueRef::Blob(&[])).is_err());
    assert!(decode_state(ValueRef::Blob(&tat), ValueRef::Blob(&buf[..buf.len() - 1])).is_err());
    assert!(decode_state(ValueRef::Integer(3), ValueRef::Blob(&[])).is_err());
}

#[tokio::test]
async fn corrupt_rows_are_store_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drip.db");
    let store = SqliteStore::open_with_clock(&path, crate::ManualClock::new(1_000)).unwrap();
    let policy = Policy::police(Limit::new(Rate::per_second(1).unwrap(), 5).unwrap())
        .with_window(Window::new(3, Duration::from_secs(60)).unwrap())
        .unwrap();
    store.configure("b", policy, false).await.unwrap();
    store.decide("b", "k", Request::check(1)).await.unwrap();
    let raw = Connection::open(&path).unwrap();
    raw.execute("UPDATE drip_keys SET windows = x'0100'", [])
        .unwrap();
    let e = store.decide("b", "k", Request::check(1)).await.unwrap_err();
    assert!(
        matches!(&e, Error::Store(m) if m.contains("truncated")),
        "{e}"
    );
    raw.execute(
        "UPDATE drip_buckets SET policy = 'nonsense', version = -1",
        [],
    )
    .unwrap();
    let e = store.policy("b").await.unwrap_err();
    assert!(
        matches!(&e, Error::Store(m) if m.contains("nonsense")),
        "{e}"
    );
    assert!(store.list().await.is_err());
}

/// A writer's worker on a fresh database, outside any thread.
fn worker(dir: &tempfile::TempDir) -> Worker<crate::ManualClock> {
    let path = dir.path().join("drip.db");
    let conn = connect(&path, &SqliteOptions::default()).unwrap();
    init_schema(&conn).unwrap();
    Worker::new(conn, &path, &crate::ManualClock::new(1_000))
}

fn pending(bucket: &str, key: &str) -> (Pending, oneshot::Receiver<Result<Decision>>) {
    let (reply, rx) = oneshot::channel();
    let p = Pending {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        req: Request::check(1),
        reply,
    };
    (p, rx)
}

fn counters(w: &mut Worker<crate::ManualClock>, key: &str) -> (u64, u64) {
    let c = w.load_key("b", key).ok().flatten().unwrap_or_default().1;
    (c.allowed, c.rejected)
}

#[test]
fn a_batch_answers_each_decision_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = worker(&dir);
    let policy = Policy::police(Limit::new(Rate::per_second(1).unwrap(), 2).unwrap());
    w.configure("b", policy, false).unwrap();
    let (mut batch, mut rxs) = (Vec::new(), Vec::new());
    for (bucket, key) in [
        ("b", "k"),
        ("nope", "k"),
        ("b", "k"),
        ("b", "k"),
        ("b", "j"),
    ] {
        let (p, rx) = pending(bucket, key);
        batch.push(p);
        rxs.push(rx);
    }
    w.decide_batch(&mut batch);
    let got: Vec<_> = rxs
        .iter_mut()
        .map(|rx| match rx.try_recv().unwrap() {
            Ok(d) => Ok(d.allowed()),
            Err(e) => Err(e.to_string()),
        })
        .collect();
    assert_eq!(
        got,
        [
            Ok(true),
            Err("no bucket named \"nope\"".to_owned()),
            Ok(true),
            Ok(false),
            Ok(true)
        ]
    );
    assert_eq!(counters(&mut w, "k"), (2, 1));
    assert_eq!(counters(&mut w, "j"), (1, 0));
    assert!(w.conn.is_autocommit());
}

#[test]
fn a_failed_decision_does_not_fail_or_repeat_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = worker(&dir);
    let policy = Policy::police(Limit::new(Rate::per_second(1).unwrap(), 5).unwrap());
    w.configure("b", policy, false).unwrap();
    w.decide("b", "bad", Request::check(1)).unwrap();
    w.conn
        .execute("UPDATE drip_keys SET tat = x'00' WHERE key = 'bad'", [])
        .unwrap();
    let (mut batch, mut rxs) = (Vec::new(), Vec::new());
    for key in ["k", "bad", "k"] {
        let (p, rx) = pending("b", key);
        batch.push(p);
        rxs.push(rx);
    }
    w.decide_batch(&mut batch);
    let got: Vec<_> = rxs.iter_mut().map(|rx| rx.try_recv().unwrap()).collect();
    assert!(got[0].as_ref().is_ok_and(|d| d.allowed()));
    assert!(
        matches!(&got[1], Err(Error::Store(m)) if m.contains("16-byte")),
        "{:?}",
        got[1]
    );
    assert!(got[2].as_ref().is_ok_and(|d| d.allowed()));
    // The first attempt at the batch was rolled back, not counted twice.
    assert_eq!(counters(&mut w, "k"), (2, 0));
    assert!(w.conn.is_autocommit());
}
