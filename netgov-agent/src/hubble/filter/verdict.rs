//! `verdict` and `drop_reason_desc` (of a `DROPPED` flow only, as in
//! Hubble).

use super::{Check, FilterError};
use crate::hubble::proto::flow::{FlowFilter, Verdict};

pub fn build(filter: &FlowFilter) -> Result<Vec<Check>, FilterError> {
    let mut checks: Vec<Check> = Vec::new();
    if !filter.verdict.is_empty() {
        let wanted = filter.verdict.clone();
        checks.push(Box::new(move |flow| wanted.contains(&flow.verdict)));
    }
    if !filter.drop_reason_desc.is_empty() {
        let wanted = filter.drop_reason_desc.clone();
        checks.push(Box::new(move |flow| {
            flow.verdict() == Verdict::Dropped && wanted.contains(&flow.drop_reason_desc)
        }));
    }
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::super::test_flow::passes;
    use super::*;
    use crate::hubble::proto::flow::DropReason;

    #[test]
    fn rows() {
        let rows: [(&[Verdict], &[DropReason], bool); 5] = [
            (&[Verdict::Audit], &[], true),
            (&[Verdict::Forwarded, Verdict::Audit], &[], true),
            (&[Verdict::Dropped], &[], false),
            (&[], &[DropReason::PolicyDenied], false),
            (&[], &[DropReason::Unknown], false),
        ];
        for (verdicts, reasons, passed) in rows {
            let filter = FlowFilter {
                verdict: verdicts.iter().map(|v| *v as i32).collect(),
                drop_reason_desc: reasons.iter().map(|r| *r as i32).collect(),
                ..FlowFilter::default()
            };
            assert_eq!(passes(&filter), Ok(passed), "{verdicts:?} {reasons:?}");
        }
    }
}
