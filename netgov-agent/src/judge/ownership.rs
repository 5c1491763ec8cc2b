//! Which node's agent counts a flow, so that `sum()` over every agent
//! counts each flow, violation and unexpected egress once.
//!
//! The rule: **a flow belongs to the node of its initiator when the
//! initiator is a pod** (with its own network namespace) whose node is
//! known; otherwise to the node that observed it — the responder's node,
//! since netgov observes pod interfaces only (traffic from outside the
//! cluster, from a node or from a hostNetwork pod is seen at the
//! destination pod's interface alone).
//!
//! Why the initiator's node: it sees every attempt, whether or not the
//! network let it through, so it can count a flow the destination never
//! received (dropped at the source or on the way) — the destination's
//! node would not know it existed. What it cannot see is delivery on
//! another node; enforcement there is judged from answers (see
//! `judge::enforcement`), and one-way traffic to another node stays
//! `unknown`.
//!
//! Assumes an agent on every node that runs pods (the DaemonSet's
//! default): a flow from a pod on a node without an agent is counted by
//! nobody. A flow whose initiator the responder's node sees only as its
//! node's address (masqueraded pod-to-pod traffic) is counted by both.

use super::{NodeContext, NotJudged};
use crate::engine::Resolved;

/// Why this node does not count a flow whose initiator resolved to
/// `source`, if it does not.
pub fn counted_elsewhere(source: Resolved<'_>, node: &NodeContext) -> Option<NotJudged> {
    let (Resolved::Pod(pod), Some(here)) = (source, node.node_name.as_deref()) else {
        return None;
    };
    pod.node()
        .is_some_and(|there| there != here)
        .then_some(NotJudged::CountedBySourceNode)
}
