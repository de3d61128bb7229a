//! The conformance suite on the Redis store: one real `redis-server` per
//! case, and the decisions on a manual clock passed to the script in place
//! of Redis `TIME` (a test-only switch), so the tables' exact times hold.

#![cfg(feature = "redis")]

mod conformance;
mod redis_support;

use conformance::Harness;
use drip::store::{RedisOptions, RedisStore};
use drip::{Limiter, ManualClock};
use redis_support::RedisServer;

/// The store and the server it needs (kept alive by the harness).
async fn redis() -> Harness<RedisStore> {
    let server = RedisServer::start();
    let clock = ManualClock::new(1_000_000_000);
    let store = RedisStore::connect(
        &server.url(),
        // Exact answers from the script; the deny cache is tested in
        // redis_deny_cache.rs.
        RedisOptions {
            deny_cache: 0,
            ..RedisOptions::default()
        },
    )
    .await
    .unwrap()
    .with_test_clock(clock.clone());
    Harness {
        limiter: Limiter::new(store),
        advance: Box::new(move |d| {
            let _keep = &server;
            clock.advance(d)
        }),
    }
}

conformance_suite!(if redis_support::available() { redis().await } else { return }; tokio::test);
