//! Types shared between netgov's eBPF programs (`netgov-ebpf`) and its
//! user-space agent (`netgov-agent`).
//!
//! Every type here is `#[repr(C)]` with explicit padding and a compile-time
//! size assertion: the kernel side writes these bytes and user space reads
//! them back, so a layout drift between the two would silently corrupt every
//! flow. Build both sides from the same commit.
#![no_std]
#![deny(missing_docs)]

use core::mem::size_of;

/// Names of the maps and programs in the eBPF object, shared so that both
/// sides agree on them.
pub mod names {
    /// Per-flow, per-interface aggregates (`LRU_HASH<FlowKey, FlowStats>`).
    pub const FLOWS_MAP: &str = "NETGOV_FLOWS";
    /// First-fragment → ports memo used to attribute later fragments
    /// (`LRU_HASH<FragmentKey, FragmentPorts>`).
    pub const FRAGMENTS_MAP: &str = "NETGOV_FRAGMENTS";
    /// Flow-start and TCP-transition events (`RINGBUF` of [`super::FlowEvent`]).
    pub const EVENTS_MAP: &str = "NETGOV_EVENTS";
    /// Per-CPU health counters (`PERCPU_ARRAY<u64>`, indexed by [`super::Counter`]).
    pub const COUNTERS_MAP: &str = "NETGOV_COUNTERS";
    /// UDP flows a socket received, by direction
    /// (`LRU_HASH<FlowKey with ifindex 0, u32>`, bit `1 << direction`).
    pub const DELIVERED_MAP: &str = "NETGOV_DELIVERED";
    /// Programs the TC programs tail-call (`PROG_ARRAY`, slot 0:
    /// [`ICMP_ERROR_PROGRAM`], slot 1: [`PAYLOAD_PROGRAM`]).
    pub const TAIL_CALLS_MAP: &str = "NETGOV_TAIL_CALLS";
    /// TC program tail-called for ICMP errors: marks the UDP datagram one
    /// quotes delivered when its destination sent the error.
    pub const ICMP_ERROR_PROGRAM: &str = "netgov_icmp_error";
    /// TC program tail-called for a DNS answer or a TLS ClientHello: copies
    /// the payload into [`PAYLOADS_MAP`].
    pub const PAYLOAD_PROGRAM: &str = "netgov_payload";
    /// DNS answers and TLS ClientHellos (`RINGBUF` of
    /// [`super::PayloadEvent`]); a ring of its own, so a DNS flood cannot
    /// crowd out flow events.
    pub const PAYLOADS_MAP: &str = "NETGOV_PAYLOADS";
    /// cgroup_skb ingress program on the root cgroup: datagrams delivered
    /// to a socket.
    pub const SOCKET_INGRESS_PROGRAM: &str = "netgov_socket_ingress";
    /// TC program for packets entering the host from a pod (TC ingress of the
    /// host-side interface).
    pub const FROM_POD_PROGRAM: &str = "netgov_from_pod";
    /// TC program for packets the host delivers into a pod (TC egress of the
    /// host-side interface).
    pub const TO_POD_PROGRAM: &str = "netgov_to_pod";
    /// Per-CPU cache of established flows (`PERCPU_ARRAY` of
    /// [`super::CachedFlow`], [`super::FLOW_CACHE_SLOTS`] slots).
    pub const FLOW_CACHE_MAP: &str = "NETGOV_FLOW_CACHE";
    /// Raw tracepoint program, never attached: user space runs it on each
    /// CPU (`BPF_PROG_TEST_RUN`) to move that CPU's cached counts into
    /// [`FLOWS_MAP`] before reading it.
    pub const FLUSH_PROGRAM: &str = "netgov_flush_cache";
}

/// IP protocol numbers netgov aggregates into flows. Other protocols are
/// only counted ([`Counter::OtherProtocolPackets`]).
pub mod proto {
    /// ICMP for IPv4.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMP for IPv6.
    pub const ICMPV6: u8 = 58;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

/// TCP flag bits as they appear in byte 13 of the TCP header; stored in the
/// low byte of [`FlowStats::flags`].
pub mod tcp_flags {
    /// No more data from sender.
    pub const FIN: u32 = 0x01;
    /// Synchronise sequence numbers.
    pub const SYN: u32 = 0x02;
    /// Reset the connection.
    pub const RST: u32 = 0x04;
    /// Push function.
    pub const PSH: u32 = 0x08;
    /// Acknowledgment field significant.
    pub const ACK: u32 = 0x10;
    /// Urgent pointer field significant.
    pub const URG: u32 = 0x20;
    /// ECN echo.
    pub const ECE: u32 = 0x40;
    /// Congestion window reduced.
    pub const CWR: u32 = 0x80;
    /// The flags whose first appearance in a direction is reported as a
    /// [`super::EventKind::TcpTransition`].
    pub const TRANSITIONS: u32 = SYN | FIN | RST;
}

/// Bits above the TCP flags in [`FlowStats::flags`]: at which hook of the
/// interface a direction of the flow was seen.
pub mod seen_at {
    /// Seen at TC ingress of the host-side interface: the packet left the pod
    /// behind that interface.
    pub const FROM_POD: u32 = 1 << 16;
    /// Seen at TC egress of the host-side interface: the packet was delivered
    /// towards the pod behind that interface.
    pub const TO_POD: u32 = 1 << 17;
}

/// Which hook of a host-side interface a program runs at.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// TC ingress of the host-side interface: traffic leaving the pod.
    FromPod = 0,
    /// TC egress of the host-side interface: traffic delivered to the pod.
    ToPod = 1,
}

impl Hook {
    /// The [`seen_at`] bit for this hook.
    pub const fn seen_bit(self) -> u32 {
        match self {
            Hook::FromPod => seen_at::FROM_POD,
            Hook::ToPod => seen_at::TO_POD,
        }
    }
}

/// Direction of a packet relative to its canonical [`FlowKey`]: `AToB`
/// travels from `addr_a:port_a` to `addr_b:port_b`.
pub mod direction {
    /// From endpoint A to endpoint B of the key.
    pub const A_TO_B: u8 = 0;
    /// From endpoint B to endpoint A of the key.
    pub const B_TO_A: u8 = 1;
}

/// A flow as observed at one interface, in canonical order: endpoint A is the
/// lexicographically smaller `(address, port)` pair, so both directions of a
/// conversation share one key.
///
/// IPv4 addresses occupy the first four bytes of the address fields; the rest
/// is zero. Ports are in host byte order. For ICMP echo the identifier is the
/// requester's "port" and the responder's port is 0; for other ICMP messages
/// the sender's port is 0 and the receiver's port is `type << 8 | code`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// Endpoint A's address.
    pub addr_a: [u8; 16],
    /// Endpoint B's address.
    pub addr_b: [u8; 16],
    /// Endpoint A's port (host byte order).
    pub port_a: u16,
    /// Endpoint B's port (host byte order).
    pub port_b: u16,
    /// Interface index of the observation point.
    pub ifindex: u32,
    /// IP protocol number (see [`proto`]).
    pub protocol: u8,
    /// 4 or 6.
    pub ip_version: u8,
    /// Explicit padding; always zero so keys hash identically.
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<FlowKey>() == 44);

/// Per-flow, per-interface aggregate kept in the kernel. Index `[0]` of each
/// pair is [`direction::A_TO_B`], `[1]` is [`direction::B_TO_A`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowStats {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) of the first packet.
    pub first_seen_ns: u64,
    /// `bpf_ktime_get_ns` of the latest packet.
    pub last_seen_ns: u64,
    /// Packets per direction (a GSO packet counts as its segments).
    pub packets: [u64; 2],
    /// IP-layer bytes (IP header + payload) per direction, as on the wire.
    pub bytes: [u64; 2],
    /// Per direction: union of TCP flags (low byte) and [`seen_at`] bits.
    pub flags: [u64; 2],
    /// Direction of the packet that created the entry.
    pub first_direction: u8,
    /// TCP flags of the packet that created the entry (a SYN-ACK first
    /// means the capture missed the SYN: its sender is the responder).
    pub first_tcp_flags: u8,
    /// Explicit padding.
    pub _pad: [u8; 6],
}
const _: () = assert!(size_of::<FlowStats>() == 72);

/// A slot of the per-CPU flow cache: an established flow at an interface
/// whose packets this CPU counts here, without looking up its
/// [`FlowStats`] entry, until the flush program adds them to it.
///
/// Written by the TC programs of one CPU and by the flush program on that
/// CPU, which may interrupt them (and they it). So that the packet path
/// needs no atomic instruction, each count has one writer: the TC programs
/// add to `packets` and `bytes`, which only grow, and the flush adds what
/// they grew by since `flushed_packets` and `flushed_bytes`, which only it
/// writes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CachedFlow {
    /// The flow; meaningful while `hit_flags` has a bit set.
    pub key: FlowKey,
    /// Explicit padding.
    pub _pad: u32,
    /// Per direction: the flag bits ([`FlowStats::flags`]) a packet may
    /// carry and still be counted here, with [`cache::ESTABLISHED`] once
    /// the direction is past the packets whose payload may be looked into.
    /// Zero: no packet is counted here.
    pub hit_flags: [u64; 2],
    /// Packets counted here, ever (the TC programs').
    pub packets: [u64; 2],
    /// IP-layer bytes counted here, ever (the TC programs').
    pub bytes: [u64; 2],
    /// Flag bits of the packets counted here since the flow took the slot.
    pub flags: [u64; 2],
    /// Coarse clock of the latest packet counted here.
    pub last_seen_ns: u64,
    /// The entry's `first_seen_ns` when the flow took the slot: an entry
    /// made anew since (ended and started again, or evicted) is another
    /// flow's, and the slot stops counting.
    pub entry_first_seen_ns: u64,
    /// Of `packets`, what the flush has added to the flows' entries.
    pub flushed_packets: [u64; 2],
    /// Of `bytes`, what the flush has added.
    pub flushed_bytes: [u64; 2],
}
const _: () = assert!(size_of::<CachedFlow>() == 160);

/// Slots of the per-CPU flow cache (a power of two: the slot is a hash of
/// the key, masked).
pub const FLOW_CACHE_SLOTS: u32 = 1024;
/// Slots one run of the flush program flushes (a power of two dividing
/// [`FLOW_CACHE_SLOTS`]): the first is the run's argument.
pub const FLUSH_BATCH: u32 = 64;

/// The per-CPU flow cache's bits.
pub mod cache {
    /// The bit of [`super::CachedFlow::hit_flags`] a direction needs for
    /// its packets to be counted in the cache (it is past the packets whose
    /// payload may be looked into): above every bit of
    /// [`super::FlowStats::flags`].
    pub const ESTABLISHED: u64 = 1 << 32;
}

/// Key of the fragment memo: IPv4 (src, dst, protocol, id) or IPv6
/// (src, dst, id) of a fragmented datagram, in packet order (not canonical).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FragmentKey {
    /// Source address.
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
    /// IP identification (16 bits for IPv4, 32 for IPv6).
    pub id: u32,
    /// IP protocol number of the datagram.
    pub protocol: u8,
    /// 4 or 6.
    pub ip_version: u8,
    /// Explicit padding.
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<FragmentKey>() == 40);

/// Ports learned from a datagram's first fragment, in packet order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FragmentPorts {
    /// `bpf_ktime_get_ns` of the first fragment: memos older than
    /// [`FRAGMENT_MEMO_TIMEOUT_NS`] are stale (the IP ID may have wrapped).
    pub seen_ns: u64,
    /// Source port (host byte order).
    pub src_port: u16,
    /// Destination port (host byte order).
    pub dst_port: u16,
    /// Explicit padding.
    pub _pad: [u8; 4],
}
const _: () = assert!(size_of::<FragmentPorts>() == 16);

/// How long a first fragment's ports stay valid: the kernel's default
/// reassembly timeout (`net.ipv4.ipfrag_time`, 30 s).
pub const FRAGMENT_MEMO_TIMEOUT_NS: u64 = 30_000_000_000;

/// What a ring-buffer event reports.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The first packet of a flow at an interface (a new [`FlowKey`] entry).
    FlowStart = 1,
    /// A TCP flag in [`tcp_flags::TRANSITIONS`] seen for the first time in a
    /// direction of a flow at an interface.
    TcpTransition = 2,
}

impl EventKind {
    /// Decodes the wire value, `None` for an unknown kind.
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::FlowStart),
            2 => Some(Self::TcpTransition),
            _ => None,
        }
    }
}

/// Common header of every ring-buffer event.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EventHeader {
    /// `bpf_ktime_get_ns` when the event was produced.
    pub timestamp_ns: u64,
    /// An [`EventKind`] value.
    pub kind: u8,
    /// A [`Hook`] value.
    pub hook: u8,
    /// Explicit padding.
    pub _pad: [u8; 6],
}
const _: () = assert!(size_of::<EventHeader>() == 16);

/// A flow start or TCP transition.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowEvent {
    /// Common header.
    pub header: EventHeader,
    /// The flow at the interface that saw the packet.
    pub key: FlowKey,
    /// Direction of the packet relative to `key` (see [`direction`]).
    pub direction: u8,
    /// TCP flags of the packet (0 for other protocols).
    pub tcp_flags: u8,
    /// Explicit padding.
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<FlowEvent>() == 64);

/// Per-CPU health counters, indexes into [`names::COUNTERS_MAP`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Packets the programs ran on.
    Packets = 0,
    /// Frames that are not IPv4 or IPv6 (ARP, LLDP, ...): not flows.
    NonIpPackets,
    /// IP packets of a protocol other than TCP, UDP, SCTP, ICMP, ICMPv6.
    OtherProtocolPackets,
    /// Packets whose headers were truncated or malformed: not attributed to
    /// any flow.
    ParseErrors,
    /// Non-first fragments attributed to their flow through the fragment memo.
    FragmentsMatched,
    /// Non-first fragments whose first fragment was not seen: not attributed.
    FragmentsUnmatched,
    /// Events that did not fit in the ring buffer.
    RingbufDrops,
    /// Failed inserts into the flow map: the packet was not counted.
    FlowMapUpdateFailures,
    /// Failed inserts into the fragment memo.
    FragmentMapUpdateFailures,
    /// Failed inserts into the socket-delivery map: that evidence is lost.
    DeliveryMapUpdateFailures,
    /// DNS answers and ClientHellos that did not fit in the payload ring:
    /// names not learned.
    PayloadRingbufDrops,
    /// Packets from port 53 delivered into a pod that sent nothing to
    /// their source and port on that flow: unasked-for answers, not read.
    DnsUnsolicited,
    /// Packets counted in the per-CPU flow cache whose flow entry was gone
    /// (evicted, or ended by user space) when they were to be added to it.
    CachedPacketsLost,
}

impl Counter {
    /// Number of counters (the size of the per-CPU array).
    pub const COUNT: u32 = 13;
    /// Every counter, in index order.
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::Packets,
        Counter::NonIpPackets,
        Counter::OtherProtocolPackets,
        Counter::ParseErrors,
        Counter::FragmentsMatched,
        Counter::FragmentsUnmatched,
        Counter::RingbufDrops,
        Counter::FlowMapUpdateFailures,
        Counter::FragmentMapUpdateFailures,
        Counter::DeliveryMapUpdateFailures,
        Counter::PayloadRingbufDrops,
        Counter::DnsUnsolicited,
        Counter::CachedPacketsLost,
    ];

    /// Stable snake_case name, used in output and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Packets => "packets",
            Counter::NonIpPackets => "non_ip_packets",
            Counter::OtherProtocolPackets => "other_protocol_packets",
            Counter::ParseErrors => "parse_errors",
            Counter::FragmentsMatched => "fragments_matched",
            Counter::FragmentsUnmatched => "fragments_unmatched",
            Counter::RingbufDrops => "ringbuf_drops",
            Counter::FlowMapUpdateFailures => "flow_map_update_failures",
            Counter::FragmentMapUpdateFailures => "fragment_map_update_failures",
            Counter::DeliveryMapUpdateFailures => "delivery_map_update_failures",
            Counter::PayloadRingbufDrops => "payload_ringbuf_drops",
            Counter::DnsUnsolicited => "dns_unsolicited",
            Counter::CachedPacketsLost => "cached_packets_lost",
        }
    }
}

/// What a [`PayloadEvent`] carries.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadKind {
    /// A UDP or TCP segment from port 53 delivered into a pod that had
    /// sent to that address and port on the flow: a DNS answer (TCP:
    /// length-prefixed messages).
    DnsAnswer = 1,
    /// One of the first segments a pod sent on a TCP connection that starts
    /// like a TLS ClientHello (a handshake record whose message type is 1).
    TlsClientHello = 2,
}

impl PayloadKind {
    /// Decodes the wire value, `None` for an unknown kind.
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::DnsAnswer),
            2 => Some(Self::TlsClientHello),
            _ => None,
        }
    }
}

/// What a TC program hands the payload program it tail-calls (a tail call
/// takes no arguments): the packet's flow, and where its payload starts.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PayloadContext {
    /// The packet's flow at this interface.
    pub key: FlowKey,
    /// The packet's direction in `key`.
    pub direction: u8,
    /// A [`PayloadKind`] value.
    pub kind: u8,
    /// Where the transport payload starts, from the start of the frame.
    pub offset: u16,
}
const _: () = assert!(size_of::<PayloadContext>() == 48);

/// Payload bytes a [`PayloadEvent`] holds at most: a whole segment of a
/// 1500-byte MTU, and every classic (512-byte) DNS answer.
pub const PAYLOAD_CAPTURE_BYTES: usize = 2048;

/// The start of a DNS answer or TLS ClientHello, for naming destinations.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadEvent {
    /// Common header; `kind` is a [`PayloadKind`].
    pub header: EventHeader,
    /// The packet's flow at the interface that saw it.
    pub key: FlowKey,
    /// Direction of the packet in `key`.
    pub direction: u8,
    /// Explicit padding.
    pub _pad: u8,
    /// Transport payload bytes in the packet (may exceed `captured`).
    pub length: u16,
    /// Bytes of `data` that hold payload.
    pub captured: u16,
    /// Explicit padding.
    pub _pad2: [u8; 6],
    /// The first `captured` bytes of the transport payload.
    pub data: [u8; PAYLOAD_CAPTURE_BYTES],
}
const _: () = assert!(size_of::<PayloadEvent>() == 72 + PAYLOAD_CAPTURE_BYTES);

/// Payload ring size in bytes: about 1,900 events between two reads.
pub const PAYLOADS_RING_BYTES: u32 = 4 * 1024 * 1024;
/// The slot of [`names::TAIL_CALLS_MAP`] that holds
/// [`names::PAYLOAD_PROGRAM`].
pub const PAYLOAD_SLOT: u32 = 1;

/// Maximum number of flow entries (per interface observation) in the kernel.
pub const FLOWS_MAX_ENTRIES: u32 = 262_144;
/// Maximum number of in-flight fragmented datagrams remembered.
pub const FRAGMENTS_MAX_ENTRIES: u32 = 16_384;
/// The slot of [`names::TAIL_CALLS_MAP`] that holds
/// [`names::ICMP_ERROR_PROGRAM`].
pub const ICMP_ERROR_SLOT: u32 = 0;
/// Maximum number of UDP flows whose socket delivery is remembered (LRU).
pub const DELIVERED_MAX_ENTRIES: u32 = 65_536;
/// Ring buffer size in bytes (a power of two, multiple of the page size).
pub const EVENTS_RING_BYTES: u32 = 4 * 1024 * 1024;

#[cfg(feature = "user")]
mod user {
    // SAFETY: all these types are plain old data: repr(C), no pointers, every
    // bit pattern valid, padding explicit.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowStats {}
    unsafe impl aya::Pod for super::CachedFlow {}
    unsafe impl aya::Pod for super::FragmentKey {}
    unsafe impl aya::Pod for super::FragmentPorts {}
}
