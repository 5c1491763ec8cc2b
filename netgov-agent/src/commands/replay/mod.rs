//! `netgov replay`: judges recorded flows (flow logs, format 1) against
//! other policies — a pull request's, or the live cluster's — and reports
//! what would change: flows allowed when recorded that would be denied now
//! (`would-deny`: this would break them) and flows denied then that would
//! be allowed (`would-allow`), grouped by workload pair, protocol and port,
//! with the policy or rule responsible.
//!
//! Decisions:
//! - The identities come from the recording, not from the cluster: each
//!   recorded pod is placed, with the labels, namespace labels and named
//!   ports it had, at the address it had, just before its flow is judged
//!   (replacing whichever pod held that address), so pods that are gone
//!   still count and address reuse in the recording is harmless.
//! - A flow is its latest record (its verdict when it ended or last
//!   changed).
//! - The verdict compared is the whole flow's (both sides, all tiers),
//!   with the exact engine `netgov check` and the agent use.

mod report;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use serde_json::json;

use crate::engine::evaluate::evaluate;
use crate::engine::verdict::{SideVerdict, Verdict};
use crate::engine::{ClusterState, Object, Resolved, ResourceKind};
use crate::engine::{Decision, FlowQuery};
use crate::flowlog::{RecordedFlow, RecordedIdentity, RecordedTime};
use crate::judge::context::EndContext;
use crate::model::Protocol;
pub use report::{ReplayFormat, render};

/// What would happen to a recorded flow now.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    /// Allowed (or not governed) when recorded, denied now: it would break.
    WouldDeny,
    /// Denied when recorded, allowed now.
    WouldAllow,
}

/// Flows of one workload pair, protocol and port whose verdict would
/// change the same way.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ChangedFlows {
    /// How.
    pub change: Change,
    /// The source workload (`namespace/workload`, or `world`).
    pub src: String,
    /// The destination workload.
    pub dst: String,
    /// The protocol.
    pub protocol: Protocol,
    /// The port judged.
    pub port: u16,
    /// Recorded flows.
    pub flows: u64,
    /// The earliest first sighting.
    pub first_seen: RecordedTime,
    /// The latest sighting.
    pub last_seen: RecordedTime,
    /// The verdict now, explained: the denying side and what isolates it,
    /// or the rules that admit the flow.
    pub because: String,
}

/// What replaying found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Flows judged.
    pub replayed: u64,
    /// Of those, whose verdict would not change.
    pub unchanged: u64,
    /// The changes, would-deny first.
    pub changes: Vec<ChangedFlows>,
}

impl ReplayReport {
    /// Flows that would change `change`'s way.
    pub fn count(&self, change: Change) -> u64 {
        self.changes
            .iter()
            .filter(|c| c.change == change)
            .map(|c| c.flows)
            .sum()
    }
}

/// Judges `flows` against `cluster`'s policies (its pods are replaced by
/// the recorded ones where addresses meet).
pub fn replay(cluster: &mut ClusterState, flows: &[RecordedFlow]) -> ReplayReport {
    let mut groups: BTreeMap<(Change, String, String, Protocol, u16), ChangedFlows> =
        BTreeMap::new();
    let mut report = ReplayReport::default();
    for flow in flows {
        let Some((_, verdict)) = judge_recorded(cluster, flow) else {
            continue;
        };
        report.replayed += 1;
        let change = match (flow.verdict, verdict.verdict) {
            (Decision::Deny, Decision::Allow | Decision::NotApplicable) => Change::WouldAllow,
            (Decision::Allow | Decision::NotApplicable, Decision::Deny) => Change::WouldDeny,
            _ => {
                report.unchanged += 1;
                continue;
            }
        };
        let workload = |identity: &RecordedIdentity| {
            RecordedIdentity {
                pod: None,
                ..identity.clone()
            }
            .to_string()
        };
        let key = (
            change,
            workload(&flow.src_identity),
            workload(&flow.dst_identity),
            flow.protocol,
            flow.judged_dst_port,
        );
        let group = groups.entry(key.clone()).or_insert_with(|| ChangedFlows {
            change,
            src: key.1.clone(),
            dst: key.2.clone(),
            protocol: key.3,
            port: key.4,
            flows: 0,
            first_seen: flow.first_seen,
            last_seen: flow.last_seen,
            because: because(&verdict),
        });
        group.flows += 1;
        group.first_seen = group.first_seen.min(flow.first_seen);
        group.last_seen = group.last_seen.max(flow.last_seen);
    }
    report.changes = groups.into_values().collect();
    report
}

/// Judges a recorded flow against `cluster`'s policies, its pod ends placed
/// as recorded; `None` for a protocol the engine does not know.
pub fn judge_recorded(
    cluster: &mut ClusterState,
    flow: &RecordedFlow,
) -> Option<(FlowQuery, Verdict)> {
    let protocol = match flow.protocol {
        Protocol::Other(_) => return None,
        known => known,
    };
    for (context, identity) in [
        (&flow.src_context, &flow.src_identity),
        (&flow.dst_context, &flow.dst_identity),
    ] {
        // A Service flow's backend has a context but may be named only by
        // its workload: it is placed under a name of its own.
        if let Some(context) = context {
            let pod = identity
                .pod
                .clone()
                .unwrap_or_else(|| format!("{}-recorded-{}", identity.workload, context.ip));
            place(cluster, &identity.namespace, &pod, context);
        }
    }
    let query = FlowQuery {
        src: flow.src,
        dst: flow.dst_context.as_ref().map_or(flow.dst, |c| c.ip),
        protocol,
        dst_port: flow.judged_dst_port,
    };
    let verdict = evaluate(cluster, &query);
    Some((query, verdict))
}

/// Puts the recorded pod at its address, with its namespace's recorded
/// labels: replacing the pod that holds the address now, if another.
fn place(cluster: &mut ClusterState, namespace: &str, name: &str, context: &EndContext) {
    if cluster.namespace_labels(namespace) != Some(&context.namespace_labels) {
        let object: Namespace = serde_json::from_value(json!({
            "metadata": {"name": namespace, "labels": context.namespace_labels}
        }))
        .expect("a namespace from labels");
        apply(cluster, object.into());
    }
    let holder = match cluster.resolve(context.ip) {
        Resolved::Pod(pod) => Some((pod.namespace.to_string(), pod.name.to_string())),
        _ => None,
    };
    if let Some((ns, pod)) = &holder {
        if (ns.as_str(), pod.as_str()) == (namespace, name)
            && cluster
                .pod(ns, pod)
                .is_some_and(|p| p.labels.is(&context.labels))
        {
            return;
        }
        cluster.delete(ResourceKind::Pod, ns, pod);
    }
    let ports: Vec<serde_json::Value> = context
        .named_ports
        .iter()
        .map(|p| json!({"name": p.name, "containerPort": p.port, "protocol": p.protocol}))
        .collect();
    // The newest creation: the address is the recorded pod's, whoever else
    // claims it now.
    let object: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace, "labels": context.labels,
                     "creationTimestamp": "9000-01-01T00:00:00Z"},
        "spec": {"containers": [{"name": "recorded", "ports": ports}]},
        "status": {"phase": "Running", "podIP": context.ip.to_string(),
                   "podIPs": [{"ip": context.ip.to_string()}]}
    }))
    .expect("a pod from a recorded context");
    apply(cluster, object.into());
}

/// Applies an object built from a recording (a namespace or a pod: never
/// an error).
fn apply(cluster: &mut ClusterState, object: Object) {
    if let Err(error) = cluster.apply(&object) {
        unreachable!(
            "a recorded {} is not a policy: {error}",
            object.kind().name()
        );
    }
}

/// Why the verdict is what it is now, in a line.
fn because(verdict: &Verdict) -> String {
    let side = |name: &str, side: &SideVerdict| -> Option<String> {
        if let Some(tier) = &side.tier {
            return Some(format!("{name}: {}", tier_text(tier)));
        }
        if !side.allowed_by.is_empty() {
            return Some(format!(
                "{name} allowed by {}",
                crate::engine::verdict::rule_list(&side.allowed_by)
            ));
        }
        (side.verdict == Decision::Deny).then(|| {
            format!(
                "{name}: isolated by {}, no rule admits it",
                side.isolating_policies.join(",")
            )
        })
    };
    let parts: Vec<String> = [
        side("egress", &verdict.egress),
        side("ingress", &verdict.ingress),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        "no policy isolates either end".to_owned()
    } else {
        parts.join("; ")
    }
}

fn tier_text(tier: &crate::engine::tiers::TierDecision) -> String {
    format!(
        "{} tier, {} rule {} of {}",
        tier.tier, tier.action, tier.rule, tier.policy
    )
}

#[cfg(test)]
pub(crate) mod tests;
