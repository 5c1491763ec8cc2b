//! `source_workload` and `destination_workload`: a kind, a name, or both
//! (an empty part matches any).

use super::{Check, FilterError, per_end};
use crate::hubble::proto::flow::{Flow, FlowFilter};

pub fn build(filter: &FlowFilter) -> Result<Vec<Check>, FilterError> {
    per_end(
        (&filter.source_workload, &filter.destination_workload),
        |end, values| {
            let wanted = values.to_vec();
            Ok(Box::new(move |flow: &Flow| {
                end.of(flow).is_some_and(|e| {
                    e.workloads.iter().any(|have| {
                        wanted.iter().any(|w| {
                            (w.name.is_empty() || w.name == have.name)
                                && (w.kind.is_empty() || w.kind == have.kind)
                        })
                    })
                })
            }) as Check)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::super::test_flow::passes;
    use super::*;
    use crate::hubble::proto::flow::Workload;

    #[test]
    fn rows() {
        let w = |kind: &str, name: &str| Workload {
            kind: kind.into(),
            name: name.into(),
        };
        let rows = [
            (vec![w("Deployment", "a")], vec![], true),
            (vec![w("", "a")], vec![], true),
            (vec![w("Deployment", "")], vec![w("StatefulSet", "b")], true),
            (vec![w("StatefulSet", "a")], vec![], false),
            (vec![], vec![w("", "a")], false),
        ];
        for (source, destination, passed) in rows {
            let filter = FlowFilter {
                source_workload: source.clone(),
                destination_workload: destination.clone(),
                ..FlowFilter::default()
            };
            assert_eq!(passes(&filter), Ok(passed), "{source:?} {destination:?}");
        }
    }
}
