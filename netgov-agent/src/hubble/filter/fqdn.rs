//! `source_fqdn` and `destination_fqdn`: the names netgov learned for the
//! destination (from the source pod's DNS answers and ClientHellos),
//! matched by pattern (see [`Glob`]). netgov names no source, so a
//! `source_fqdn` filter matches nothing, as Hubble's would on flows without
//! source names (`hubble observe --fqdn` asks both).

use super::glob::Glob;
use super::{Check, FilterError, per_end};
use crate::hubble::proto::flow::{Flow, FlowFilter};

pub fn build(filter: &FlowFilter) -> Result<Vec<Check>, FilterError> {
    per_end(
        (&filter.source_fqdn, &filter.destination_fqdn),
        |end, values| {
            let field = end.pick(("source_fqdn", "destination_fqdn"));
            let wanted = values
                .iter()
                .map(|p| Glob::new(field, p))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Box::new(move |flow: &Flow| {
                let names = end.pick((&flow.source_names, &flow.destination_names));
                names
                    .iter()
                    .any(|name| wanted.iter().any(|glob| glob.matches(name)))
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
        let rows: [(&[&str], Result<bool, ()>); 8] = [
            (&["api.example.com"], Ok(true)),
            (&["API.example.com."], Ok(true)),
            (&["*.example.com"], Ok(true)),
            (&["*"], Ok(true)),
            (&["api.*.com"], Ok(true)),
            (&["*.example.org"], Ok(false)),
            (&["example.com"], Ok(false)),
            (&[""], Err(())),
        ];
        for (patterns, expected) in rows {
            let filter = FlowFilter {
                destination_fqdn: patterns.iter().map(|s| s.to_string()).collect(),
                ..FlowFilter::default()
            };
            assert_eq!(passes(&filter).map_err(drop), expected, "{patterns:?}");
        }
    }

    #[test]
    fn no_source_has_a_name() {
        let filter = FlowFilter {
            source_fqdn: vec!["*".into()],
            ..FlowFilter::default()
        };
        assert_eq!(passes(&filter), Ok(false));
    }
}
