//! `source_identity` and `destination_identity`: the numbers netgov gives
//! ends (Cilium's reserved ones, a label-set hash for pods).

use super::{Check, FilterError, per_end};
use crate::hubble::proto::flow::{Flow, FlowFilter};

pub fn build(filter: &FlowFilter) -> Result<Vec<Check>, FilterError> {
    per_end(
        (&filter.source_identity, &filter.destination_identity),
        |end, values| {
            let wanted = values.to_vec();
            Ok(Box::new(move |flow: &Flow| {
                end.of(flow).is_some_and(|e| wanted.contains(&e.identity))
            }) as Check)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::super::test_flow::passes;
    use super::*;

    #[test]
    fn rows() {
        let rows: [(&[u32], &[u32], bool); 4] = [
            (&[300], &[], true),
            (&[300], &[400], true),
            (&[400], &[], false),
            (&[], &[2, 400], true),
        ];
        for (source, destination, passed) in rows {
            let filter = FlowFilter {
                source_identity: source.to_vec(),
                destination_identity: destination.to_vec(),
                ..FlowFilter::default()
            };
            assert_eq!(passes(&filter), Ok(passed), "{source:?} {destination:?}");
        }
    }
}
