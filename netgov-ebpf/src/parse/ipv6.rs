//! The IPv6 header and its extension-header chain.

use super::*;

#[inline(always)]
pub(super) fn parse_ipv6<R: Reader>(ctx: &R, l3: usize) -> Outcome {
    let Ok(header) = ctx.read::<[u8; IPV6_HEADER_LEN]>(l3) else {
        return Outcome::Malformed;
    };
    if header[0] >> 4 != 6 {
        return Outcome::Malformed;
    }
    let payload_len = u16::from_be_bytes([header[4], header[5]]) as usize;
    let available = (ctx.skb().len() as usize).saturating_sub(l3);
    let Some(datagram_len) = datagram_len(
        ctx,
        IPV6_HEADER_LEN + payload_len,
        IPV6_HEADER_LEN,
        available,
    ) else {
        return Outcome::Malformed;
    };
    let mut packet = Packet {
        src: [0; 16],
        dst: [0; 16],
        src_port: 0,
        dst_port: 0,
        protocol: 0,
        ip_version: 6,
        tcp_flags: 0,
        segments: 1,
        ip_bytes: datagram_len as u32,
        payload_offset: 0,
    };
    packet.src.copy_from_slice(&header[8..24]);
    packet.dst.copy_from_slice(&header[24..40]);

    let mut next_header = header[6];
    let mut offset = l3 + IPV6_HEADER_LEN;
    let mut fragment: Option<(FragmentKey, bool)> = None;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next_header {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS => {
                let Ok(ext) = ctx.read::<[u8; 2]>(offset) else {
                    return Outcome::Malformed;
                };
                next_header = ext[0];
                offset += (ext[1] as usize + 1) * 8;
            }
            IPV6_AUTH => {
                let Ok(ext) = ctx.read::<[u8; 2]>(offset) else {
                    return Outcome::Malformed;
                };
                next_header = ext[0];
                offset += (ext[1] as usize + 2) * 4;
            }
            IPV6_FRAGMENT => {
                let Ok(ext) = ctx.read::<[u8; 8]>(offset) else {
                    return Outcome::Malformed;
                };
                next_header = ext[0];
                let frag = u16::from_be_bytes([ext[2], ext[3]]);
                let key = FragmentKey {
                    src: packet.src,
                    dst: packet.dst,
                    id: u32::from_be_bytes([ext[4], ext[5], ext[6], ext[7]]),
                    protocol: 0,
                    ip_version: 6,
                    _pad: [0; 2],
                };
                let later = frag & 0xFFF8 != 0;
                let more = frag & 1 != 0;
                offset += 8;
                if later {
                    packet.protocol = next_header;
                    if !is_flow_protocol(next_header) {
                        return Outcome::OtherProtocol;
                    }
                    return Outcome::LaterFragment(packet, key, !more);
                }
                fragment = Some((key, more));
            }
            _ => break,
        }
    }
    packet.protocol = next_header;
    let header_len = offset - l3;
    if header_len > datagram_len {
        return Outcome::Malformed;
    }
    match fragment {
        Some((key, more)) => finish(ctx, packet, offset, header_len, more, key),
        None => finish(
            ctx,
            packet,
            offset,
            header_len,
            false,
            FragmentKey::default(),
        ),
    }
}
