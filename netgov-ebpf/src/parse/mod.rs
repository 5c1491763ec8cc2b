//! Header parsing: Ethernet (up to two VLAN tags) → IPv4 (options,
//! fragments) / IPv6 (extension headers, fragments) → TCP / UDP / SCTP /
//! ICMP / ICMPv6.
//!
//! A packet is parsed reading straight from its linear part ([`Direct`]:
//! nearly always enough, the headers are there); when a read falls outside
//! it, the whole parse is done again through `bpf_skb_load_bytes`
//! ([`Helper`]), which works on non-linear skbs. Both are bounds-checked; a
//! read past the end makes the packet `Malformed` rather than misread.

use aya_ebpf::programs::sk_buff::SkBuff;
use netgov_common::{FlowKey, FragmentKey, direction, proto};

mod reader;
use reader::{Direct, Helper, Reader};

const ETH_HEADER_LEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const VLAN_TAG_LEN: usize = 4;
/// Stacked tags beyond this (QinQinQ) are not followed.
const MAX_VLAN_TAGS: usize = 2;

const IPV4_MIN_HEADER_LEN: usize = 20;
const IPV4_MORE_FRAGMENTS: u16 = 0x2000;
const IPV4_OFFSET_MASK: u16 = 0x1FFF;

const IPV6_HEADER_LEN: usize = 40;
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AUTH: u8 = 51;
const IPV6_DEST_OPTS: u8 = 60;
/// Extension headers beyond this count make the packet `Malformed`: the
/// verifier needs a bound, and real stacks emit only a handful.
const MAX_IPV6_EXT_HEADERS: usize = 8;

const TCP_MIN_HEADER_LEN: usize = 20;
const UDP_HEADER_LEN: usize = 8;
const SCTP_COMMON_HEADER_LEN: usize = 12;
const ICMP_HEADER_LEN: usize = 8;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

/// A packet reduced to what flow accounting needs, in packet order.
pub struct Packet {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
    pub ip_version: u8,
    pub tcp_flags: u8,
    /// Wire packets this skb stands for (GSO segments, at least 1; the
    /// kernel's count is 16 bits wide).
    pub segments: u16,
    /// IP-layer bytes of those packets as they appear on the wire.
    pub ip_bytes: u32,
    /// Where the transport payload starts, from the start of what the
    /// parser read (the frame for TC programs). Its length is not kept:
    /// the programs' frame has no room for it, and only the rare packets
    /// whose payload is copied need it (from the skb's length).
    pub payload_offset: u16,
}

/// What the parser made of a frame.
pub enum Outcome {
    /// A complete flow packet.
    Flow(Packet),
    /// The first fragment of a datagram: a flow packet whose ports must be
    /// remembered for the fragments that follow.
    FirstFragment(Packet, FragmentKey),
    /// A later fragment: no transport header, ports to be looked up; `true`
    /// for the datagram's last fragment.
    LaterFragment(Packet, FragmentKey, bool),
    /// Not IPv4 or IPv6.
    NonIp,
    /// An IP protocol netgov does not aggregate.
    OtherProtocol,
    /// Truncated or inconsistent headers.
    Malformed,
}

/// Where the network header starts and its protocol, after VLAN tags.
#[inline(always)]
fn network_layer<R: Reader>(ctx: &R) -> Option<(usize, u16)> {
    let mut offset = ETH_HEADER_LEN;
    let mut ethertype = u16::from_be(ctx.read::<u16>(12).ok()?);
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        ethertype = u16::from_be(ctx.read::<u16>(offset + 2).ok()?);
        offset += VLAN_TAG_LEN;
    }
    Some((offset, ethertype))
}

/// Runs `$parse` reading straight from the packet, and again through the
/// helper only when a read fell outside its linear part; returns from the
/// calling function. The first pass is scoped so that its result is not
/// live during the second, on a stack near its 512-byte limit.
macro_rules! direct_then_helper {
    ($skb:expr, $parse:ident $(, $arg:expr)*) => {{
        {
            let direct = Direct::new($skb);
            let result = $parse(&direct $(, $arg)*);
            if !direct.missed() {
                return result;
            }
        }
        $parse(&Helper($skb) $(, $arg)*)
    }};
}

/// The byte at `offset` (the socket hook's look at the IP protocol, on a
/// path every packet any socket receives takes).
#[inline(always)]
pub fn byte_at(skb: &SkBuff, offset: usize) -> Option<u8> {
    direct_then_helper!(skb, read_byte, offset)
}

#[inline(always)]
fn read_byte<R: Reader>(ctx: &R, offset: usize) -> Option<u8> {
    ctx.read::<u8>(offset).ok()
}

/// Whether the transport payload at `offset` starts like a TLS ClientHello:
/// a handshake record (content type 22) whose first message is of type 1.
/// The record's version is not checked: clients send 3.1 for TLS 1.3 too.
#[inline(always)]
pub fn starts_client_hello(skb: &SkBuff, offset: usize) -> bool {
    direct_then_helper!(skb, client_hello_at, offset)
}

#[inline(always)]
fn client_hello_at<R: Reader>(ctx: &R, offset: usize) -> bool {
    const HANDSHAKE: u8 = 22;
    const CLIENT_HELLO: u8 = 1;
    match ctx.read::<[u8; 6]>(offset) {
        Ok(start) => start[0] == HANDSHAKE && start[5] == CLIENT_HELLO,
        Err(_) => false,
    }
}

/// Parses a frame that starts with its Ethernet header (TC programs).
#[inline(always)]
pub fn parse(skb: &SkBuff) -> Outcome {
    direct_then_helper!(skb, parse_frame)
}

#[inline(always)]
fn parse_frame<R: Reader>(ctx: &R) -> Outcome {
    let Some((l3, ethertype)) = network_layer(ctx) else {
        return Outcome::Malformed;
    };
    match ethertype {
        ETH_P_IPV4 => parse_ipv4(ctx, l3),
        ETH_P_IPV6 => parse_ipv6(ctx, l3),
        _ => Outcome::NonIp,
    }
}

/// Parses a packet that starts with its IP header (cgroup programs), whose
/// family is the skb's protocol.
#[inline(always)]
pub fn parse_ip(skb: &SkBuff) -> Outcome {
    direct_then_helper!(skb, parse_packet)
}

#[inline(always)]
fn parse_packet<R: Reader>(ctx: &R) -> Outcome {
    // SAFETY: `skb` is the context pointer the kernel passed to the program.
    let protocol = u16::from_be(unsafe { (*ctx.skb().skb).protocol } as u16);
    match protocol {
        ETH_P_IPV4 => parse_ipv4(ctx, 0),
        ETH_P_IPV6 => parse_ipv6(ctx, 0),
        _ => Outcome::NonIp,
    }
}

/// IPv4 fields netgov reads, loaded in one helper call.
#[repr(C)]
struct Ipv4Header {
    version_ihl: u8,
    _tos: u8,
    total_len: u16,
    id: u16,
    frag: u16,
    _ttl: u8,
    protocol: u8,
    _checksum: u16,
    src: [u8; 4],
    dst: [u8; 4],
}

#[inline(always)]
fn parse_ipv4<R: Reader>(ctx: &R, l3: usize) -> Outcome {
    let Ok(ip) = ctx.read::<Ipv4Header>(l3) else {
        return Outcome::Malformed;
    };
    let header_len = ((ip.version_ihl & 0x0F) as usize) * 4;
    let total_len = u16::from_be(ip.total_len) as usize;
    if ip.version_ihl >> 4 != 4 || header_len < IPV4_MIN_HEADER_LEN {
        return Outcome::Malformed;
    }
    let available = (ctx.skb().len() as usize).saturating_sub(l3);
    let Some(datagram_len) = datagram_len(ctx, total_len, header_len, available) else {
        return Outcome::Malformed;
    };
    let mut packet = Packet {
        src: [0; 16],
        dst: [0; 16],
        src_port: 0,
        dst_port: 0,
        protocol: ip.protocol,
        ip_version: 4,
        tcp_flags: 0,
        segments: 1,
        ip_bytes: datagram_len as u32,
        payload_offset: 0,
    };
    packet.src[..4].copy_from_slice(&ip.src);
    packet.dst[..4].copy_from_slice(&ip.dst);

    let frag = u16::from_be(ip.frag);
    let fragment = FragmentKey {
        src: packet.src,
        dst: packet.dst,
        id: u16::from_be(ip.id) as u32,
        protocol: ip.protocol,
        ip_version: 4,
        _pad: [0; 2],
    };
    if frag & IPV4_OFFSET_MASK != 0 {
        if !is_flow_protocol(ip.protocol) {
            return Outcome::OtherProtocol;
        }
        let last = frag & IPV4_MORE_FRAGMENTS == 0;
        return Outcome::LaterFragment(packet, fragment, last);
    }
    let first_fragment = frag & IPV4_MORE_FRAGMENTS != 0;
    finish(
        ctx,
        packet,
        l3 + header_len,
        header_len,
        first_fragment,
        fragment,
    )
}

/// IP-layer length of the datagram(s) in this skb. For GSO skbs the header
/// length field describes the super-packet (or is 0 for BIG TCP), so the skb
/// length is used. A header that claims more bytes than the skb holds is
/// malformed.
#[inline(always)]
fn datagram_len<R: Reader>(
    ctx: &R,
    claimed: usize,
    header_len: usize,
    available: usize,
) -> Option<usize> {
    if gso_segments(ctx) > 1 || gso_size(ctx) > 0 {
        return Some(available);
    }
    if claimed < header_len || claimed > available {
        return None;
    }
    Some(claimed)
}

#[inline(always)]
fn gso_segments<R: Reader>(ctx: &R) -> u32 {
    // SAFETY: `skb` is the context pointer the kernel passed to the program.
    unsafe { (*ctx.skb().skb).gso_segs }
}

#[inline(always)]
fn gso_size<R: Reader>(ctx: &R) -> u32 {
    // SAFETY: `skb` is the context pointer the kernel passed to the program.
    unsafe { (*ctx.skb().skb).gso_size }
}

#[inline(always)]
fn is_flow_protocol(protocol: u8) -> bool {
    matches!(
        protocol,
        proto::TCP | proto::UDP | proto::SCTP | proto::ICMP | proto::ICMPV6
    )
}

/// Parses the transport header at `l4` and classifies the packet.
#[inline(always)]
fn finish<R: Reader>(
    ctx: &R,
    mut packet: Packet,
    l4: usize,
    l3_header_len: usize,
    first_fragment: bool,
    fragment: FragmentKey,
) -> Outcome {
    let l4_header_len = match packet.protocol {
        proto::TCP => {
            let Ok(tcp) = ctx.read::<[u8; TCP_MIN_HEADER_LEN]>(l4) else {
                return Outcome::Malformed;
            };
            packet.src_port = u16::from_be_bytes([tcp[0], tcp[1]]);
            packet.dst_port = u16::from_be_bytes([tcp[2], tcp[3]]);
            packet.tcp_flags = tcp[13];
            let data_offset = (tcp[12] >> 4) as usize * 4;
            if data_offset < TCP_MIN_HEADER_LEN {
                return Outcome::Malformed;
            }
            data_offset
        }
        proto::UDP => {
            let Ok(udp) = ctx.read::<[u8; 4]>(l4) else {
                return Outcome::Malformed;
            };
            packet.src_port = u16::from_be_bytes([udp[0], udp[1]]);
            packet.dst_port = u16::from_be_bytes([udp[2], udp[3]]);
            UDP_HEADER_LEN
        }
        proto::SCTP => {
            let Ok(sctp) = ctx.read::<[u8; 4]>(l4) else {
                return Outcome::Malformed;
            };
            packet.src_port = u16::from_be_bytes([sctp[0], sctp[1]]);
            packet.dst_port = u16::from_be_bytes([sctp[2], sctp[3]]);
            SCTP_COMMON_HEADER_LEN
        }
        proto::ICMP | proto::ICMPV6 => {
            let Ok(icmp) = ctx.read::<[u8; ICMP_HEADER_LEN]>(l4) else {
                return Outcome::Malformed;
            };
            let (request, reply) = if packet.protocol == proto::ICMP {
                (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY)
            } else {
                (ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY)
            };
            let identifier = u16::from_be_bytes([icmp[4], icmp[5]]);
            // Echo request and reply share one key: the identifier is the
            // requester's "port". Other messages are keyed by type and code.
            if icmp[0] == request {
                packet.src_port = identifier;
            } else if icmp[0] == reply {
                packet.dst_port = identifier;
            } else {
                packet.dst_port = u16::from_be_bytes([icmp[0], icmp[1]]);
            }
            ICMP_HEADER_LEN
        }
        _ => return Outcome::OtherProtocol,
    };
    let headers = (l3_header_len + l4_header_len) as u32;
    packet.payload_offset = (l4 + l4_header_len) as u16;
    let mut segments = gso_segments(ctx);
    let gso_size = gso_size(ctx);
    if segments <= 1 && gso_size > 0 {
        // Some receive offloads leave gso_segs unset (the stack fills it in
        // later): derive it from the payload and the segment size.
        let payload = packet.ip_bytes.saturating_sub(headers);
        segments = payload.div_ceil(gso_size);
    }
    if segments > 1 {
        // Each wire segment repeats the network and transport headers.
        packet.segments = segments.min(u16::MAX as u32) as u16;
        packet.ip_bytes += (segments - 1) * headers;
    }
    if first_fragment {
        let mut fragment = fragment;
        // IPv4 keys a datagram by protocol too (RFC 791); IPv6 by the 32-bit
        // identification alone, as later fragments' chains may differ.
        if packet.ip_version == 4 {
            fragment.protocol = packet.protocol;
        }
        return Outcome::FirstFragment(packet, fragment);
    }
    Outcome::Flow(packet)
}

impl Packet {
    /// Whether this is an ICMP or ICMPv6 error (destination unreachable,
    /// time exceeded, parameter problem; for ICMPv6 also packet too big),
    /// which quotes the packet it reports.
    #[inline(always)]
    pub fn is_icmp_error(&self) -> bool {
        let icmp_type = (self.dst_port >> 8) as u8;
        self.src_port == 0
            && match self.protocol {
                proto::ICMP => matches!(icmp_type, 3 | 11 | 12),
                proto::ICMPV6 => matches!(icmp_type, 1..=4),
                _ => false,
            }
    }
}

impl Packet {
    /// The flow key at `ifindex` in canonical order, and this packet's
    /// direction relative to it.
    #[inline(always)]
    pub fn canonical_key(&self, ifindex: u32) -> (FlowKey, u8) {
        let src_first = endpoint_le(&self.src, self.src_port, &self.dst, self.dst_port);
        let (a, port_a, b, port_b, dir) = if src_first {
            (
                self.src,
                self.src_port,
                self.dst,
                self.dst_port,
                direction::A_TO_B,
            )
        } else {
            (
                self.dst,
                self.dst_port,
                self.src,
                self.src_port,
                direction::B_TO_A,
            )
        };
        (
            FlowKey {
                addr_a: a,
                addr_b: b,
                port_a,
                port_b,
                ifindex,
                protocol: self.protocol,
                ip_version: self.ip_version,
                _pad: [0; 2],
            },
            dir,
        )
    }
}

/// `(a, port_a) <= (b, port_b)`, addresses compared bytewise.
#[inline(always)]
fn endpoint_le(a: &[u8; 16], port_a: u16, b: &[u8; 16], port_b: u16) -> bool {
    for i in 0..16 {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
    }
    port_a <= port_b
}

// After the macro and the helpers they share, which they use from here.
mod icmp_error;
mod ipv6;
pub use icmp_error::reported;
use ipv6::parse_ipv6;
