//! The node's connection tracking, asked one entry at a time through
//! ctnetlink: which address a connection to a Service address was
//! translated to (kube-proxy's DNAT, in iptables, IPVS or nftables mode).
//!
//! A small codec of our own rather than a crate: one request (`CT_GET` by
//! original tuple) and one answer (the reply tuple) are all we need, and
//! the crates that speak ctnetlink pull in an async netlink stack for it.
//!
//! Needs `CAP_NET_ADMIN` in the node's network namespace (the agent has
//! it). Minimum kernel: any with `nf_conntrack_netlink` (2.6.14).

use std::net::IpAddr;
use std::time::Duration;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

/// A transport endpoint.
pub type Endpoint = (IpAddr, u16);

/// Errors talking to connection tracking.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    /// `socket(AF_NETLINK, NETLINK_NETFILTER)` or `bind` failed.
    #[error("cannot open a ctnetlink socket")]
    Socket(#[source] std::io::Error),
    /// `sendto` or `recv` on the socket failed.
    #[error("ctnetlink request failed")]
    Io(#[source] std::io::Error),
    /// The kernel refused the request (not `ENOENT`, which is "no entry").
    #[error("ctnetlink answered errno {0}")]
    Kernel(i32),
    /// The answer could not be decoded.
    #[error("ctnetlink answer malformed: {0}")]
    Malformed(&'static str),
}

/// What connection tracking knows of an original tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tracked {
    /// The entry's reply tuple: `(source, destination)` of the answers,
    /// so the source is the translated destination (the backend) and the
    /// destination the translated source (the client, or the address it
    /// was masqueraded to).
    Reply(Endpoint, Endpoint),
    /// No such entry (yet, or any more).
    Missing,
}

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const NLMSG_HEADER: usize = 16;
const NFGEN_HEADER: usize = 4;

/// A ctnetlink socket in the current network namespace.
pub struct Conntrack {
    socket: Socket,
    sequence: u32,
}

impl Conntrack {
    /// Opens the socket.
    ///
    /// # Errors
    /// [`ConntrackError::Socket`].
    pub fn open() -> Result<Self, ConntrackError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(ConntrackError::Socket)?;
        socket.bind_auto().map_err(ConntrackError::Socket)?;
        // The kernel answers a GET synchronously; the timeout only guards
        // the capture loop against a kernel that never does.
        set_receive_timeout(&socket, Duration::from_millis(200)).map_err(ConntrackError::Socket)?;
        Ok(Self {
            socket,
            sequence: 0,
        })
    }

    /// The entry whose original tuple is `source → destination` over
    /// `protocol` (TCP, UDP or SCTP).
    ///
    /// # Errors
    /// [`ConntrackError`] when the kernel cannot be asked or answers
    /// something else than the entry or `ENOENT`.
    pub fn get(
        &mut self,
        protocol: u8,
        source: Endpoint,
        destination: Endpoint,
    ) -> Result<Tracked, ConntrackError> {
        self.sequence = self.sequence.wrapping_add(1);
        let request = encode_get(self.sequence, protocol, source, destination);
        let kernel = SocketAddr::new(0, 0);
        self.socket
            .send_to(&request, &kernel, 0)
            .map_err(ConntrackError::Io)?;
        let mut buffer = Vec::with_capacity(4096);
        loop {
            buffer.clear();
            self.socket
                .recv(&mut buffer, 0)
                .map_err(ConntrackError::Io)?;
            if let Some(answer) = decode_answer(&buffer, self.sequence)? {
                return Ok(answer);
            }
        }
    }
}

fn set_receive_timeout(socket: &Socket, timeout: Duration) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: a valid socket and a timeval of the size given.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const value).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Appends an attribute: header, payload, padding to 4 bytes.
fn attribute(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let length = (4 + payload.len()) as u16;
    out.extend_from_slice(&length.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn nested(out: &mut Vec<u8>, kind: u16, build: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    build(&mut inner);
    attribute(out, kind | NLA_F_NESTED, &inner);
}

/// The `CT_GET` request for the original tuple `source → destination`.
pub fn encode_get(sequence: u32, protocol: u8, source: Endpoint, destination: Endpoint) -> Vec<u8> {
    let mut body = Vec::new();
    nested(&mut body, CTA_TUPLE_ORIG, |tuple| {
        nested(tuple, CTA_TUPLE_IP, |ip| match (source.0, destination.0) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                attribute(ip, CTA_IP_V4_SRC, &src.octets());
                attribute(ip, CTA_IP_V4_DST, &dst.octets());
            }
            (src, dst) => {
                attribute(ip, CTA_IP_V6_SRC, &v6_octets(src));
                attribute(ip, CTA_IP_V6_DST, &v6_octets(dst));
            }
        });
        nested(tuple, CTA_TUPLE_PROTO, |proto| {
            attribute(proto, CTA_PROTO_NUM, &[protocol]);
            attribute(proto, CTA_PROTO_SRC_PORT, &source.1.to_be_bytes());
            attribute(proto, CTA_PROTO_DST_PORT, &destination.1.to_be_bytes());
        });
    });
    let family = if source.0.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    } as u8;
    let length = (NLMSG_HEADER + NFGEN_HEADER + body.len()) as u32;
    let mut message = Vec::with_capacity(length as usize);
    message.extend_from_slice(&length.to_ne_bytes());
    message.extend_from_slice(&(NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET).to_ne_bytes());
    message.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    message.extend_from_slice(&sequence.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes());
    message.extend_from_slice(&[family, 0, 0, 0]);
    message.extend_from_slice(&body);
    message
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V6(v6) => v6.octets(),
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
    }
}

/// Attributes of `data`: `(type without flags, payload)`.
fn attributes(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let length = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let kind = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        if length < 4 || length > data.len() {
            return None;
        }
        let payload = &data[4..length];
        data = &data[length.next_multiple_of(4).min(data.len())..];
        Some((kind, payload))
    })
}

fn find(data: &[u8], kind: u16) -> Option<&[u8]> {
    attributes(data).find(|(k, _)| *k == kind).map(|(_, p)| p)
}

/// The reply tuple of a `CT_NEW` answer's attributes.
fn reply_tuple(attrs: &[u8]) -> Result<(Endpoint, Endpoint), ConntrackError> {
    let tuple = find(attrs, CTA_TUPLE_REPLY).ok_or(ConntrackError::Malformed("no reply tuple"))?;
    let ip = find(tuple, CTA_TUPLE_IP).ok_or(ConntrackError::Malformed("no tuple addresses"))?;
    let proto = find(tuple, CTA_TUPLE_PROTO).ok_or(ConntrackError::Malformed("no tuple ports"))?;
    let address = |v4: u16, v6: u16| -> Result<IpAddr, ConntrackError> {
        if let Some(bytes) = find(ip, v4) {
            let octets: [u8; 4] = bytes
                .try_into()
                .map_err(|_| ConntrackError::Malformed("IPv4 address length"))?;
            return Ok(IpAddr::from(octets));
        }
        let bytes = find(ip, v6).ok_or(ConntrackError::Malformed("no address"))?;
        let octets: [u8; 16] = bytes
            .try_into()
            .map_err(|_| ConntrackError::Malformed("IPv6 address length"))?;
        Ok(IpAddr::from(octets))
    };
    let port = |kind: u16| -> Result<u16, ConntrackError> {
        let bytes = find(proto, kind).ok_or(ConntrackError::Malformed("no port"))?;
        let bytes: [u8; 2] = bytes
            .try_into()
            .map_err(|_| ConntrackError::Malformed("port length"))?;
        Ok(u16::from_be_bytes(bytes))
    };
    Ok((
        (
            address(CTA_IP_V4_SRC, CTA_IP_V6_SRC)?,
            port(CTA_PROTO_SRC_PORT)?,
        ),
        (
            address(CTA_IP_V4_DST, CTA_IP_V6_DST)?,
            port(CTA_PROTO_DST_PORT)?,
        ),
    ))
}

/// Decodes the messages of one datagram: the answer to `sequence`, or
/// `None` when the datagram holds none (a stale answer to an earlier
/// request that timed out).
pub fn decode_answer(mut data: &[u8], sequence: u32) -> Result<Option<Tracked>, ConntrackError> {
    while data.len() >= NLMSG_HEADER {
        let length = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if length < NLMSG_HEADER || length > data.len() {
            return Err(ConntrackError::Malformed("message length"));
        }
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        let seq = u32::from_ne_bytes([data[8], data[9], data[10], data[11]]);
        let body = &data[NLMSG_HEADER..length];
        data = &data[length.next_multiple_of(4).min(data.len())..];
        if seq != sequence {
            continue;
        }
        if kind == NLMSG_ERROR {
            let errno = body
                .get(..4)
                .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or(ConntrackError::Malformed("error message"))?;
            return match -errno {
                0 => Ok(None),
                libc::ENOENT => Ok(Some(Tracked::Missing)),
                errno => Err(ConntrackError::Kernel(errno)),
            };
        }
        if kind == NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW {
            let attrs = body
                .get(NFGEN_HEADER..)
                .ok_or(ConntrackError::Malformed("no nfgenmsg"))?;
            let (source, destination) = reply_tuple(attrs)?;
            return Ok(Some(Tracked::Reply(source, destination)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    /// The kernel's answer: a `CT_NEW` message with both tuples.
    fn answer(sequence: u32, orig: (Endpoint, Endpoint), reply: (Endpoint, Endpoint)) -> Vec<u8> {
        let mut request = encode_get(sequence, 6, orig.0, orig.1);
        // Same layout as the request, plus the reply tuple, as CT_NEW.
        let mut reply_attr = Vec::new();
        let reply_request = encode_get(0, 6, reply.0, reply.1);
        reply_attr.extend_from_slice(&reply_request[NLMSG_HEADER + NFGEN_HEADER..]);
        // Re-tag the tuple attribute from ORIG to REPLY.
        reply_attr[2..4].copy_from_slice(&(CTA_TUPLE_REPLY | NLA_F_NESTED).to_ne_bytes());
        request.extend_from_slice(&reply_attr);
        let length = request.len() as u32;
        request[0..4].copy_from_slice(&length.to_ne_bytes());
        request[4..6]
            .copy_from_slice(&(NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW).to_ne_bytes());
        request
    }

    #[test]
    fn the_request_names_the_original_tuple() {
        let request = encode_get(7, 6, (ip("10.244.0.12"), 40000), (ip("10.96.0.10"), 80));
        assert_eq!(request.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(request[0..4].try_into().expect("4")) as usize,
            request.len()
        );
        assert_eq!(u16::from_ne_bytes([request[4], request[5]]), 0x0101);
        assert_eq!(request[16], libc::AF_INET as u8);
        let attrs = &request[20..];
        let tuple = find(attrs, CTA_TUPLE_ORIG).expect("orig");
        let proto = find(tuple, CTA_TUPLE_PROTO).expect("proto");
        assert_eq!(
            find(proto, CTA_PROTO_DST_PORT),
            Some(&80u16.to_be_bytes()[..])
        );
        assert_eq!(find(proto, CTA_PROTO_NUM), Some(&[6u8][..]));
    }

    #[test]
    fn answers_decode_to_the_reply_tuple_or_missing() {
        let orig = ((ip("10.244.0.12"), 40000), (ip("10.96.0.10"), 80));
        let reply = ((ip("10.244.0.11"), 8080), (ip("10.244.0.12"), 40000));
        assert_eq!(
            decode_answer(&answer(3, orig, reply), 3).expect("decodes"),
            Some(Tracked::Reply(reply.0, reply.1))
        );
        assert_eq!(
            decode_answer(&answer(2, orig, reply), 3).expect("stale"),
            None
        );
        let v6 = ((ip("fd00::2"), 5353), (ip("fd00:96::a"), 53));
        let v6_reply = ((ip("fd00::3"), 53), (ip("fd00::2"), 5353));
        assert_eq!(
            decode_answer(&answer(4, v6, v6_reply), 4).expect("decodes"),
            Some(Tracked::Reply(v6_reply.0, v6_reply.1))
        );
        let mut error = vec![0u8; 36];
        error[0..4].copy_from_slice(&36u32.to_ne_bytes());
        error[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        error[8..12].copy_from_slice(&5u32.to_ne_bytes());
        error[16..20].copy_from_slice(&(-libc::ENOENT).to_ne_bytes());
        assert_eq!(
            decode_answer(&error, 5).expect("decodes"),
            Some(Tracked::Missing)
        );
        error[16..20].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        assert!(matches!(
            decode_answer(&error, 5),
            Err(ConntrackError::Kernel(libc::EPERM))
        ));
        assert!(decode_answer(&error[..20], 5).is_err(), "truncated");
    }
}
