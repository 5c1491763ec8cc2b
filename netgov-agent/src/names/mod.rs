//! Names for egress destinations, learned from traffic alone: the DNS
//! answers delivered into each pod (which addresses the names it looked up
//! resolved to) and the server name of each TLS ClientHello a pod sends.
//!
//! The datapath copies both into the payload ring
//! (`capture::payload::Payload`); the capture's sink hands them to
//! [`NameCache::learn`] as soon as they are read — before the drain that
//! reports the flows they name. The judge stage asks [`NameCache::names`]
//! for a flow's destination names as of its first packet.
//!
//! A name is attributed to the pod that resolved it, never to its
//! neighbours: the cache is keyed by the pod (by its address only when the
//! cluster state does not know it). Limits (also in
//! docs/agent.md, "Names for egress"): DNS over HTTPS or TLS and encrypted ClientHellos are not seen;
//! answers cached before the agent started, or by the application past
//! the TTL floor, name nothing; a ClientHello whose server name lies past
//! the first segment is counted truncated.

use std::sync::Arc;

use serde::{Serialize, Serializer};

use crate::model::string_enum;

mod cache;
pub mod dns;
pub mod domain;
mod learn;
pub mod sni;

pub use cache::{Client, NameCache, NameLimits};
pub use domain::DomainPattern;
pub use learn::{AddressBook, DnsOutcome, LearnOutcome, NameError};

string_enum! {
    /// How a destination's name was learned.
    pub enum NameSource {
        /// A DNS answer the source pod received.
        Dns => "dns",
        /// The server name of the source pod's TLS ClientHello.
        Sni => "sni",
    }
}

/// A DNS name as hosts spell it: lowercase ASCII letters, digits, `-` and
/// `_`, in non-empty dot-separated labels of at most 63 bytes, 253 in all,
/// without the trailing dot. Shared, as one name names many flows.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hostname(Arc<str>);

impl Hostname {
    /// `text` as a hostname (case folded, one trailing dot dropped);
    /// `None` when it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.strip_suffix('.').unwrap_or(text);
        let valid = !text.is_empty()
            && text.len() <= 253
            && text.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        valid.then(|| Self(text.to_ascii_lowercase().into()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Hostname {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Hostname {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// A name of a flow's destination, and how it was learned.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct DestinationName {
    /// The name.
    pub name: Hostname,
    /// Where it came from.
    pub learned: NameSource,
}

/// The name a destination is shown by in metrics: the first a DNS answer
/// gave (the name the application asked for), else the server name.
pub fn preferred(names: &[DestinationName]) -> Option<&Hostname> {
    names
        .iter()
        .find(|n| n.learned == NameSource::Dns)
        .or_else(|| names.first())
        .map(|n| &n.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_are_folded_and_checked() {
        let parse = |text: &str| Hostname::parse(text).map(|h| h.as_str().to_owned());
        assert_eq!(
            parse("Models.Mirror.Example."),
            Some("models.mirror.example".into())
        );
        assert_eq!(
            parse("_dmarc.x-y.example"),
            Some("_dmarc.x-y.example".into())
        );
        assert_eq!(parse("a..example"), None);
        assert_eq!(parse(""), None);
        assert_eq!(parse("."), None);
        assert_eq!(parse("evil\u{0}.example"), None);
        assert_eq!(parse("sp ace.example"), None);
        assert_eq!(parse(&"a".repeat(64)), None);
        assert_eq!(parse(&["a"; 128].join(".")), None);
    }

    #[test]
    fn the_dns_name_is_preferred_over_the_server_name() {
        let name = |text: &str, learned| DestinationName {
            name: Hostname::parse(text).expect("hostname"),
            learned,
        };
        let names = [
            name("cdn.example", NameSource::Sni),
            name("api.example", NameSource::Dns),
        ];
        assert_eq!(preferred(&names).map(Hostname::as_str), Some("api.example"));
        assert_eq!(
            preferred(&names[..1]).map(Hostname::as_str),
            Some("cdn.example")
        );
        assert_eq!(preferred(&[]), None);
    }
}
