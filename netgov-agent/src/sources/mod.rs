//! Cluster state for the agent: who an IP is (pod, workload, node,
//! service) and the policies that apply, kept current.
//!
//! Two sources fill the same [`crate::engine::ClusterState`] and report the
//! same [`ClusterHealth`]: the Kubernetes API ([`kube_source`]) and
//! manifest files ([`file_source`]).

pub mod file_source;
pub mod kube_source;
pub mod list_stream;
mod objects;
pub mod snapshot;
mod watch;

use std::collections::BTreeMap;
use std::time::Instant;

use crate::engine::tiers::ClusterPolicyKind;

/// The resources the cluster state is made of (the agent's ClusterRole
/// grants `get`, `list`, `watch` on exactly these).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKind {
    /// core/v1 Namespaces.
    Namespace,
    /// core/v1 Nodes.
    Node,
    /// networking.k8s.io/v1 NetworkPolicies.
    NetworkPolicy,
    /// core/v1 Pods.
    Pod,
    /// core/v1 Services.
    Service,
    /// discovery.k8s.io/v1 EndpointSlices.
    EndpointSlice,
    /// policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicies (a CRD:
    /// may be absent).
    ClusterNetworkPolicy,
    /// policy.networking.k8s.io/v1alpha1 AdminNetworkPolicies (a CRD).
    AdminNetworkPolicy,
    /// policy.networking.k8s.io/v1alpha1 BaselineAdminNetworkPolicies (a
    /// CRD).
    BaselineAdminNetworkPolicy,
}

impl ResourceKind {
    /// Every kind.
    pub const ALL: [ResourceKind; 9] = [
        ResourceKind::Namespace,
        ResourceKind::Node,
        ResourceKind::NetworkPolicy,
        ResourceKind::Pod,
        ResourceKind::Service,
        ResourceKind::EndpointSlice,
        ResourceKind::ClusterNetworkPolicy,
        ResourceKind::AdminNetworkPolicy,
        ResourceKind::BaselineAdminNetworkPolicy,
    ];

    /// The cluster-wide policy kind this resource holds, if it is one.
    pub fn cluster_policy(self) -> Option<ClusterPolicyKind> {
        match self {
            ResourceKind::ClusterNetworkPolicy => Some(ClusterPolicyKind::ClusterNetworkPolicy),
            ResourceKind::AdminNetworkPolicy => Some(ClusterPolicyKind::AdminNetworkPolicy),
            ResourceKind::BaselineAdminNetworkPolicy => {
                Some(ClusterPolicyKind::BaselineAdminNetworkPolicy)
            }
            _ => None,
        }
    }

    /// The API version watched (for the CRDs; the built-in kinds take
    /// theirs from their types).
    pub fn api_version(self) -> &'static str {
        match self {
            ResourceKind::ClusterNetworkPolicy => "v1alpha2",
            ResourceKind::AdminNetworkPolicy | ResourceKind::BaselineAdminNetworkPolicy => {
                "v1alpha1"
            }
            _ => "v1",
        }
    }

    /// The kind's name, as in manifests and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            ResourceKind::Namespace => "Namespace",
            ResourceKind::Node => "Node",
            ResourceKind::NetworkPolicy => "NetworkPolicy",
            ResourceKind::Pod => "Pod",
            ResourceKind::Service => "Service",
            ResourceKind::EndpointSlice => "EndpointSlice",
            ResourceKind::ClusterNetworkPolicy => "ClusterNetworkPolicy",
            ResourceKind::AdminNetworkPolicy => "AdminNetworkPolicy",
            ResourceKind::BaselineAdminNetworkPolicy => "BaselineAdminNetworkPolicy",
        }
    }

    /// The kind's API group (`""` for core) and resource name, as RBAC
    /// rules name them; taken from the types the watchers use.
    pub fn api_resource(self) -> (&'static str, &'static str) {
        use k8s_openapi::Resource;
        use k8s_openapi::api::{core, discovery, networking};
        fn of<K: Resource>() -> (&'static str, &'static str) {
            (K::GROUP, K::URL_PATH_SEGMENT)
        }
        match self {
            ResourceKind::Namespace => of::<core::v1::Namespace>(),
            ResourceKind::Node => of::<core::v1::Node>(),
            ResourceKind::NetworkPolicy => of::<networking::v1::NetworkPolicy>(),
            ResourceKind::Pod => of::<core::v1::Pod>(),
            ResourceKind::Service => of::<core::v1::Service>(),
            ResourceKind::EndpointSlice => of::<discovery::v1::EndpointSlice>(),
            ResourceKind::ClusterNetworkPolicy => {
                ("policy.networking.k8s.io", "clusternetworkpolicies")
            }
            ResourceKind::AdminNetworkPolicy => {
                ("policy.networking.k8s.io", "adminnetworkpolicies")
            }
            ResourceKind::BaselineAdminNetworkPolicy => {
                ("policy.networking.k8s.io", "baselineadminnetworkpolicies")
            }
        }
    }
}

impl prometheus_client::encoding::EncodeLabelValue for ResourceKind {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.name())
    }
}

/// Health of one resource of the state.
#[derive(Clone, Debug, Default)]
pub struct ResourceHealth {
    /// The first complete list has been applied.
    pub synced: bool,
    /// Errors so far: watch errors (each followed by a backoff and a
    /// resume), or failed reloads of the files.
    pub errors: u64,
    /// When the last event arrived.
    pub last_event: Option<Instant>,
    /// Objects currently known.
    pub objects: usize,
    /// Objects skipped because they do not fit their schema, or are invalid
    /// policies (the latest error of each is in `problems`).
    pub skipped_objects: u64,
    /// The latest error.
    pub last_error: Option<String>,
    /// The resource's CRD is not installed (counts as synced, with no
    /// objects; looked for again every minute).
    pub absent: bool,
    /// Objects skipped, by `Kind namespace/name`, with why.
    pub problems: BTreeMap<String, String>,
}

/// Health of the whole state, the same for both sources.
#[derive(Clone, Debug, Default)]
pub struct ClusterHealth {
    /// Per resource.
    pub resources: BTreeMap<ResourceKind, ResourceHealth>,
}

impl ClusterHealth {
    /// Ready once every resource completed its first list (or the files
    /// loaded).
    pub fn ready(&self) -> bool {
        ResourceKind::ALL
            .iter()
            .all(|kind| self.resources.get(kind).is_some_and(|r| r.synced))
    }
}

#[cfg(test)]
mod tests;
