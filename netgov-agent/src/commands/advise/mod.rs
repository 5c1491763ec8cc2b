//! `netgov advise`: least-privilege NetworkPolicies from recorded traffic.
//! For each workload, one policy that isolates it both ways and allows
//! exactly the peers and ports it was seen using, commented with the
//! evidence (flows, first and last sighting).
//!
//! Decisions:
//! - Workloads are selected by the labels all their recorded pods share
//!   (minus per-pod ones: `pod-template-hash`, `controller-revision-hash`,
//!   `statefulset.kubernetes.io/pod-name`); a pod peer by its namespace's
//!   `kubernetes.io/metadata.name` and those labels; an outside or node
//!   peer by a `/32` (`/128`) ipBlock per address seen. No policy is
//!   advised (and the output says why) for a workload whose selector would
//!   be empty, would also select another recorded workload's pods, or
//!   whose pod peer's selector would be empty.
//! - Only flows allowed (or not governed) when recorded are allowed: a
//!   flow policy denied stays denied.
//! - A flow whose destination is a Service address that was never resolved
//!   to a backend cannot be expressed (NetworkPolicy sees the backend): it
//!   is listed in the output as not covered.
//! - The advice is checked before it is printed: every object decodes as a
//!   NetworkPolicy and compiles with the engine's validation, and replaying
//!   the recording against the current policies plus the advice yields no
//!   `would-deny`. Advice that fails the check is an error, never printed.

mod check;
mod render;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::engine::Decision;
use crate::engine::selector::Labels;
use crate::flowlog::{RecordedFlow, RecordedIdentity, RecordedTime};
use crate::judge::context::EndContext;
use crate::model::Protocol;
pub use check::{AdviceError, check};
pub use render::to_yaml;

/// Labels that differ from pod to pod of one workload.
const PER_POD_LABELS: [&str; 3] = [
    "pod-template-hash",
    "controller-revision-hash",
    "statefulset.kubernetes.io/pod-name",
];

/// Who is on the other end of an allowed flow.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AdvisedPeer {
    /// Pods of a workload.
    Pods {
        /// Their namespace.
        namespace: String,
        /// The labels all of them share.
        labels: Labels,
        /// `namespace/workload`, for the comment.
        workload: String,
    },
    /// One address outside the cluster or of a node.
    Address(IpAddr),
}

/// One allow rule: a peer and the ports it used, with the evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdvisedRule {
    /// The peer.
    pub peer: AdvisedPeer,
    /// `(protocol, port)` pairs used.
    pub ports: BTreeSet<(Protocol, u16)>,
    /// Flows seen.
    pub flows: u64,
    /// Earliest first sighting.
    pub first_seen: RecordedTime,
    /// Latest sighting.
    pub last_seen: RecordedTime,
}

/// The policy advised for one workload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdvisedPolicy {
    /// The workload's namespace.
    pub namespace: String,
    /// The workload's name.
    pub workload: String,
    /// The labels selecting its pods.
    pub selector: Labels,
    /// What may reach it.
    pub ingress: Vec<AdvisedRule>,
    /// What it may reach.
    pub egress: Vec<AdvisedRule>,
}

/// Everything advised.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Advice {
    /// A policy per workload, by namespace and name.
    pub policies: Vec<AdvisedPolicy>,
    /// Flows no rule can express, as `source -> destination:port/protocol`.
    pub not_covered: Vec<String>,
}

#[derive(Default)]
struct Draft {
    selector: Option<Labels>,
    ingress: BTreeMap<AdvisedPeer, AdvisedRule>,
    egress: BTreeMap<AdvisedPeer, AdvisedRule>,
}

/// Derives policies for the workloads of `namespace` (all when `None`)
/// from `flows`.
pub fn advise(flows: &[RecordedFlow], namespace: Option<&str>) -> Advice {
    let mut drafts: BTreeMap<(String, String), Draft> = BTreeMap::new();
    let mut not_covered = BTreeSet::new();
    let mut selectors: BTreeMap<(String, String), Labels> = BTreeMap::new();
    // A pod end has a context (a Service flow's backend may be named only
    // by its workload).
    let in_scope = |identity: &RecordedIdentity, context: &Option<EndContext>| {
        context.is_some() && namespace.is_none_or(|ns| identity.namespace == ns)
    };
    // Every pod's labels first: a peer's selector is its workload's.
    for flow in flows {
        for (identity, context) in [
            (&flow.src_identity, &flow.src_context),
            (&flow.dst_identity, &flow.dst_context),
        ] {
            if let Some(context) = context {
                let key = (identity.namespace.clone(), identity.workload.clone());
                let shared = selectors
                    .entry(key)
                    .or_insert_with(|| without_per_pod(&context.labels));
                shared.retain(|k, v| context.labels.get(k) == Some(v));
            }
        }
    }
    for flow in flows {
        if flow.verdict == Decision::Deny {
            continue;
        }
        let port = (flow.protocol, flow.judged_dst_port);
        let dst_is_unresolved_service =
            flow.dst_context.is_none() && !flow.dst_identity.namespace.is_empty();
        if dst_is_unresolved_service {
            not_covered.insert(format!(
                "{} -> {}:{}/{} (a Service address never resolved to a backend)",
                flow.src_identity, flow.dst_identity, port.1, port.0
            ));
            continue;
        }
        let sides = [
            (
                (&flow.dst_identity, &flow.dst_context),
                (&flow.src_identity, &flow.src_context),
                flow.src,
                true,
            ),
            (
                (&flow.src_identity, &flow.src_context),
                (&flow.dst_identity, &flow.dst_context),
                flow.dst,
                false,
            ),
        ];
        for ((owner, owner_context), (peer, peer_context), peer_ip, ingress) in sides {
            if !in_scope(owner, owner_context) {
                continue;
            }
            let key = (owner.namespace.clone(), owner.workload.clone());
            let draft = drafts.entry(key.clone()).or_default();
            draft.selector = selectors.get(&key).cloned();
            let peer = advised_peer(peer, peer_context.as_ref(), peer_ip, &selectors);
            let rules = if ingress {
                &mut draft.ingress
            } else {
                &mut draft.egress
            };
            let rule = rules.entry(peer.clone()).or_insert_with(|| AdvisedRule {
                peer,
                ports: BTreeSet::new(),
                flows: 0,
                first_seen: flow.first_seen,
                last_seen: flow.last_seen,
            });
            rule.ports.insert(port);
            rule.flows += 1;
            rule.first_seen = rule.first_seen.min(flow.first_seen);
            rule.last_seen = rule.last_seen.max(flow.last_seen);
        }
    }
    let mut policies = Vec::new();
    for ((namespace, workload), draft) in drafts {
        let selector = draft.selector.unwrap_or_default();
        // An empty selector would select every pod of the namespace, and
        // one another workload's pods share would isolate them too.
        let also_selected = selectors.iter().find(|((ns, other), labels)| {
            (ns, other) != (&namespace, &workload)
                && *ns == namespace
                && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        });
        let broad_peer =
            draft
                .ingress
                .keys()
                .chain(draft.egress.keys())
                .find_map(|peer| match peer {
                    AdvisedPeer::Pods {
                        labels, workload, ..
                    } if labels.is_empty() => Some(workload.clone()),
                    _ => None,
                });
        let refused = if selector.is_empty() {
            Some("its pods share no label to select them by".to_owned())
        } else if let Some(((ns, other), _)) = also_selected {
            Some(format!("its labels also select the pods of {ns}/{other}"))
        } else {
            broad_peer
                .map(|peer| format!("the pods of its peer {peer} share no label to select them by"))
        };
        if let Some(why) = refused {
            not_covered.insert(format!("{namespace}/{workload}: {why}; no policy advised"));
            continue;
        }
        policies.push(AdvisedPolicy {
            namespace,
            workload,
            selector,
            ingress: draft.ingress.into_values().collect(),
            egress: draft.egress.into_values().collect(),
        });
    }
    Advice {
        policies,
        not_covered: not_covered.into_iter().collect(),
    }
}

fn without_per_pod(labels: &Labels) -> Labels {
    labels
        .iter()
        .filter(|(k, _)| !PER_POD_LABELS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn advised_peer(
    identity: &RecordedIdentity,
    context: Option<&EndContext>,
    ip: IpAddr,
    selectors: &BTreeMap<(String, String), Labels>,
) -> AdvisedPeer {
    match context {
        Some(context) => AdvisedPeer::Pods {
            namespace: identity.namespace.clone(),
            labels: selectors
                .get(&(identity.namespace.clone(), identity.workload.clone()))
                .cloned()
                .unwrap_or_else(|| without_per_pod(&context.labels)),
            workload: identity.to_string(),
        },
        None => AdvisedPeer::Address(ip),
    }
}

#[cfg(test)]
mod tests;
