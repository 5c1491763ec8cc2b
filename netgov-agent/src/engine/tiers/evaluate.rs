//! One tier's decision for one side of a flow: the first matching rule of
//! the policies that apply to the pod, by ascending priority, in written
//! order.

use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use super::{Action, ClusterPolicy, Peer, PortMatch, Rule, Tier};
use crate::engine::{ClusterState, PodInfo, Resolved};
use crate::model::Name;
use crate::model::{Direction, Protocol};

/// The rule of a cluster-wide tier that decided a side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TierDecision {
    /// Its tier.
    pub tier: Tier,
    /// `Kind name` of the policy.
    pub policy: Name,
    /// The policy's priority.
    pub priority: u32,
    /// The rule's `name`, else `#index`.
    pub rule: String,
    /// What it did.
    pub action: Action,
    /// Other policies of the same tier and priority with a matching rule
    /// that acts differently: which one applies is implementation-defined
    /// upstream, so the verdict may differ in the cluster.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub same_priority: Vec<Name>,
}

/// The side being judged: the direction of the pod whose policies apply
/// (the source for egress, the destination for ingress), the other end
/// and the destination port.
#[derive(Clone, Copy)]
pub struct SideQuery<'a> {
    /// The cluster.
    pub cluster: &'a ClusterState,
    /// Which of the pod's directions.
    pub direction: Direction,
    /// The other end.
    pub peer: Resolved<'a>,
    /// The other end's address.
    pub peer_ip: IpAddr,
    /// The flow's protocol.
    pub protocol: Protocol,
    /// The destination port.
    pub port: u16,
    /// The destination pod, for named ports.
    pub destination_pod: Option<&'a PodInfo>,
}

/// The first rule of `tier` that matches, if any (a `Pass` included), and
/// notes for the explanation (rules that could not match for want of
/// knowledge, such as domain names).
pub fn judge_tiers(
    query: &SideQuery<'_>,
    pod: &PodInfo,
    tier: Tier,
    notes: &mut Vec<String>,
) -> Option<TierDecision> {
    // The pod's list is sorted by tier, then priority.
    let policies = pod
        .policies
        .cluster
        .iter()
        .filter(|p| p.tier == tier && p.may_match(query.direction, query.protocol, query.port));
    for policy in policies.clone() {
        let Some(rule) = first_match(query, policy, notes) else {
            continue;
        };
        let same_priority = policies
            .filter(|p| p.priority == policy.priority && !Arc::ptr_eq(p, policy))
            .filter(|p| {
                first_match(query, p, &mut Vec::new()).is_some_and(|r| r.action != rule.action)
            })
            .map(|p| Arc::clone(&p.id))
            .collect();
        return Some(TierDecision {
            tier,
            policy: Arc::clone(&policy.id),
            priority: policy.priority,
            rule: rule.label(),
            action: rule.action,
            same_priority,
        });
    }
    None
}

fn first_match<'p>(
    query: &SideQuery<'_>,
    policy: &'p ClusterPolicy,
    notes: &mut Vec<String>,
) -> Option<&'p Rule> {
    let rules = match query.direction {
        Direction::Ingress => &policy.ingress,
        Direction::Egress => &policy.egress,
    };
    rules.iter().find(|rule| {
        if rule.action == Action::Accept && rule.peers.iter().all(|p| matches!(p, Peer::DomainNames(_))) {
            notes.push(format!(
                "{} rule {} names domains; no names are known for the destination, so it did not match",
                policy.id,
                rule.label()
            ));
        }
        rule_matches(query, rule)
    })
}

/// Whether a rule matches: a peer and a port entry match. Fields this
/// engine does not know fail closed: an `Accept` never matches through
/// them, `Deny` and `Pass` always do.
fn rule_matches(query: &SideQuery<'_>, rule: &Rule) -> bool {
    let fail_closed = rule.action != Action::Accept;
    // Ports first: they are cheap, and most rules name a few.
    let ports = match &rule.ports {
        None => true,
        Some(entries) => entries.iter().any(|entry| match entry {
            PortMatch::Unknown => fail_closed,
            PortMatch::Range(protocol, start, end) => {
                *protocol == query.protocol && (*start..=*end).contains(&query.port)
            }
            PortMatch::Named(name) => {
                query.protocol.has_ports()
                    && query
                        .destination_pod
                        .and_then(|pod| pod.named_port(name, query.protocol))
                        == Some(query.port)
            }
        }),
    };
    ports
        && rule.peers.iter().any(|peer| match peer {
            Peer::Unknown => fail_closed,
            peer => peer_matches(query, peer),
        })
}

fn peer_matches(query: &SideQuery<'_>, peer: &Peer) -> bool {
    let namespace_labels = |pod: &PodInfo| query.cluster.namespace_labels(&pod.namespace);
    match (peer, query.peer) {
        (Peer::Namespaces(namespaces), Resolved::Pod(pod)) => {
            namespace_labels(pod).is_some_and(|labels| namespaces.matches(labels))
        }
        (Peer::Pods { namespaces, pods }, Resolved::Pod(pod)) => {
            pods.matches(&pod.labels)
                && namespace_labels(pod).is_some_and(|labels| namespaces.matches(labels))
        }
        (Peer::Nodes(nodes), Resolved::Host(Some(node))) => query
            .cluster
            .node_labels(node)
            .is_some_and(|labels| nodes.matches(labels)),
        (Peer::Networks(cidrs), _) => cidrs.iter().any(|cidr| cidr.contains(&query.peer_ip)),
        // Names of egress destinations would come from observing DNS,
        // which this agent does not do yet: such a peer never matches,
        // and the explanation says so (see `first_match`).
        (Peer::DomainNames(_), _) => false,
        _ => false,
    }
}
