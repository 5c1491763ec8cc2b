//! `source_label` and `destination_label`: label selectors (see
//! [`Selector`]); any of a field's selectors may match.

use super::selector::Selector;
use super::{Check, FilterError, per_end};
use crate::hubble::proto::flow::{Flow, FlowFilter};

pub fn build(filter: &FlowFilter) -> Result<Vec<Check>, FilterError> {
    per_end(
        (&filter.source_label, &filter.destination_label),
        |end, values| {
            let field = end.pick(("source_label", "destination_label"));
            let wanted = values
                .iter()
                .map(|v| Selector::parse(field, v))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Box::new(move |flow: &Flow| {
                end.of(flow)
                    .is_some_and(|e| wanted.iter().any(|s| s.matches(&e.labels)))
            }) as Check)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::super::test_flow::{Outcome, Values, passes};
    use super::*;

    #[test]
    fn rows() {
        let rows: [(Values, Values, Outcome); 6] = [
            (&["app=a"], &[], Ok(true)),
            (
                &["k8s:io.kubernetes.pod.namespace=shop"],
                &["app=b"],
                Ok(true),
            ),
            (
                &["io.cilium.k8s.namespace.labels.team=retail"],
                &[],
                Ok(true),
            ),
            (&["app=b", "app=a"], &[], Ok(true)),
            (&[], &["app=a"], Ok(false)),
            (&["app in"], &[], Err(())),
        ];
        for (source, destination, expected) in rows {
            let filter = FlowFilter {
                source_label: source.iter().map(|s| s.to_string()).collect(),
                destination_label: destination.iter().map(|s| s.to_string()).collect(),
                ..FlowFilter::default()
            };
            assert_eq!(
                passes(&filter).map_err(drop),
                expected,
                "{source:?} {destination:?}"
            );
        }
    }
}
