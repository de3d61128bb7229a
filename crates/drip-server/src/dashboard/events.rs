//! `GET /v1/events`: Server-Sent Events for the dashboard. One `snapshot`
//! event a second with the cluster and one page of buckets (busiest first);
//! the first event of a connection also carries each bucket's recent levels.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use drip::Store;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::{self, error::RecvError};

use super::sampler::{BucketSample, Sampler, Snapshot};
use super::watched::Watch;
use crate::error::ApiError;
use crate::http::extract::Query;
use crate::model::ClusterStatus;

/// Largest page size.
pub const MAX_PER_PAGE: usize = 100;
/// Largest page number (as the OpenAPI document declares it).
pub const MAX_PAGE: usize = u32::MAX as usize;

/// Which page of buckets a browser shows.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page number from 0 (busiest buckets first).
    #[serde(default)]
    #[param(minimum = 0, maximum = 4294967295_u64)]
    pub page: usize,
    /// Buckets per page, 1..=100 (default 20).
    #[serde(default = "default_per_page")]
    #[param(minimum = 1, maximum = 100)]
    pub per_page: usize,
}

/// One Server-Sent Event of `/v1/events`, as a client's SSE parser sees it:
/// `event: snapshot` and `data:` a [`SnapshotEvent`] as JSON text.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SnapshotSse {
    /// `snapshot` (or `error` if a snapshot could not be encoded).
    #[schema(example = "snapshot")]
    pub event: String,
    /// A `SnapshotEvent` as JSON.
    pub data: String,
}

fn default_per_page() -> usize {
    20
}

/// One bucket in an event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventBucket {
    /// The bucket now.
    #[serde(flatten)]
    pub sample: BucketSample,
    /// First event only: recent `[t_ms, level]` pairs, oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<(u64, f64)>>,
}

/// The data of one `snapshot` event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SnapshotEvent {
    /// Epoch milliseconds of the sample.
    pub t_ms: u64,
    /// The cluster: this node, the leader, the members.
    pub cluster: ClusterStatus,
    /// Buckets in all.
    pub total_buckets: usize,
    /// This page (from 0) and its size.
    pub page: usize,
    /// Buckets per page.
    pub per_page: usize,
    /// This page of buckets, busiest first.
    pub buckets: Vec<EventBucket>,
    /// Set when the store could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Live bucket data for the dashboard, as Server-Sent Events.
///
/// Each `snapshot` event holds a [`SnapshotEvent`] as JSON. The server samples
/// only while at least one client is connected.
#[utoipa::path(get, path = "/v1/events", tag = "service", params(PageQuery),
    responses(
        (status = 200, description = "text/event-stream of `snapshot` events, one a second; each event's data is a `SnapshotEvent` as JSON", content_type = "text/event-stream", body = SnapshotSse),
        (status = 400, description = "Bad page or per_page", body = crate::model::ErrorBody),
    ))]
pub async fn events<S: Store>(
    State(sampler): State<Arc<Sampler<S>>>,
    Query(q): Query<PageQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    if !(1..=MAX_PER_PAGE).contains(&q.per_page) {
        return Err(ApiError::invalid(
            "per_page",
            format!("per_page must be an integer in 1..={MAX_PER_PAGE}"),
        ));
    }
    if q.page > MAX_PAGE {
        return Err(ApiError::invalid(
            "page",
            format!("page must be an integer in 0..={MAX_PAGE}"),
        ));
    }
    let watch = sampler.watch(q.page, q.per_page);
    let (rx, first) = sampler.subscribe();
    let state = Conn {
        _watch: watch,
        rx,
        first,
        sent_history: false,
        page: q.page,
        per_page: q.per_page,
    };
    let stream = futures_util::stream::unfold(state, |mut c| async move {
        let snap = c.next().await?;
        let event = c.event(&snap);
        Some((Ok(event), c))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// One browser's connection.
struct Conn {
    /// Its page counted as watched while the stream lives.
    _watch: Watch,
    rx: broadcast::Receiver<Arc<Snapshot>>,
    first: Option<Arc<Snapshot>>,
    sent_history: bool,
    page: usize,
    per_page: usize,
}

impl Conn {
    async fn next(&mut self) -> Option<Arc<Snapshot>> {
        if let Some(s) = self.first.take() {
            return Some(s);
        }
        loop {
            match self.rx.recv().await {
                Ok(s) => return Some(s),
                // A slow browser skips samples rather than holding them.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    }

    fn event(&mut self, snap: &Snapshot) -> Event {
        let with_history = !self.sent_history;
        self.sent_history = true;
        let buckets = snap
            .buckets
            .iter()
            .skip(self.page.saturating_mul(self.per_page))
            .take(self.per_page)
            .map(|b| EventBucket {
                history: with_history.then(|| {
                    snap.history
                        .get(&b.bucket_id)
                        .map(|h| h.iter().copied().collect())
                        .unwrap_or_default()
                }),
                sample: b.clone(),
            })
            .collect();
        let data = SnapshotEvent {
            t_ms: snap.t_ms,
            cluster: snap.cluster.clone(),
            total_buckets: snap.buckets.len(),
            page: self.page,
            per_page: self.per_page,
            buckets,
            error: snap.error.clone(),
        };
        Event::default()
            .event("snapshot")
            .json_data(&data)
            .unwrap_or_else(|_| Event::default().event("error").data("encoding failed"))
    }
}
