//! Judging one flow: the source's egress and the destination's ingress,
//! each explained.

use std::net::IpAddr;
use std::sync::Arc;

use super::compile::{CompiledPolicy, NamespaceScope, Peer, PortMatch, PortSpec, Rule};
use super::tiers::{Action, SideQuery, Tier, TierDecision, judge_tiers};
use super::verdict::{
    BackendVerdict, Decision, EndpointKind, FlowQuery, RuleRef, SideVerdict, Verdict, endpoint_kind,
};
use crate::engine::{ClusterState, PodInfo, Resolved, ServiceInfo};
use crate::model::{Direction, Protocol};

/// Combines the two sides: deny if either denies, allow if either allows,
/// otherwise not applicable.
fn combine(egress: Decision, ingress: Decision) -> Decision {
    match (egress, ingress) {
        (Decision::Deny, _) | (_, Decision::Deny) => Decision::Deny,
        (Decision::Allow, _) | (_, Decision::Allow) => Decision::Allow,
        _ => Decision::NotApplicable,
    }
}

/// Judges `flow` against `cluster`.
pub fn evaluate(cluster: &ClusterState, flow: &FlowQuery) -> Verdict {
    evaluate_resolved(
        cluster,
        flow,
        cluster.resolve(flow.src),
        cluster.resolve(flow.dst),
    )
}

/// Judges `flow` whose ends the caller already resolved (the agent
/// resolves each end once per judgement and reuses it).
pub fn evaluate_resolved(
    cluster: &ClusterState,
    flow: &FlowQuery,
    source: Resolved<'_>,
    destination: Resolved<'_>,
) -> Verdict {
    // A node's address with a node port, or a Service's external IP,
    // reaches the Service's backends as its cluster IP does.
    let frontend = match destination {
        Resolved::Host(_) | Resolved::External if flow.protocol.has_ports() => cluster
            .frontend(flow.protocol, (flow.dst, flow.dst_port))
            .map(|f| f.service),
        _ => None,
    };
    let mut verdict = match (destination, frontend) {
        (Resolved::Service(service), _) | (_, Some(service)) => {
            evaluate_service(cluster, flow, source, service)
        }
        _ => {
            let (egress, ingress) =
                judge_sides(cluster, flow, source, destination, flow.dst, flow.dst_port);
            Verdict {
                verdict: combine(egress.verdict, ingress.verdict),
                egress,
                ingress,
                source: EndpointKind::External,
                destination: EndpointKind::External,
                backends: Vec::new(),
                backends_disagree: false,
            }
        }
    };
    verdict.source = endpoint_kind(source);
    verdict.destination = endpoint_kind(destination);
    verdict
}

fn judge_sides(
    cluster: &ClusterState,
    flow: &FlowQuery,
    source: Resolved<'_>,
    destination: Resolved<'_>,
    dst_ip: IpAddr,
    dst_port: u16,
) -> (SideVerdict, SideVerdict) {
    let host_reason =
        "a node or hostNetwork pod is an end of the flow: NetworkPolicy does not govern it";
    let target = Target {
        cluster,
        protocol: flow.protocol,
        port: dst_port,
        destination_pod: match destination {
            Resolved::Pod(pod) => Some(pod),
            _ => None,
        },
    };
    let egress_query = SideQuery {
        cluster,
        direction: Direction::Egress,
        peer: destination,
        peer_ip: dst_ip,
        protocol: flow.protocol,
        port: dst_port,
        destination_pod: target.destination_pod,
    };
    let ingress_query = SideQuery {
        direction: Direction::Ingress,
        peer: source,
        peer_ip: flow.src,
        ..egress_query
    };
    if let (Resolved::Pod(from), Resolved::Pod(to)) = (source, destination)
        && from.is(to)
    {
        return (to_itself(from), to_itself(to));
    }
    if matches!(source, Resolved::Host(_)) || matches!(destination, Resolved::Host(_)) {
        // A pod's traffic to a node is egress like any other for the
        // cluster-wide tiers; NetworkPolicy does not govern it. A node's
        // traffic to a pod is governed by neither.
        let egress = match (source, destination) {
            (Resolved::Pod(pod), Resolved::Host(_)) => {
                to_node(&egress_query, pod, !pod.policies.egress.is_empty())
            }
            _ => SideVerdict::not_applicable(host_reason),
        };
        return (egress, SideVerdict::not_applicable(host_reason));
    }
    let egress = match source {
        Resolved::Pod(pod) => {
            judge_pod_tiers(&egress_query, pod, &pod.policies.egress, |policy, rule| {
                rule_admits(&target, policy, rule, destination, dst_ip)
            })
        }
        _ => SideVerdict::not_applicable("the source is not a pod: no egress policy applies"),
    };
    let ingress = match destination {
        Resolved::Pod(pod) => judge_pod_tiers(
            &ingress_query,
            pod,
            &pod.policies.ingress,
            |policy, rule| rule_admits(&target, policy, rule, source, flow.src),
        ),
        _ => SideVerdict::not_applicable("the destination is not a pod: no ingress policy applies"),
    };
    (egress, ingress)
}

/// One pod's side through the tiers: Admin, then its NetworkPolicies if
/// any selects it for the direction, then Baseline, then allow.
fn judge_pod_tiers(
    query: &SideQuery<'_>,
    pod: &PodInfo,
    policies: &[Arc<CompiledPolicy>],
    admits: impl Fn(&CompiledPolicy, &Rule) -> bool,
) -> SideVerdict {
    if pod.policies.cluster.is_empty() {
        return judge_pod(pod, policies, query.direction, admits);
    }
    let mut notes = Vec::new();
    let mut side = match judge_tiers(query, pod, Tier::Admin, &mut notes) {
        Some(decision) if decision.action != Action::Pass => {
            let mut side = decided(pod, decision);
            side.skipped_policies = policies.iter().map(|p| Arc::clone(&p.id)).collect();
            side.isolated = !policies.is_empty();
            side
        }
        _ => {
            let side = judge_pod(pod, policies, query.direction, admits);
            if side.isolated {
                side
            } else {
                match judge_tiers(query, pod, Tier::Baseline, &mut notes) {
                    Some(decision) if decision.action != Action::Pass => decided(pod, decision),
                    _ => side,
                }
            }
        }
    };
    add_notes(&mut side, notes);
    side
}

/// A side of a pod's traffic to itself: always allowed. "A pod cannot
/// block access to itself" (NetworkPolicy); the cluster-wide tiers judge
/// traffic between pods, and a pod's own traffic never leaves it.
fn to_itself(pod: &PodInfo) -> SideVerdict {
    SideVerdict {
        pod: Some(pod.id()),
        ..SideVerdict::open("a pod's traffic to itself is always allowed")
    }
}

/// A pod's egress to a node: the cluster-wide tiers decide it, and what
/// none denies is allowed, as any egress. NetworkPolicy does not govern
/// it; when NetworkPolicies select the pod for egress their tier comes
/// before Baseline, so Baseline is not reached.
fn to_node(query: &SideQuery<'_>, pod: &PodInfo, network_policies_select: bool) -> SideVerdict {
    let mut notes = Vec::new();
    let decision = match judge_tiers(query, pod, Tier::Admin, &mut notes) {
        Some(d) if d.action != Action::Pass => Some(d),
        _ if network_policies_select => None,
        _ => {
            judge_tiers(query, pod, Tier::Baseline, &mut notes).filter(|d| d.action != Action::Pass)
        }
    };
    let mut side = match decision {
        Some(decision) => decided(pod, decision),
        None => SideVerdict {
            pod: Some(pod.id()),
            ..SideVerdict::open(if network_policies_select {
                "a pod's traffic to a node: NetworkPolicy does not govern it, and its tier comes before Baseline: allowed"
            } else {
                "a pod's traffic to a node: no cluster-wide rule denies it: allowed"
            })
        },
    };
    add_notes(&mut side, notes);
    side
}

fn decided(pod: &PodInfo, decision: TierDecision) -> SideVerdict {
    let verdict = if decision.action == Action::Accept {
        Decision::Allow
    } else {
        Decision::Deny
    };
    let mut reason = format!(
        "{} by the {} tier: {} (priority {}), rule {}",
        decision.action, decision.tier, decision.policy, decision.priority, decision.rule
    );
    if !decision.same_priority.is_empty() {
        reason += &format!(
            "; {} share its priority and act differently (implementation-defined which applies)",
            decision.same_priority.join(", ")
        );
    }
    SideVerdict {
        verdict,
        pod: Some(pod.id()),
        isolated: false,
        isolating_policies: Vec::new(),
        allowed_by: Vec::new(),
        reason: reason.into(),
        tier: Some(Box::new(decision)),
        skipped_policies: Vec::new(),
    }
}

fn add_notes(side: &mut SideVerdict, notes: Vec<String>) {
    if !notes.is_empty() {
        side.reason = format!("{} ({})", side.reason, notes.join("; ")).into();
    }
}

fn evaluate_service(
    cluster: &ClusterState,
    flow: &FlowQuery,
    source: Resolved<'_>,
    service: &ServiceInfo,
) -> Verdict {
    let not_applicable = |reason: String| Verdict {
        verdict: Decision::NotApplicable,
        egress: SideVerdict::not_applicable(reason.clone()),
        ingress: SideVerdict::not_applicable(reason),
        source: EndpointKind::External,
        destination: EndpointKind::External,
        backends: Vec::new(),
        backends_disagree: false,
    };
    let Some(protocol) = flow.protocol.has_ports().then_some(flow.protocol) else {
        return not_applicable(format!(
            "Service {}/{} carries no ICMP to its backends",
            service.namespace, service.name
        ));
    };
    let Some(frontend) = cluster.frontend(protocol, (flow.dst, flow.dst_port)) else {
        return not_applicable(format!(
            "Service {}/{} has no port {}/{}",
            service.namespace, service.name, flow.dst_port, protocol
        ));
    };
    let client_node = match source {
        Resolved::Pod(pod) => pod.node(),
        Resolved::Host(node) => node,
        Resolved::Service(_) | Resolved::External => None,
    };
    let backends = match cluster.backends(frontend, flow.dst, client_node) {
        Ok(backends) => backends,
        Err(no_backend) => return not_applicable(no_backend.to_string()),
    };
    let judged: Vec<BackendVerdict> = backends
        .into_iter()
        .map(|(ip, port)| {
            let backend = cluster.resolve(ip);
            let (egress, ingress) = judge_sides(cluster, flow, source, backend, ip, port);
            BackendVerdict {
                ip,
                port,
                verdict: combine(egress.verdict, ingress.verdict),
                egress,
                ingress,
            }
        })
        .collect();
    let first = judged[0].verdict;
    let disagree = judged.iter().any(|b| b.verdict != first);
    let verdict = if disagree { Decision::Deny } else { first };
    // The flow's sides are those of a backend with the flow's verdict, so
    // that a denial names the side and tier that deny.
    let shown = judged
        .iter()
        .find(|b| b.verdict == verdict)
        .unwrap_or(&judged[0]);
    Verdict {
        verdict,
        egress: shown.egress.clone(),
        ingress: shown.ingress.clone(),
        source: EndpointKind::External,
        destination: EndpointKind::External,
        backends: judged,
        backends_disagree: disagree,
    }
}

fn judge_pod(
    pod: &PodInfo,
    policies: &[Arc<CompiledPolicy>],
    direction: Direction,
    admits: impl Fn(&CompiledPolicy, &Rule) -> bool,
) -> SideVerdict {
    if policies.is_empty() {
        return SideVerdict {
            verdict: Decision::Allow,
            pod: Some(pod.id()),
            isolated: false,
            isolating_policies: Vec::new(),
            allowed_by: Vec::new(),
            reason: "no policy isolates the pod in this direction".into(),
            tier: None,
            skipped_policies: Vec::new(),
        };
    }
    let mut allowed_by = Vec::new();
    for policy in policies {
        let rules = match direction {
            Direction::Ingress => policy.ingress.as_deref(),
            Direction::Egress => policy.egress.as_deref(),
        };
        for (index, rule) in rules.unwrap_or_default().iter().enumerate() {
            if admits(policy, rule) {
                allowed_by.push(RuleRef {
                    policy: Arc::clone(&policy.id),
                    rule: index,
                });
            }
        }
    }
    let (verdict, reason) = if allowed_by.is_empty() {
        (
            Decision::Deny,
            "isolated, and no rule of the isolating policies admits the flow",
        )
    } else {
        (
            Decision::Allow,
            "admitted by a rule of a policy that selects the pod",
        )
    };
    SideVerdict {
        verdict,
        pod: Some(pod.id()),
        isolated: true,
        isolating_policies: policies.iter().map(|p| Arc::clone(&p.id)).collect(),
        allowed_by,
        reason: reason.into(),
        tier: None,
        skipped_policies: Vec::new(),
    }
}

struct Target<'a> {
    cluster: &'a ClusterState,
    protocol: Protocol,
    port: u16,
    destination_pod: Option<&'a PodInfo>,
}

fn rule_admits(
    target: &Target<'_>,
    policy: &CompiledPolicy,
    rule: &Rule,
    peer: Resolved<'_>,
    peer_ip: IpAddr,
) -> bool {
    ports_admit(target, rule.ports.as_deref()) && peers_admit(target, policy, rule, peer, peer_ip)
}

fn ports_admit(target: &Target<'_>, ports: Option<&[PortMatch]>) -> bool {
    let Some(ports) = ports else {
        return true;
    };
    let Some(protocol) = target.protocol.has_ports().then_some(target.protocol) else {
        // Rules with ports only admit TCP, UDP and SCTP.
        return false;
    };
    ports.iter().any(|entry| {
        entry.protocol == protocol
            && match &entry.port {
                PortSpec::Any => true,
                PortSpec::Range(start, end) => (*start..=*end).contains(&target.port),
                // Named ports resolve against the destination pod's own
                // container ports; a non-pod destination has none.
                PortSpec::Named(name) => {
                    target
                        .destination_pod
                        .and_then(|pod| pod.named_port(name, protocol))
                        == Some(target.port)
                }
            }
    })
}

fn peers_admit(
    target: &Target<'_>,
    policy: &CompiledPolicy,
    rule: &Rule,
    peer: Resolved<'_>,
    peer_ip: IpAddr,
) -> bool {
    let Some(peers) = rule.peers.as_deref() else {
        return true;
    };
    peers.iter().any(|entry| match entry {
        Peer::IpBlock { cidr, except } => ip_block_contains(cidr, except, peer_ip),
        Peer::Pods { namespaces, pods } => {
            let Resolved::Pod(pod) = peer else {
                return false;
            };
            let namespace_matches = match namespaces {
                NamespaceScope::Own => *pod.namespace == *policy.namespace(),
                NamespaceScope::Matching(selector) => target
                    .cluster
                    .namespace_labels(&pod.namespace)
                    .is_some_and(|labels| selector.matches(labels)),
            };
            namespace_matches && pods.matches(&pod.labels)
        }
    })
}

/// Remembers verdicts until the cluster state changes (any change: the
/// cache compares [`ClusterState::generation`]). Bounded: when full it
/// starts over, which keeps the hot set without bookkeeping per entry.
#[derive(Debug)]
pub struct VerdictCache {
    generation: u64,
    capacity: usize,
    entries: std::collections::HashMap<FlowQuery, Arc<Verdict>>,
}

impl VerdictCache {
    /// A cache of at most `capacity` verdicts.
    pub fn new(capacity: usize) -> Self {
        Self {
            generation: u64::MAX,
            capacity: capacity.max(1),
            entries: std::collections::HashMap::new(),
        }
    }

    /// Verdicts held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The verdict for `flow`, evaluated only if not cached for the current
    /// cluster state.
    pub fn get_or_evaluate(&mut self, cluster: &ClusterState, flow: &FlowQuery) -> Arc<Verdict> {
        if cluster.generation() != self.generation {
            self.entries.clear();
            self.generation = cluster.generation();
        }
        if let Some(verdict) = self.entries.get(flow) {
            return Arc::clone(verdict);
        }
        if self.entries.len() >= self.capacity {
            self.entries.clear();
        }
        let verdict = Arc::new(evaluate(cluster, flow));
        self.entries.insert(*flow, Arc::clone(&verdict));
        verdict
    }
}

/// Whether an egress rule of a policy selecting `pod` admits `flow` by an
/// `ipBlock` that covers its destination — the rule *names* the
/// destination, unlike a rule that admits every peer. Pods that are not
/// egress-isolated have no such rule.
pub fn egress_names_destination(cluster: &ClusterState, pod: &PodInfo, flow: &FlowQuery) -> bool {
    let target = Target {
        cluster,
        protocol: flow.protocol,
        port: flow.dst_port,
        destination_pod: None,
    };
    pod.policies.egress.iter().any(|policy| {
        policy
            .egress
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|rule| {
                ports_admit(&target, rule.ports.as_deref())
                    && rule
                        .peers
                        .as_deref()
                        .unwrap_or_default()
                        .iter()
                        .any(|peer| match peer {
                            Peer::IpBlock { cidr, except } => {
                                ip_block_contains(cidr, except, flow.dst)
                            }
                            Peer::Pods { .. } => false,
                        })
            })
    })
}

/// `ip` is in `cidr` and in none of its `except` holes.
fn ip_block_contains(cidr: &ipnet::IpNet, except: &[ipnet::IpNet], ip: IpAddr) -> bool {
    cidr.contains(&ip) && !except.iter().any(|hole| hole.contains(&ip))
}
