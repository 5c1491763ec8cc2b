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
}
