//! `source_port` and `destination_port`: TCP, UDP and SCTP ports, given
//! as decimal strings.

use super::{Check, End, FilterError, per_end};
use crate::hubble::proto::flow::layer4::Protocol;
use crate::hubble::proto::flow::{Flow, FlowFilter};

fn port(flow: &Flow, end: End) -> Option<u32> {
    let (source, destination) = match flow.l4.as_ref()?.protocol.as_ref()? {
        Protocol::Tcp(l4) => (l4.source_port, l4.destination_port),
        Protocol::Udp(l4) => (l4.source_port, l4.destination_port),
        Protocol::Sctp(l4) => (l4.source_port, l4.destination_port),
        Protocol::IcmPv4(_) | Protocol::IcmPv6(_) => return None,
    };
    Some(match end {
        End::Source => source,
        End::Destination => destination,
    })
}

pub fn build(filter: &FlowFilter) -> Result<Vec<Check>, FilterError> {
    per_end(
        (&filter.source_port, &filter.destination_port),
        |end, values| {
            let field = end.pick(("source_port", "destination_port"));
            let wanted = values
                .iter()
                .map(|value| {
                    value.parse::<u16>().map(u32::from).map_err(|_| {
                        FilterError::invalid(field, value, "expected a port, 0 to 65535")
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(
                Box::new(move |flow: &Flow| port(flow, end).is_some_and(|p| wanted.contains(&p)))
                    as Check,
            )
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
            (&[], &["80"], Ok(true)),
            (&[], &["443", "80"], Ok(true)),
            (&["40000"], &["80"], Ok(true)),
            (&["80"], &[], Ok(false)),
            (&[], &["8080"], Ok(false)),
            (&[], &["http"], Err(())),
        ];
        for (source, destination, expected) in rows {
            let filter = FlowFilter {
                source_port: source.iter().map(|s| s.to_string()).collect(),
                destination_port: destination.iter().map(|s| s.to_string()).collect(),
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
