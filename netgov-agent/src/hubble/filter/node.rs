//! `node_name`: `[cluster/]node` patterns (see [`Glob`]), as Hubble reads
//! them: an empty part matches any, and netgov's node names, which carry
//! no cluster, are in Hubble's `default` cluster.

use super::glob::Glob;
use super::{Check, FilterError};
use crate::hubble::proto::flow::FlowFilter;

/// The cluster Hubble puts node names without one in.
const DEFAULT_CLUSTER: &str = "default";

/// A parsed `[cluster/]node` pattern; `None` parts match any.
struct NodePattern {
    cluster: Option<Glob>,
    node: Option<Glob>,
}

impl NodePattern {
    fn parse(pattern: &str) -> Result<Self, FilterError> {
        let part = |text: &str| {
            (!text.is_empty())
                .then(|| Glob::new("node_name", text))
                .transpose()
        };
        match pattern.split('/').collect::<Vec<_>>().as_slice() {
            [""] => Err(FilterError::invalid(
                "node_name",
                pattern,
                "must not be empty",
            )),
            [node] => Ok(Self {
                cluster: None,
                node: part(node)?,
            }),
            [cluster, node] => Ok(Self {
                cluster: part(cluster)?,
                node: part(node)?,
            }),
            _ => Err(FilterError::invalid(
                "node_name",
                pattern,
                "expected [cluster/]node",
            )),
        }
    }

    fn matches(&self, node: &str) -> bool {
        !node.is_empty()
            && self
                .cluster
                .as_ref()
                .is_none_or(|c| c.matches(DEFAULT_CLUSTER))
            && self.node.as_ref().is_none_or(|n| n.matches(node))
    }
}

pub fn build(filter: &FlowFilter) -> Result<Vec<Check>, FilterError> {
    if filter.node_name.is_empty() {
        return Ok(Vec::new());
    }
    let wanted = filter
        .node_name
        .iter()
        .map(|pattern| NodePattern::parse(pattern))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(vec![Box::new(move |flow| {
        wanted
            .iter()
            .any(|pattern| pattern.matches(&flow.node_name))
    })])
}

#[cfg(test)]
mod tests {
    use super::super::test_flow::{Outcome, Values, passes};
    use super::*;

    #[test]
    fn rows() {
        let rows: [(Values, Outcome); 10] = [
            (&["node-a"], Ok(true)),
            (&["node-*"], Ok(true)),
            (&["*"], Ok(true)),
            (&["default/node-a"], Ok(true)),
            (&["default/"], Ok(true)),
            (&["other/node-a"], Ok(false)),
            (&["node-b"], Ok(false)),
            (&["node"], Ok(false)),
            (&[""], Err(())),
            (&["a/b/c"], Err(())),
        ];
        for (patterns, expected) in rows {
            let filter = FlowFilter {
                node_name: patterns.iter().map(|s| s.to_string()).collect(),
                ..FlowFilter::default()
            };
            assert_eq!(passes(&filter).map_err(drop), expected, "{patterns:?}");
        }
    }
}
