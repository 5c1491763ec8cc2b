//! `node_name`: patterns with `*` (`worker-*`); a `cluster/` prefix, as
//! Hubble allows, is matched against netgov's one cluster (any name).

use super::fqdn::Glob;
use super::{Check, FilterError};
use crate::hubble::proto::flow::FlowFilter;

pub fn build(filter: &FlowFilter) -> Result<Vec<Check>, FilterError> {
    if filter.node_name.is_empty() {
        return Ok(Vec::new());
    }
    let wanted = filter
        .node_name
        .iter()
        .map(|pattern| {
            let node = pattern
                .rsplit_once('/')
                .map_or(pattern.as_str(), |(_, node)| node);
            let node = if node.is_empty() { "*" } else { node };
            Glob::new("node_name", node)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(vec![Box::new(move |flow| {
        wanted.iter().any(|glob| glob.matches(&flow.node_name))
    })])
}

#[cfg(test)]
mod tests {
    use super::super::test_flow::passes;
    use super::*;

    #[test]
    fn rows() {
        let rows: [(&[&str], bool); 6] = [
            (&["node-a"], true),
            (&["node-*"], true),
            (&["*"], true),
            (&["default/node-a"], true),
            (&["node-b"], false),
            (&["node"], false),
        ];
        for (patterns, passed) in rows {
            let filter = FlowFilter {
                node_name: patterns.iter().map(|s| s.to_string()).collect(),
                ..FlowFilter::default()
            };
            assert_eq!(passes(&filter), Ok(passed), "{patterns:?}");
        }
    }
}
