//! `destination_fqdn`: the names netgov learned for the destination (from
//! the source pod's DNS answers and ClientHellos), matched by pattern:
//! `*` stands for any run of name characters (`*.example.com`), in any
//! case, with or without the final dot.

use super::{Check, FilterError};
use crate::hubble::proto::flow::FlowFilter;

/// A case-insensitive pattern where `*` matches any run of characters.
#[derive(Clone, Debug)]
pub struct Glob {
    parts: Vec<String>,
}

impl Glob {
    /// A pattern of `field`.
    ///
    /// # Errors
    /// An empty pattern.
    pub fn new(field: &'static str, pattern: &str) -> Result<Self, FilterError> {
        let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
        if pattern.is_empty() {
            return Err(FilterError::invalid(field, pattern, "must not be empty"));
        }
        Ok(Self {
            parts: pattern.split('*').map(str::to_owned).collect(),
        })
    }

    /// Whether `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        let text = text.trim_end_matches('.').to_ascii_lowercase();
        let (first, rest) = self.parts.split_first().expect("split yields a part");
        let Some(mut remaining) = text.strip_prefix(first.as_str()) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return remaining.is_empty();
        };
        for part in middle {
            match remaining.find(part.as_str()) {
                Some(at) => remaining = &remaining[at + part.len()..],
                None => return false,
            }
        }
        remaining.ends_with(last.as_str())
    }
}

pub fn build(filter: &FlowFilter) -> Result<Vec<Check>, FilterError> {
    if filter.destination_fqdn.is_empty() {
        return Ok(Vec::new());
    }
    let wanted = filter
        .destination_fqdn
        .iter()
        .map(|p| Glob::new("destination_fqdn", p))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(vec![Box::new(move |flow| {
        flow.destination_names
            .iter()
            .any(|name| wanted.iter().any(|glob| glob.matches(name)))
    })])
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
}
