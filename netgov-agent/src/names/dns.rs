//! DNS answers: which addresses a name resolved to, through its CNAME
//! chain, for how long.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use simple_dns::rdata::RData;
use simple_dns::{PacketFlag, RCODE, SimpleDnsError};

use super::Hostname;

/// What an answer said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Addresses, each with every name of the chain that led to it (the
    /// question first).
    Addresses(Vec<Resolved>),
    /// The name does not exist (NXDOMAIN).
    NoSuchName,
    /// No address for the question: another record type, no data, or a
    /// server error.
    NoAddress,
}

/// One address of an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The address.
    pub address: IpAddr,
    /// The question, then each CNAME target on the way to the address.
    pub names: Vec<Hostname>,
    /// The shortest TTL on the way.
    pub ttl: Duration,
}

/// Why an answer was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The message ends before its records do (the kernel copies 2 KiB of a
    /// datagram; a TCP message may span segments).
    #[error("truncated DNS message")]
    Truncated,
    /// Not a well-formed DNS message.
    #[error("malformed DNS message")]
    Malformed,
    /// A query, not an answer (a resolver on port 53 asking upstream).
    #[error("a DNS query, not an answer")]
    NotAnswer,
    /// A name that is not a hostname (bytes outside letters, digits, `-`,
    /// `_`), or no question.
    #[error("DNS name that is not a hostname")]
    BadName,
}

/// Longest CNAME chain followed: resolvers stop earlier; a longer one is a
/// loop or an attack.
const MAX_CHAIN: usize = 16;

/// Reads one DNS message (UDP payload, or one TCP message without its
/// length prefix).
///
/// # Errors
/// [`DnsError`] when it is not a usable answer.
pub fn parse_answer(message: &[u8]) -> Result<Answer, DnsError> {
    let packet = simple_dns::Packet::parse(message).map_err(|error| match error {
        SimpleDnsError::InsufficientData => DnsError::Truncated,
        _ => DnsError::Malformed,
    })?;
    if !packet.has_flags(PacketFlag::RESPONSE) {
        return Err(DnsError::NotAnswer);
    }
    let question = packet.questions.first().ok_or(DnsError::BadName)?;
    let question = Hostname::parse(&question.qname.to_string()).ok_or(DnsError::BadName)?;
    match packet.rcode() {
        RCODE::NameError => return Ok(Answer::NoSuchName),
        RCODE::NoError => {}
        _ => return Ok(Answer::NoAddress),
    }
    // Follow the chain from the question: only records on it are used, so
    // an answer cannot name addresses for a question nobody asked.
    let mut chain = vec![question];
    let mut ttl = u32::MAX;
    let mut addresses = Vec::new();
    for _ in 0..MAX_CHAIN {
        let Some(current) = chain.last().cloned() else {
            break;
        };
        let mut next = None;
        for record in &packet.answers {
            let Some(owner) = Hostname::parse(&record.name.to_string()) else {
                continue;
            };
            if owner != current {
                continue;
            }
            match &record.rdata {
                RData::A(a) => addresses.push((IpAddr::V4(Ipv4Addr::from(a.address)), record.ttl)),
                RData::AAAA(aaaa) => {
                    addresses.push((IpAddr::V6(Ipv6Addr::from(aaaa.address)), record.ttl));
                }
                RData::CNAME(target) if next.is_none() => {
                    next = Some((Hostname::parse(&target.0.to_string()), record.ttl));
                }
                _ => {}
            }
        }
        match next {
            Some((Some(target), cname_ttl)) if !chain.contains(&target) => {
                ttl = ttl.min(cname_ttl);
                chain.push(target);
            }
            Some((None, _)) => return Err(DnsError::BadName),
            _ => break,
        }
    }
    if addresses.is_empty() {
        return Ok(Answer::NoAddress);
    }
    Ok(Answer::Addresses(
        addresses
            .into_iter()
            .map(|(address, record_ttl)| Resolved {
                address,
                names: chain.clone(),
                ttl: Duration::from_secs(u64::from(ttl.min(record_ttl))),
            })
            .collect(),
    ))
}

/// Splits a DNS-over-TCP segment into its length-prefixed messages. A
/// message that runs past the segment is returned cut (its parse reads
/// truncated).
pub fn tcp_messages(segment: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = segment;
    std::iter::from_fn(move || {
        if rest.len() < 2 {
            return None;
        }
        let length = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let end = (2 + length).min(rest.len());
        let message = &rest[2..end];
        rest = &rest[end..];
        Some(message)
    })
}

#[cfg(test)]
mod tests;
