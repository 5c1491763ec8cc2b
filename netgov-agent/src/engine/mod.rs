//! The policy engine: judges whether the cluster's NetworkPolicies and
//! cluster-wide policies allow a flow, with upstream semantics, and says
//! why. Four parts, over [`crate::model`]:
//!
//! - `selector`: label selectors;
//! - `compile` (NetworkPolicy) and `tiers` (the cluster-wide tiers):
//!   objects compiled once into what evaluation reads;
//! - `index`: [`ClusterState`], the objects and the compiled policies,
//!   indexed by address and by pod;
//! - `evaluate`: one flow judged ([`Verdict`]), the tiers' rules included
//!   (`tiers::evaluate` reads the index, as `evaluate` does).
//!
//! Pure: no I/O, no clap, no files; sources hand it objects (`manifests`
//! decodes them). Semantics, as upstream:
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
//! - NetworkPolicy does not govern a flow with a node or a hostNetwork pod
//!   at either end. A node's traffic to a pod is `not-applicable`; a pod's
//!   traffic to a node is egress the cluster-wide tiers judge, allowed
//!   unless a rule denies it.
//! - A pod's traffic to itself is always allowed ("a pod cannot block
//!   access to itself"), whatever the NetworkPolicies and the tiers say.
//! - A flow to a Service cluster IP is judged against each ready backend
//!   from the EndpointSlices, at its target port; if backends disagree, the
//!   verdict is `deny` and says so.

pub mod compile;
pub mod evaluate;
pub mod index;
pub mod label_set;
mod object;
pub mod selector;
pub mod tiers;
pub mod verdict;

pub use evaluate::evaluate;
pub use index::{
    ClusterState, DEFAULT_HISTORY_RETENTION, EndpointInfo, Frontend, NamedPort, NoBackend, PodInfo,
    Resolved, SERVICE_NAME_LABEL, ServiceInfo, ServicePortInfo, SliceInfo,
};
pub use object::{Object, ObjectError, ResourceKind};
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
