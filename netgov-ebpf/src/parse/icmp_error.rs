//! The packet an ICMP or ICMPv6 error quotes.

use super::*;

/// What an ICMP error reports.
pub struct Reported {
    /// The quoted packet's flow key (interface 0, canonical order).
    pub key: FlowKey,
    /// The quoted packet's direction in `key`.
    pub direction: u8,
    /// The quoted packet's destination.
    pub destination: [u8; 16],
    /// Who sent the error.
    pub reporter: [u8; 16],
}

/// The packet an ICMP error quotes (its IP header and first eight bytes,
/// RFC 792 and 4443); `None` when it is not TCP, UDP or SCTP right after
/// a plain IPv4 header (any options) or the fixed IPv6 header, or is
/// truncated. The error itself must be a plain IPv4 or IPv6 packet
/// without extension headers, at most two VLAN tags deep.
#[inline(always)]
pub fn reported(skb: &SkBuff) -> Option<Reported> {
    direct_then_helper!(skb, reported_by)
}

#[inline(always)]
fn reported_by<R: Reader>(ctx: &R) -> Option<Reported> {
    let (l3, ethertype) = network_layer(ctx)?;
    let mut reporter = [0; 16];
    let (quoted, version) = match ethertype {
        ETH_P_IPV4 => {
            let outer = ctx.read::<u8>(l3).ok()?;
            reporter[..4].copy_from_slice(&ctx.read::<[u8; 4]>(l3 + 12).ok()?);
            (l3 + ((outer & 0x0F) as usize) * 4 + ICMP_HEADER_LEN, 4)
        }
        ETH_P_IPV6 => {
            reporter = ctx.read::<[u8; 16]>(l3 + 8).ok()?;
            (l3 + IPV6_HEADER_LEN + ICMP_HEADER_LEN, 6)
        }
        _ => return None,
    };
    let mut reported = Packet {
        src: [0; 16],
        dst: [0; 16],
        src_port: 0,
        dst_port: 0,
        protocol: 0,
        ip_version: version,
        tcp_flags: 0,
        segments: 1,
        ip_bytes: 0,
        payload_offset: 0,
    };
    let transport = if version == 4 {
        let ip = ctx.read::<Ipv4Header>(quoted).ok()?;
        reported.src[..4].copy_from_slice(&ip.src);
        reported.dst[..4].copy_from_slice(&ip.dst);
        reported.protocol = ip.protocol;
        quoted + ((ip.version_ihl & 0x0F) as usize) * 4
    } else {
        reported.protocol = ctx.read::<u8>(quoted + 6).ok()?;
        reported.src = ctx.read::<[u8; 16]>(quoted + 8).ok()?;
        reported.dst = ctx.read::<[u8; 16]>(quoted + 24).ok()?;
        quoted + IPV6_HEADER_LEN
    };
    if !matches!(reported.protocol, proto::TCP | proto::UDP | proto::SCTP) {
        return None;
    }
    let ports = ctx.read::<[u8; 4]>(transport).ok()?;
    reported.src_port = u16::from_be_bytes([ports[0], ports[1]]);
    reported.dst_port = u16::from_be_bytes([ports[2], ports[3]]);
    let (key, direction) = reported.canonical_key(0);
    Some(Reported {
        key,
        direction,
        destination: reported.dst,
        reporter,
    })
}
