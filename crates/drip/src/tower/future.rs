//! `ResponseFuture`: the response of a rate-limited service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The response of a [`RateLimit`](super::RateLimit) service: the inner
/// service's response once the request is admitted (and has waited its
/// turn), or the middleware's own refusal or error response.
pub struct ResponseFuture<ResBody, E> {
    inner: BoxFuture<Result<Response<ResBody>, E>>,
}

impl<ResBody, E> ResponseFuture<ResBody, E> {
    pub(super) fn new(
        future: impl Future<Output = Result<Response<ResBody>, E>> + Send + 'static,
    ) -> Self {
        ResponseFuture {
            inner: Box::pin(future),
        }
    }
}

impl<ResBody, E> Future for ResponseFuture<ResBody, E> {
    type Output = Result<Response<ResBody>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<ResBody, E> fmt::Debug for ResponseFuture<ResBody, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
