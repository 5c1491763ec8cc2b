//! Which policies decided a side of a flow, as Hubble's `Policy` list
//! (`egress_allowed_by`, `ingress_denied_by`, ...).
//!
//! - Allowed by NetworkPolicy: each policy with a rule that admits the
//!   flow, once.
//! - Denied by NetworkPolicy (isolated, no rule admits it): every policy
//!   that isolates the pod in that direction. Together they deny; none
//!   alone does, so naming one would be a guess.
//! - Decided by a cluster-wide tier: the one cluster-wide policy whose
//!   rule accepted or denied it (`kind` `ClusterNetworkPolicy`,
//!   `AdminNetworkPolicy` or `BaselineAdminNetworkPolicy`, no namespace).
//!
//! Labels follow Cilium's for policies derived from Kubernetes objects
//! (`k8s:io.cilium.k8s.policy.derived-from`, `.name`, `.namespace`), so
//! tools that read them find the same keys.

use super::proto::flow::Policy;
use crate::engine::Decision;
use crate::engine::tiers::Action;
use crate::engine::verdict::SideVerdict;

/// The kind of a namespaced NetworkPolicy.
const NETWORK_POLICY: &str = "NetworkPolicy";

/// The policies that allowed this side (empty unless it allowed by rule).
pub fn allowed_by(side: &SideVerdict) -> Vec<Policy> {
    if side.verdict != Decision::Allow {
        return Vec::new();
    }
    if let Some(tier) = &side.tier {
        return match tier.action {
            Action::Accept => vec![cluster_policy(&tier.policy)],
            Action::Deny | Action::Pass => Vec::new(),
        };
    }
    let mut policies: Vec<Policy> = Vec::new();
    for rule in &side.allowed_by {
        let policy = network_policy(&rule.policy);
        if !policies.contains(&policy) {
            policies.push(policy);
        }
    }
    policies
}

/// The policies that denied this side (empty unless it denied).
pub fn denied_by(side: &SideVerdict) -> Vec<Policy> {
    if side.verdict != Decision::Deny {
        return Vec::new();
    }
    match &side.tier {
        Some(tier) if tier.action == Action::Deny => vec![cluster_policy(&tier.policy)],
        _ => side
            .isolating_policies
            .iter()
            .map(|id| network_policy(id))
            .collect(),
    }
}

/// A NetworkPolicy by its `namespace/name`.
fn network_policy(id: &str) -> Policy {
    let (namespace, name) = id.split_once('/').unwrap_or(("", id));
    policy(NETWORK_POLICY, namespace, name)
}

/// A cluster-wide policy by its `Kind name`.
fn cluster_policy(id: &str) -> Policy {
    let (kind, name) = id.split_once(' ').unwrap_or(("", id));
    policy(kind, "", name)
}

fn policy(kind: &str, namespace: &str, name: &str) -> Policy {
    let mut labels = vec![
        format!("k8s:io.cilium.k8s.policy.derived-from={kind}"),
        format!("k8s:io.cilium.k8s.policy.name={name}"),
    ];
    if !namespace.is_empty() {
        labels.push(format!("k8s:io.cilium.k8s.policy.namespace={namespace}"));
    }
    Policy {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        labels,
        revision: 0,
        kind: kind.to_owned(),
    }
}
