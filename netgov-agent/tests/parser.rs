//! The eBPF parser on crafted frames, run in the kernel with
//! `BPF_PROG_TEST_RUN`: every header shape the datapath claims to handle,
//! and the malformed ones it must count without crashing or miscounting.
//!
//! Privileged: needs root to load eBPF programs. These tests fail (never
//! skip) without it.

use std::net::IpAddr;

use netgov_agent::capture::datapath::{AttachMode, Datapath, DatapathMaps, read_counter};
use netgov_agent::capture::flow_table::to_ip;
use netgov_agent::capture::test_run::{self, TestPacket};
use netgov_common::{Counter, FlowKey, FlowStats, Hook, proto, tcp_flags};

const TC_ACT_UNSPEC: i32 = -1;
const LOOPBACK_IFINDEX: u32 = 1;

struct Harness {
    datapath: Datapath,
    maps: DatapathMaps,
}

impl Harness {
    fn new() -> Self {
        let mut datapath = Datapath::load(AttachMode::Auto, netgov_common::FLOWS_MAX_ENTRIES)
            .expect("loading the eBPF programs needs root (these tests must not be skipped)");
        let maps = datapath.take_maps().expect("maps");
        Self { datapath, maps }
    }

    fn run_gso(&self, frame: &[u8], hook: Hook, gso_segs: u32, gso_size: u32) {
        let fd = self.datapath.program_fd(hook).expect("program fd");
        let packet = TestPacket {
            frame,
            ifindex: LOOPBACK_IFINDEX,
            gso_segs,
            gso_size,
        };
        let verdict = test_run::run(fd, packet).unwrap_or_else(|e| {
            panic!(
                "BPF_PROG_TEST_RUN on {} bytes {frame:02x?}: {e}",
                frame.len()
            )
        });
        assert_eq!(verdict, TC_ACT_UNSPEC, "programs must only observe");
    }

    fn run(&self, frame: &[u8]) {
        self.run_gso(frame, Hook::FromPod, 0, 0);
    }

    fn flows(&self) -> Vec<(FlowKey, FlowStats)> {
        self.datapath.flush_cache().expect("flush the flow cache");
        self.maps
            .flows
            .iter()
            .map(|r| r.expect("map read"))
            .collect()
    }

    fn only_flow(&self) -> (FlowKey, FlowStats) {
        let flows = self.flows();
        assert_eq!(flows.len(), 1, "expected exactly one flow, got {flows:#?}");
        flows[0]
    }

    fn counter(&self, counter: Counter) -> u64 {
        read_counter(&self.maps.counters, counter).expect("counter")
    }
}

// ---------------------------------------------------------------- frames

const SRC4: [u8; 4] = [10, 244, 0, 11];
const DST4: [u8; 4] = [10, 244, 0, 12];
const SRC6: [u8; 16] = [0xfd, 0, 0x02, 0x44, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11];
const DST6: [u8; 16] = [0xfd, 0, 0x02, 0x44, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12];

fn ethernet(ethertype: u16, vlans: &[u16]) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
    for (i, vid) in vlans.iter().enumerate() {
        let tpid: u16 = if i == 0 && vlans.len() > 1 {
            0x88A8
        } else {
            0x8100
        };
        frame.extend_from_slice(&tpid.to_be_bytes());
        frame.extend_from_slice(&vid.to_be_bytes());
    }
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame
}

struct V4 {
    protocol: u8,
    id: u16,
    frag: u16,
    options: Vec<u8>,
}

impl Default for V4 {
    fn default() -> Self {
        Self {
            protocol: proto::TCP,
            id: 1,
            frag: 0,
            options: Vec::new(),
        }
    }
}

fn ipv4(v4: V4, payload: &[u8]) -> Vec<u8> {
    assert_eq!(v4.options.len() % 4, 0);
    let header_len = 20 + v4.options.len();
    let total = (header_len + payload.len()) as u16;
    let mut ip = vec![0x40 | (header_len / 4) as u8, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&v4.id.to_be_bytes());
    ip.extend_from_slice(&v4.frag.to_be_bytes());
    ip.extend_from_slice(&[64, v4.protocol, 0, 0]);
    ip.extend_from_slice(&SRC4);
    ip.extend_from_slice(&DST4);
    ip.extend_from_slice(&v4.options);
    ip.extend_from_slice(payload);
    ip
}

/// An IPv6 header followed by `chain` (already encoded extension headers,
/// the first one's type given in `next_header`) and the payload.
fn ipv6(next_header: u8, rest: &[u8]) -> Vec<u8> {
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&(rest.len() as u16).to_be_bytes());
    ip.extend_from_slice(&[next_header, 64]);
    ip.extend_from_slice(&SRC6);
    ip.extend_from_slice(&DST6);
    ip.extend_from_slice(rest);
    ip
}

fn tcp(src_port: u16, dst_port: u16, flags: u8, payload_len: usize) -> Vec<u8> {
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&src_port.to_be_bytes());
    tcp.extend_from_slice(&dst_port.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    tcp.extend(std::iter::repeat_n(0xAB, payload_len));
    tcp
}

fn udp(src_port: u16, dst_port: u16, payload_len: usize) -> Vec<u8> {
    let mut udp = Vec::new();
    udp.extend_from_slice(&src_port.to_be_bytes());
    udp.extend_from_slice(&dst_port.to_be_bytes());
    udp.extend_from_slice(&((8 + payload_len) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend(std::iter::repeat_n(0xCD, payload_len));
    udp
}

fn frame(ethernet: Vec<u8>, ip: Vec<u8>) -> Vec<u8> {
    let mut frame = ethernet;
    frame.extend(ip);
    frame
}

fn addr(key: &FlowKey, a: bool) -> IpAddr {
    to_ip(if a { &key.addr_a } else { &key.addr_b }, key.ip_version)
}

// ---------------------------------------------------------------- tests

#[test]
fn ipv4_tcp_syn_is_one_flow_with_ip_layer_bytes() {
    let h = Harness::new();
    let ip = ipv4(V4::default(), &tcp(40000, 8080, tcp_flags::SYN as u8, 0));
    h.run(&frame(ethernet(0x0800, &[]), ip));
    let (key, stats) = h.only_flow();
    assert_eq!(addr(&key, true), IpAddr::from(SRC4));
    assert_eq!(addr(&key, false), IpAddr::from(DST4));
    assert_eq!(
        (key.port_a, key.port_b, key.protocol),
        (40000, 8080, proto::TCP)
    );
    assert_eq!(key.ifindex, LOOPBACK_IFINDEX);
    assert_eq!(stats.packets, [1, 0]);
    assert_eq!(stats.bytes, [40, 0]);
    assert_eq!(stats.flags[0] & 0xFF, u64::from(tcp_flags::SYN));
    assert_eq!(h.counter(Counter::Packets), 1);
    assert_eq!(h.counter(Counter::ParseErrors), 0);
}

#[test]
fn both_directions_share_one_canonical_entry() {
    let h = Harness::new();
    let v4 = || V4 {
        protocol: proto::UDP,
        ..V4::default()
    };
    h.run(&frame(
        ethernet(0x0800, &[]),
        ipv4(v4(), &udp(5353, 53, 10)),
    ));
    // The reply, addresses and ports swapped.
    let mut reply = ipv4(v4(), &udp(53, 5353, 30));
    reply[12..16].copy_from_slice(&DST4);
    reply[16..20].copy_from_slice(&SRC4);
    h.run_gso(&frame(ethernet(0x0800, &[]), reply), Hook::ToPod, 0, 0);
    let (key, stats) = h.only_flow();
    assert_eq!((key.port_a, key.port_b), (5353, 53));
    assert_eq!(stats.packets, [1, 1]);
    assert_eq!(stats.bytes, [20 + 8 + 10, 20 + 8 + 30]);
}

#[test]
fn ipv4_options_are_skipped() {
    let h = Harness::new();
    let v4 = V4 {
        options: vec![1, 1, 1, 1, 1, 1, 1, 0], // NOPs and EOL: 8 bytes
        protocol: proto::UDP,
        ..V4::default()
    };
    h.run(&frame(ethernet(0x0800, &[]), ipv4(v4, &udp(1111, 2222, 4))));
    let (key, stats) = h.only_flow();
    assert_eq!((key.port_a, key.port_b), (1111, 2222));
    assert_eq!(stats.bytes, [28 + 8 + 4, 0]);
}

#[test]
fn vlan_tags_single_and_stacked() {
    let h = Harness::new();
    let v4 = || V4 {
        protocol: proto::UDP,
        ..V4::default()
    };
    h.run(&frame(
        ethernet(0x0800, &[100]),
        ipv4(v4(), &udp(1000, 7000, 0)),
    ));
    h.run(&frame(
        ethernet(0x0800, &[200, 300]),
        ipv4(v4(), &udp(1000, 7000, 0)),
    ));
    let (key, stats) = h.only_flow();
    assert_eq!((key.port_a, key.port_b), (1000, 7000));
    assert_eq!(stats.packets, [2, 0]);
    assert_eq!(stats.bytes, [56, 0]);
}

#[test]
fn ipv6_extension_header_chain_is_followed() {
    let h = Harness::new();
    // Hop-by-hop (8 bytes) → routing (24 bytes) → destination options
    // (16 bytes) → UDP.
    let mut rest = vec![43, 0, 1, 4, 0, 0, 0, 0];
    rest.extend_from_slice(&[60, 2, 0, 0, 0, 0, 0, 0]);
    rest.extend_from_slice(&[0; 16]);
    rest.extend_from_slice(&[17, 1, 1, 12, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
    rest.extend(udp(3000, 4000, 12));
    let ip = ipv6(0, &rest);
    let total = ip.len() as u64;
    h.run(&frame(ethernet(0x86DD, &[]), ip));
    let (key, stats) = h.only_flow();
    assert_eq!(
        (key.port_a, key.port_b, key.protocol),
        (3000, 4000, proto::UDP)
    );
    assert_eq!(addr(&key, true), IpAddr::from(SRC6));
    assert_eq!(stats.bytes, [total, 0]);
}

#[test]
fn ipv4_fragments_are_attributed_through_the_first() {
    let h = Harness::new();
    let first = V4 {
        protocol: proto::UDP,
        id: 0x4242,
        frag: 0x2000, // MF, offset 0
        ..V4::default()
    };
    // UDP header claims 8 + 1400 bytes; 1000 travel in this fragment.
    let mut payload = udp(6000, 6001, 1400);
    payload.truncate(8 + 992);
    h.run(&frame(ethernet(0x0800, &[]), ipv4(first, &payload)));
    let later = V4 {
        protocol: proto::UDP,
        id: 0x4242,
        frag: 125, // offset 1000 bytes, last fragment
        ..V4::default()
    };
    h.run(&frame(ethernet(0x0800, &[]), ipv4(later, &[0xEE; 408])));
    // A later fragment of a datagram whose first fragment was never seen.
    let orphan = V4 {
        protocol: proto::UDP,
        id: 0x9999,
        frag: 125,
        ..V4::default()
    };
    h.run(&frame(ethernet(0x0800, &[]), ipv4(orphan, &[0xEE; 100])));

    let (key, stats) = h.only_flow();
    assert_eq!((key.port_a, key.port_b), (6000, 6001));
    assert_eq!(stats.packets, [2, 0]);
    assert_eq!(stats.bytes, [(20 + 1000) + (20 + 408), 0]);
    assert_eq!(h.counter(Counter::FragmentsMatched), 1);
    assert_eq!(h.counter(Counter::FragmentsUnmatched), 1);
    assert_eq!(h.counter(Counter::Packets), 3);
}

#[test]
fn ipv6_fragments_are_attributed_through_the_first() {
    let h = Harness::new();
    let id = [0, 0, 0x51, 0x52];
    let mut first = vec![17, 0, 0, 1]; // next header UDP, offset 0, M=1
    first.extend_from_slice(&id);
    first.extend(udp(7100, 7200, 100));
    h.run(&frame(ethernet(0x86DD, &[]), ipv6(44, &first)));
    let mut later = vec![17, 0, 0, 0x70]; // offset 14 * 8 = 112, M=0
    later.extend_from_slice(&id);
    later.extend_from_slice(&[0; 60]);
    h.run(&frame(ethernet(0x86DD, &[]), ipv6(44, &later)));
    let (key, stats) = h.only_flow();
    assert_eq!((key.port_a, key.port_b), (7100, 7200));
    assert_eq!(stats.packets, [2, 0]);
    // IPv6 header + fragment header + (UDP header + 100) and + 60 bytes.
    assert_eq!(stats.bytes, [(40 + 8 + 8 + 100) + (40 + 8 + 60), 0]);
    assert_eq!(h.counter(Counter::FragmentsMatched), 1);
}

#[test]
fn gso_packets_count_their_segments() {
    let h = Harness::new();
    // A 3-segment TSO super-packet of 3 * 1000 payload bytes.
    let ip = ipv4(V4::default(), &tcp(40000, 8080, tcp_flags::ACK as u8, 3000));
    h.run_gso(&frame(ethernet(0x0800, &[]), ip), Hook::FromPod, 3, 1000);
    let (_, stats) = h.only_flow();
    assert_eq!(stats.packets, [3, 0]);
    // Each wire segment carries its own 20-byte IP and TCP headers.
    assert_eq!(stats.bytes, [3 * (20 + 20) + 3000, 0]);
}

#[test]
fn icmp_echo_request_and_reply_are_one_flow() {
    let h = Harness::new();
    let echo = |kind: u8| {
        let mut icmp = vec![kind, 0, 0, 0, 0x12, 0x34, 0, 1];
        icmp.extend_from_slice(&[0; 56]);
        icmp
    };
    let v4 = || V4 {
        protocol: proto::ICMP,
        ..V4::default()
    };
    h.run(&frame(ethernet(0x0800, &[]), ipv4(v4(), &echo(8))));
    let mut reply = ipv4(v4(), &echo(0));
    reply[12..16].copy_from_slice(&DST4);
    reply[16..20].copy_from_slice(&SRC4);
    h.run(&frame(ethernet(0x0800, &[]), reply));
    let (key, stats) = h.only_flow();
    assert_eq!(stats.packets, [1, 1]);
    assert_eq!(stats.bytes, [84, 84]);
    assert_eq!((key.port_a, key.port_b), (0x1234, 0));
}

#[test]
fn malformed_frames_are_counted_not_attributed() {
    let h = Harness::new();
    let good = ipv4(V4::default(), &tcp(1, 2, tcp_flags::SYN as u8, 0));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // The kernel's test runner refuses frames shorter than Ethernet plus
        // a minimal IP header, so truncation is exercised through headers
        // that claim more than the frame holds.
        (
            "IHL beyond the datagram",
            frame(ethernet(0x0800, &[]), {
                let mut ip = good.clone();
                ip[0] = 0x4F;
                ip
            }),
        ),
        (
            "truncated TCP header",
            frame(ethernet(0x0800, &[]), {
                let mut ip = good[..30].to_vec();
                ip[2..4].copy_from_slice(&30u16.to_be_bytes());
                ip
            }),
        ),
        (
            "IHL below 5",
            frame(ethernet(0x0800, &[]), {
                let mut ip = good.clone();
                ip[0] = 0x44;
                ip
            }),
        ),
        (
            "total length beyond the frame",
            frame(ethernet(0x0800, &[]), {
                let mut ip = good.clone();
                ip[2..4].copy_from_slice(&1500u16.to_be_bytes());
                ip
            }),
        ),
        (
            "IPv4 ethertype, IPv6 version",
            frame(ethernet(0x0800, &[]), {
                let mut ip = good.clone();
                ip[0] = 0x65;
                ip
            }),
        ),
        (
            "TCP data offset below 5",
            frame(ethernet(0x0800, &[]), {
                let mut ip = good.clone();
                ip[20 + 12] = 0x20;
                ip
            }),
        ),
        (
            "IPv6 payload length beyond the frame",
            frame(ethernet(0x86DD, &[]), {
                let mut ip = ipv6(17, &udp(1, 2, 0));
                ip[4..6].copy_from_slice(&900u16.to_be_bytes());
                ip
            }),
        ),
        (
            "truncated UDP header",
            frame(ethernet(0x86DD, &[]), ipv6(17, &[0, 1])),
        ),
        (
            "IPv6 extension chain running off the end",
            frame(ethernet(0x86DD, &[]), ipv6(0, &[60, 200, 0, 0, 0, 0, 0, 0])),
        ),
        ("VLAN tag cut short", {
            let mut f = ethernet(0x8100, &[]);
            f.extend_from_slice(&[0, 1]);
            f
        }),
    ];
    for (i, (name, frame)) in cases.iter().enumerate() {
        h.run(frame);
        assert_eq!(
            h.counter(Counter::ParseErrors),
            i as u64 + 1,
            "case `{name}` not counted as a parse error"
        );
    }
    assert!(
        h.flows().is_empty(),
        "malformed frames created flows: {:#?}",
        h.flows()
    );

    // Non-IP frames and other protocols are counted as such, not as errors.
    let mut arp = ethernet(0x0806, &[]);
    arp.extend_from_slice(&[0; 28]);
    h.run(&arp);
    let gre = ipv4(
        V4 {
            protocol: 47,
            ..V4::default()
        },
        &[0; 8],
    );
    h.run(&frame(ethernet(0x0800, &[]), gre));
    assert_eq!(h.counter(Counter::NonIpPackets), 1);
    assert_eq!(h.counter(Counter::OtherProtocolPackets), 1);
    assert_eq!(h.counter(Counter::ParseErrors), cases.len() as u64);
    assert!(h.flows().is_empty());
}

#[test]
fn random_garbage_never_crashes_or_miscounts() {
    let h = Harness::new();
    // A fixed-seed xorshift keeps the run reproducible.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let runs = 2000u64;
    for _ in 0..runs {
        // At least Ethernet + IPv6 header: the kernel's test runner refuses
        // shorter frames before our program runs.
        let len = 54 + (next() % 120) as usize;
        let mut frame: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Steer most frames into the IP parsers.
        let ethertype: u16 = match next() % 4 {
            0 => 0x0800,
            1 => 0x86DD,
            2 => 0x8100,
            _ => next() as u16,
        };
        frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
        h.run(&frame);
    }
    let accounted: u64 = [
        Counter::NonIpPackets,
        Counter::OtherProtocolPackets,
        Counter::ParseErrors,
        Counter::FragmentsUnmatched,
    ]
    .iter()
    .map(|c| h.counter(*c))
    .sum();
    let in_flows: u64 = h
        .flows()
        .iter()
        .map(|(_, s)| s.packets[0] + s.packets[1])
        .sum();
    assert_eq!(h.counter(Counter::Packets), runs);
    assert_eq!(
        accounted + in_flows,
        runs,
        "every packet is either in a flow or in exactly one counter"
    );
}

#[test]
fn sctp_ports_are_read_from_the_common_header() {
    let h = Harness::new();
    // Common header (ports, verification tag, checksum) + an INIT chunk.
    let mut sctp = Vec::new();
    sctp.extend_from_slice(&36412u16.to_be_bytes());
    sctp.extend_from_slice(&38412u16.to_be_bytes());
    sctp.extend_from_slice(&[0; 8]);
    sctp.extend_from_slice(&[1, 0, 0, 20]);
    sctp.extend_from_slice(&[0; 16]);
    let v4 = V4 {
        protocol: proto::SCTP,
        ..V4::default()
    };
    h.run(&frame(ethernet(0x0800, &[]), ipv4(v4, &sctp)));
    let (key, stats) = h.only_flow();
    assert_eq!(
        (key.port_a, key.port_b, key.protocol),
        (36412, 38412, proto::SCTP)
    );
    assert_eq!(stats.bytes, [20 + 12 + 20, 0]);
}

#[test]
fn the_last_fragment_retires_the_memo() {
    let h = Harness::new();
    let v4 = |frag: u16| V4 {
        protocol: proto::UDP,
        id: 0x7777,
        frag,
        ..V4::default()
    };
    let mut first = udp(6100, 6101, 100);
    first.truncate(8 + 40);
    h.run(&frame(ethernet(0x0800, &[]), ipv4(v4(0x2000), &first)));
    h.run(&frame(ethernet(0x0800, &[]), ipv4(v4(6), &[0; 60]))); // last fragment
    // The same IP ID reused later, without its first fragment: unmatched,
    // not attributed to the finished datagram's ports.
    h.run(&frame(ethernet(0x0800, &[]), ipv4(v4(6), &[0; 60])));
    let (_, stats) = h.only_flow();
    assert_eq!(stats.packets, [2, 0]);
    assert_eq!(h.counter(Counter::FragmentsMatched), 1);
    assert_eq!(h.counter(Counter::FragmentsUnmatched), 1);
}

#[test]
fn offloaded_packets_without_segment_count_use_the_segment_size() {
    let h = Harness::new();
    // 2,500 payload bytes with a 1,000-byte segment size: 3 wire segments.
    let ip = ipv4(V4::default(), &tcp(40000, 8080, tcp_flags::ACK as u8, 2500));
    h.run_gso(&frame(ethernet(0x0800, &[]), ip), Hook::ToPod, 0, 1000);
    let (_, stats) = h.only_flow();
    assert_eq!(stats.packets, [3, 0]);
    assert_eq!(stats.bytes, [3 * 40 + 2500, 0]);
}

#[test]
fn the_first_packets_flags_are_kept() {
    let h = Harness::new();
    let synack = (tcp_flags::SYN | tcp_flags::ACK) as u8;
    h.run(&frame(
        ethernet(0x0800, &[]),
        ipv4(V4::default(), &tcp(8080, 40000, synack, 0)),
    ));
    let (_, stats) = h.only_flow();
    assert_eq!(stats.first_tcp_flags, synack);
}

/// An ICMP port unreachable quoting a UDP datagram marks that datagram
/// delivered — only when the datagram's destination sent it — and is
/// still a flow of its own.
#[test]
fn an_icmp_error_from_the_destination_marks_the_quoted_datagram_delivered() {
    let h = Harness::new();
    let quoted = |src_port: u16| {
        let mut datagram = ipv4(
            V4 {
                protocol: proto::UDP,
                ..V4::default()
            },
            &udp(src_port, 9, 0),
        );
        datagram.truncate(28);
        datagram
    };
    let error_from = |reporter: [u8; 4], src_port: u16| {
        let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend(quoted(src_port));
        let mut ip = ipv4(
            V4 {
                protocol: proto::ICMP,
                ..V4::default()
            },
            &icmp,
        );
        ip[12..16].copy_from_slice(&reporter);
        ip[16..20].copy_from_slice(&SRC4);
        frame(ethernet(0x0800, &[]), ip)
    };
    h.run(&error_from(DST4, 40000));
    h.run(&error_from([10, 244, 0, 1], 40001));

    let key = |src_port: u16| {
        let mut key = FlowKey {
            port_a: src_port,
            port_b: 9,
            protocol: proto::UDP,
            ip_version: 4,
            ..FlowKey::default()
        };
        key.addr_a[..4].copy_from_slice(&SRC4);
        key.addr_b[..4].copy_from_slice(&DST4);
        key
    };
    let delivered = |src_port| h.maps.delivered.get(&key(src_port), 0).ok();
    assert_eq!(
        delivered(40000),
        Some(1),
        "the destination's own port unreachable: delivered, initiator → responder"
    );
    assert_eq!(delivered(40001), None, "a router's error proves nothing");
    assert_eq!(h.flows().len(), 2, "each error is still a flow of its own");
}
