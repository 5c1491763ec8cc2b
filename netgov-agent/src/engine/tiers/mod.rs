//! The cluster-wide policy tiers around NetworkPolicy: ClusterNetworkPolicy
//! (`policy.networking.k8s.io/v1alpha2`, and `v1beta1` with the same
//! schema) in its `Admin` and `Baseline` tiers, and the older
//! AdminNetworkPolicy / BaselineAdminNetworkPolicy (`v1alpha1`), mapped
//! onto the same model (`Allow` → `Accept`, BANP → `Baseline`).
//!
//! Semantics, per direction, from the API's documentation:
//! Admin tier (policies by ascending `priority`, rules in written order;
//! `Accept` and `Deny` are final, `Pass` skips the rest of the tier) →
//! NetworkPolicy tier (a NetworkPolicy that selects the pod for the
//! direction decides) → Baseline tier (same order; `Pass` goes to the
//! default) → allow. Selecting a pod does not isolate it: only rules that
//! match decide. Host-network pods are never subjects nor pod peers.

mod compile;
mod evaluate;

pub use compile::{ClusterPolicyKind, compile_cluster_policy, domain_matches};
pub use evaluate::{SideQuery, TierDecision, judge_tiers};

use ipnet::IpNet;

use super::selector::Selector;
use crate::model::Name;
use crate::model::{Protocol, string_enum};

string_enum! {
    /// A policy tier, in evaluation order.
    pub enum Tier {
        /// Cluster administrators' guard-rails: before NetworkPolicy.
        Admin => "admin",
        /// NetworkPolicy, namespaced.
        NetworkPolicy => "networkpolicy",
        /// Cluster defaults: after NetworkPolicy, for pods it does not
        /// select.
        Baseline => "baseline",
    }
}

string_enum! {
    /// What a cluster-wide rule does with the traffic it matches.
    pub enum Action {
        /// Allowed; no further rule of either kind is evaluated for this
        /// direction.
        Accept => "Accept",
        /// Denied.
        Deny => "Deny",
        /// The rest of this tier is skipped.
        Pass => "Pass",
    }
}

/// Which pods a cluster-wide policy applies to.
#[derive(Clone, Debug)]
pub enum Subject {
    /// Every pod of the namespaces matching the selector.
    Namespaces(Selector),
    /// Matching pods in matching namespaces.
    Pods {
        /// Namespace selector (empty: every namespace).
        namespaces: Selector,
        /// Pod selector.
        pods: Selector,
    },
}

/// A peer of a cluster-wide rule.
#[derive(Clone, Debug)]
pub enum Peer {
    /// Pods of the matching namespaces.
    Namespaces(Selector),
    /// Matching pods in matching namespaces.
    Pods {
        /// Namespace selector.
        namespaces: Selector,
        /// Pod selector.
        pods: Selector,
    },
    /// Addresses of the matching nodes (egress).
    Nodes(Selector),
    /// Addresses in these CIDRs, pods included (egress).
    Networks(Vec<IpNet>),
    /// Destinations known by these names (egress, `Accept` only): exact,
    /// or `*.` for one or more leading labels.
    DomainNames(Vec<String>),
    /// A peer with no field this engine knows (a newer API): fails closed.
    Unknown,
}

/// The ports of a cluster-wide rule's `protocols` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortMatch {
    /// A protocol and an inclusive port range (one port: both equal).
    Range(Protocol, u16, u16),
    /// A named container port of the destination pod.
    Named(String),
    /// An entry with no field this engine knows: fails closed.
    Unknown,
}

/// A compiled cluster-wide rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Its `name`, when set.
    pub name: Option<String>,
    /// Its index in `ingress` or `egress`.
    pub index: usize,
    /// What it does.
    pub action: Action,
    /// Its peers (any matches).
    pub peers: Vec<Peer>,
    /// Its protocols and ports (`None`: every protocol and port).
    pub ports: Option<Vec<PortMatch>>,
}

impl Rule {
    /// The rule as explanations name it: its `name`, else its index.
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => format!("#{}", self.index),
        }
    }
}

/// A compiled cluster-wide policy.
#[derive(Clone, Debug)]
pub struct ClusterPolicy {
    /// `Kind name`, e.g. `ClusterNetworkPolicy guard-rails`.
    pub id: Name,
    /// Its tier (Admin or Baseline).
    pub tier: Tier,
    /// Its priority (lower first; a BaselineAdminNetworkPolicy has 0).
    pub priority: u32,
    /// The pods it applies to.
    pub subject: Subject,
    /// Rules for traffic into its subjects.
    pub ingress: Vec<Rule>,
    /// Rules for traffic out of its subjects.
    pub egress: Vec<Rule>,
    /// Peers and ports this engine did not understand (each fails closed).
    pub unknown_fields: usize,
    /// Per direction (ingress, egress): every protocol and port range its
    /// rules can match, or `None` when a rule can match any port (no
    /// `protocols`, a named port, an unknown entry). Lets a flow skip a
    /// policy none of whose rules names its port.
    pub port_summary: [Option<Vec<(Protocol, u16, u16)>>; 2],
}

impl ClusterPolicy {
    /// Whether a rule of `direction` may match `protocol`/`port` (a
    /// cheap test before the rules themselves).
    pub fn may_match(
        &self,
        direction: crate::model::Direction,
        protocol: Protocol,
        port: u16,
    ) -> bool {
        let summary = match direction {
            crate::model::Direction::Ingress => &self.port_summary[0],
            crate::model::Direction::Egress => &self.port_summary[1],
        };
        summary.as_ref().is_none_or(|ranges| {
            ranges
                .iter()
                .any(|(p, start, end)| *p == protocol && (*start..=*end).contains(&port))
        })
    }
}

/// The port summary of a direction's rules (see
/// [`ClusterPolicy::port_summary`]).
fn port_summary(rules: &[Rule]) -> Option<Vec<(Protocol, u16, u16)>> {
    let mut ranges = Vec::new();
    for rule in rules {
        for entry in rule.ports.as_ref()? {
            match entry {
                PortMatch::Range(protocol, start, end) => ranges.push((*protocol, *start, *end)),
                PortMatch::Named(_) | PortMatch::Unknown => return None,
            }
        }
    }
    Some(ranges)
}
