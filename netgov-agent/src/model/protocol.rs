//! The one protocol type: what the capture sees, what a flow query asks,
//! what a NetworkPolicy port names and what a metric label says.

use std::fmt;

use netgov_common::proto;
use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IP protocol of a flow, a policy port or a Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (the default of policy and Service ports).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
    /// ICMP (IPv4).
    Icmp,
    /// ICMPv6.
    Icmpv6,
    /// Any other IP protocol number (the datapath does not aggregate these
    /// today; kept so a future one is never mislabelled).
    Other(u8),
}

impl Protocol {
    /// The protocol for an IP protocol number.
    pub fn from_number(number: u8) -> Self {
        match number {
            proto::TCP => Self::Tcp,
            proto::UDP => Self::Udp,
            proto::SCTP => Self::Sctp,
            proto::ICMP => Self::Icmp,
            proto::ICMPV6 => Self::Icmpv6,
            other => Self::Other(other),
        }
    }

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => proto::TCP,
            Self::Udp => proto::UDP,
            Self::Sctp => proto::SCTP,
            Self::Icmp => proto::ICMP,
            Self::Icmpv6 => proto::ICMPV6,
            Self::Other(number) => number,
        }
    }

    /// Parses a user's spelling: `TCP`, `UDP`, `SCTP`, `ICMP`, `ICMPv6`,
    /// in any case.
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_uppercase().as_str() {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "SCTP" => Some(Self::Sctp),
            "ICMP" => Some(Self::Icmp),
            "ICMPV6" => Some(Self::Icmpv6),
            _ => None,
        }
    }

    /// Parses the Kubernetes spelling of a port protocol (`TCP`, `UDP`,
    /// `SCTP`, exact case, as the API server validates it).
    pub fn parse_port_protocol(text: &str) -> Option<Self> {
        match text {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "SCTP" => Some(Self::Sctp),
            _ => None,
        }
    }

    /// Whether the protocol has ports: only these can be named by policy
    /// and Service ports.
    pub fn has_ports(self) -> bool {
        matches!(self, Self::Tcp | Self::Udp | Self::Sctp)
    }

    /// The name used in output and labels (`IP-<number>` for
    /// [`Protocol::Other`]).
    pub fn name(self) -> std::borrow::Cow<'static, str> {
        match self {
            Self::Tcp => "TCP".into(),
            Self::Udp => "UDP".into(),
            Self::Sctp => "SCTP".into(),
            Self::Icmp => "ICMP".into(),
            Self::Icmpv6 => "ICMPv6".into(),
            Self::Other(number) => format!("IP-{number}").into(),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name())
    }
}

/// A text that is none of [`Protocol::name`]'s spellings.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not one of TCP, UDP, SCTP, ICMP, ICMPv6, IP-<number>")]
pub struct UnknownProtocol(pub String);

impl std::str::FromStr for Protocol {
    type Err = UnknownProtocol;

    /// [`Protocol::name`]'s spellings, in any case: also `IP-<number>`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let other = || {
            let number = text.strip_prefix("IP-")?.parse().ok()?;
            Some(Self::from_number(number))
        };
        Self::parse(text)
            .or_else(other)
            .ok_or_else(|| UnknownProtocol(text.to_owned()))
    }
}

impl<'de> Deserialize<'de> for Protocol {
    /// As [`std::str::FromStr`].
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        super::deserialize_parsed(deserializer)
    }
}

impl EncodeLabelValue for Protocol {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        fmt::Write::write_str(encoder, &self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for protocol in [
            Protocol::Tcp,
            Protocol::Udp,
            Protocol::Sctp,
            Protocol::Icmp,
            Protocol::Icmpv6,
        ] {
            assert_eq!(Protocol::parse(&protocol.to_string()), Some(protocol));
        }
        assert_eq!(Protocol::from_number(47), Protocol::Other(47));
        assert_eq!(Protocol::Other(47).to_string(), "IP-47");
        assert_eq!(Protocol::parse_port_protocol("tcp"), None);
        assert_eq!(Protocol::parse_port_protocol("ICMP"), None);
        assert_eq!(Protocol::parse("icmpv6"), Some(Protocol::Icmpv6));
    }
}
