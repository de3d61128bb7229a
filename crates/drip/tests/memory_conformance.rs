//! The conformance suite on the memory store, on a manual clock.

mod conformance;

use conformance::Harness;
use drip::{Limiter, ManualClock, MemoryStore};

fn memory() -> Harness<MemoryStore<ManualClock>> {
    let clock = ManualClock::new(0);
    let store = MemoryStore::with_clock(clock.clone());
    Harness {
        limiter: Limiter::new(store),
        advance: Box::new(move |d| clock.advance(d)),
    }
}

conformance_suite!(memory());
