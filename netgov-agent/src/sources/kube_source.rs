//! Cluster state from the Kubernetes API: the client, and a list/watch loop
//! per resource (Pods, Namespaces, NetworkPolicies, Services,
//! EndpointSlices, Nodes, cluster-wide policies; all namespaces) feeding the
//! policy engine's [`ClusterState`](crate::engine::ClusterState).
//!
//! Decisions:
//! - The cluster state is the store: each object is reduced to the fields
//!   the engine uses as it arrives (no `managedFields`, no full copies in
//!   reflector stores), and lists are read as they arrive, so memory stays
//!   flat on big clusters whatever the API server does with `limit`.
//! - How lists, watches, relists and backoff work: [`super::watch`].
//! - Nothing waits forever: connecting times out, and so does a response
//!   that stops arriving ([`Timeouts`]).

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::ApiResource;

use super::{ClusterHealth, ResourceKind};
use crate::engine::ClusterState;

/// Errors creating the client.
#[derive(Debug, thiserror::Error)]
pub enum KubeSourceError {
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Neither in-cluster configuration nor a default kubeconfig was found.
    #[error("no Kubernetes configuration (in-cluster or $KUBECONFIG/~/.kube/config): {0}")]
    Infer(#[source] kube::config::InferConfigError),
    /// The client could not be built.
    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// A client from `kubeconfig`, or inferred like every kube-rs tool
/// (in-cluster service account, then `$KUBECONFIG`, then
/// `~/.kube/config`).
///
/// # Errors
/// [`KubeSourceError`] naming what could not be used.
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, KubeSourceError> {
    client_with(kubeconfig, Timeouts::default()).await
}

/// How long the API server may take.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// To connect.
    pub connect: Duration,
    /// Between two reads of a response (a LIST that stops, a hung server).
    pub read: Duration,
}

impl Default for Timeouts {
    /// 10 s to connect, 60 s of silence.
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(60),
        }
    }
}

impl Timeouts {
    /// The server-side length of a watch: 3 s shorter than the read
    /// timeout, so the server ends a quiet watch before the client gives
    /// up on it — and a watch that stalls (nothing, not even its end)
    /// meets the read timeout, which is counted and logged, before
    /// kube-rs's own idle reconnect (length + 5 s), which is silent.
    pub(super) fn watch_seconds(&self) -> u32 {
        (self.read.as_secs().saturating_sub(3)).clamp(1, 290) as u32
    }
}

/// [`client`] with `timeouts`.
///
/// # Errors
/// [`KubeSourceError`] naming what could not be used.
pub async fn client_with(
    kubeconfig: Option<&Path>,
    timeouts: Timeouts,
) -> Result<kube::Client, KubeSourceError> {
    let mut config = match kubeconfig {
        Some(path) => {
            let kubeconfig_error = |source| KubeSourceError::Kubeconfig {
                path: path.display().to_string(),
                source,
            };
            let file = kube::config::Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(kubeconfig_error)?
        }
        None => kube::Config::infer()
            .await
            .map_err(KubeSourceError::Infer)?,
    };
    config.connect_timeout = Some(timeouts.connect);
    config.read_timeout = Some(timeouts.read);
    // Count from the request, not from when a pooled connection went idle.
    config.reset_reader_on_write = true;
    kube::Client::try_from(config).map_err(KubeSourceError::Client)
}

/// Watches every resource into `state` until the returned tasks are
/// aborted (dropping the handles does not stop them).
pub fn start(
    client: kube::Client,
    state: Arc<RwLock<ClusterState>>,
    health: Arc<RwLock<ClusterHealth>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    start_with(client, state, health, Timeouts::default())
}

/// [`start`] for a client made with `timeouts`.
pub fn start_with(
    client: kube::Client,
    state: Arc<RwLock<ClusterState>>,
    health: Arc<RwLock<ClusterHealth>>,
    timeouts: Timeouts,
) -> Vec<tokio::task::JoinHandle<()>> {
    ResourceKind::ALL
        .iter()
        .map(|kind| {
            let (client, state, health) = (client.clone(), Arc::clone(&state), Arc::clone(&health));
            tokio::spawn(super::watch::watch_kind(
                *kind, client, state, health, timeouts,
            ))
        })
        .collect()
}

pub(super) fn api_resource(kind: ResourceKind) -> ApiResource {
    match kind {
        ResourceKind::Namespace => ApiResource::erase::<Namespace>(&()),
        ResourceKind::Node => ApiResource::erase::<Node>(&()),
        ResourceKind::NetworkPolicy => ApiResource::erase::<NetworkPolicy>(&()),
        ResourceKind::Pod => ApiResource::erase::<Pod>(&()),
        ResourceKind::Service => ApiResource::erase::<Service>(&()),
        ResourceKind::EndpointSlice => ApiResource::erase::<EndpointSlice>(&()),
        ResourceKind::ClusterNetworkPolicy
        | ResourceKind::AdminNetworkPolicy
        | ResourceKind::BaselineAdminNetworkPolicy => {
            let (group, plural) = kind.api_resource();
            ApiResource {
                group: group.to_owned(),
                version: kind.api_version().to_owned(),
                api_version: format!("{group}/{}", kind.api_version()),
                kind: kind.name().to_owned(),
                plural: plural.to_owned(),
            }
        }
    }
}
