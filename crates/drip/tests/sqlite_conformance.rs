//! The conformance suite on the SQLite store: a fresh database file per
//! case, on a manual clock.
#![cfg(feature = "sqlite")]

mod conformance;

use conformance::Harness;
use drip::store::SqliteStore;
use drip::{Limiter, ManualClock};

fn sqlite() -> Harness<SqliteStore<ManualClock>> {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new(0);
    let store = SqliteStore::open_with_clock(dir.path().join("drip.db"), clock.clone())
        .expect("open the database");
    Harness {
        limiter: Limiter::new(store),
        // The directory lives as long as the harness: the closure owns it.
        advance: Box::new(move |d| {
            let _keep = &dir;
            clock.advance(d)
        }),
    }
}

conformance_suite!(sqlite());
