//! Objects in and out of the index: the one place an object moves the
//! generation. (A reloaded file source replaces the whole state and moves
//! past both generations: `history.rs`, `succeed`.)

use super::cluster::ClusterState;
use crate::engine::{Object, PolicyError, ResourceKind};

impl ClusterState {
    /// Adds or replaces an object, and moves the generation (judgements
    /// cached against the previous one are stale).
    ///
    /// # Errors
    /// An invalid policy, NetworkPolicy or cluster-wide: it is not applied
    /// (a previous valid version is removed) and its error is kept in
    /// [`ClusterState::policy_errors`] or
    /// [`ClusterState::cluster_policy_errors`]. Every other object applies.
    pub fn apply(&mut self, object: &Object) -> Result<(), PolicyError> {
        self.generation += 1;
        match object {
            Object::Namespace(o) => self.upsert_namespace(o),
            Object::Node(o) => self.upsert_node(o),
            Object::NetworkPolicy(o) => return self.upsert_policy(o),
            Object::Pod(o) => self.upsert_pod(o),
            Object::Service(o) => self.upsert_service(o),
            Object::EndpointSlice(o) => self.upsert_endpoint_slice(o),
            Object::ClusterPolicy(kind, o) => return self.upsert_cluster_policy(*kind, o),
        }
        Ok(())
    }

    /// Removes the object `kind` `namespace/name` (`namespace` is empty for
    /// cluster-scoped kinds), and moves the generation.
    pub fn delete(&mut self, kind: ResourceKind, namespace: &str, name: &str) {
        self.generation += 1;
        match kind {
            ResourceKind::Namespace => self.delete_namespace(name),
            ResourceKind::Node => self.delete_node(name),
            ResourceKind::NetworkPolicy => self.delete_policy(namespace, name),
            ResourceKind::Pod => self.delete_pod(namespace, name),
            ResourceKind::Service => self.delete_service(namespace, name),
            ResourceKind::EndpointSlice => self.delete_endpoint_slice(namespace, name),
            ResourceKind::ClusterNetworkPolicy
            | ResourceKind::AdminNetworkPolicy
            | ResourceKind::BaselineAdminNetworkPolicy => {
                if let Some(policy_kind) = kind.cluster_policy() {
                    self.delete_cluster_policy(policy_kind, name);
                }
            }
        }
    }

    /// Whether objects of `kind` are held one for one as applied without
    /// error and not deleted: Pods (but finished ones), Services,
    /// EndpointSlices, NetworkPolicies (the valid ones) and Nodes. Not
    /// namespaces, which are also known from their pods, nor cluster-wide
    /// policies (a few).
    pub fn holds(kind: ResourceKind) -> bool {
        matches!(
            kind,
            ResourceKind::Pod
                | ResourceKind::Service
                | ResourceKind::EndpointSlice
                | ResourceKind::NetworkPolicy
                | ResourceKind::Node
        )
    }

    /// The objects of `kind` held, as `(namespace, name)`, when
    /// [`ClusterState::holds`] it.
    pub fn held(&self, kind: ResourceKind) -> Option<Vec<(String, String)>> {
        let key = |(namespace, name): (&str, &str)| (namespace.to_owned(), name.to_owned());
        Some(match kind {
            ResourceKind::Pod => self.pods().map(|p| key((&p.namespace, &p.name))).collect(),
            ResourceKind::Service => self
                .services
                .iter()
                .map(|s| key((&s.namespace, &s.name)))
                .collect(),
            ResourceKind::EndpointSlice => self
                .slices
                .iter()
                .flatten()
                .map(|s| key((&s.namespace, &s.name)))
                .collect(),
            ResourceKind::NetworkPolicy => self
                .policies
                .iter()
                .flat_map(|(namespace, policies)| {
                    policies.keys().map(|name| key((namespace, name)))
                })
                .collect(),
            ResourceKind::Node => self.node_ips.keys().map(|name| key(("", name))).collect(),
            _ => return None,
        })
    }

    /// Whether the object `kind` `namespace/name` is held, for a kind the
    /// state [`ClusterState::holds`].
    pub fn is_held(&self, kind: ResourceKind, namespace: &str, name: &str) -> bool {
        match kind {
            ResourceKind::Pod => self.pod(namespace, name).is_some(),
            ResourceKind::Service => self.service(namespace, name).is_some(),
            ResourceKind::EndpointSlice => self.slice_slot(namespace, name).is_some(),
            ResourceKind::NetworkPolicy => self
                .policies
                .get(namespace)
                .is_some_and(|policies| policies.contains_key(name)),
            ResourceKind::Node => self.node_ips.contains_key(name),
            _ => false,
        }
    }

    /// How many objects [`ClusterState::held`] lists for `kind`.
    pub fn held_count(&self, kind: ResourceKind) -> Option<usize> {
        Some(match kind {
            ResourceKind::Pod => self.pod_count(),
            ResourceKind::Service => self.services.len(),
            ResourceKind::EndpointSlice => self.slice_slots.len(),
            ResourceKind::NetworkPolicy => self.policies.values().map(|p| p.len()).sum(),
            ResourceKind::Node => self.node_ips.len(),
            _ => return None,
        })
    }
}
