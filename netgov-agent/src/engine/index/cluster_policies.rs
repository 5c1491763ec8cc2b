//! Cluster-wide policies in the cluster state: compiled on arrival, and
//! each pod's list of those whose subject it is, kept current as
//! policies, pods and namespace labels change.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::cluster::{ClusterState, PodInfo, Slot};
use crate::engine::PolicyError;
use crate::engine::selector::Labels;
use crate::engine::tiers::{ClusterPolicy, ClusterPolicyKind, Subject, compile_cluster_policy};

impl ClusterState {
    /// Compiles and adds or replaces a cluster-wide policy, then updates
    /// the pods it applies to.
    ///
    /// # Errors
    /// The compile error, also kept in
    /// [`ClusterState::cluster_policy_errors`]; a previous valid version
    /// is removed.
    pub(super) fn upsert_cluster_policy(
        &mut self,
        kind: ClusterPolicyKind,
        object: &Value,
    ) -> Result<(), PolicyError> {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let id = format!("{} {name}", kind.name());
        let result = compile_cluster_policy(kind, object);
        match &result {
            Ok(policy) => {
                self.cluster_policy_errors.remove(&id);
                self.cluster_policies.insert(id, Arc::new(policy.clone()));
            }
            Err(error) => {
                self.cluster_policy_errors.insert(id.clone(), error.clone());
                self.cluster_policies.remove(&id);
            }
        }
        self.refresh_all_cluster_policies();
        result.map(drop)
    }

    /// Removes a cluster-wide policy.
    pub(super) fn delete_cluster_policy(&mut self, kind: ClusterPolicyKind, name: &str) {
        let id = format!("{} {name}", kind.name());
        self.cluster_policy_errors.remove(&id);
        if self.cluster_policies.remove(&id).is_some() {
            self.refresh_all_cluster_policies();
        }
    }

    /// The compiled cluster-wide policies, by `Kind name`.
    pub fn cluster_policies(&self) -> impl Iterator<Item = &Arc<ClusterPolicy>> {
        self.cluster_policies.values()
    }

    /// Cluster-wide policies that failed to compile, by `Kind name`.
    pub fn cluster_policy_errors(&self) -> &BTreeMap<String, PolicyError> {
        &self.cluster_policy_errors
    }

    /// Warnings about valid cluster-wide policies: several in one tier with
    /// the same priority (which one applies where both match is
    /// implementation-defined upstream), and fields this engine does not
    /// know (those fail closed).
    pub fn cluster_policy_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let mut by_priority: BTreeMap<(crate::engine::tiers::Tier, u32), Vec<&str>> =
            BTreeMap::new();
        for policy in self.cluster_policies.values() {
            by_priority
                .entry((policy.tier, policy.priority))
                .or_default()
                .push(&policy.id);
            if policy.unknown_fields > 0 {
                warnings.push(format!(
                    "{}: {} peer or port entries with fields this version does not know (they fail closed)",
                    policy.id, policy.unknown_fields
                ));
            }
        }
        for ((tier, priority), ids) in by_priority {
            if ids.len() > 1 {
                warnings.push(format!(
                    "{} share {tier} priority {priority}: where their rules overlap, which applies is implementation-defined",
                    ids.join(", ")
                ));
            }
        }
        warnings
    }

    /// The cluster-wide policies whose subject `pod` is, by tier, then
    /// priority, then `Kind name`.
    pub(super) fn cluster_policies_of(&self, pod: &PodInfo) -> Vec<Arc<ClusterPolicy>> {
        if pod.host_network || self.cluster_policies.is_empty() {
            return Vec::new();
        }
        let empty = Labels::new();
        let namespace_labels = self.namespace_labels(&pod.namespace).unwrap_or(&empty);
        let mut applying: Vec<Arc<ClusterPolicy>> = self
            .cluster_policies
            .values()
            .filter(|policy| match &policy.subject {
                Subject::Namespaces(namespaces) => namespaces.matches(namespace_labels),
                Subject::Pods { namespaces, pods } => {
                    namespaces.matches(namespace_labels) && pods.matches(&pod.labels)
                }
            })
            .cloned()
            .collect();
        applying.sort_by(|a, b| (a.tier, a.priority, &a.id).cmp(&(b.tier, b.priority, &b.id)));
        applying
    }

    fn refresh_all_cluster_policies(&mut self) {
        for slot in 0..self.pods.len() {
            self.refresh_pod_policies(slot as Slot);
        }
        self.refresh_departed(None);
    }

    /// Labels of node `name`.
    pub fn node_labels(&self, name: &str) -> Option<&Labels> {
        self.node_labels.get(name)
    }
}
