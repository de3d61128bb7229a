//! The cluster loop's own connection to Redis (one server or a Redis
//! Cluster), with explicit timeouts: the library's, so both speak to Redis
//! the same way.

pub use drip::store::redis::Connection as Conn;
