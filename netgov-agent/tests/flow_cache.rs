//! The per-CPU flow cache, on crafted frames run in the kernel with
//! `BPF_PROG_TEST_RUN`: an established flow's packets are counted in the
//! cache, and after a flush the flow's entry holds exactly what it would
//! without the cache; what the entry must see at once (a new flag, a
//! flow's end, DNS) bypasses it; and a flow whose entry is gone counts its
//! cached packets as lost and starts anew.
//!
//! Privileged: needs root to load eBPF programs. These tests fail (never
//! skip) without it. Each pins itself to one CPU, so that its packets meet
//! the same CPU's cache.

use netgov_agent::capture::datapath::{AttachMode, Datapath, DatapathMaps, read_counter};
use netgov_agent::capture::test_run::{self, TestPacket};
use netgov_common::{Counter, FlowKey, FlowStats, Hook, proto, seen_at, tcp_flags};

const LOOPBACK_IFINDEX: u32 = 1;
const CLIENT: [u8; 4] = [10, 244, 0, 11];
const SERVER: [u8; 4] = [10, 244, 0, 12];
/// IP-layer bytes of the UDP datagrams sent here (20 + 8 + 12).
const UDP_BYTES: u64 = 40;
/// IP-layer bytes of the TCP segments sent here (20 + 20, no payload).
const TCP_BYTES: u64 = 40;

struct Harness {
    datapath: Datapath,
    maps: DatapathMaps,
}

impl Harness {
    fn new() -> Self {
        pin_to_first_cpu();
        let mut datapath = Datapath::load(AttachMode::Auto, netgov_common::FLOWS_MAX_ENTRIES)
            .expect("loading the eBPF programs needs root (these tests must not be skipped)");
        let maps = datapath.take_maps().expect("maps");
        Self { datapath, maps }
    }

    fn send(&self, hook: Hook, frame: &[u8]) {
        let fd = self.datapath.program_fd(hook).expect("program fd");
        let packet = TestPacket {
            frame,
            ifindex: LOOPBACK_IFINDEX,
            gso_segs: 0,
            gso_size: 0,
        };
        test_run::run(fd, packet).expect("BPF_PROG_TEST_RUN");
    }

    /// The flow map as it is, cached counts left out.
    fn entries(&self) -> Vec<(FlowKey, FlowStats)> {
        let entries = self.maps.flows.iter().map(|r| r.expect("map read"));
        let mut entries: Vec<_> = entries.collect();
        entries.sort_by_key(|(key, _)| (key.port_a, key.port_b));
        entries
    }

    /// The only entry, cached counts left out.
    fn only_entry(&self) -> FlowStats {
        let entries = self.entries();
        assert_eq!(entries.len(), 1, "expected one flow entry: {entries:#?}");
        entries[0].1
    }

    fn flush(&self) {
        self.datapath.flush_cache().expect("flush the flow cache");
    }

    fn counter(&self, counter: Counter) -> u64 {
        read_counter(&self.maps.counters, counter).expect("counter")
    }
}

/// Every packet of a test on one CPU: the cache is per CPU, and a packet
/// on another CPU meets another cache (counted all the same, but not the
/// way a test expects when it reads the map before a flush).
fn pin_to_first_cpu() {
    pin_to(0);
}

fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let result = libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
        assert_eq!(
            result,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn ipv4(src: [u8; 4], dst: [u8; 4], protocol: u8, transport: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00];
    frame.extend_from_slice(&[0x45, 0]);
    frame.extend_from_slice(&((20 + transport.len()) as u16).to_be_bytes());
    frame.extend_from_slice(&[0, 1, 0, 0, 64, protocol, 0, 0]);
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(transport);
    frame
}

/// A UDP datagram with 12 payload bytes.
fn udp(src: [u8; 4], src_port: u16, dst: [u8; 4], dst_port: u16) -> Vec<u8> {
    let mut transport = Vec::new();
    transport.extend_from_slice(&src_port.to_be_bytes());
    transport.extend_from_slice(&dst_port.to_be_bytes());
    transport.extend_from_slice(&[0, 20, 0, 0]);
    transport.extend_from_slice(&[0xCD; 12]);
    ipv4(src, dst, proto::UDP, &transport)
}

/// A TCP segment without payload.
fn tcp(src: [u8; 4], src_port: u16, dst: [u8; 4], dst_port: u16, flags: u32) -> Vec<u8> {
    let mut transport = Vec::new();
    transport.extend_from_slice(&src_port.to_be_bytes());
    transport.extend_from_slice(&dst_port.to_be_bytes());
    transport.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags as u8, 0xff, 0xff]);
    transport.extend_from_slice(&[0, 0, 0, 0]);
    ipv4(src, dst, proto::TCP, &transport)
}

/// The client's SYN and three ACKs on CLIENT:40000 → SERVER:443: the
/// fourth packet makes the flow's direction cacheable.
fn open_connection(harness: &Harness) {
    for flags in [
        tcp_flags::SYN,
        tcp_flags::ACK,
        tcp_flags::ACK,
        tcp_flags::ACK,
    ] {
        harness.send(Hook::FromPod, &tcp(CLIENT, 40000, SERVER, 443, flags));
    }
}

/// What an entry holds per direction, without its times.
fn counts(stats: &FlowStats) -> ([u64; 2], [u64; 2], [u64; 2]) {
    (stats.packets, stats.bytes, stats.flags)
}

const FROM_POD: u64 = seen_at::FROM_POD as u64;
const TO_POD: u64 = seen_at::TO_POD as u64;
const ACK: u64 = tcp_flags::ACK as u64;
const SYN: u64 = tcp_flags::SYN as u64;
const FIN: u64 = tcp_flags::FIN as u64;
const PSH: u64 = tcp_flags::PSH as u64;

#[test]
fn an_established_flow_is_counted_in_the_cache_until_the_flush() {
    let harness = Harness::new();
    let datagram = udp(CLIENT, 40000, SERVER, 8080);
    for _ in 0..10 {
        harness.send(Hook::FromPod, &datagram);
    }
    // The first four reach the entry (a ClientHello would be among them);
    // the fourth offers the flow to the cache, which counts the rest.
    assert_eq!(
        counts(&harness.only_entry()),
        ([4, 0], [4 * UDP_BYTES, 0], [FROM_POD, 0])
    );
    harness.flush();
    let stats = harness.only_entry();
    assert_eq!(
        counts(&stats),
        ([10, 0], [10 * UDP_BYTES, 0], [FROM_POD, 0])
    );
    // A second flush has nothing left to add.
    harness.flush();
    assert_eq!(counts(&harness.only_entry()), counts(&stats));
    assert_eq!(harness.counter(Counter::CachedPacketsLost), 0);
}

#[test]
fn both_directions_and_both_hooks_are_cached_once_each_has_been_seen() {
    let harness = Harness::new();
    let request = udp(CLIENT, 40000, SERVER, 8080);
    let answer = udp(SERVER, 8080, CLIENT, 40000);
    for _ in 0..6 {
        harness.send(Hook::FromPod, &request);
        harness.send(Hook::ToPod, &request);
        harness.send(Hook::FromPod, &answer);
    }
    harness.flush();
    // CLIENT:40000 sorts before SERVER:8080: the request is A to B.
    assert_eq!(
        counts(&harness.only_entry()),
        (
            [12, 6],
            [12 * UDP_BYTES, 6 * UDP_BYTES],
            [FROM_POD | TO_POD, FROM_POD]
        )
    );
    let cached_before = counts(&harness.only_entry());
    for _ in 0..5 {
        harness.send(Hook::FromPod, &request);
        harness.send(Hook::ToPod, &request);
        harness.send(Hook::FromPod, &answer);
    }
    // Every one of these was counted in the cache.
    assert_eq!(counts(&harness.only_entry()), cached_before);
    harness.flush();
    assert_eq!(
        counts(&harness.only_entry()),
        (
            [22, 11],
            [22 * UDP_BYTES, 11 * UDP_BYTES],
            [FROM_POD | TO_POD, FROM_POD]
        )
    );
}

#[test]
fn a_new_flag_reaches_the_entry_at_once_and_an_ending_flow_is_not_cached() {
    let harness = Harness::new();
    let segment = |flags| tcp(CLIENT, 40000, SERVER, 443, flags);
    harness.send(Hook::FromPod, &segment(tcp_flags::SYN));
    for _ in 0..5 {
        harness.send(Hook::FromPod, &segment(tcp_flags::ACK));
    }
    // Cached: the entry still shows the first four.
    assert_eq!(harness.only_entry().packets, [4, 0]);
    // A flag the flow had not sent goes to the entry, with the cached
    // packets still in the cache.
    harness.send(Hook::FromPod, &segment(tcp_flags::ACK | tcp_flags::PSH));
    assert_eq!(
        counts(&harness.only_entry()),
        ([5, 0], [5 * TCP_BYTES, 0], [FROM_POD | SYN | ACK | PSH, 0])
    );
    // FIN goes to the entry, and from then on every packet does.
    harness.send(Hook::FromPod, &segment(tcp_flags::ACK | tcp_flags::FIN));
    for _ in 0..3 {
        harness.send(Hook::FromPod, &segment(tcp_flags::ACK));
    }
    assert_eq!(harness.only_entry().packets, [9, 0]);
    harness.flush();
    assert_eq!(
        counts(&harness.only_entry()),
        (
            [11, 0],
            [11 * TCP_BYTES, 0],
            [FROM_POD | SYN | ACK | PSH | FIN, 0]
        )
    );
}

#[test]
fn a_flow_whose_entry_is_gone_counts_its_cached_packets_lost_then_starts_anew() {
    let mut harness = Harness::new();
    let datagram = udp(CLIENT, 40000, SERVER, 8080);
    for _ in 0..7 {
        harness.send(Hook::FromPod, &datagram);
    }
    let (key, stats) = harness.entries()[0];
    assert_eq!(stats.packets, [4, 0]);
    // As when user space ends the flow (or the LRU map evicts it) while
    // three of its packets are cached.
    harness.maps.flows.remove(&key).expect("delete the entry");
    harness.flush();
    assert_eq!(harness.counter(Counter::CachedPacketsLost), 3);
    assert_eq!(harness.entries(), vec![]);
    // The slot stopped counting: the next packet makes a new entry.
    harness.send(Hook::FromPod, &datagram);
    harness.flush();
    assert_eq!(
        counts(&harness.only_entry()),
        ([1, 0], [UDP_BYTES, 0], [FROM_POD, 0])
    );
    assert_eq!(harness.counter(Counter::CachedPacketsLost), 3);
}

#[test]
fn dns_flows_are_never_cached() {
    let harness = Harness::new();
    let question = udp(CLIENT, 40000, SERVER, 53);
    let answer = udp(SERVER, 53, CLIENT, 40000);
    for _ in 0..8 {
        harness.send(Hook::FromPod, &question);
        harness.send(Hook::ToPod, &answer);
    }
    // Read without a flush: every packet is in the entry.
    assert_eq!(
        counts(&harness.only_entry()),
        ([8, 8], [8 * UDP_BYTES, 8 * UDP_BYTES], [FROM_POD, TO_POD])
    );
}

#[test]
fn flows_sharing_slots_and_taking_over_idle_ones_keep_exact_counts() {
    let harness = Harness::new();
    // 3,000 flows over 1,024 slots: most slots are shared. First every flow
    // sends; then only the odd ports, so the even ports' slots go idle and
    // pass to odd ports that share them.
    const FLOWS: u16 = 3000;
    let send = |port: u16| harness.send(Hook::FromPod, &udp(CLIENT, 20000 + port, SERVER, 8080));
    for _ in 0..5 {
        (0..FLOWS).for_each(send);
        harness.flush();
    }
    for _ in 0..6 {
        (0..FLOWS).filter(|port| port % 2 == 1).for_each(send);
        harness.flush();
        harness.flush();
    }
    // A flush that finds nothing counted since the one before frees the
    // slot: each flow's next packet takes its slot back (unless a flow
    // sharing it came first), the one after is cached.
    for _ in 0..2 {
        (0..FLOWS).filter(|port| port % 2 == 1).for_each(send);
    }
    let unflushed: u64 = harness.entries().iter().map(|(_, s)| s.packets[0]).sum();
    let sent = 5 * u64::from(FLOWS) + 8 * u64::from(FLOWS / 2);
    assert!(
        unflushed < sent,
        "some packets are still cached before the flush"
    );
    harness.flush();
    let entries = harness.entries();
    assert_eq!(entries.len(), usize::from(FLOWS));
    for (key, stats) in entries {
        let packets = if key.port_a % 2 == 1 { 13 } else { 5 };
        assert_eq!(
            counts(&stats),
            ([packets, 0], [packets * UDP_BYTES, 0], [FROM_POD, 0]),
            "flow from port {}",
            key.port_a
        );
    }
    assert_eq!(harness.counter(Counter::CachedPacketsLost), 0);
}

#[test]
fn a_reset_from_the_other_end_stops_the_cache_at_once() {
    let harness = Harness::new();
    let client = |flags| tcp(CLIENT, 40000, SERVER, 443, flags);
    harness.send(Hook::FromPod, &client(tcp_flags::SYN));
    harness.send(
        Hook::ToPod,
        &tcp(SERVER, 443, CLIENT, 40000, tcp_flags::SYN | tcp_flags::ACK),
    );
    for _ in 0..5 {
        harness.send(Hook::FromPod, &client(tcp_flags::ACK));
    }
    assert_eq!(harness.only_entry().packets, [4, 1]);
    // The server's second packet, an RST: the client's direction, cached
    // so far, goes to the entry again.
    harness.send(
        Hook::ToPod,
        &tcp(SERVER, 443, CLIENT, 40000, tcp_flags::RST),
    );
    for _ in 0..3 {
        harness.send(Hook::FromPod, &client(tcp_flags::ACK));
    }
    assert_eq!(harness.only_entry().packets, [7, 2]);
    harness.flush();
    assert_eq!(harness.only_entry().packets, [9, 2]);
}

#[test]
fn a_flow_started_again_before_a_flush_is_not_counted_in_the_old_ones_slot() {
    let mut harness = Harness::new();
    let client = |flags| tcp(CLIENT, 40000, SERVER, 443, flags);
    open_connection(&harness);
    harness.send(Hook::FromPod, &client(tcp_flags::ACK));
    let (key, stats) = harness.entries()[0];
    assert_eq!(stats.packets, [4, 0]);
    harness.maps.flows.remove(&key).expect("delete the entry");
    // A new connection on the same ports before any flush: its first
    // packets reach its new entry (a ClientHello is looked for there).
    harness.send(Hook::FromPod, &client(tcp_flags::SYN));
    harness.send(Hook::FromPod, &client(tcp_flags::ACK));
    harness.send(Hook::FromPod, &client(tcp_flags::ACK | tcp_flags::PSH));
    assert_eq!(
        counts(&harness.only_entry()),
        ([3, 0], [3 * TCP_BYTES, 0], [FROM_POD | SYN | ACK | PSH, 0])
    );
    // The packet the slot held for the old connection is added to the
    // entry its key has now: traffic of these ports at this interface,
    // neither lost nor counted twice.
    harness.flush();
    assert_eq!(harness.only_entry().packets, [4, 0]);
    assert_eq!(harness.counter(Counter::CachedPacketsLost), 0);
}

#[test]
fn a_flow_started_again_on_the_same_ports_does_not_inherit_the_earlier_ones_flags() {
    let mut harness = Harness::new();
    let client = |flags| tcp(CLIENT, 40000, SERVER, 443, flags);
    const ECE: u32 = 0x40;
    open_connection(&harness);
    // ECE is new: it reaches the entry, and the slot learns it; the next
    // two are cached with it.
    for _ in 0..3 {
        harness.send(Hook::FromPod, &client(tcp_flags::ACK | ECE));
    }
    harness.flush();
    let (key, stats) = harness.entries()[0];
    assert_eq!(stats.packets, [7, 0]);
    harness.maps.flows.remove(&key).expect("delete the entry");
    // A new connection on the same ports, without ECE.
    harness.send(Hook::FromPod, &client(tcp_flags::SYN));
    for _ in 0..5 {
        harness.send(Hook::FromPod, &client(tcp_flags::ACK));
    }
    harness.flush();
    assert_eq!(
        counts(&harness.only_entry()),
        ([6, 0], [6 * TCP_BYTES, 0], [FROM_POD | SYN | ACK, 0])
    );
    assert_eq!(harness.counter(Counter::CachedPacketsLost), 0);
}

#[test]
fn counts_stay_exact_while_flushes_interrupt_packets_on_every_cpu() {
    let harness = Harness::new();
    // Every online CPU (this thread is pinned to the first already).
    // SAFETY: a plain query.
    let cpus = usize::try_from(unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }).unwrap_or(1);
    assert!(cpus >= 2, "the test needs two CPUs to interleave on");
    const FLOWS: u16 = 64;
    const ROUNDS: u64 = 1500;
    let sending = std::sync::atomic::AtomicUsize::new(cpus);
    let flushes = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| {
        for cpu in 0..cpus {
            let (harness, sending) = (&harness, &sending);
            scope.spawn(move || {
                pin_to(cpu);
                let frames: Vec<_> = (0..FLOWS)
                    .map(|port| udp(CLIENT, 30000 + port, SERVER, 8080))
                    .collect();
                for _ in 0..ROUNDS {
                    frames
                        .iter()
                        .for_each(|frame| harness.send(Hook::FromPod, frame));
                }
                sending.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        // On the first CPU (as this thread): its flushes reach the other
        // CPUs as IPIs, in the middle of their programs.
        scope.spawn(|| {
            while sending.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                harness.flush();
                flushes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
    });
    harness.flush();
    let expected = cpus as u64 * ROUNDS;
    let entries = harness.entries();
    assert_eq!(entries.len(), usize::from(FLOWS));
    for (key, stats) in entries {
        assert_eq!(
            counts(&stats),
            ([expected, 0], [expected * UDP_BYTES, 0], [FROM_POD, 0]),
            "flow from port {} ({} flushes ran meanwhile)",
            key.port_a,
            flushes.load(std::sync::atomic::Ordering::SeqCst)
        );
    }
    assert_eq!(harness.counter(Counter::CachedPacketsLost), 0);
    let flushes = flushes.into_inner();
    eprintln!(
        "{flushes} flushes ran while {cpus} CPUs sent {} packets",
        expected * u64::from(FLOWS)
    );
    assert!(flushes > 10, "the flushes ran while packets were sent");
}
