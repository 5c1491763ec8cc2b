//! From a copied payload to names in the cache.

use std::net::IpAddr;

use netgov_common::PayloadKind;

use super::dns::{self, Answer, DnsError};
use super::sni::{self, SniError};
use super::{Client, NameCache, NameSource};
use crate::capture::Payload;
use crate::model::{Protocol, string_enum};

string_enum! {
    /// Why a payload named nothing (`netgov_name_errors_total{kind}`).
    pub enum NameError {
        /// It ends before what it says it holds.
        Truncated => "truncated",
        /// Not well-formed.
        Malformed => "malformed",
        /// A DNS query from port 53, not an answer.
        NotAnswer => "not_answer",
        /// A name that is not a hostname.
        BadName => "bad_name",
        /// A ClientHello without a server name.
        NoName => "no_name",
        /// Packets from port 53 into a pod that had sent nothing to their
        /// source and port: not read (counted by the datapath).
        Unsolicited => "unsolicited",
    }
}

string_enum! {
    /// What a DNS answer said (`netgov_dns_answers_total{outcome}`).
    pub enum DnsOutcome {
        /// At least one address.
        Addresses => "addresses",
        /// The name does not exist.
        NoSuchName => "nxdomain",
        /// No address (another type, no data, a server error).
        NoAddress => "no_address",
    }
}

/// What one payload gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LearnOutcome {
    /// A DNS answer, and how many addresses outside the cluster it named.
    Dns(DnsOutcome, usize),
    /// A ClientHello's server name; `true` when kept (its server is
    /// outside the cluster).
    ServerName(bool),
    /// Nothing usable, and why.
    Error(NameSource, NameError),
}

impl From<DnsError> for NameError {
    fn from(error: DnsError) -> Self {
        match error {
            DnsError::Truncated => Self::Truncated,
            DnsError::Malformed => Self::Malformed,
            DnsError::NotAnswer => Self::NotAnswer,
            DnsError::BadName => Self::BadName,
        }
    }
}

impl From<SniError> for NameError {
    fn from(error: SniError) -> Self {
        match error {
            SniError::Truncated => Self::Truncated,
            SniError::Malformed => Self::Malformed,
            SniError::NoName => Self::NoName,
            SniError::BadName => Self::BadName,
        }
    }
}

/// What the cluster state says of an address, as of a payload.
pub trait AddressBook {
    /// Whose names an address carries: its pod's, else its own.
    fn client(&self, ip: IpAddr) -> Client;
    /// Whether nothing in the cluster owns it: only such addresses are
    /// named (names of in-cluster addresses would only fill the cache).
    fn outside(&self, ip: IpAddr) -> bool;
}

impl NameCache {
    /// Learns what `payload` names, as of when the kernel saw it; says
    /// what each message in it gave. Nothing in a payload is trusted: a
    /// name is only recorded once the whole message parsed.
    pub fn learn(&self, payload: &Payload<'_>, book: &dyn AddressBook) -> Vec<LearnOutcome> {
        let now = payload.seen;
        match payload.kind {
            PayloadKind::DnsAnswer => {
                // An answer is the pod's: it is delivered to the pod.
                let pod = book.client(payload.dst.ip());
                let messages: Vec<&[u8]> = if payload.protocol == Protocol::Tcp {
                    dns::tcp_messages(payload.data).collect()
                } else {
                    vec![payload.data]
                };
                messages
                    .into_iter()
                    .map(|message| match dns::parse_answer(message) {
                        Ok(answer) => self.apply(&pod, answer, now, book),
                        Err(error) => LearnOutcome::Error(NameSource::Dns, error.into()),
                    })
                    .collect()
            }
            PayloadKind::TlsClientHello => vec![match sni::server_name(payload.data) {
                Ok(name) => {
                    let kept = book.outside(payload.dst.ip());
                    if kept {
                        self.server_name(payload.src, payload.dst, name, now);
                    }
                    LearnOutcome::ServerName(kept)
                }
                Err(error) => LearnOutcome::Error(NameSource::Sni, error.into()),
            }],
        }
    }

    fn apply(
        &self,
        pod: &Client,
        answer: Answer,
        now: i128,
        book: &dyn AddressBook,
    ) -> LearnOutcome {
        match answer {
            Answer::Addresses(addresses) => {
                let mut named = 0;
                for resolved in addresses.into_iter().filter(|r| book.outside(r.address)) {
                    named += 1;
                    for name in resolved.names {
                        self.resolved(pod.clone(), resolved.address, name, resolved.ttl, now);
                    }
                }
                LearnOutcome::Dns(DnsOutcome::Addresses, named)
            }
            Answer::NoSuchName => LearnOutcome::Dns(DnsOutcome::NoSuchName, 0),
            Answer::NoAddress => LearnOutcome::Dns(DnsOutcome::NoAddress, 0),
        }
    }
}
