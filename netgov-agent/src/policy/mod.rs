//! The NetworkPolicy engine: judges whether the cluster's NetworkPolicies
//! allow a flow, with upstream (networking.k8s.io/v1) semantics, and says
//! why.
//!
//! Pure: no I/O. [`ClusterState`] holds the objects, compiled once and
//! indexed; [`evaluate`] judges one flow. Semantics, as upstream:
//!
//! - A pod is isolated for ingress (egress) iff some policy in its
//!   namespace selects it and has that policy type. `policyTypes` defaults
//!   to `Ingress`, plus `Egress` when the policy has egress rules.
//! - A flow is allowed iff the source's egress allows it (or the source is
//!   not egress-isolated, or not a pod) and the destination's ingress allows
//!   it (likewise). Rules of all selecting policies are a union.
//! - Empty or missing `from`/`to` admit every peer; empty or missing `ports`
//!   admit every port and protocol (ICMP included); `ingress: []` admits
//!   nothing. A peer with `podSelector` only means pods of the policy's
//!   namespace; with `namespaceSelector` only, every pod of matching
//!   namespaces; with both, matching pods in matching namespaces.
//! - `ipBlock` is matched against the peer's IP, pod IPs included.
//! - Port protocol defaults to TCP; `endPort` makes a range; named ports
//!   resolve against the destination pod's own container ports.
//! - A flow with a node or a hostNetwork pod at either end is
//!   `not-applicable`: NetworkPolicy does not govern it.
//! - A flow to a Service cluster IP is judged against each ready backend
//!   from the EndpointSlices, at its target port; if backends disagree, the
//!   verdict is `deny` and says so.

pub mod check;
pub mod compile;
pub mod evaluate;
pub mod manifests;
pub mod selector;
pub mod tiers;
pub mod verdict;

/// A shared name (`namespace/name`, a namespace, a pod name): verdicts
/// carry these by reference count instead of copying strings.
pub type Name = std::sync::Arc<str>;
pub use evaluate::evaluate;
pub use verdict::{Decision, FlowQuery, Verdict};

/// An object the engine cannot use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A field holds a value the API server would reject.
    #[error("{object}: {field}: {reason}")]
    Invalid {
        /// `Kind namespace/name`.
        object: String,
        /// Path of the field, e.g. `spec.ingress[0].from[1].ipBlock.cidr`.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

#[cfg(test)]
mod tests;
