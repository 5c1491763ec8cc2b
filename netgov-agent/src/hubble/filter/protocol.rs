//! `protocol`: the L4 protocol, by Hubble's names (`tcp`, `udp`, `sctp`,
//! `icmpv4`, `icmpv6`; any case). L7 protocols are refused: netgov has no
//! L7 events, so such a filter could only ever match nothing.

use super::{Check, FilterError};
use crate::hubble::proto::flow::layer4::Protocol;
use crate::hubble::proto::flow::{Flow, FlowFilter};

#[derive(Clone, Copy, PartialEq, Eq)]
enum L4 {
    Tcp,
    Udp,
    Sctp,
    Icmpv4,
    Icmpv6,
}

fn of(flow: &Flow) -> Option<L4> {
    Some(match flow.l4.as_ref()?.protocol.as_ref()? {
        Protocol::Tcp(_) => L4::Tcp,
        Protocol::Udp(_) => L4::Udp,
        Protocol::Sctp(_) => L4::Sctp,
        Protocol::IcmPv4(_) => L4::Icmpv4,
        Protocol::IcmPv6(_) => L4::Icmpv6,
    })
}

pub fn build(filter: &FlowFilter) -> Result<Vec<Check>, FilterError> {
    if filter.protocol.is_empty() {
        return Ok(Vec::new());
    }
    let wanted = filter
        .protocol
        .iter()
        .map(|name| match name.to_ascii_lowercase().as_str() {
            "tcp" => Ok(L4::Tcp),
            "udp" => Ok(L4::Udp),
            "sctp" => Ok(L4::Sctp),
            "icmp" | "icmpv4" => Ok(L4::Icmpv4),
            "icmpv6" => Ok(L4::Icmpv6),
            "http" | "dns" | "kafka" => Err(FilterError::invalid(
                "protocol",
                name,
                "netgov judges L3/L4 flows and has no L7 events",
            )),
            _ => Err(FilterError::invalid(
                "protocol",
                name,
                "expected tcp, udp, sctp, icmpv4 or icmpv6",
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(vec![Box::new(move |flow| {
        of(flow).is_some_and(|l4| wanted.contains(&l4))
    })])
}

#[cfg(test)]
mod tests {
    use super::super::test_flow::passes;
    use super::*;

    #[test]
    fn rows() {
        let rows: [(&[&str], Result<bool, &str>); 5] = [
            (&["tcp"], Ok(true)),
            (&["TCP"], Ok(true)),
            (&["udp", "icmpv4"], Ok(false)),
            (
                &["http"],
                Err("netgov judges L3/L4 flows and has no L7 events"),
            ),
            (&["ipx"], Err("expected tcp, udp, sctp, icmpv4 or icmpv6")),
        ];
        for (names, expected) in rows {
            let filter = FlowFilter {
                protocol: names.iter().map(|s| s.to_string()).collect(),
                ..FlowFilter::default()
            };
            let got = passes(&filter).map_err(|e| match e {
                FilterError::Invalid { why, .. } => why,
                other => other.to_string(),
            });
            assert_eq!(got, expected.map_err(str::to_owned), "{names:?}");
        }
    }
}
