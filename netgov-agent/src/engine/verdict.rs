//! What the engine answers: the query, the decision, and each side's
//! explanation.

use std::borrow::Cow;
use std::net::IpAddr;

use serde::Serialize;

use super::tiers::TierDecision;
use crate::engine::Resolved;
use crate::model::Name;
use crate::model::{PodRef, Protocol, string_enum};

/// A flow to judge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowQuery {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Protocol.
    pub protocol: Protocol,
    /// Destination port (ignored for ICMP).
    pub dst_port: u16,
}

string_enum! {
    /// The answer for a flow or one side of it.
    pub enum Decision {
        /// Policies allow it (or nothing isolates the pod).
        Allow => "allow",
        /// Policies isolate the pod and no rule admits the flow.
        Deny => "deny",
        /// No policy governs it: a node's or a hostNetwork pod's traffic
        /// to a pod, or no end is a pod. (A pod's traffic to a node is
        /// judged by the cluster-wide tiers.)
        NotApplicable => "not-applicable",
    }
}

/// A rule that admitted a flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    /// `namespace/name` of the policy.
    pub policy: Name,
    /// Index of the rule in the policy's `ingress` or `egress` list.
    pub rule: usize,
}

impl std::fmt::Display for RuleRef {
    /// `namespace/name#index`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.policy, self.rule)
    }
}

/// Rules as people read them: `ns/a#0,ns/b#1`.
pub fn rule_list(rules: &[RuleRef]) -> String {
    rules
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// One side's judgement: the source's egress or the destination's ingress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SideVerdict {
    /// The side's decision.
    pub verdict: Decision,
    /// The pod on this side (`namespace/name`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    /// Whether policies isolate the pod in this direction.
    pub isolated: bool,
    /// The policies that isolate it (select it with this policy type).
    pub isolating_policies: Vec<Name>,
    /// The rules that admit the flow.
    pub allowed_by: Vec<RuleRef>,
    /// Why, in words.
    pub reason: Cow<'static, str>,
    /// The cluster-wide rule that decided, when an Admin or Baseline
    /// tier did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<Box<TierDecision>>,
    /// NetworkPolicies that select the pod but did not get to decide: a
    /// higher tier did.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped_policies: Vec<Name>,
}

impl SideVerdict {
    pub(super) fn not_applicable(reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            verdict: Decision::NotApplicable,
            pod: None,
            isolated: false,
            isolating_policies: Vec::new(),
            allowed_by: Vec::new(),
            reason: reason.into(),
            tier: None,
            skipped_policies: Vec::new(),
        }
    }

    /// Allowed without isolation: nothing restricts this side.
    pub fn open(reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            verdict: Decision::Allow,
            ..Self::not_applicable(reason)
        }
    }
}

/// What an end of the flow is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum EndpointKind {
    /// A pod.
    Pod {
        /// Namespace.
        namespace: Name,
        /// Name.
        name: Name,
    },
    /// A node, or a hostNetwork pod.
    Host {
        /// The node's name, when known.
        #[serde(skip_serializing_if = "Option::is_none")]
        node: Option<Name>,
    },
    /// A Service cluster IP.
    Service {
        /// Namespace.
        namespace: Name,
        /// Name.
        name: Name,
    },
    /// Outside the cluster.
    External,
}

/// The judgement of one Service backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendVerdict {
    /// Backend address.
    pub ip: IpAddr,
    /// Backend port (the Service's target port).
    pub port: u16,
    /// The verdict for this backend.
    pub verdict: Decision,
    /// Egress of the source towards it.
    pub egress: SideVerdict,
    /// Ingress of the backend.
    pub ingress: SideVerdict,
}

/// The judgement of a flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Allowed, denied, or not governed by NetworkPolicy.
    pub verdict: Decision,
    /// The source's egress.
    pub egress: SideVerdict,
    /// The destination's ingress.
    pub ingress: SideVerdict,
    /// What the source is.
    pub source: EndpointKind,
    /// What the destination is.
    pub destination: EndpointKind,
    /// For a flow to a Service: each backend's judgement.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<BackendVerdict>,
    /// For a flow to a Service: whether backends disagree (the verdict is
    /// then `deny`: the flow is not reliably allowed).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub backends_disagree: bool,
}

pub(super) fn endpoint_kind(resolved: Resolved<'_>) -> EndpointKind {
    match resolved {
        Resolved::Pod(pod) => EndpointKind::Pod {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
        },
        Resolved::Host(node) => EndpointKind::Host {
            node: node.map(Name::from),
        },
        Resolved::Service(service) => EndpointKind::Service {
            namespace: Name::clone(&service.namespace),
            name: Name::clone(&service.name),
        },
        Resolved::External => EndpointKind::External,
    }
}
