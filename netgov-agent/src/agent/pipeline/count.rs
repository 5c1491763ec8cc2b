//! What the judge stage counts for a judged flow: the ledger's emit, as
//! metrics.

use super::Pipeline;
use crate::capture::record::FlowRecord;
use crate::judge::Judgement;
use crate::ledger::Emit;

impl Pipeline {
    /// Counts what the ledger's step says is new about the flow.
    pub(super) fn count(&self, record: &FlowRecord, judgement: &Judgement, emit: &Emit) {
        let metrics = &self.shared.metrics;
        let ends = (&judgement.src, &judgement.dst);
        if emit.flow {
            metrics.count_flow(ends.0, ends.1, record.protocol, judgement.verdict.verdict);
        }
        if let Some(violation) = emit.violation {
            metrics.count_violation(
                ends,
                (record.protocol, judgement.dst_port),
                (violation.denied_by, violation.tier),
                violation.enforcement,
            );
        }
        if let Some(egress) = emit.egress {
            let name = crate::names::preferred(&judgement.dst_names);
            metrics.count_egress(
                ends.0,
                (record.dst, name),
                (egress.flow, egress.unexpected, egress.newly_unexpected),
            );
        }
        if let Some(change) = emit.staged {
            metrics.count_staged_change(ends, (record.protocol, judgement.dst_port), change);
        }
    }
}
