//! Traffic that is not what NetworkPolicy governs, so never a flow to
//! judge: ICMP error messages (they belong to the flow they report),
//! IPv6 neighbour discovery and multicast listener messages, and traffic
//! to or from link-local, multicast or unspecified addresses. Judging
//! these made false violations and "unexpected egress" to `fe80::/64`.
//! They are counted (`netgov_flows_not_judged_total{reason}`), once per
//! flow, when first seen.

use std::net::IpAddr;

use crate::capture::record::FlowRecord;
use crate::model::{Protocol, string_enum};

string_enum! {
    /// Why a flow is not judged.
    pub enum NotJudged {
        /// An IP protocol the datapath does not aggregate.
        OtherProtocol => "other_protocol",
        /// An ICMP or ICMPv6 error (destination unreachable, packet too
        /// big, time exceeded, parameter problem) or redirect.
        IcmpError => "icmp_error",
        /// IPv6 neighbour discovery (router and neighbour solicitation and
        /// advertisement, redirect) or multicast listener messages.
        NeighbourDiscovery => "neighbour_discovery",
        /// An end is link-local, multicast, broadcast or unspecified.
        LinkLocalOrMulticast => "link_local_or_multicast",
        /// The initiator is a pod on another node: that node's agent
        /// counts the flow (see `judge::ownership`).
        CountedBySourceNode => "counted_by_source_node",
    }
}

/// Why `record` is not policy traffic, if it is not.
pub fn not_judged(record: &FlowRecord) -> Option<NotJudged> {
    if matches!(record.protocol, Protocol::Other(_)) {
        return Some(NotJudged::OtherProtocol);
    }
    if [record.src, record.dst]
        .into_iter()
        .any(not_a_policy_address)
    {
        return Some(NotJudged::LinkLocalOrMulticast);
    }
    // ICMP messages other than echo are recorded with the sender's port 0
    // and the receiver's port `type << 8 | code`.
    let icmp_type = (record.src_port == 0).then_some(record.dst_port >> 8);
    match (record.protocol, icmp_type) {
        (Protocol::Icmp, Some(3 | 4 | 5 | 11 | 12)) => Some(NotJudged::IcmpError),
        (Protocol::Icmpv6, Some(1..=4)) => Some(NotJudged::IcmpError),
        (Protocol::Icmpv6, Some(130..=137 | 143)) => Some(NotJudged::NeighbourDiscovery),
        _ => None,
    }
}

fn not_a_policy_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_link_local() || v4.is_multicast() || v4.is_broadcast() || v4.is_unspecified()
        }
        IpAddr::V6(v6) => v6.is_unicast_link_local() || v6.is_multicast() || v6.is_unspecified(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::test_support::judged;
    use crate::model::Identity;

    fn record(src: &str, dst: &str, protocol: Protocol, ports: (u16, u16)) -> FlowRecord {
        let (mut record, _) = judged(Identity::world(), Identity::world());
        record.src = src.parse().expect("ip");
        record.dst = dst.parse().expect("ip");
        record.protocol = protocol;
        (record.src_port, record.dst_port) = ports;
        record
    }

    #[test]
    fn only_policy_traffic_is_judged() {
        use NotJudged::*;
        use Protocol::*;
        let rows = [
            (
                "TCP between pods",
                record("10.244.0.2", "10.244.0.3", Tcp, (40000, 80)),
                None,
            ),
            (
                "ICMP echo",
                record("10.244.0.2", "10.244.0.3", Icmp, (7, 0)),
                None,
            ),
            (
                "ICMPv6 echo",
                record("fd00::2", "fd00::3", Icmpv6, (7, 0)),
                None,
            ),
            (
                "port unreachable",
                record("10.244.0.3", "10.244.0.2", Icmp, (0, 3 << 8 | 3)),
                Some(IcmpError),
            ),
            (
                "time exceeded",
                record("10.244.0.1", "10.244.0.2", Icmp, (0, 11 << 8)),
                Some(IcmpError),
            ),
            (
                "packet too big",
                record("fd00::1", "fd00::2", Icmpv6, (0, 2 << 8)),
                Some(IcmpError),
            ),
            (
                "neighbour solicitation",
                record("fd00::2", "fd00::3", Icmpv6, (0, 135 << 8)),
                Some(NeighbourDiscovery),
            ),
            (
                "router solicitation to all routers",
                record("fe80::1", "ff02::2", Icmpv6, (0, 133 << 8)),
                Some(LinkLocalOrMulticast),
            ),
            (
                "MLD report",
                record("fd00::2", "fd00::3", Icmpv6, (0, 143 << 8)),
                Some(NeighbourDiscovery),
            ),
            (
                "link-local UDP",
                record("169.254.1.1", "10.244.0.2", Udp, (1, 2)),
                Some(LinkLocalOrMulticast),
            ),
            (
                "multicast UDP",
                record("10.244.0.2", "239.1.1.1", Udp, (1, 2)),
                Some(LinkLocalOrMulticast),
            ),
            (
                "another IP protocol",
                record("10.244.0.2", "10.244.0.3", Other(47), (0, 0)),
                Some(OtherProtocol),
            ),
        ];
        for (name, record, expected) in rows {
            assert_eq!(not_judged(&record), expected, "{name}");
        }
    }
}
