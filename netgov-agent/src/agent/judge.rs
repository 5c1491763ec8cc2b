//! Judging an observed flow: the policy verdict, whether a denied flow was
//! enforced by the network, and whether its egress was expected.
//!
//! Pure: a captured [`FlowRecord`], the cluster state and the configuration
//! in, a [`Judgement`] out.
//!
//! Enforcement of a denied flow, from what was observed:
//! - `gap`: the denied traffic got through — seen delivered into the
//!   destination pod's interface (its to-pod hook saw initiator packets), or
//!   answered (any packet back: handshake, reply, even a RST from the
//!   destination);
//! - `enforced`: only the initiator's attempts were seen: nothing delivered
//!   to a destination pod on this node, or, for a destination elsewhere,
//!   no answer within the answer window (or before the flow ended);
//! - `unknown`: not enough seen yet (a destination elsewhere, within the
//!   answer window).
//!
//! Unexpected egress: a pod sending to a destination outside the cluster —
//! not a pod, service or node IP, and outside the configured cluster CIDRs
//! — that no egress rule names (an `ipBlock` covering it) and no
//! expected-egress entry of the configuration lists. A pod without egress
//! isolation talking to the world is flagged too: not denied is not
//! expected.

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use super::config::AgentConfig;
use crate::capture::record::{FlowRecord, Protocol, Role};
use crate::policy::cluster::Resolved;
use crate::policy::evaluate::{EndpointKind, egress_names_destination};
use crate::policy::{ClusterState, Decision, FlowProtocol, FlowQuery, Verdict, evaluate};

/// Which side's policies deny a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeniedBy {
    /// The source's egress.
    Egress,
    /// The destination's ingress.
    Ingress,
    /// Both.
    Both,
}

/// Whether the network enforced a denied flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// The denied traffic got through.
    Gap,
    /// Only the initiator's attempts were seen.
    Enforced,
    /// Not enough seen yet.
    Unknown,
}

/// Who an end of a flow is, for labels and the flow log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// Namespace (`""` outside the cluster or for nodes).
    pub namespace: String,
    /// Pod name, when a pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Workload name: the pod's top owner, `world` outside the cluster, the
    /// node name (or `host`) for nodes, the service name for services.
    pub workload: String,
}

/// The judgement of one observed flow.
#[derive(Clone, Debug, Serialize)]
pub struct Judgement {
    /// The policy verdict, with its explanation.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Which side denies, for a denied flow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denied_by: Option<DeniedBy>,
    /// Whether the network enforced it, for a denied flow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<Enforcement>,
    /// Egress nobody declared.
    pub unexpected_egress: bool,
    /// The source.
    pub src: Identity,
    /// The destination.
    pub dst: Identity,
}

/// Where the judge runs.
#[derive(Clone, Debug, Default)]
pub struct NodeContext {
    /// This node's name (`NODE_NAME`); pods scheduled here are local, so
    /// their interfaces are observed.
    pub node_name: Option<String>,
}

fn flow_protocol(protocol: Protocol) -> Option<FlowProtocol> {
    match protocol {
        Protocol::Tcp => Some(FlowProtocol::Tcp),
        Protocol::Udp => Some(FlowProtocol::Udp),
        Protocol::Sctp => Some(FlowProtocol::Sctp),
        Protocol::Icmp => Some(FlowProtocol::Icmp),
        Protocol::Icmpv6 => Some(FlowProtocol::Icmpv6),
        Protocol::Other(_) => None,
    }
}

/// The policy question a record asks.
pub fn query_of(record: &FlowRecord) -> Option<FlowQuery> {
    Some(FlowQuery {
        src: record.src,
        dst: record.dst,
        protocol: flow_protocol(record.protocol)?,
        dst_port: record.dst_port,
    })
}

fn identity(cluster: &ClusterState, ip: IpAddr) -> Identity {
    match cluster.resolve(ip) {
        Resolved::Pod(pod) => Identity {
            namespace: pod.namespace.to_string(),
            pod: Some(pod.name.to_string()),
            workload: pod.workload.name.clone(),
        },
        Resolved::Host(node) => Identity {
            namespace: String::new(),
            pod: None,
            workload: node.unwrap_or("host").to_owned(),
        },
        Resolved::Service(service) => Identity {
            namespace: service.namespace.clone(),
            pod: None,
            workload: service.name.clone(),
        },
        Resolved::External => Identity {
            namespace: String::new(),
            pod: None,
            workload: crate::export::metrics::WORLD.to_owned(),
        },
    }
}

/// Judges `record`. `age` is how long ago its first packet was seen.
pub fn judge(
    record: &FlowRecord,
    cluster: &ClusterState,
    config: &AgentConfig,
    node: &NodeContext,
    age: Duration,
) -> Option<Judgement> {
    let query = query_of(record)?;
    let verdict = evaluate(cluster, &query);
    let denied_by = match (
        verdict.verdict,
        verdict.egress.verdict,
        verdict.ingress.verdict,
    ) {
        (Decision::Deny, Decision::Deny, Decision::Deny) => Some(DeniedBy::Both),
        (Decision::Deny, Decision::Deny, _) => Some(DeniedBy::Egress),
        (Decision::Deny, _, _) => Some(DeniedBy::Ingress),
        _ => None,
    };
    let enforcement = denied_by.map(|_| enforcement(record, cluster, config, node, age));
    Some(Judgement {
        unexpected_egress: unexpected_egress(cluster, config, &query),
        src: identity(cluster, record.src),
        dst: identity(cluster, record.dst),
        verdict,
        denied_by,
        enforcement,
    })
}

fn enforcement(
    record: &FlowRecord,
    cluster: &ClusterState,
    config: &AgentConfig,
    node: &NodeContext,
    age: Duration,
) -> Enforcement {
    let delivered = record
        .observations
        .iter()
        .any(|o| o.role == Role::Responder && o.packets_out > 0);
    let answered = record.packets_in > 0;
    if delivered || answered {
        return Enforcement::Gap;
    }
    let destination_local = match cluster.resolve(record.dst) {
        Resolved::Pod(pod) => pod.node.is_some() && pod.node == node.node_name,
        _ => false,
    };
    // A destination on this node is observed: had the traffic been let
    // through, its interface would have seen it. Elsewhere, only an answer
    // could show it, so wait for the answer window.
    if destination_local || age >= config.answer_window {
        Enforcement::Enforced
    } else {
        Enforcement::Unknown
    }
}

fn unexpected_egress(cluster: &ClusterState, config: &AgentConfig, query: &FlowQuery) -> bool {
    let Resolved::Pod(source) = cluster.resolve(query.src) else {
        return false;
    };
    if !matches!(cluster.resolve(query.dst), Resolved::External)
        || config
            .cluster_cidrs
            .iter()
            .any(|cidr| cidr.contains(&query.dst))
    {
        return false;
    }
    if egress_names_destination(cluster, source, query) {
        return false;
    }
    let listed = config.expected_egress.iter().any(|entry| {
        *entry.namespace == *source.namespace
            && entry
                .workload
                .as_ref()
                .is_none_or(|w| *w == source.workload.name)
            && entry.cidrs.iter().any(|cidr| cidr.contains(&query.dst))
            && (entry.ports.is_empty()
                || query.protocol.port_protocol().is_some()
                    && entry.ports.iter().any(|r| r.contains(query.dst_port)))
    });
    !listed
}

/// Whether the destination end of a judgement is outside the cluster.
pub fn is_world(judgement: &Judgement) -> bool {
    matches!(judgement.verdict.destination, EndpointKind::External)
}
