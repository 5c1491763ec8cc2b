//! Judging an observed flow: the policy verdict, whether a denied flow was
//! enforced by the network, and whether its egress was expected.
//!
//! Pure: a captured [`FlowRecord`], the cluster state and the configuration
//! in, a [`Judgement`] out.
//!
//! Enforcement of a denied flow, from what was observed (the full rule,
//! and what each CNI style lets us see, is in docs/compatibility.md):
//! - `gap`: the denied traffic got through — answered (any packet back:
//!   handshake, reply, even a RST from the destination), or received by a
//!   socket on this node (the socket hook, for UDP), or, without the socket
//!   hook, seen delivered into a destination pod's interface here;
//! - `enforced`: silence for the whole answer window from traffic that is
//!   always answered when delivered (TCP, SCTP, echo requests) — also when
//!   the destination's interface saw it, since a filter after our hook may
//!   drop it; or one-way traffic to a pod on this node that never reached
//!   its interface;
//! - `unknown`: within the answer window; one-way traffic (UDP) to another
//!   node or outside the cluster, which only the other end could see; UDP
//!   that reached a local pod's interface but no socket (a later filter, or
//!   nobody listening).
//!
//! Unexpected egress: a pod sending to a destination outside the cluster —
//! not a pod, service or node IP, and outside the configured cluster CIDRs
//! — that no egress rule names (an `ipBlock` covering it) and no
//! expected-egress entry of the configuration lists. A pod without egress
//! isolation talking to the world is flagged too: not denied is not
//! expected.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use crate::capture::record::{FlowRecord, Protocol, Role};
use crate::config::AgentConfig;
use crate::engine::evaluate::{egress_names_destination, evaluate_resolved};
use crate::engine::tiers::Tier;
use crate::engine::verdict::BackendVerdict;
use crate::engine::{ClusterState, Resolved};
use crate::engine::{Decision, FlowQuery, Verdict};
use crate::model::Name;
use crate::model::{Identity, string_enum};
use crate::names::{DestinationName, NameSource};

string_enum! {
    /// Which side's policies deny a flow.
    pub enum DeniedBy {
        /// The source's egress.
        Egress => "egress",
        /// The destination's ingress.
        Ingress => "ingress",
        /// Both.
        Both => "both",
    }
}

string_enum! {
    /// Whether the network enforced a denied flow.
    pub enum Enforcement {
        /// The denied traffic got through.
        Gap => "gap",
        /// Only the initiator's attempts were seen.
        Enforced => "enforced",
        /// Not enough seen yet.
        Unknown => "unknown",
    }
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
    /// The tier whose rule denied it (the source's when both sides deny).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denying_tier: Option<Tier>,
    /// Whether the network enforced it, for a denied flow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<Enforcement>,
    /// Egress nobody declared.
    pub unexpected_egress: bool,
    /// From a pod to outside the cluster (egress, declared or not).
    #[serde(skip)]
    pub outside_egress: bool,
    /// What the destination is called, as far as the source pod's DNS
    /// answers and ClientHello said (see `names`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dst_names: Vec<DestinationName>,
    /// The source.
    pub src: Identity,
    /// The destination: the backend that received a Service flow; when
    /// the backend is not known (the connection was not tracked), the
    /// workload of the Service's backends if they share one, else the
    /// Service.
    pub dst: Identity,
    /// The destination port the verdict applies to: the backend's port
    /// for a Service flow (NetworkPolicy applies after DNAT).
    pub dst_port: u16,
    /// The Service the flow went through, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceRef>,
    /// The verdict with the staged policies (`agent --staged`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub staged_verdict: Option<Decision>,
    /// The source pod as policies saw it, when the flow is recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_context: Option<Box<context::EndContext>>,
    /// The destination pod (a Service flow's backend) as policies saw it,
    /// when the flow is recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_context: Option<Box<context::EndContext>>,
}

#[cfg(test)]
impl Judgement {
    /// For tests: an allowed flow from `src` to `dst` on port 80 that no
    /// policy governs, not egress. Tests change what they need with `..`
    /// struct update.
    pub(crate) fn allowed(src: Identity, dst: Identity) -> Self {
        use crate::engine::verdict::{EndpointKind, SideVerdict};
        Judgement {
            verdict: Verdict {
                verdict: Decision::Allow,
                egress: SideVerdict::open(""),
                ingress: SideVerdict::open(""),
                source: EndpointKind::External,
                destination: EndpointKind::External,
                backends: Vec::new(),
                backends_disagree: false,
            },
            denied_by: None,
            denying_tier: None,
            enforcement: None,
            unexpected_egress: false,
            outside_egress: false,
            dst_names: Vec::new(),
            src,
            dst,
            dst_port: 80,
            service: None,
            staged_verdict: None,
            src_context: None,
            dst_context: None,
        }
    }
}

/// A Service a flow went through, as the client addressed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceRef {
    /// Namespace.
    pub namespace: Name,
    /// Name.
    pub name: Name,
    /// The address and port the client sent to (cluster IP, node port,
    /// external IP).
    pub address: SocketAddr,
}

/// Where the judge runs.
#[derive(Clone, Debug, Default)]
pub struct NodeContext {
    /// This node's name (`NODE_NAME`); pods scheduled here are local, so
    /// their interfaces are observed.
    pub node_name: Option<String>,
}

/// The policy question a record asks.
pub fn query_of(record: &FlowRecord) -> FlowQuery {
    FlowQuery {
        src: record.src,
        dst: record.dst,
        protocol: record.protocol,
        dst_port: record.dst_port,
    }
}

/// Judges `record`. `age` is how long ago its first packet was seen;
/// `dst_names` says, for a destination outside the cluster, what it is
/// called given the source as resolved here (names can make its egress
/// expected). Each end is resolved once; the verdict, enforcement,
/// unexpected egress and identities all use that resolution.
///
/// # Errors
/// [`NotJudged`] for traffic that is not policy traffic (see
/// [`not_judged`](not_judged::not_judged)).
pub fn judge(
    record: &FlowRecord,
    cluster: &ClusterState,
    config: &AgentConfig,
    node: &NodeContext,
    age: Duration,
    dst_names: &dyn Fn(Resolved<'_>) -> Vec<DestinationName>,
) -> Result<Judgement, NotJudged> {
    if let Some(reason) = not_judged::not_judged(record) {
        return Err(reason);
    }
    let query = query_of(record);
    // Each end is who it was when the traffic happened, not who holds
    // its IP now.
    let at = |ip| cluster.resolve_at(ip, record.first_seen, record.last_seen);
    let (source, destination) = (at(record.src), at(record.dst));
    if let Some(reason) = ownership::counted_elsewhere(source, node) {
        return Err(reason);
    }
    let verdict = evaluate_resolved(cluster, &query, source, destination);
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
    let denying_tier = denied_by.map(|side| {
        let side = match side {
            DeniedBy::Egress | DeniedBy::Both => &verdict.egress,
            DeniedBy::Ingress => &verdict.ingress,
        };
        side.tier.as_ref().map_or(Tier::NetworkPolicy, |d| d.tier)
    });
    let enforcement = denied_by.map(|_| enforcement(record, destination, config, node, age));
    let frontend_address = record.original_dst.or_else(|| {
        (!matches!(destination, Resolved::Pod(_)))
            .then(|| SocketAddr::new(record.dst, record.dst_port))
    });
    let service = frontend_address.and_then(|address| {
        let frontend = cluster.frontend(record.protocol, (address.ip(), address.port()))?;
        Some(ServiceRef {
            namespace: Name::clone(&frontend.service.namespace),
            name: Name::clone(&frontend.service.name),
            address,
        })
    });
    let (dst, dst_port) = match verdict.backends.as_slice() {
        // Judged against the backends: name them when they agree.
        [] => (destination.identity(), record.dst_port),
        backends => (
            shared_backend_identity(cluster, backends).unwrap_or_else(|| destination.identity()),
            shared_backend_port(backends).unwrap_or(record.dst_port),
        ),
    };
    let dst_names = if matches!(destination, Resolved::External) {
        dst_names(source)
    } else {
        Vec::new()
    };
    let egress = egress(cluster, config, &query, source, destination, &dst_names);
    Ok(Judgement {
        unexpected_egress: egress == Some(Expected::No),
        outside_egress: egress.is_some(),
        dst_names,
        src: source.identity(),
        dst,
        dst_port,
        service,
        verdict,
        denied_by,
        denying_tier,
        enforcement,
        staged_verdict: None,
        src_context: None,
        dst_context: None,
    })
}

/// The workload of every backend, when they all belong to one.
fn shared_backend_identity(
    cluster: &ClusterState,
    backends: &[BackendVerdict],
) -> Option<Identity> {
    let mut identities = backends.iter().map(|b| {
        let identity = cluster.resolve(b.ip).identity();
        Identity {
            pod: None,
            ..identity
        }
    });
    let first = identities.next()?;
    identities.all(|other| other == first).then_some(first)
}

/// The port of every backend, when they all use one.
fn shared_backend_port(backends: &[BackendVerdict]) -> Option<u16> {
    let first = backends.first()?.port;
    backends.iter().all(|b| b.port == first).then_some(first)
}

fn enforcement(
    record: &FlowRecord,
    destination: Resolved<'_>,
    config: &AgentConfig,
    node: &NodeContext,
    age: Duration,
) -> Enforcement {
    // Proof of delivery: an answer (handshake, reply, even a RST), or a
    // socket on this host that received the datagrams.
    if record.packets_in > 0 || record.delivered_to_stack == Some(true) {
        return Enforcement::Gap;
    }
    // Silence is only evidence once an answer had time to come back.
    if age < config.answer_window {
        return Enforcement::Unknown;
    }
    // Delivered traffic of these protocols is always answered: silence is
    // enforcement — also when the destination's interface saw the packets
    // (a filter after our hook dropped them).
    if always_answered(record) {
        return Enforcement::Enforced;
    }
    let destination_local = match destination {
        Resolved::Pod(pod) => pod.node().is_some() && pod.node() == node.node_name.as_deref(),
        _ => false,
    };
    // One-way traffic to another node or outside the cluster may have been
    // delivered: nothing this node sees can tell.
    if !destination_local {
        return Enforcement::Unknown;
    }
    let reached_interface = record
        .observations
        .iter()
        .any(|o| o.role == Role::Responder && o.packets_out > 0);
    match (record.delivered_to_stack, reached_interface) {
        // Never reached the pod's interface, nor (if the socket hook
        // looked) a socket.
        (_, false) => Enforcement::Enforced,
        // Reached the interface, no socket took it: a filter after our
        // hook, or nobody listening — the socket hook cannot tell which.
        (Some(false), true) => Enforcement::Unknown,
        // Without the socket hook, the interface is the last thing seen.
        (_, true) => Enforcement::Gap,
    }
}

/// Whether a delivered packet of this flow always draws an answer from
/// the destination's kernel, whatever the application does: TCP (a
/// SYN-ACK, an ACK or a RST), SCTP (INIT-ACK or ABORT), ICMP echo.
fn always_answered(record: &FlowRecord) -> bool {
    match record.protocol {
        Protocol::Tcp | Protocol::Sctp => true,
        // An echo request: the identifier is the requester's port and the
        // responder's port is 0 (see `FlowKey`).
        Protocol::Icmp | Protocol::Icmpv6 => record.dst_port == 0 && record.src_port != 0,
        Protocol::Udp | Protocol::Other(_) => false,
    }
}

/// Whether egress to outside the cluster was declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expected {
    Yes,
    No,
}

/// For a pod's flow to outside the cluster, whether it was declared: by an
/// egress rule naming the destination, or an expected-egress entry of the
/// configuration (by address, or by a name the pod's DNS answers gave it).
/// `None` for any other flow.
fn egress(
    cluster: &ClusterState,
    config: &AgentConfig,
    query: &FlowQuery,
    source: Resolved<'_>,
    destination: Resolved<'_>,
    dst_names: &[DestinationName],
) -> Option<Expected> {
    let Resolved::Pod(source) = source else {
        return None;
    };
    if !matches!(destination, Resolved::External)
        || config
            .cluster_cidrs
            .iter()
            .any(|cidr| cidr.contains(&query.dst))
    {
        return None;
    }
    if egress_names_destination(cluster, source, query) {
        return Some(Expected::Yes);
    }
    // Only what a resolver answered: a server name is whatever the client
    // chose to write.
    let resolved = || {
        dst_names
            .iter()
            .filter(|n| n.learned == NameSource::Dns)
            .map(|n| &n.name)
    };
    let listed = config.expected_egress.iter().any(|entry| {
        *entry.namespace == *source.namespace
            && entry
                .workload
                .as_ref()
                .is_none_or(|w| **w == *source.workload.name)
            && (entry.cidrs.iter().any(|cidr| cidr.contains(&query.dst))
                || entry
                    .domains
                    .iter()
                    .any(|domain| resolved().any(|name| domain.matches(name))))
            && (entry.ports.is_empty()
                || query.protocol.has_ports()
                    && entry.ports.iter().any(|r| r.contains(query.dst_port)))
    });
    Some(if listed { Expected::Yes } else { Expected::No })
}

pub mod not_judged;
mod ownership;

pub use not_judged::NotJudged;

pub mod context;

#[cfg(test)]
mod tests;
