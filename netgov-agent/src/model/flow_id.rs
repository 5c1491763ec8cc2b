//! The one identity of a flow, for the capture, the ledger and every
//! reader of the flow log.

use std::net::IpAddr;

use super::Protocol;

/// An end of a flow: an address and a port (ICMP: the echo identifier, or
/// 0).
pub type Endpoint = (IpAddr, u16);

/// A flow's identity: its two ends in canonical order (the smaller
/// `(address, port)` first, as the kernel orders a flow's key) and its
/// protocol.
///
/// Neither the orientation nor the first packet's time is part of it: both
/// can change while a flow lives (a view observed earlier is merged later),
/// and the flow would be counted twice. A flow through a node that
/// masqueraded its initiator is known by the translated end (what the
/// backend saw) from its first record on, before the initiator's view
/// joins: see `FlowRecord::flow_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId {
    a: Endpoint,
    b: Endpoint,
    protocol: Protocol,
}

impl FlowId {
    /// The flow between `x` and `y`, in either order.
    pub fn new(x: Endpoint, y: Endpoint, protocol: Protocol) -> Self {
        let (a, b) = if x <= y { (x, y) } else { (y, x) };
        Self { a, b, protocol }
    }

    /// The flow an initiator opened to a responder: the initiator by the
    /// end the responder saw (`translated`, when a node masqueraded it,
    /// which is all a flow's first records know).
    pub fn opened(
        initiator: Endpoint,
        translated: Option<std::net::SocketAddr>,
        responder: Endpoint,
        protocol: Protocol,
    ) -> Self {
        let seen = translated.map_or(initiator, |end| (end.ip(), end.port()));
        Self::new(seen, responder, protocol)
    }

    /// The smaller end.
    pub fn a(&self) -> Endpoint {
        self.a
    }

    /// The larger end.
    pub fn b(&self) -> Endpoint {
        self.b
    }

    /// The protocol.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }
}

impl Default for FlowId {
    fn default() -> Self {
        let nowhere = (IpAddr::from([0, 0, 0, 0]), 0);
        Self::new(nowhere, nowhere, Protocol::from_number(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn either_order_is_one_flow() {
        let client = ("10.0.0.1".parse().expect("ip"), 40000);
        let server = ("10.0.0.2".parse().expect("ip"), 80);
        let id = FlowId::new(client, server, Protocol::Tcp);
        assert_eq!(id, FlowId::new(server, client, Protocol::Tcp));
        assert_eq!((id.a(), id.b()), (client, server));
        assert_ne!(id, FlowId::new(client, server, Protocol::Udp));
    }
}
