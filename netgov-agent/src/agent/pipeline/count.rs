//! What the judge stage counts for a judged flow, given what it counted
//! for it before.

use super::Pipeline;
use crate::capture::record::FlowRecord;
use crate::judge::{Enforcement, Judgement};

/// What had been counted for a flow before this judgement.
pub(super) struct Counted {
    pub first: bool,
    pub verdict_changed: bool,
    pub violation: bool,
    pub egress: bool,
    pub unexpected: bool,
    /// Its egress waits for a name: not counted now.
    pub awaiting_name: bool,
}

impl Pipeline {
    /// Counts what is new about the flow; returns whether its violation,
    /// its egress and its unexpected egress are counted now.
    pub(super) fn count(
        &self,
        record: &FlowRecord,
        judgement: &Judgement,
        counted: &Counted,
        ended: bool,
    ) -> (bool, bool, bool) {
        let metrics = &self.shared.metrics;
        let ends = (&judgement.src, &judgement.dst);
        if counted.first || counted.verdict_changed {
            metrics.count_flow(ends.0, ends.1, record.protocol, judgement.verdict.verdict);
        }
        let mut violation = counted.violation;
        if let (Some(denied_by), Some(tier), Some(enforcement)) = (
            judgement.denied_by,
            judgement.denying_tier,
            judgement.enforcement,
        ) && !violation
            && (enforcement != Enforcement::Unknown || ended)
        {
            metrics.count_violation(
                ends,
                (record.protocol, judgement.dst_port),
                (denied_by, tier),
                enforcement,
            );
            violation = true;
        }
        let (mut egress, mut unexpected) = (counted.egress, counted.unexpected);
        if judgement.outside_egress && !counted.awaiting_name {
            let flow = !egress;
            let newly_unexpected = judgement.unexpected_egress && !unexpected;
            if flow || newly_unexpected {
                let name = crate::names::preferred(&judgement.dst_names);
                metrics.count_egress(
                    ends.0,
                    (record.dst, name),
                    (flow, judgement.unexpected_egress, newly_unexpected),
                );
            }
            egress = true;
            unexpected |= judgement.unexpected_egress;
        }
        (violation, egress, unexpected)
    }
}
