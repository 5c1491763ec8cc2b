//! The agent's HTTP endpoints, served with axum:
//!
//! - `/metrics`: OpenMetrics text (state metrics refreshed first);
//! - `/healthz`: the process answers;
//! - `/readyz`: 200 once programs are attached and the cluster state is
//!   synced, else 503 with the reason;
//! - `/flows`: the latest judged flows as JSON, filtered by the query
//!   parameters of [`FlowFilter`] (an unknown key or a bad value is a 400
//!   naming it). Loopback clients only, unless `--flows-from-anywhere`:
//!   with host networking the listener is on the node's address, and who
//!   talks to whom is not for everyone who reaches the node.
//!
//! Accept errors (such as running out of file descriptors) are backed off
//! by axum's server loop instead of retried at once.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::posture;
use super::recent::FlowFilter;
use super::shared::Shared;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves the endpoints on `listener` until `shutdown` completes; open
/// requests are finished first.
///
/// # Errors
/// The server's I/O error.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(shared).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// The routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route(
            "/healthz",
            get(|| async { text(StatusCode::OK, "ok\n".into()) }),
        )
        .route("/readyz", get(readyz))
        .route("/flows", get(flows))
        .with_state(shared)
}

fn text(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    posture::refresh(&shared);
    (
        [(header::CONTENT_TYPE, OPENMETRICS)],
        shared.metrics.encode(),
    )
        .into_response()
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    match shared.ready() {
        Ok(()) => text(StatusCode::OK, "ready\n".into()),
        Err(why) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn flows(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    filter: Result<Query<FlowFilter>, QueryRejection>,
) -> Response {
    if !shared.flows_from_anywhere && !peer.ip().to_canonical().is_loopback() {
        return text(
            StatusCode::FORBIDDEN,
            "/flows answers loopback clients only (use kubectl port-forward, or start the agent with --flows-from-anywhere)\n".into(),
        );
    }
    let Query(filter) = match filter {
        Ok(filter) => filter,
        Err(rejection) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "/flows: {}; filters: namespace, pod, verdict (allow|deny|not-applicable), enforcement (gap|enforced|unknown)\n",
                    rejection.body_text()
                ),
            );
        }
    };
    (
        [(header::CONTENT_TYPE, "application/json")],
        shared.recent.to_json(&filter),
    )
        .into_response()
}
