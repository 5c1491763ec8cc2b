//! `protocol`: the L4 protocol, by Hubble's names (`tcp`, `udp`, `sctp`,
//! `icmp` for either ICMP, `icmpv4`, `icmpv6`; any case). `vrrp` and
//! `igmp` are Hubble's too and match nothing here (netgov judges neither).
//! L7 protocols are refused: netgov has no L7 events.

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

/// What a protocol name asks for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wanted {
    One(L4),
    AnyIcmp,
    /// A protocol netgov never judges.
    Never,
}

impl Wanted {
    fn matches(self, l4: L4) -> bool {
        match self {
            Self::One(wanted) => wanted == l4,
            Self::AnyIcmp => matches!(l4, L4::Icmpv4 | L4::Icmpv6),
            Self::Never => false,
        }
    }
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
            "tcp" => Ok(Wanted::One(L4::Tcp)),
            "udp" => Ok(Wanted::One(L4::Udp)),
            "sctp" => Ok(Wanted::One(L4::Sctp)),
            "icmp" => Ok(Wanted::AnyIcmp),
            "icmpv4" => Ok(Wanted::One(L4::Icmpv4)),
            "icmpv6" => Ok(Wanted::One(L4::Icmpv6)),
            "vrrp" | "igmp" => Ok(Wanted::Never),
            "http" | "dns" | "kafka" => Err(FilterError::invalid(
                "protocol",
                name,
                "netgov judges L3/L4 flows and has no L7 events",
            )),
            _ => Err(FilterError::invalid(
                "protocol",
                name,
                "expected tcp, udp, sctp, icmp, icmpv4, icmpv6, vrrp or igmp",
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(vec![Box::new(move |flow| {
        of(flow).is_some_and(|l4| wanted.iter().any(|w| w.matches(l4)))
    })])
}

#[cfg(test)]
mod tests {
    use super::super::test_flow::passes;
    use super::*;

    #[test]
    fn rows() {
        let rows: [(&[&str], Result<bool, &str>); 7] = [
            (&["tcp"], Ok(true)),
            (&["TCP"], Ok(true)),
            (&["udp", "icmpv4"], Ok(false)),
            (&["icmp", "vrrp"], Ok(false)),
            (&["igmp", "tcp"], Ok(true)),
            (
                &["http"],
                Err("netgov judges L3/L4 flows and has no L7 events"),
            ),
            (
                &["ipx"],
                Err("expected tcp, udp, sctp, icmp, icmpv4, icmpv6, vrrp or igmp"),
            ),
        ];
        for (names, expected) in rows {
            let filter = FlowFilter {
                protocol: names.iter().map(|s| s.to_string()).collect(),
                ..FlowFilter::default()
            };
            let got = passes(&filter).map_err(|e| match e {
                FilterError::Invalid { why, .. } => why.to_owned(),
                other => other.to_string(),
            });
            assert_eq!(got, expected.map_err(str::to_owned), "{names:?}");
        }
    }
}
