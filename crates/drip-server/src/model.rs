//! The JSON bodies of the HTTP contract (DESIGN.md §4). The gRPC messages
//! carry the same fields; [`crate::grpc`] converts between the two.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::request_id::RequestId;

/// `PUT /v1/buckets/{bucket}`: create or replace a bucket.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigureBody {
    /// `"police"` (the default, also when empty or null) or `"shape"`.
    #[serde(default)]
    #[schema(example = "police", pattern = "^(police|shape)?$")]
    pub mode: Option<String>,
    /// Units the bucket holds, 1..=4294967295. A full bucket must drain
    /// within 100 years (`capacity / leak_rate <= 3155760000` s), else 400
    /// naming `capacity`: a rule between two fields that a schema cannot say.
    #[schema(example = 100, minimum = 1, maximum = 4294967295u64)]
    pub capacity: u64,
    /// Units leaked per second, a positive decimal in 1e-9..=1e15.
    #[schema(example = 10.0, minimum = 1e-9, maximum = 1e15)]
    pub leak_rate: f64,
    /// Exact rolling limits ANDed with the bucket (at most 8).
    #[serde(default)]
    #[schema(max_items = 8)]
    pub windows: Vec<WindowSpec>,
    /// Empty every key's state.
    #[serde(default)]
    pub reset: bool,
    /// Seconds a key's counters (total, allowed, rejected, processed) are
    /// kept after its last request, once its bucket is empty, 0..=2592000;
    /// 0 lets them go with the water. Default: the server's
    /// `--counter-retention` (60 s unless set).
    #[serde(default)]
    #[schema(example = 60.0, minimum = 0.0, maximum = 2592000.0)]
    pub counter_retention_s: Option<f64>,
    /// Shape mode: keep the list of queued requests, read with
    /// `GET /v1/buckets/{bucket}/queue` (default true; ignored in police
    /// mode, where nothing waits).
    #[serde(default)]
    #[schema(example = true)]
    pub track_queue: Option<bool>,
}

/// An exact rolling limit: at most `limit` units in any `period_s` seconds.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// 1..=9007199254740991 (2^53-1).
    #[schema(example = 1000, minimum = 1, maximum = 9007199254740991u64)]
    pub limit: u64,
    /// Seconds, from 1 ns (1e-9) to 100 years (3155760000).
    #[schema(example = 3600.0, minimum = 1e-9, maximum = 3155760000.0)]
    pub period_s: f64,
}

/// `POST /v1/buckets/{bucket}/allow` (the body is optional). The key is
/// borrowed from the request's bytes when it has no escapes: one
/// allocation fewer on the hottest route.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowBody<'a> {
    /// The bucket instance (client IP, user id...), at most 256 bytes of
    /// UTF-8 (256 characters when ASCII); default `""`.
    #[serde(default, borrow)]
    #[schema(max_length = 256, value_type = String)]
    pub key: Cow<'a, str>,
    /// Units asked for, 1..=9007199254740991 (2^53-1), default 1. A cost
    /// above what the bucket can ever admit (its capacity, or its smallest
    /// window limit) is a 400 naming `cost`.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 9007199254740991u64)]
    pub cost: Option<u64>,
    /// Echoed in the answer; 1..=128 bytes of printable ASCII (space to
    /// `~`). When absent or null the server makes one, unique per node
    /// (`req_<epoch ms>_<n>`).
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[ -~]{1,128}$",
        example = "r1"
    )]
    pub request_id: Option<String>,
}

/// `POST /v1/buckets/{bucket}/acquire` (the body is optional).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcquireBody {
    /// The bucket instance, at most 256 bytes of UTF-8; default `""`.
    #[serde(default)]
    #[schema(max_length = 256)]
    pub key: String,
    /// Units asked for, 1..=9007199254740991, default 1 (as in allow).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 9007199254740991u64)]
    pub cost: Option<u64>,
    /// How long the request may wait, 0..=3600000; default 30000.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 3600000)]
    pub timeout_ms: Option<u64>,
    /// As in allow: echoed, or made by the server when absent.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[ -~]{1,128}$",
        example = "r1"
    )]
    pub request_id: Option<String>,
}

/// The answer to allow and acquire. Times are milliseconds, rounded up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DecisionBody {
    /// Admitted.
    pub allowed: bool,
    /// Shape mode: place in the queue (1 = next); police mode: 0.
    pub queue_position: u64,
    /// Shape mode: when this request's turn comes; police mode: 0.
    pub estimated_wait_ms: u64,
    /// Units that could still be admitted now (least over all limits).
    pub remaining: u64,
    /// When not admitted: when the same request could be; else 0.
    pub retry_after_ms: u64,
    /// When every limit is back to full.
    pub reset_after_ms: u64,
    /// The request's id: the one asked with, or the one the server made.
    #[serde(default)]
    #[schema(value_type = String)]
    pub request_id: RequestId,
    /// Present (`true`) only when decided without the shared store
    /// (`on_store_error = allow | local`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub degraded: bool,
}

/// A bucket's configuration and the state of one of its keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BucketStatus {
    /// The bucket's name.
    pub bucket_id: String,
    /// The key this state is of.
    pub key: String,
    /// `"police"` or `"shape"`.
    pub mode: String,
    /// Units the bucket holds.
    pub capacity: u64,
    /// Units leaked per second.
    pub leak_rate: f64,
    /// Rolling limits ANDed with the bucket.
    pub windows: Vec<WindowSpec>,
    /// Units of water in the bucket now (fractional while leaking).
    pub level: f64,
    /// Requests waiting to leave, `ceil(level)`.
    pub queue_size: u64,
    /// Requests decided for this key.
    pub total_requests: u64,
    /// Requests admitted.
    pub allowed_requests: u64,
    /// Requests refused.
    pub rejected_requests: u64,
    /// Admitted requests that have left the queue: `allowed - queue_size`.
    pub processed_requests: u64,
    /// Seconds the counters are kept after the key's last request once its
    /// bucket is empty (0: they go with the water).
    #[serde(default)]
    pub counter_retention_s: f64,
    /// True when the bucket lists its queued requests (shape mode with
    /// `track_queue`).
    #[serde(default)]
    pub track_queue: bool,
}

/// One request admitted and not yet departed (shape mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QueuedRequestBody {
    /// The request's id (given with it, or made by the server).
    pub request_id: String,
    /// When it was admitted, ms since the Unix epoch.
    pub enqueue_time_ms: u64,
    /// When its turn comes, ms since the Unix epoch.
    pub estimated_process_time_ms: u64,
}

/// `GET /v1/buckets/{bucket}/queue`: the requests of one key admitted and
/// not yet departed, in departure order. Each stays listed until its water
/// has leaked (its turn plus `cost / leak_rate`), so for unit costs there
/// are `queue_size` of them. Empty for a police bucket (nothing waits) and
/// for a shape bucket configured with `track_queue: false`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QueueBody {
    /// The bucket's name.
    pub bucket_id: String,
    /// The key listed.
    pub key: String,
    /// In departure order; at most `capacity` entries.
    pub requests: Vec<QueuedRequestBody>,
}

/// `GET /v1/buckets`: every bucket, with the state of its key `""`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BucketList {
    /// Sorted by `bucket_id`.
    pub buckets: Vec<BucketStatus>,
}

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeStatus {
    /// The node's id (hostname:port unless set with `--node-id`).
    pub node_id: String,
    /// Address of its HTTP listener.
    pub http: String,
    /// Address of its gRPC listener.
    pub grpc: String,
    /// Milliseconds since it was last heard from.
    pub last_seen_ms: u64,
    /// Heard from recently enough to count.
    pub alive: bool,
}

/// `GET /v1/cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClusterStatus {
    /// The node answering.
    pub node_id: String,
    /// The node holding the leader lease.
    pub leader: String,
    /// Every known node.
    pub nodes: Vec<NodeStatus>,
}

/// `GET /v1/cluster/leader`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Leader {
    /// The node holding the leader lease.
    pub leader: String,
}

/// Every error response: `{"error": {"code", "field", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// `invalid_argument`, `unauthenticated`, `not_found`,
    /// `method_not_allowed`, `payload_too_large`, `unavailable`,
    /// `shutting_down` or `internal`.
    #[schema(example = "invalid_argument")]
    pub code: String,
    /// The input at fault (`capacity`, `windows[0].limit`, `bucket_id`,
    /// `body`...), or null.
    #[schema(example = "capacity")]
    pub field: Option<String>,
    /// What is wrong and what is accepted.
    #[schema(example = "capacity must be an integer in 1..=4294967295")]
    pub message: String,
}
