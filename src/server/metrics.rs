//! `GET /metrics`: the process's counters ([`crate::metrics`]) in Prometheus' text format. The
//! counters live outside the server so the call path can feed them without knowing it; the
//! server only shows them (and feeds its own: signature rejections, API requests by status).

pub(crate) use crate::metrics::Metrics;

use std::sync::Arc;
use warp::{Filter, Rejection, Reply};

/// Prometheus' content type for the text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(super) fn route(
    metrics: Arc<Metrics>,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::get()
        .and(warp::path("metrics"))
        .and(warp::path::end())
        .map(move || warp::reply::with_header(metrics.render(), "content-type", CONTENT_TYPE))
}
