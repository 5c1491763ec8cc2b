//! `traffic_direction` (the side that decided) and `reply` (netgov's
//! events are never replies: each describes its flow from the initiator).

use super::{Check, FilterError};
use crate::hubble::proto::flow::FlowFilter;

pub fn build(filter: &FlowFilter) -> Result<Vec<Check>, FilterError> {
    let mut checks: Vec<Check> = Vec::new();
    if !filter.traffic_direction.is_empty() {
        let wanted = filter.traffic_direction.clone();
        checks.push(Box::new(move |flow| {
            wanted.contains(&flow.traffic_direction)
        }));
    }
    if !filter.reply.is_empty() {
        let wanted = filter.reply.clone();
        checks.push(Box::new(move |flow| {
            flow.is_reply
                .is_some_and(|reply| wanted.contains(&reply.value))
        }));
    }
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::super::test_flow::passes;
    use super::*;
    use crate::hubble::proto::flow::TrafficDirection;

    #[test]
    fn rows() {
        let rows: [(&[TrafficDirection], &[bool], bool); 5] = [
            (&[TrafficDirection::Ingress], &[], true),
            (&[TrafficDirection::Egress], &[], false),
            (
                &[TrafficDirection::Egress, TrafficDirection::Ingress],
                &[],
                true,
            ),
            (&[], &[false], true),
            (&[], &[true], false),
        ];
        for (directions, reply, passed) in rows {
            let filter = FlowFilter {
                traffic_direction: directions.iter().map(|d| *d as i32).collect(),
                reply: reply.to_vec(),
                ..FlowFilter::default()
            };
            assert_eq!(passes(&filter), Ok(passed), "{directions:?} {reply:?}");
        }
    }
}
