//! `source_pod`, `destination_pod`, `source_service` and
//! `destination_service`, in Hubble's `[namespace/]name-prefix` form:
//! - `shop/b` pods of namespace `shop` whose name starts with `b`;
//! - `shop/` every pod of `shop`; `/b` pods starting with `b` anywhere;
//! - `b` (no slash) pods starting with `b` in namespace `default`, as
//!   Hubble reads it.

use super::{Check, End, FilterError, per_end};
use crate::hubble::proto::flow::{Flow, FlowFilter};

/// A parsed `[namespace/]prefix`: empty parts match anything.
#[derive(Clone, Debug, PartialEq, Eq)]
struct NamespacedPrefix {
    namespace: String,
    prefix: String,
}

impl NamespacedPrefix {
    fn parse(field: &'static str, value: &str) -> Result<Self, FilterError> {
        if value.is_empty() {
            return Err(FilterError::invalid(field, value, "must not be empty"));
        }
        let (namespace, prefix) = match value.split_once('/') {
            Some((namespace, prefix)) => (namespace, prefix),
            None => ("default", value),
        };
        if prefix.contains('/') {
            return Err(FilterError::invalid(
                field,
                value,
                "expected [namespace/]name-prefix",
            ));
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    fn matches(&self, (namespace, name): (&str, &str)) -> bool {
        (namespace, name) != ("", "")
            && (self.namespace.is_empty() || self.namespace == namespace)
            && name.starts_with(&self.prefix)
    }
}

fn pod(flow: &Flow, end: End) -> (&str, &str) {
    end.of(flow)
        .map_or(("", ""), |e| (e.namespace.as_str(), e.pod_name.as_str()))
}

fn service(flow: &Flow, end: End) -> (&str, &str) {
    let service = end.pick((
        flow.source_service.as_ref(),
        flow.destination_service.as_ref(),
    ));
    service.map_or(("", ""), |s| (s.namespace.as_str(), s.name.as_str()))
}

fn checks(
    (source, destination): (&[String], &[String]),
    fields: (&'static str, &'static str),
    name: fn(&Flow, End) -> (&str, &str),
) -> Result<Vec<Check>, FilterError> {
    per_end((source, destination), |end, values| {
        let field = end.pick((fields.0, fields.1));
        let wanted = values
            .iter()
            .map(|v| NamespacedPrefix::parse(field, v))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Box::new(move |flow: &Flow| wanted.iter().any(|w| w.matches(name(flow, end)))) as Check)
    })
}

pub fn build(filter: &FlowFilter) -> Result<Vec<Check>, FilterError> {
    let mut all = checks(
        (&filter.source_pod, &filter.destination_pod),
        ("source_pod", "destination_pod"),
        pod,
    )?;
    all.extend(checks(
        (&filter.source_service, &filter.destination_service),
        ("source_service", "destination_service"),
        service,
    )?);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::super::test_flow::passes;
    use super::*;

    #[test]
    fn rows() {
        let rows: [(&str, &[&str], Result<bool, ()>); 13] = [
            ("source_pod", &["shop/a"], Ok(true)),
            ("source_pod", &["shop/a-1"], Ok(true)),
            ("source_pod", &["shop/"], Ok(true)),
            ("source_pod", &["/a"], Ok(true)),
            ("source_pod", &["a"], Ok(false)),
            ("source_pod", &["shop/b"], Ok(false)),
            ("source_pod", &["other/a", "shop/a"], Ok(true)),
            ("destination_pod", &["shop/b"], Ok(true)),
            ("destination_pod", &["shop/a"], Ok(false)),
            ("destination_service", &["shop/b-svc"], Ok(true)),
            ("source_service", &["shop/"], Ok(false)),
            ("source_pod", &[""], Err(())),
            ("source_pod", &["a/b/c"], Err(())),
        ];
        for (field, values, expected) in rows {
            let values: Vec<String> = values.iter().map(|s| s.to_string()).collect();
            let mut filter = FlowFilter::default();
            match field {
                "source_pod" => filter.source_pod = values,
                "destination_pod" => filter.destination_pod = values,
                "source_service" => filter.source_service = values,
                _ => filter.destination_service = values,
            }
            assert_eq!(
                passes(&filter).map_err(drop),
                expected,
                "{field} {:?}",
                filter
            );
        }
    }
}
