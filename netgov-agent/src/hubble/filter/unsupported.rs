//! The `FlowFilter` fields netgov cannot honour, refused by name.

use super::FilterError;
use crate::hubble::proto::flow::FlowFilter;

/// Refuses a filter that sets a field netgov does not honour.
///
/// # Errors
/// [`FilterError::Unsupported`] naming the first such field.
pub fn refuse(filter: &FlowFilter) -> Result<(), FilterError> {
    const HTTP: &str = "netgov judges L3/L4 flows and sees no HTTP";
    let fields: [(&'static str, bool, &'static str); 14] = [
        (
            "source_cluster_name",
            !filter.source_cluster_name.is_empty(),
            "netgov sees one cluster and sets no cluster name",
        ),
        (
            "destination_cluster_name",
            !filter.destination_cluster_name.is_empty(),
            "netgov sees one cluster and sets no cluster name",
        ),
        (
            "interface",
            !filter.interface.is_empty(),
            "netgov's events are flows judged across interfaces, not packets at one",
        ),
        (
            "http_status_code",
            !filter.http_status_code.is_empty(),
            HTTP,
        ),
        ("http_method", !filter.http_method.is_empty(), HTTP),
        ("http_path", !filter.http_path.is_empty(), HTTP),
        ("http_url", !filter.http_url.is_empty(), HTTP),
        ("http_header", !filter.http_header.is_empty(), HTTP),
        (
            "dns_query",
            !filter.dns_query.is_empty(),
            "netgov emits no DNS events",
        ),
        (
            "node_labels",
            !filter.node_labels.is_empty(),
            "netgov's flows carry no node labels",
        ),
        (
            "trace_id",
            !filter.trace_id.is_empty(),
            "netgov sees no trace context",
        ),
        (
            "ip_trace_id",
            !filter.ip_trace_id.is_empty(),
            "netgov reads no IP trace options",
        ),
        (
            "encrypted",
            !filter.encrypted.is_empty(),
            "netgov does not know whether a flow was encrypted",
        ),
        (
            "experimental.cel_expression",
            filter
                .experimental
                .as_ref()
                .is_some_and(|e| !e.cel_expression.is_empty()),
            "netgov evaluates no CEL",
        ),
    ];
    match fields.into_iter().find(|(_, set, _)| *set) {
        Some((field, _, why)) => Err(FilterError::Unsupported { field, why }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hubble::proto::flow::flow_filter::Experimental;

    #[test]
    fn each_unsupported_field_is_named() {
        let rows = [
            (
                FlowFilter {
                    interface: vec![Default::default()],
                    ..FlowFilter::default()
                },
                "interface",
            ),
            (
                FlowFilter {
                    http_status_code: vec!["404".into()],
                    ..FlowFilter::default()
                },
                "http_status_code",
            ),
            (
                FlowFilter {
                    dns_query: vec!["x".into()],
                    ..FlowFilter::default()
                },
                "dns_query",
            ),
            (
                FlowFilter {
                    encrypted: vec![true],
                    ..FlowFilter::default()
                },
                "encrypted",
            ),
            (
                FlowFilter {
                    experimental: Some(Experimental {
                        cel_expression: vec!["true".into()],
                    }),
                    ..FlowFilter::default()
                },
                "experimental.cel_expression",
            ),
        ];
        for (filter, field) in rows {
            match refuse(&filter) {
                Err(FilterError::Unsupported { field: named, .. }) => assert_eq!(named, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        assert_eq!(refuse(&FlowFilter::default()), Ok(()));
    }
}
