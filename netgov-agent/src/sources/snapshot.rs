//! The live cluster's state, once: what `netgov check --cluster` judges
//! against. The agent's own source (one watcher per resource, every
//! object reduced as it arrives), stopped once every resource has
//! completed its first list.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::kube_source::{self, KubeSourceError, Timeouts};
use super::{ClusterHealth, ResourceKind};
use crate::engine::ClusterState;

/// Why the live state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// No client (kubeconfig, in-cluster configuration).
    #[error(transparent)]
    Client(#[from] KubeSourceError),
    /// Some resources did not finish their first list in time.
    #[error("the cluster state did not sync within {}s: {}", .waited.as_secs(), .pending.join("; "))]
    NotSynced {
        /// How long it waited.
        waited: Duration,
        /// Each resource not synced, with its last error.
        pending: Vec<String>,
    },
}

/// Lists every resource the engine uses from the cluster `kubeconfig`
/// names (else in-cluster, `$KUBECONFIG`, `~/.kube/config`), within
/// `wait`.
///
/// # Errors
/// [`SnapshotError`] naming what did not work.
pub async fn snapshot(
    kubeconfig: Option<&Path>,
    wait: Duration,
) -> Result<Arc<RwLock<ClusterState>>, SnapshotError> {
    let timeouts = Timeouts::default();
    let client = kube_source::client_with(kubeconfig, timeouts).await?;
    let state = Arc::new(RwLock::new(ClusterState::new()));
    let health = Arc::new(RwLock::new(ClusterHealth::default()));
    let tasks = kube_source::start_with(client, Arc::clone(&state), Arc::clone(&health), timeouts);
    let deadline = tokio::time::Instant::now() + wait;
    let synced = loop {
        if health.read().unwrap_or_else(|e| e.into_inner()).ready() {
            break true;
        }
        if tokio::time::Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for task in &tasks {
        task.abort();
    }
    if synced {
        return Ok(state);
    }
    let health = health.read().unwrap_or_else(|e| e.into_inner());
    let pending = ResourceKind::ALL
        .iter()
        .filter_map(|kind| {
            let resource = health.resources.get(kind);
            if resource.is_some_and(|r| r.synced) {
                return None;
            }
            let error = resource
                .and_then(|r| r.last_error.clone())
                .unwrap_or_else(|| "no answer yet".into());
            Some(format!("{}: {error}", kind.name()))
        })
        .collect();
    Err(SnapshotError::NotSynced {
        waited: wait,
        pending,
    })
}
