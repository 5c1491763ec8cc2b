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
//! The listener that serves them, and its limits, is `listener`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::posture;
use futures::StreamExt;

use super::recent::json_line;
use super::shared::Shared;
use crate::flowlog::FlowFilter;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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
        Ok(()) => {
            let datapath = shared.datapath().map(ToString::to_string);
            text(
                StatusCode::OK,
                format!("ready\n{}\n", datapath.unwrap_or_default()),
            )
        }
        Err(why) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn flows(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    query: Result<Query<FlowFilter>, QueryRejection>,
) -> Response {
    if !shared.flows_from_anywhere && !peer.ip().to_canonical().is_loopback() {
        return text(
            StatusCode::FORBIDDEN,
            "/flows answers loopback clients only (use kubectl port-forward, or start the agent with --flows-from-anywhere)\n".into(),
        );
    }
    let Query(query) = match query.map(|Query(q)| q.check().map(|()| Query(q))) {
        Ok(Ok(query)) => query,
        Ok(Err(error)) => return text(StatusCode::BAD_REQUEST, format!("/flows: {error}\n")),
        Err(rejection) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "/flows: {}; filters: namespace, pod, from_namespace, from_pod, to_namespace, to_pod (pods as [namespace/]name-prefix), protocol, port, verdict (allow|deny|not-applicable), enforcement (gap|enforced|unknown); follow (true|false), last (a count)\n",
                    rejection.body_text()
                ),
            );
        }
    };
    if !query.follow {
        return (
            [(header::CONTENT_TYPE, "application/json")],
            shared.recent.to_json(&query, query.last),
        )
            .into_response();
    }
    // Subscribe before reading the kept flows: a flow judged in between is
    // sent twice at worst, never missed.
    let live = shared.recent.subscribe();
    let kept = shared
        .recent
        .matching(&query, Some(query.last.unwrap_or(0)));
    let lines = kept
        .iter()
        .map(|flow| Ok::<_, std::convert::Infallible>(json_line(flow) + "\n"))
        .collect::<Vec<_>>();
    let filter = query;
    let follow = futures::stream::unfold((live, filter), |(mut live, filter)| async move {
        loop {
            match live.recv().await {
                Ok(flow) if filter.matches(&flow.0, &flow.1) => {
                    return Some((Ok(json_line(&flow) + "\n"), (live, filter)));
                }
                Ok(_) => {}
                // A slow reader is told how many it missed.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    return Some((Ok(format!("{{\"missed\":{missed}}}\n")), (live, filter)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let body = axum::body::Body::from_stream(futures::stream::iter(lines).chain(follow));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::RwLock;

    use axum::body::Body;
    use axum::extract::connect_info::MockConnectInfo;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::agent::test_support::judged;
    use crate::engine::ClusterState;
    use crate::export::metrics::Metrics;
    use crate::model::Identity;
    use crate::model::Name;
    use crate::sources::ClusterHealth;

    fn shared() -> Arc<Shared> {
        let shared = Shared::new(
            Arc::new(RwLock::new(ClusterState::new())),
            Arc::new(RwLock::new(ClusterHealth::default())),
            Metrics::new(10),
            false,
            crate::names::NameLimits::default(),
        );
        let pod = |namespace: &str, name: &str| Identity {
            namespace: Name::from(namespace),
            pod: Some(Name::from(name)),
            workload: Name::from(name),
        };
        let (record, judgement) = judged(pod("ai-platform", "client-0"), Identity::world());
        shared.recent.push(record, judgement);
        let (record, judgement) = judged(pod("other", "x-0"), Identity::world());
        shared.recent.push(record, judgement);
        Arc::new(shared)
    }

    /// GETs `uri` from `peer`: status and body.
    async fn get(shared: Arc<Shared>, uri: &str, peer: &str) -> (StatusCode, String) {
        let peer: SocketAddr = peer.parse().expect("peer");
        let response = router(shared)
            .layer(MockConnectInfo(peer))
            .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn namespaces(body: &str) -> Vec<String> {
        let flows: Vec<serde_json::Value> = serde_json::from_str(body).expect("JSON array");
        flows
            .iter()
            .map(|f| {
                f["src_identity"]["namespace"]
                    .as_str()
                    .unwrap_or("?")
                    .to_owned()
            })
            .collect()
    }

    #[tokio::test]
    async fn flows_filters_are_typed_and_percent_decoded() {
        let local = "127.0.0.1:5000";
        let (status, body) = get(shared(), "/flows", local).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(namespaces(&body), ["ai-platform", "other"]);
        let (status, body) = get(
            shared(),
            "/flows?namespace=ai%2Dplatform&verdict=allow",
            local,
        )
        .await;
        assert_eq!(
            (status, namespaces(&body)),
            (StatusCode::OK, vec!["ai-platform".to_owned()])
        );
        let (status, body) = get(shared(), "/flows?verdict=deny", local).await;
        assert_eq!(
            (status, namespaces(&body)),
            (StatusCode::OK, Vec::<String>::new())
        );
        let (status, body) = get(shared(), "/flows?pod=x-0", local).await;
        assert_eq!(
            (status, namespaces(&body)),
            (StatusCode::OK, vec!["other".to_owned()])
        );
    }

    #[tokio::test]
    async fn flows_rejects_unknown_keys_bad_values_and_remote_clients() {
        let local = "127.0.0.1:5000";
        let (status, body) = get(shared(), "/flows?namespaces=ai", local).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("unknown field `namespaces`"), "{body}");
        let (status, body) = get(shared(), "/flows?verdict=maybe", local).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body.contains("`maybe` is not one of allow, deny, not-applicable"),
            "{body}"
        );
        let (status, _) = get(shared(), "/flows", "10.1.2.3:5000").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn readiness_says_why_and_metrics_are_openmetrics() {
        let shared = shared();
        let (status, body) = get(Arc::clone(&shared), "/readyz", "10.1.2.3:1").await;
        assert_eq!(
            (status, body.as_str()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: programs not attached yet\n"
            )
        );
        shared.set_attached(crate::capture::DatapathInfo {
            kernel: "6.18.0".into(),
            attach_mode: crate::capture::datapath::AttachMode::Tcx,
            socket_hook: Some("/sys/fs/cgroup".into()),
        });
        let (status, body) = get(Arc::clone(&shared), "/readyz", "10.1.2.3:1").await;
        assert_eq!(
            (status, body.as_str()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: cluster state not synced\n"
            )
        );
        let (status, body) = get(Arc::clone(&shared), "/metrics", "10.1.2.3:1").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.ends_with("# EOF\n"), "{body}");
        assert_eq!(
            get(shared, "/nope", "10.1.2.3:1").await.0,
            StatusCode::NOT_FOUND
        );
    }
}
