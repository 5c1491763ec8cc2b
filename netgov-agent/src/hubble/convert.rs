//! A judged flow as a Hubble `Flow`: one event when the flow is first
//! judged, and one each time its verdict or enforcement changes.
//!
//! Decisions (the user-facing table is in `docs/hubble.md`):
//! - **Verdict.** allowed or not governed by NetworkPolicy → `FORWARDED`;
//!   denied and delivered (a gap) → `AUDIT`, Hubble's "would have been
//!   dropped by policy"; denied and dropped by the network → `DROPPED`
//!   with `drop_reason_desc: POLICY_DENIED`; denied with the enforcement
//!   not known yet → `VERDICT_UNKNOWN` ("no verdict for this event"), with
//!   the denying policies named: the network's answer is not known, and a
//!   later event says `AUDIT` or `DROPPED` when it is.
//! - **Event type.** Every event is a policy verdict (Cilium's message
//!   type 5), so `hubble observe --type policy-verdict` shows them all:
//!   netgov emits nothing but judgements.
//! - **Time.** When netgov judged it (the event's time), not the flow's
//!   first packet: a verdict that changes because a policy changed has no
//!   packet of its own, and events stay in time order for `since`/`until`.
//! - **Direction.** The side that decided: the denying side (the source's
//!   egress when both deny); for an allowed flow, the destination's
//!   ingress if policies isolate it, else the source's egress if they
//!   isolate that, else the destination's ingress for a pod destination.
//! - **Endpoints.** The judged ends: the backend pod of a Service flow
//!   (the Service in `destination_service`). Labels in Cilium's form;
//!   `identity` is a hash of the label set (see [`endpoint`]), not an
//!   allocated Cilium identity.

use std::net::{IpAddr, SocketAddr};

use super::endpoint::{EndpointSource, endpoint};
use super::policies::{allowed_by, denied_by};
use super::proto::flow::{
    self, CiliumEventType, DropReason, Emitter, Flow, FlowType, IpVersion, Layer4,
    TrafficDirection, Verdict, layer4,
};
use crate::capture::record::{FlowRecord, Protocol, TcpFlags};
use crate::engine::ClusterState;
use crate::engine::Decision;
use crate::engine::verdict::SideVerdict;
use crate::judge::{DeniedBy, Enforcement, Judgement};

/// Cilium's monitor message type of a policy verdict
/// (`pkg/monitor/api/types.go`, `MessageTypePolicyVerdict`).
pub const POLICY_VERDICT_EVENT: i32 = 5;

/// The name netgov signs its events with (`Flow.emitter`).
pub const EMITTER: &str = "netgov";

/// The Hubble verdict of a judgement (see the module docs).
pub fn verdict_of(judgement: &Judgement) -> Verdict {
    match (judgement.verdict.verdict, judgement.enforcement) {
        (Decision::Allow | Decision::NotApplicable, _) => Verdict::Forwarded,
        (Decision::Deny, Some(Enforcement::Gap)) => Verdict::Audit,
        (Decision::Deny, Some(Enforcement::Enforced)) => Verdict::Dropped,
        (Decision::Deny, Some(Enforcement::Unknown) | None) => Verdict::Unknown,
    }
}

/// The side that decided (see the module docs).
pub fn direction_of(judgement: &Judgement) -> TrafficDirection {
    let verdict = &judgement.verdict;
    let isolated = |side: &SideVerdict| side.isolated || side.tier.is_some();
    match judgement.denied_by {
        Some(DeniedBy::Egress | DeniedBy::Both) => TrafficDirection::Egress,
        Some(DeniedBy::Ingress) => TrafficDirection::Ingress,
        None if isolated(&verdict.ingress) => TrafficDirection::Ingress,
        None if isolated(&verdict.egress) => TrafficDirection::Egress,
        None if judgement.dst.pod.is_some() => TrafficDirection::Ingress,
        None => TrafficDirection::Egress,
    }
}

/// Where and when an event is made.
#[derive(Clone, Copy, Debug)]
pub struct EventContext<'a> {
    /// This node's name.
    pub node_name: &'a str,
    /// When it was judged (Unix nanoseconds).
    pub judged_at: i128,
}

/// The Hubble flow of a judged record. `cluster` names the pod ends
/// (labels, namespace labels, workload kind) as of the flow's traffic.
pub fn to_flow(
    record: &FlowRecord,
    judgement: &Judgement,
    cluster: &ClusterState,
    context: EventContext<'_>,
) -> Flow {
    let seen = (record.first_seen, record.last_seen);
    let verdict = verdict_of(judgement);
    let source = endpoint(
        cluster,
        EndpointSource {
            ip: record.src,
            identity: &judgement.src,
            seen,
        },
        context.node_name,
    );
    let destination = endpoint(
        cluster,
        EndpointSource {
            ip: record.dst,
            identity: &judgement.dst,
            seen,
        },
        context.node_name,
    );
    let egress = &judgement.verdict.egress;
    let ingress = &judgement.verdict.ingress;
    Flow {
        time: Some(timestamp(context.judged_at)),
        uuid: uuid::Uuid::new_v4().to_string(),
        emitter: Some(Emitter {
            name: EMITTER.into(),
            version: crate::VERSION.into(),
        }),
        verdict: verdict.into(),
        ip: Some(flow::Ip {
            source: record.src.to_string(),
            source_xlated: record
                .translated_src
                .map(|a| a.ip().to_string())
                .unwrap_or_default(),
            destination: record.dst.to_string(),
            ip_version: match record.src {
                IpAddr::V4(_) => IpVersion::IPv4,
                IpAddr::V6(_) => IpVersion::IPv6,
            }
            .into(),
            encrypted: false,
        }),
        l4: layer4_of(record),
        source: Some(source),
        destination: Some(destination),
        r#type: FlowType::L3L4.into(),
        node_name: context.node_name.to_owned(),
        source_names: Vec::new(),
        destination_names: judgement
            .dst_names
            .iter()
            .map(|n| n.name.to_string())
            .collect(),
        event_type: Some(CiliumEventType {
            r#type: POLICY_VERDICT_EVENT,
            sub_type: 0,
        }),
        source_service: None,
        destination_service: judgement.service.as_ref().map(|s| flow::Service {
            name: s.name.to_string(),
            namespace: s.namespace.to_string(),
        }),
        traffic_direction: direction_of(judgement).into(),
        policy_match_type: 0,
        drop_reason_desc: if verdict == Verdict::Dropped {
            DropReason::PolicyDenied.into()
        } else {
            DropReason::Unknown.into()
        },
        is_reply: Some(false.into()),
        summary: summary(judgement, record.original_dst),
        egress_allowed_by: allowed_by(egress),
        ingress_allowed_by: allowed_by(ingress),
        egress_denied_by: denied_by(egress),
        ingress_denied_by: denied_by(ingress),
    }
}

/// A protobuf timestamp of Unix nanoseconds.
pub fn timestamp(unix_nanos: i128) -> pbjson_types::Timestamp {
    let seconds = unix_nanos.div_euclid(1_000_000_000);
    let nanos = unix_nanos.rem_euclid(1_000_000_000);
    pbjson_types::Timestamp {
        seconds: i64::try_from(seconds).unwrap_or(i64::MAX),
        nanos: nanos as i32,
    }
}

/// Unix nanoseconds of a protobuf timestamp.
pub fn unix_nanos(timestamp: &pbjson_types::Timestamp) -> i128 {
    i128::from(timestamp.seconds) * 1_000_000_000 + i128::from(timestamp.nanos)
}

/// Ports and flags, as the initiator sent them. ICMP's type and code are
/// in the record's destination port (`type * 256 + code`), an echo's as
/// identifier and 0.
fn layer4_of(record: &FlowRecord) -> Option<Layer4> {
    let (src, dst) = (u32::from(record.src_port), u32::from(record.dst_port));
    let protocol = match record.protocol {
        Protocol::Tcp => layer4::Protocol::Tcp(flow::Tcp {
            source_port: src,
            destination_port: dst,
            flags: Some(tcp_flags(record.tcp_flags_out)),
        }),
        Protocol::Udp => layer4::Protocol::Udp(flow::Udp {
            source_port: src,
            destination_port: dst,
        }),
        Protocol::Sctp => layer4::Protocol::Sctp(flow::Sctp {
            source_port: src,
            destination_port: dst,
        }),
        Protocol::Icmp => {
            let (r#type, code) = icmp_type_code(record, 8);
            layer4::Protocol::IcmPv4(flow::IcmPv4 { r#type, code })
        }
        Protocol::Icmpv6 => {
            let (r#type, code) = icmp_type_code(record, 128);
            layer4::Protocol::IcmPv6(flow::IcmPv6 { r#type, code })
        }
        Protocol::Other(_) => return None,
    };
    Some(Layer4 {
        protocol: Some(protocol),
    })
}

/// An echo flow is keyed by its identifier (destination port 0): its type
/// is the echo request's.
fn icmp_type_code(record: &FlowRecord, echo_request: u32) -> (u32, u32) {
    if record.dst_port == 0 {
        (echo_request, 0)
    } else {
        (
            u32::from(record.dst_port >> 8),
            u32::from(record.dst_port & 0xFF),
        )
    }
}

fn tcp_flags(flags: TcpFlags) -> flow::TcpFlags {
    use netgov_common::tcp_flags as bit;
    let has = |b: u32| u32::from(flags.0) & b != 0;
    flow::TcpFlags {
        fin: has(bit::FIN),
        syn: has(bit::SYN),
        rst: has(bit::RST),
        psh: has(bit::PSH),
        ack: has(bit::ACK),
        urg: has(bit::URG),
        ece: has(bit::ECE),
        cwr: has(bit::CWR),
        ns: false,
    }
}

/// What `hubble observe` prints in parentheses: netgov's verdict, the
/// network's answer, and each side's reason.
fn summary(judgement: &Judgement, frontend: Option<SocketAddr>) -> String {
    let verdict = &judgement.verdict;
    let mut text = format!("netgov: {}", verdict.verdict);
    if let Some(enforcement) = judgement.enforcement {
        text.push_str(match enforcement {
            Enforcement::Gap => " but delivered (gap)",
            Enforcement::Enforced => ", dropped by the network",
            Enforcement::Unknown => ", enforcement not known yet",
        });
    }
    text.push_str(&format!(
        "; egress: {}; ingress: {}",
        verdict.egress.reason, verdict.ingress.reason
    ));
    if let (Some(service), Some(frontend)) = (&judgement.service, frontend) {
        text.push_str(&format!(
            "; via Service {}/{} at {frontend}",
            service.namespace, service.name
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::test_support::judged;
    use crate::engine::tiers::{Action, Tier, TierDecision};
    use crate::engine::verdict::RuleRef;
    use crate::model::Identity;
    use crate::model::Name;

    const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: retail}}
---
apiVersion: v1
kind: Pod
metadata: {name: a-1, namespace: shop, labels: {app: a}}
spec: {nodeName: node-a, containers: [{name: c, image: i}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b-0, namespace: shop, labels: {app: b}}
spec: {nodeName: node-a, containers: [{name: c, image: i}]}
status: {podIP: 10.0.0.2}
"#;

    fn pod(name: &str) -> Identity {
        Identity {
            namespace: Name::from("shop"),
            pod: Some(Name::from(name)),
            workload: Name::from(name),
        }
    }

    /// How a row judges: the decision, the deciding side and its rule.
    #[derive(Clone, Copy)]
    enum Case {
        AllowedByIngressRule,
        DeniedAtIngress(Enforcement),
        DeniedByAdminTierAtEgress,
        NotGoverned,
    }

    fn judgement(case: Case) -> (FlowRecord, Judgement) {
        let (record, mut judgement) = judged(pod("a-1"), pod("b-0"));
        let verdict = &mut judgement.verdict;
        match case {
            Case::AllowedByIngressRule => {
                verdict.ingress.isolated = true;
                verdict.ingress.isolating_policies = vec![Name::from("shop/admit-a")];
                verdict.ingress.allowed_by = vec![
                    RuleRef {
                        policy: Name::from("shop/admit-a"),
                        rule: 0,
                    },
                    RuleRef {
                        policy: Name::from("shop/admit-a"),
                        rule: 1,
                    },
                ];
            }
            Case::DeniedAtIngress(enforcement) => {
                verdict.verdict = Decision::Deny;
                verdict.ingress.verdict = Decision::Deny;
                verdict.ingress.isolated = true;
                verdict.ingress.isolating_policies =
                    vec![Name::from("shop/admit-a"), Name::from("shop/admit-c")];
                judgement.denied_by = Some(DeniedBy::Ingress);
                judgement.enforcement = Some(enforcement);
            }
            Case::DeniedByAdminTierAtEgress => {
                verdict.verdict = Decision::Deny;
                verdict.egress.verdict = Decision::Deny;
                verdict.egress.tier = Some(Box::new(TierDecision {
                    tier: Tier::Admin,
                    policy: Name::from("ClusterNetworkPolicy no-egress"),
                    priority: 10,
                    rule: "#0".into(),
                    action: Action::Deny,
                    same_priority: Vec::new(),
                }));
                judgement.denied_by = Some(DeniedBy::Egress);
                judgement.enforcement = Some(Enforcement::Enforced);
            }
            Case::NotGoverned => {
                verdict.verdict = Decision::NotApplicable;
                judgement.dst = Identity::world();
            }
        }
        (record, judgement)
    }

    /// `VERDICT DIRECTION drop_reason egress_allowed ingress_allowed
    /// egress_denied ingress_denied`, policies as `Kind ns/name`.
    fn line(flow: &Flow) -> String {
        let policies = |list: &[flow::Policy]| {
            if list.is_empty() {
                return "-".to_owned();
            }
            list.iter()
                .map(|p| format!("{} {}/{}", p.kind, p.namespace, p.name))
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "{:?} {:?} {:?} | {} | {} | {} | {}",
            flow.verdict(),
            flow.traffic_direction(),
            flow.drop_reason_desc(),
            policies(&flow.egress_allowed_by),
            policies(&flow.ingress_allowed_by),
            policies(&flow.egress_denied_by),
            policies(&flow.ingress_denied_by),
        )
    }

    #[test]
    fn verdicts_directions_and_deciding_policies() {
        let cluster = ClusterState::from_yaml(CLUSTER);
        let context = EventContext {
            node_name: "node-a",
            judged_at: 1_000_000_000,
        };
        let rows = [
            (
                Case::AllowedByIngressRule,
                "Forwarded Ingress Unknown | - | NetworkPolicy shop/admit-a | - | -",
            ),
            (
                Case::DeniedAtIngress(Enforcement::Gap),
                "Audit Ingress Unknown | - | - | - | NetworkPolicy shop/admit-a,NetworkPolicy shop/admit-c",
            ),
            (
                Case::DeniedAtIngress(Enforcement::Enforced),
                "Dropped Ingress PolicyDenied | - | - | - | NetworkPolicy shop/admit-a,NetworkPolicy shop/admit-c",
            ),
            (
                Case::DeniedAtIngress(Enforcement::Unknown),
                "Unknown Ingress Unknown | - | - | - | NetworkPolicy shop/admit-a,NetworkPolicy shop/admit-c",
            ),
            (
                Case::DeniedByAdminTierAtEgress,
                "Dropped Egress PolicyDenied | - | - | ClusterNetworkPolicy /no-egress | -",
            ),
            (
                Case::NotGoverned,
                "Forwarded Egress Unknown | - | - | - | -",
            ),
        ];
        for (case, expected) in rows {
            let (record, judgement) = judgement(case);
            assert_eq!(
                line(&to_flow(&record, &judgement, &cluster, context)),
                expected
            );
        }
    }

    #[test]
    fn a_flow_names_its_pods_and_their_labels_in_ciliums_form() {
        let cluster = ClusterState::from_yaml(CLUSTER);
        let (record, judgement) = judgement(Case::DeniedAtIngress(Enforcement::Gap));
        let flow = to_flow(
            &record,
            &judgement,
            &cluster,
            EventContext {
                node_name: "node-a",
                judged_at: 1_500_000_000,
            },
        );
        let source = flow.source.as_ref().expect("source");
        assert_eq!(
            (
                source.namespace.as_str(),
                source.pod_name.as_str(),
                &source.labels
            ),
            (
                "shop",
                "a-1",
                &vec![
                    "k8s:app=a".to_owned(),
                    "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=shop"
                        .to_owned(),
                    "k8s:io.cilium.k8s.namespace.labels.team=retail".to_owned(),
                    "k8s:io.kubernetes.pod.namespace=shop".to_owned(),
                ]
            )
        );
        assert_eq!(
            source.workloads,
            [flow::Workload {
                name: "a-1".into(),
                kind: "Pod".into()
            }]
        );
        assert_eq!(
            flow.time,
            Some(pbjson_types::Timestamp {
                seconds: 1,
                nanos: 500_000_000
            })
        );
        assert_eq!(flow.node_name, "node-a");
        assert_eq!(
            flow.event_type,
            Some(CiliumEventType {
                r#type: POLICY_VERDICT_EVENT,
                sub_type: 0
            })
        );
        let Some(layer4::Protocol::Tcp(tcp)) = flow.l4.and_then(|l4| l4.protocol) else {
            panic!("TCP");
        };
        assert_eq!(
            (
                tcp.source_port,
                tcp.destination_port,
                tcp.flags.map(|f| (f.syn, f.ack))
            ),
            (40000, 80, Some((true, false)))
        );
        assert_eq!(
            flow.summary,
            "netgov: deny but delivered (gap); egress: ; ingress: "
        );
    }

    #[test]
    fn outside_and_node_ends_are_ciliums_reserved_identities() {
        let cluster = ClusterState::from_yaml(
            "apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\nstatus: {addresses: [{type: InternalIP, address: 10.0.0.1}]}\n\
             ---\napiVersion: v1\nkind: Node\nmetadata: {name: node-b}\nstatus: {addresses: [{type: InternalIP, address: 10.0.0.2}]}\n",
        );
        let (mut record, judgement) = judgement(Case::NotGoverned);
        let context = EventContext {
            node_name: "node-a",
            judged_at: 0,
        };
        let ends = |flow: &Flow| {
            [&flow.source, &flow.destination].map(|e| {
                let e = e.as_ref().expect("endpoint");
                (e.identity, e.labels.clone())
            })
        };
        let flow = to_flow(&record, &judgement, &cluster, context);
        assert_eq!(
            ends(&flow),
            [
                (1, vec!["reserved:host".to_owned()]),
                (6, vec!["reserved:remote-node".to_owned()])
            ]
        );
        record.dst = "203.0.113.9".parse().expect("ip");
        let flow = to_flow(&record, &judgement, &cluster, context);
        assert_eq!(ends(&flow)[1], (2, vec!["reserved:world".to_owned()]));
    }
}
