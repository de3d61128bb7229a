//! The SQLite store beyond the conformance suite: sweeping idle keys, the
//! busy timeout, and that waiting on SQLite never blocks the async runtime.
#![cfg(feature = "sqlite")]

use std::time::{Duration, Instant};

use drip::store::{SqliteOptions, SqliteStore};
use drip::{Error, Limit, Limiter, ManualClock, Policy, Rate, Store, Window};
use rusqlite::Connection;

fn open(dir: &tempfile::TempDir, clock: &ManualClock) -> SqliteStore<ManualClock> {
    SqliteStore::open_with_clock(dir.path().join("drip.db"), clock.clone()).unwrap()
}

#[tokio::test]
async fn sweep_forgets_exactly_the_idle_keys() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let lim = Limiter::new(open(&dir, &clock));
    let store = lim.store();
    // Bucket: 10/s, so one unit drains in 100 ms. Window: 5 per minute.
    let windowed = Policy::police(Limit::new(Rate::per_second(10).unwrap(), 10).unwrap())
        .with_window(Window::new(5, Duration::from_secs(60)).unwrap())
        .unwrap();
    lim.configure("w", windowed).await.unwrap();
    lim.configure(
        "b",
        Policy::police(Limit::new(Rate::per_second(10).unwrap(), 10).unwrap()),
    )
    .await
    .unwrap();
    // More keys than one sweep transaction examines.
    for i in 0..2500 {
        lim.check("b", &format!("k{i}"), 1).await.unwrap();
    }
    lim.check("w", "k", 1).await.unwrap();
    assert_eq!(store.keys_held().await.unwrap(), Some(2501));
    store.ping().await.unwrap();

    // Nothing has drained yet.
    clock.advance(Duration::from_millis(99));
    assert_eq!(store.sweep_idle().await.unwrap(), 0);
    // The plain buckets are empty; the windowed key still counts for 60 s.
    clock.advance(Duration::from_millis(1));
    assert_eq!(store.sweep_idle().await.unwrap(), 2500);
    assert_eq!(store.keys_held().await.unwrap(), Some(1));
    assert_eq!(lim.status("w", "k").await.unwrap().counters.allowed, 1);
    clock.advance(Duration::from_secs(60));
    assert_eq!(store.sweep_idle().await.unwrap(), 1);
    assert_eq!(store.keys_held().await.unwrap(), Some(0));
    // A forgotten key starts again at zero.
    let s = lim.status("w", "k").await.unwrap();
    assert_eq!((s.counters.total(), s.level.remaining), (0, 5));
}

#[tokio::test]
async fn reconfiguring_keeps_sweeping_exact() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let lim = Limiter::new(open(&dir, &clock));
    let fast = Policy::police(Limit::new(Rate::per_second(10).unwrap(), 10).unwrap());
    let slow = Policy::police(Limit::new(Rate::per_second(1).unwrap(), 10).unwrap());
    lim.configure("b", fast).await.unwrap();
    lim.check("b", "k", 1).await.unwrap();
    // The unit of water now takes 1 s to drain, not 100 ms.
    lim.configure("b", slow).await.unwrap();
    clock.advance(Duration::from_millis(500));
    assert_eq!(lim.store().sweep_idle().await.unwrap(), 0);
    clock.advance(Duration::from_millis(500));
    assert_eq!(lim.store().sweep_idle().await.unwrap(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_locked_database_is_a_quick_store_error_and_never_blocks_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drip.db");
    let options = SqliteOptions {
        busy_timeout: Duration::from_millis(300),
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with_options(&path, ManualClock::new(0), options).unwrap();
    let lim = Limiter::new(store);
    lim.configure(
        "b",
        Policy::police(Limit::new(Rate::per_second(1).unwrap(), 1).unwrap()),
    )
    .await
    .unwrap();

    // Another connection (as another process would) holds the write lock.
    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();

    // While the decision waits for the lock, this single-threaded runtime
    // keeps running other tasks.
    let ticker = tokio::spawn(async {
        let mut ticks = 0u32;
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            ticks += 1;
        }
        ticks
    });
    let started = Instant::now();
    let err = lim.check("b", "k", 1).await.unwrap_err();
    let waited = started.elapsed();
    assert!(
        matches!(&err, Error::Store(m) if m.contains("busy timeout")),
        "{err}"
    );
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert!(ticker.is_finished(), "the runtime was blocked");
    assert_eq!(ticker.await.unwrap(), 10);
    // Reads are not blocked by a writer (WAL).
    assert_eq!(lim.status("b", "k").await.unwrap().counters.total(), 0);

    // Once the lock is free again, the same limiter works.
    other.execute_batch("ROLLBACK").unwrap();
    assert!(lim.check("b", "k", 1).await.unwrap().allowed());
}

#[test]
fn opening_a_file_that_is_not_a_database_is_a_store_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.db");
    std::fs::write(&path, vec![7u8; 8192]).unwrap();
    let err = SqliteStore::open(&path).err().expect("an error");
    assert!(
        matches!(&err, Error::Store(m) if m.contains("junk.db")),
        "{err}"
    );
    let missing = dir.path().join("no/such/dir/drip.db");
    assert!(matches!(SqliteStore::open(missing), Err(Error::Store(_))));
}
