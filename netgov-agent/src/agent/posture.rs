//! The state-derived metrics: pods no policy isolates per governed
//! namespace, the cluster state's health, policies that failed to compile
//! and readiness. Refreshed every 5 s and on every scrape.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::shared::Shared;
use crate::engine::ClusterState;
use crate::model::Direction;

/// The namespace label that opts a namespace in to posture alerts
/// (`netgov_namespace_governed`); its value must be `"true"`.
pub const GOVERNED_LABEL: &str = "netgov.io/governed";

/// Refreshes every 5 s, forever.
pub async fn refresh_forever(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        refresh(&shared);
    }
}

/// Refreshes now.
pub fn refresh(shared: &Shared) {
    let metrics = &shared.metrics;
    let mut counts: BTreeMap<(String, Direction), i64> = BTreeMap::new();
    {
        let state = shared.state();
        for pod in state.pods().filter(|p| !p.host_network) {
            let (ingress, egress) = ClusterState::isolation(pod);
            for (direction, isolated) in
                [(Direction::Ingress, ingress), (Direction::Egress, egress)]
            {
                let count = counts
                    .entry((pod.namespace.to_string(), direction))
                    .or_default();
                if !isolated {
                    *count += 1;
                }
            }
        }
        metrics.set_policy_compile_errors(
            state.policy_errors().len() + state.cluster_policy_errors().len(),
        );
        metrics.set_governed_namespaces(
            state
                .namespaces()
                .filter(|(_, labels)| {
                    labels.get(GOVERNED_LABEL).map(String::as_str) == Some("true")
                })
                .map(|(name, _)| name),
        );
    }
    metrics.set_unprotected_pods(&counts);
    metrics.set_ready(shared.ready().is_ok());
    let health = shared
        .health
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for (kind, resource) in &health.resources {
        metrics.record_resource(
            *kind,
            resource.synced,
            resource.errors,
            resource.last_event.map(|last| last.elapsed()),
        );
    }
}
