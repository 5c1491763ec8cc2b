//! One simulated node: its namespace, and pods attached either to a
//! bridge or by host routes.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{Netns, TestbedError};

/// How a node connects its pods, as the two families of CNIs do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeStyle {
    /// Every pod's host-side veth on a Linux bridge that carries the
    /// pods' gateway address (flannel, kindnet, the bridge plugin).
    Bridged,
    /// No bridge: each pod has a /32 (/128) address, a host route points
    /// at its host-side veth, and the veth answers ARP for the gateway
    /// (Calico's proxy ARP; for IPv6 a link-local gateway on the veth).
    Routed,
}

/// A simulated pod: a namespace with `eth0` attached to its node.
#[derive(Debug)]
pub struct Pod {
    /// Pod name (for people).
    pub name: String,
    /// The pod's namespace.
    pub netns: Netns,
    /// IPv4 address of `eth0`.
    pub ipv4: Ipv4Addr,
    /// IPv6 address of `eth0`.
    pub ipv6: Ipv6Addr,
    /// Name of the host-side interface in the node namespace.
    pub host_interface: String,
}

/// A node namespace and the pods attached to it.
#[derive(Debug)]
pub struct Testbed {
    prefix: String,
    number: u8,
    style: NodeStyle,
    pods: Vec<Pod>,
    // Dropped last: the node namespace holds the bridge and the host-side
    // interfaces.
    node: Netns,
}

/// Node 0's pod gateway (its bridge's address).
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
/// Node 0's IPv6 pod gateway.
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x244, 0, 0, 0, 0, 0, 1);

/// The gateway routed pods use: link-local, answered by proxy ARP.
const ROUTED_GATEWAY_V4: &str = "169.254.1.1";
/// The link-local address of every routed pod's host-side veth.
const ROUTED_GATEWAY_V6: &str = "fe80::1";

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

impl Testbed {
    /// A unique namespace prefix for this process: `tag` plus pid and a
    /// counter, so parallel tests never share namespaces.
    pub fn unique_prefix(tag: &str) -> String {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        format!("ng{tag}{}-{id}", std::process::id())
    }

    /// Node 0, bridged: namespace `<prefix>-node` with bridge `br0`
    /// (10.244.0.1/24, fd00:244::1/64) and IP forwarding on.
    ///
    /// # Errors
    /// When a namespace or interface cannot be created (needs root).
    pub fn new(prefix: &str) -> Result<Self, TestbedError> {
        Self::node_numbered(prefix, 0, NodeStyle::Bridged)
    }

    /// Node `number` in `style`: namespace `<prefix>-node`, pods in
    /// 10.244.`number`.0/24 and fd00:244:`number`::/64, forwarding on.
    ///
    /// # Errors
    /// When a namespace or interface cannot be created (needs root).
    pub fn node_numbered(prefix: &str, number: u8, style: NodeStyle) -> Result<Self, TestbedError> {
        let node = Netns::create(&format!("{prefix}-node"))?;
        node.sysctl("net.ipv4.ip_forward", "1")?;
        node.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        node.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        node.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        let testbed = Self {
            prefix: prefix.to_owned(),
            number,
            style,
            pods: Vec::new(),
            node,
        };
        if style == NodeStyle::Routed {
            // The pods' gateway is answered by the node itself (ARP for a
            // local address on any interface), as Calico's proxy ARP does.
            testbed.node.ip(&[
                "addr",
                "add",
                &format!("{ROUTED_GATEWAY_V4}/32"),
                "dev",
                "lo",
            ])?;
        }
        if style == NodeStyle::Bridged {
            let node = &testbed.node;
            node.ip(&["link", "add", "br0", "type", "bridge"])?;
            let (v4, v6) = (testbed.gateway_v4(), testbed.gateway_v6());
            node.ip(&["addr", "add", &format!("{v4}/24"), "dev", "br0"])?;
            node.ip(&["addr", "add", &format!("{v6}/64"), "dev", "br0", "nodad"])?;
            node.ip(&["link", "set", "br0", "up"])?;
        }
        Ok(testbed)
    }

    /// The node namespace (run `netgov` here).
    pub fn node(&self) -> &Netns {
        &self.node
    }

    /// This node's number (the third octet of its pod range).
    pub fn number(&self) -> u8 {
        self.number
    }

    /// The node's pod range, IPv4 and IPv6.
    pub fn pod_cidrs(&self) -> (String, String) {
        let n = self.number;
        (format!("10.244.{n}.0/24"), format!("fd00:244:{n:x}::/64"))
    }

    /// The bridged pods' IPv4 gateway.
    pub fn gateway_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, self.number, 1)
    }

    /// The bridged pods' IPv6 gateway.
    pub fn gateway_v6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x244, self.number.into(), 0, 0, 0, 0, 1)
    }

    /// The pods, in creation order.
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// Adds a pod: namespace `<prefix>-<i>`, veth `vethp<i>` (node side)
    /// ↔ `eth0` (pod side) with 10.244.`n`.<i+10> and
    /// fd00:244:`n`::<i+10>, default routes via the node.
    ///
    /// # Errors
    /// When an interface cannot be created, or the testbed is full.
    pub fn add_pod(&mut self, name: &str) -> Result<&Pod, TestbedError> {
        let index = self.pods.len() as u16 + 1;
        if index > 240 {
            return Err(TestbedError::Full);
        }
        let host = index + 10;
        let netns = Netns::create(&format!("{}-{index}", self.prefix))?;
        let host_interface = format!("vethp{index}");
        self.node.ip(&[
            "link",
            "add",
            &host_interface,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            netns.name(),
        ])?;
        let ipv4 = Ipv4Addr::new(10, 244, self.number, host as u8);
        let ipv6 = Ipv6Addr::new(0xfd00, 0x244, self.number.into(), 0, 0, 0, 0, host);
        netns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        netns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        match self.style {
            NodeStyle::Bridged => self.attach_bridged(&netns, &host_interface, ipv4, ipv6)?,
            NodeStyle::Routed => self.attach_routed(&netns, &host_interface, ipv4, ipv6)?,
        }
        self.pods.push(Pod {
            name: name.to_owned(),
            netns,
            ipv4,
            ipv6,
            host_interface,
        });
        Ok(self.pods.last().expect("just pushed"))
    }

    fn attach_bridged(
        &self,
        pod: &Netns,
        host_interface: &str,
        ipv4: Ipv4Addr,
        ipv6: Ipv6Addr,
    ) -> Result<(), TestbedError> {
        self.node
            .ip(&["link", "set", host_interface, "master", "br0", "up"])?;
        pod.ip(&["addr", "add", &format!("{ipv4}/24"), "dev", "eth0"])?;
        pod.ip(&["addr", "add", &format!("{ipv6}/64"), "dev", "eth0", "nodad"])?;
        pod.ip(&["link", "set", "eth0", "up"])?;
        default_routes(
            pod,
            &self.gateway_v4().to_string(),
            &self.gateway_v6().to_string(),
        )
    }

    fn attach_routed(
        &self,
        pod: &Netns,
        host_interface: &str,
        ipv4: Ipv4Addr,
        ipv6: Ipv6Addr,
    ) -> Result<(), TestbedError> {
        let node = &self.node;
        node.sysctl(&format!("net.ipv4.conf.{host_interface}.proxy_arp"), "1")?;
        node.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{ROUTED_GATEWAY_V6}/64"),
            "dev",
            host_interface,
            "nodad",
        ])?;
        node.ip(&["link", "set", host_interface, "up"])?;
        node.ip(&["route", "add", &format!("{ipv4}/32"), "dev", host_interface])?;
        node.ip(&[
            "-6",
            "route",
            "add",
            &format!("{ipv6}/128"),
            "dev",
            host_interface,
        ])?;
        pod.ip(&["addr", "add", &format!("{ipv4}/32"), "dev", "eth0"])?;
        pod.ip(&[
            "addr",
            "add",
            &format!("{ipv6}/128"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        pod.ip(&["link", "set", "eth0", "up"])?;
        pod.ip(&[
            "route",
            "add",
            ROUTED_GATEWAY_V4,
            "dev",
            "eth0",
            "scope",
            "link",
        ])?;
        default_routes(pod, ROUTED_GATEWAY_V4, ROUTED_GATEWAY_V6)
    }
}

/// Default routes of a pod's `eth0` through the IPv4 and IPv6 gateways.
fn default_routes(pod: &Netns, via_v4: &str, via_v6: &str) -> Result<(), TestbedError> {
    pod.ip(&["route", "add", "default", "via", via_v4, "dev", "eth0"])?;
    pod.ip(&[
        "-6", "route", "add", "default", "via", via_v6, "dev", "eth0",
    ])?;
    Ok(())
}
