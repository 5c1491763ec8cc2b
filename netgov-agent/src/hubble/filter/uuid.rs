//! `uuid`: the event's identifier, exactly.

use super::{Check, FilterError};
use crate::hubble::proto::flow::FlowFilter;

pub fn build(filter: &FlowFilter) -> Result<Vec<Check>, FilterError> {
    if filter.uuid.is_empty() {
        return Ok(Vec::new());
    }
    let wanted = filter.uuid.clone();
    Ok(vec![Box::new(move |flow| wanted.contains(&flow.uuid))])
}

#[cfg(test)]
mod tests {
    use super::super::test_flow::passes;
    use super::*;

    #[test]
    fn rows() {
        let rows = [
            (vec!["7c1f0b8e-0000-4000-8000-000000000001"], true),
            (vec!["other", "7c1f0b8e-0000-4000-8000-000000000001"], true),
            (vec!["7c1f0b8e"], false),
        ];
        for (uuid, passed) in rows {
            let filter = FlowFilter {
                uuid: uuid.iter().map(|s| s.to_string()).collect(),
                ..FlowFilter::default()
            };
            assert_eq!(passes(&filter), Ok(passed), "{uuid:?}");
        }
    }
}
