//! The network between simulated nodes: a veth pair `uplink` between two
//! node namespaces, with routes to each other's pod ranges (what a routed
//! CNI's BGP or a cloud route table sets up).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::{Testbed, TestbedError};

/// Two nodes joined; the interfaces go with the node namespaces.
#[derive(Debug)]
pub struct Underlay {
    /// The first node's address on the underlay (its InternalIP).
    pub first_v4: Ipv4Addr,
    /// The second node's address on the underlay.
    pub second_v4: Ipv4Addr,
}

impl Underlay {
    /// Joins two nodes: `uplink` in each node namespace, 192.168.250.1/30
    /// and .2/30 (fd00:250::1/64 and ::2/64), and a route on each to the
    /// other's pod ranges.
    ///
    /// # Errors
    /// When an interface or route cannot be created.
    pub fn join(first: &Testbed, second: &Testbed) -> Result<Self, TestbedError> {
        let (a, b) = (first.node(), second.node());
        a.ip(&[
            "link",
            "add",
            "uplink",
            "type",
            "veth",
            "peer",
            "name",
            "uplink",
            "netns",
            b.name(),
        ])?;
        let ends = [
            (
                first,
                second,
                "192.168.250.1",
                "fd00:250::1",
                "192.168.250.2",
                "fd00:250::2",
            ),
            (
                second,
                first,
                "192.168.250.2",
                "fd00:250::2",
                "192.168.250.1",
                "fd00:250::1",
            ),
        ];
        for (node, peer, v4, v6, peer_v4, peer_v6) in ends {
            let netns = node.node();
            netns.ip(&["addr", "add", &format!("{v4}/30"), "dev", "uplink"])?;
            netns.ip(&["addr", "add", &format!("{v6}/64"), "dev", "uplink", "nodad"])?;
            netns.ip(&["link", "set", "uplink", "up"])?;
            let (peer_pods_v4, peer_pods_v6) = peer.pod_cidrs();
            netns.ip(&["route", "add", &peer_pods_v4, "via", peer_v4])?;
            netns.ip(&["-6", "route", "add", &peer_pods_v6, "via", peer_v6])?;
        }
        Ok(Self {
            first_v4: Ipv4Addr::new(192, 168, 250, 1),
            second_v4: Ipv4Addr::new(192, 168, 250, 2),
        })
    }

    /// The first node's IPv6 underlay address.
    pub fn first_v6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x250, 0, 0, 0, 0, 0, 1)
    }
}
