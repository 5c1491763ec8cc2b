//! `event_type`: Cilium's monitor message type (0: any), and its sub-type
//! when asked (`hubble observe --type policy-verdict` is type 5).

use super::{Check, FilterError};
use crate::hubble::proto::flow::FlowFilter;

pub fn build(filter: &FlowFilter) -> Result<Vec<Check>, FilterError> {
    if filter.event_type.is_empty() {
        return Ok(Vec::new());
    }
    let wanted = filter.event_type.clone();
    Ok(vec![Box::new(move |flow| {
        let Some(event) = &flow.event_type else {
            return false;
        };
        wanted.iter().any(|w| {
            (w.r#type == 0 || w.r#type == event.r#type)
                && (!w.match_sub_type || w.sub_type == event.sub_type)
        })
    })])
}

#[cfg(test)]
mod tests {
    use super::super::test_flow::passes;
    use super::*;
    use crate::hubble::proto::flow::EventTypeFilter;

    #[test]
    fn rows() {
        let event = |r#type, match_sub_type, sub_type| EventTypeFilter {
            r#type,
            match_sub_type,
            sub_type,
        };
        let rows = [
            (event(5, false, 0), true),
            (event(5, true, 0), true),
            (event(5, true, 1), false),
            (event(4, false, 0), false),
            (event(1, false, 0), false),
            (event(0, false, 0), true),
            (event(0, true, 3), false),
        ];
        for (wanted, passed) in rows {
            let filter = FlowFilter {
                event_type: vec![wanted],
                ..FlowFilter::default()
            };
            assert_eq!(passes(&filter), Ok(passed), "{wanted:?}");
        }
    }
}
