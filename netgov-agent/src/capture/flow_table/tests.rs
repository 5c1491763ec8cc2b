use super::*;
use crate::capture::record::{EndReason, FlowState, Protocol, Role};
use netgov_common::{EventHeader, Hook, direction, proto, tcp_flags};

const SEC: u64 = 1_000_000_000;

struct FixedClock;

impl WallClock for FixedClock {
    fn to_unix_nanos(&self, monotonic_ns: u64) -> i128 {
        i128::from(monotonic_ns)
    }
}

fn names(ifindex: u32) -> Option<std::sync::Arc<str>> {
    Some(format!("veth{ifindex}").into())
}

fn key(ifindex: u32, protocol: u8, port_a: u16, port_b: u16) -> FlowKey {
    let mut key = FlowKey {
        port_a,
        port_b,
        ifindex,
        protocol,
        ip_version: 4,
        ..FlowKey::default()
    };
    key.addr_a[..4].copy_from_slice(&[10, 0, 0, 1]);
    key.addr_b[..4].copy_from_slice(&[10, 0, 0, 2]);
    key
}

/// Kernel stats: `(packets, bytes, flags)` per direction [A→B, B→A].
fn stats(
    first_seen: u64,
    last_seen: u64,
    first_direction: u8,
    dirs: [(u64, u64, u32); 2],
) -> FlowStats {
    FlowStats {
        first_seen_ns: first_seen,
        last_seen_ns: last_seen,
        packets: [dirs[0].0, dirs[1].0],
        bytes: [dirs[0].1, dirs[1].1],
        flags: [u64::from(dirs[0].2), u64::from(dirs[1].2)],
        first_direction,
        first_tcp_flags: 0,
        _pad: [0; 6],
    }
}

const SYN: u32 = tcp_flags::SYN;
const ACK: u32 = tcp_flags::ACK;
const FIN: u32 = tcp_flags::FIN;
const RST: u32 = tcp_flags::RST;
const FROM: u32 = seen_at::FROM_POD;
const TO: u32 = seen_at::TO_POD;

#[test]
fn state_table() {
    use FlowState::*;
    let tcp = proto::TCP;
    let udp = proto::UDP;
    let f = |bits: u32| u64::from(bits);
    // (protocol, flags out, flags in, packets in, expected)
    let rows = [
        (tcp, f(SYN), 0, 0, Attempted),
        (tcp, f(SYN), f(RST | ACK), 1, Refused),
        (tcp, f(SYN), f(SYN | ACK), 1, Replied),
        (tcp, f(SYN | ACK), f(SYN | ACK), 2, Established),
        (tcp, f(SYN | ACK | FIN), f(SYN | ACK | FIN), 3, Closed),
        (tcp, f(SYN | ACK | RST), f(SYN | ACK), 3, Closed),
        // Mid-stream (no SYN seen): both directions → established.
        (tcp, f(ACK), f(ACK), 5, Established),
        (tcp, f(ACK | FIN), f(ACK), 5, Closed),
        (tcp, f(ACK), 0, 0, Attempted),
        (udp, 0, 0, 0, Attempted),
        (udp, 0, 0, 1, Replied),
        (proto::ICMP, 0, 0, 3, Replied),
        (proto::SCTP, 0, 0, 0, Attempted),
    ];
    for (i, (protocol, out, back, packets_in, expected)) in rows.into_iter().enumerate() {
        assert_eq!(
            derive_state(protocol, out, back, packets_in),
            expected,
            "row {i}"
        );
    }
}

#[test]
fn same_node_flow_merges_two_interfaces_and_orients_by_first_packet() {
    let mut table = FlowTable::new(FlowTableConfig::default());
    // Client 10.0.0.2:40000 (endpoint B) → server 10.0.0.1:8080 (A):
    // first packet B→A. Client interface 3 sees it leave the pod, server
    // interface 4 sees it delivered.
    let client_if = key(3, proto::TCP, 8080, 40000);
    let server_if = key(4, proto::TCP, 8080, 40000);
    let client_view = stats(
        10,
        20,
        direction::B_TO_A,
        [(4, 300, SYN | ACK | TO), (5, 500, SYN | ACK | FROM)],
    );
    let server_view = stats(
        11,
        21,
        direction::B_TO_A,
        [(4, 300, SYN | ACK | FROM), (5, 500, SYN | ACK | TO)],
    );
    let ended = table.drain(
        [(client_if, client_view), (server_if, server_view)],
        30,
        &names,
        &FixedClock,
    );
    assert!(ended.is_empty());
    assert_eq!(table.len(), 1);

    let ended = table.finish_all(&names, &FixedClock);
    assert_eq!(ended.len(), 1);
    let record = &ended[0].record;
    assert_eq!(record.src.to_string(), "10.0.0.2");
    assert_eq!((record.src_port, record.dst_port), (40000, 8080));
    assert_eq!(record.dst.to_string(), "10.0.0.1");
    assert_eq!((record.packets_out, record.bytes_out), (5, 500));
    assert_eq!((record.packets_in, record.bytes_in), (4, 300));
    assert_eq!(record.state, FlowState::Established);
    assert_eq!(
        record.interface_names().collect::<Vec<_>>(),
        ["veth3", "veth4"]
    );
    assert_eq!(record.observations[0].role, Role::Initiator);
    assert_eq!(record.observations[1].role, Role::Responder);
    assert_eq!((record.first_seen, record.last_seen), (10, 21));
    assert_eq!(record.end_reason, EndReason::Exit);
    assert_eq!(ended[0].kernel_keys.len(), 2);
}

#[test]
fn counts_are_the_largest_seen_and_each_observation_keeps_its_own() {
    let mut table = FlowTable::new(FlowTableConfig::default());
    // 3 SYNs left the client, only 1 reached the server's interface.
    let client = stats(1, 5, direction::A_TO_B, [(3, 180, SYN | FROM), (0, 0, 0)]);
    let server = stats(2, 2, direction::A_TO_B, [(1, 60, SYN | TO), (0, 0, 0)]);
    table.drain(
        [
            (key(3, proto::TCP, 40000, 80), client),
            (key(4, proto::TCP, 40000, 80), server),
        ],
        6,
        &names,
        &FixedClock,
    );
    let record = table.finish_all(&names, &FixedClock).remove(0).record;
    assert_eq!(record.packets_out, 3);
    assert_eq!(record.observations[1].packets_out, 1);
    assert_eq!(record.state, FlowState::Attempted);
}

#[test]
fn mid_stream_tcp_is_oriented_by_ports() {
    let mut table = FlowTable::new(FlowTableConfig::default());
    // First packet seen is the server's (A, port 443) → client (B, 51000).
    let view = stats(
        1,
        2,
        direction::A_TO_B,
        [(2, 100, ACK | FROM), (2, 100, ACK | TO)],
    );
    table.drain(
        [(key(3, proto::TCP, 443, 51000), view)],
        3,
        &names,
        &FixedClock,
    );
    let record = table.finish_all(&names, &FixedClock).remove(0).record;
    assert_eq!((record.src_port, record.dst_port), (51000, 443));
    assert_eq!(record.src.to_string(), "10.0.0.2");
    assert_eq!(record.state, FlowState::Established);
}

#[test]
fn closed_tcp_ends_after_grace_and_idle_flows_expire() {
    let config = FlowTableConfig {
        idle_timeout: Duration::from_secs(10),
        udp_idle_timeout: Duration::from_secs(10),
        icmp_idle_timeout: Duration::from_secs(10),
        close_grace: Duration::from_secs(1),
    };
    let mut table = FlowTable::new(config);
    let closed = stats(
        SEC,
        2 * SEC,
        0,
        [(5, 400, SYN | ACK | FIN), (4, 300, SYN | ACK | FIN)],
    );
    let open = stats(SEC, 2 * SEC, 0, [(5, 400, SYN | ACK), (4, 300, SYN | ACK)]);
    let udp = stats(SEC, 2 * SEC, 0, [(1, 40, 0), (0, 0, 0)]);
    let snapshot = [
        (key(3, proto::TCP, 1000, 80), closed),
        (key(3, proto::TCP, 1001, 80), open),
        (key(3, proto::UDP, 1002, 53), udp),
    ];
    // Within the grace: nothing ends.
    assert!(
        table
            .drain(snapshot, 2 * SEC + SEC / 2, &names, &FixedClock)
            .is_empty()
    );
    // After the grace: the closed flow ends, the others go on.
    let ended = table.drain(snapshot, 3 * SEC, &names, &FixedClock);
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].record.end_reason, EndReason::Closed);
    assert_eq!(ended[0].record.src_port, 1000);
    assert_eq!(ended[0].record.state, FlowState::Closed);
    // The closed flow's entry is deleted by the caller; after the idle
    // timeout the rest expire.
    let rest = &snapshot[1..];
    let ended = table.drain(rest.iter().copied(), 12 * SEC, &names, &FixedClock);
    assert_eq!(ended.len(), 2);
    assert!(ended.iter().all(|e| e.record.end_reason == EndReason::Idle));
    assert!(table.is_empty());
}

#[test]
fn a_vanished_kernel_entry_is_counted_once_and_keeps_its_counts() {
    let mut table = FlowTable::new(FlowTableConfig::default());
    let k = key(3, proto::UDP, 1000, 53);
    table.drain(
        [(k, stats(1, 2, 0, [(7, 700, 0), (0, 0, 0)]))],
        3,
        &names,
        &FixedClock,
    );
    table.drain([], 4, &names, &FixedClock);
    table.drain([], 5, &names, &FixedClock);
    assert_eq!(table.losses().kernel_evictions, 1);
    let record = table.finish_all(&names, &FixedClock).remove(0).record;
    assert_eq!(record.packets_out, 7);
}

#[test]
fn events_make_flows_known_before_the_first_drain() {
    let mut table = FlowTable::new(FlowTableConfig::default());
    let event = FlowEvent {
        header: EventHeader {
            timestamp_ns: 42,
            kind: EventKind::FlowStart as u8,
            hook: Hook::FromPod as u8,
            _pad: [0; 6],
        },
        key: key(3, proto::TCP, 8080, 40000),
        direction: direction::B_TO_A,
        tcp_flags: SYN as u8,
        _pad: [0; 2],
    };
    table.on_event(&event);
    assert_eq!(table.len(), 1);
    // A later drain brings counts; the event's first packet stands.
    let kernel = stats(
        42,
        50,
        direction::B_TO_A,
        [(0, 0, 0), (2, 120, SYN | ACK | FROM)],
    );
    table.drain([(event.key, kernel)], 60, &names, &FixedClock);
    let record = table.finish_all(&names, &FixedClock).remove(0).record;
    assert_eq!((record.src_port, record.packets_out), (40000, 2));

    let mut bad = event;
    bad.header.kind = 99;
    table.on_event(&bad);
    assert_eq!(table.losses().malformed_events, 1);
}

#[test]
fn a_recreated_kernel_entry_keeps_the_earlier_counts() {
    let mut table = FlowTable::new(FlowTableConfig::default());
    let k = key(3, proto::UDP, 1000, 53);
    table.drain(
        [(k, stats(10, 20, 0, [(100, 10_000, 0), (0, 0, 0)]))],
        21,
        &names,
        &FixedClock,
    );
    // Between two reads the entry was evicted and a new one created.
    table.drain(
        [(k, stats(30, 40, 0, [(5, 500, 0), (0, 0, 0)]))],
        41,
        &names,
        &FixedClock,
    );
    assert_eq!(
        table.losses().kernel_evictions,
        1,
        "the silent re-creation is a loss"
    );
    // The new entry keeps counting; earlier counts stay.
    table.drain(
        [(k, stats(30, 50, 0, [(7, 700, 0), (0, 0, 0)]))],
        51,
        &names,
        &FixedClock,
    );
    assert_eq!(table.losses().kernel_evictions, 1);
    let record = table.finish_all(&names, &FixedClock).remove(0).record;
    assert_eq!((record.packets_out, record.bytes_out), (107, 10_700));
    assert_eq!(record.first_seen, 10);
}

#[test]
fn a_syn_ack_seen_first_is_the_responder() {
    let mut table = FlowTable::new(FlowTableConfig::default());
    // The capture started after the SYN: the first packet seen is the
    // SYN-ACK from A (the server, port 443) to B.
    let mut view = stats(
        1,
        2,
        direction::A_TO_B,
        [(1, 60, SYN | ACK | FROM), (1, 52, ACK | TO)],
    );
    view.first_tcp_flags = (SYN | ACK) as u8;
    table.drain(
        [(key(3, proto::TCP, 443, 51000), view)],
        3,
        &names,
        &FixedClock,
    );
    let record = table.finish_all(&names, &FixedClock).remove(0).record;
    assert_eq!((record.src_port, record.dst_port), (51000, 443));
}

#[test]
fn stale_transition_events_do_not_create_flows() {
    let mut table = FlowTable::new(FlowTableConfig::default());
    let event = FlowEvent {
        header: EventHeader {
            timestamp_ns: 5,
            kind: EventKind::TcpTransition as u8,
            hook: Hook::FromPod as u8,
            _pad: [0; 6],
        },
        key: key(3, proto::TCP, 8080, 40000),
        direction: direction::A_TO_B,
        tcp_flags: (ACK | FIN) as u8,
        _pad: [0; 2],
    };
    table.on_event(&event);
    assert!(table.is_empty());
    table.drain([], 10, &names, &FixedClock);
    assert_eq!(table.losses().kernel_evictions, 0);
}

#[test]
fn finalize_folds_in_what_arrived_after_the_drain() {
    let config = FlowTableConfig {
        idle_timeout: Duration::from_secs(1),
        udp_idle_timeout: Duration::from_secs(1),
        icmp_idle_timeout: Duration::from_secs(1),
        close_grace: Duration::from_secs(1),
    };
    let mut table = FlowTable::new(config);
    let k = key(3, proto::UDP, 1000, 53);
    let mut ended = table.drain(
        [(k, stats(1, 2, 0, [(3, 300, 0), (0, 0, 0)]))],
        5 * SEC,
        &names,
        &FixedClock,
    );
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].record.packets_out, 3);
    // The entry read atomically at deletion had one more packet.
    ended[0].finalize(
        [(k, stats(1, 6, 0, [(4, 400, 0), (0, 0, 0)]))],
        &names,
        &FixedClock,
    );
    assert_eq!(
        (ended[0].record.packets_out, ended[0].record.bytes_out),
        (4, 400)
    );
    assert_eq!(ended[0].record.end_reason, EndReason::Idle);
}

#[test]
fn live_records_report_new_flows_and_new_flags_only() {
    let mut table = FlowTable::new(FlowTableConfig::default());
    let k = key(3, proto::TCP, 8080, 40000);
    let syn = stats(1, 2, direction::B_TO_A, [(0, 0, 0), (1, 60, SYN | FROM)]);
    table.drain([(k, syn)], 3, &names, &FixedClock);
    assert_eq!(
        table.live_records(&names, &FixedClock, usize::MAX).len(),
        1,
        "a new flow"
    );
    // More SYNs: counts only.
    let retransmitted = stats(1, 4, direction::B_TO_A, [(0, 0, 0), (3, 180, SYN | FROM)]);
    table.drain([(k, retransmitted)], 5, &names, &FixedClock);
    assert!(
        table
            .live_records(&names, &FixedClock, usize::MAX)
            .is_empty(),
        "counts alone change no judgement"
    );
    // An answer: new flags.
    let answered = stats(
        1,
        6,
        direction::B_TO_A,
        [(1, 60, SYN | ACK | TO), (3, 180, SYN | FROM)],
    );
    table.drain([(k, answered)], 7, &names, &FixedClock);
    let live = table.live_records(&names, &FixedClock, usize::MAX);
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].end_reason, EndReason::Active);
    assert_eq!(live[0].packets_in, 1);
}

#[test]
fn flows_asked_for_again_are_reported_again_as_room_allows() {
    let mut table = FlowTable::new(FlowTableConfig::default());
    let keys = [40000, 40001, 40002].map(|port| key(3, proto::UDP, 53, port));
    let one = stats(1, 2, direction::B_TO_A, [(0, 0, 0), (1, 60, FROM)]);
    table.drain(keys.map(|k| (k, one)), 3, &names, &FixedClock);
    let ports = |records: Vec<FlowRecord>| {
        let mut ports: Vec<u16> = records.iter().map(|r| r.src_port).collect();
        ports.sort_unstable();
        ports
    };
    // Three new flows, room for two: the third waits, and is not lost.
    let first = ports(table.live_records(&names, &FixedClock, 2));
    assert_eq!(first.len(), 2);
    let second = ports(table.live_records(&names, &FixedClock, 2));
    assert_eq!(second.len(), 1);
    assert!(!first.contains(&second[0]));
    assert!(table.live_records(&names, &FixedClock, 2).is_empty());

    // Nothing changed, yet the judge asks for two of them again, and for
    // one that is not in the table.
    let id = |k: &FlowKey| conversation_of(k);
    assert!(table.report_again(&id(&keys[0])));
    assert!(table.report_again(&id(&keys[2])));
    assert!(!table.report_again(&id(&key(3, proto::UDP, 53, 49999))));
    let again = table.live_records(&names, &FixedClock, usize::MAX);
    assert_eq!(ports(again.clone()), [40000, 40002]);
    assert!(again.iter().all(|r| r.end_reason == EndReason::Active));
    assert!(
        again
            .iter()
            .all(|r| r.flow_id() == id(&key(3, proto::UDP, 53, r.src_port)))
    );
    assert!(
        table
            .live_records(&names, &FixedClock, usize::MAX)
            .is_empty()
    );

    // Room for one at a time while all three are asked for again before
    // each call: they take turns.
    let mut turns = Vec::new();
    for _ in 0..3 {
        for k in &keys {
            table.report_again(&id(k));
        }
        turns.extend(ports(table.live_records(&names, &FixedClock, 1)));
    }
    turns.sort_unstable();
    assert_eq!(turns, [40000, 40001, 40002]);
}

#[test]
fn idle_timeouts_are_per_protocol() {
    let config = FlowTableConfig {
        idle_timeout: Duration::from_secs(30),
        udp_idle_timeout: Duration::from_secs(5),
        icmp_idle_timeout: Duration::from_secs(2),
        close_grace: Duration::from_secs(1),
    };
    let mut table = FlowTable::new(config);
    let quiet = |first| stats(first, first, direction::A_TO_B, [(1, 60, FROM), (0, 0, 0)]);
    // The kernel still holds the entries of live flows only (ended ones
    // are deleted with their flow).
    let mut live = vec![
        (key(3, proto::TCP, 80, 40000), quiet(SEC)),
        (key(3, proto::UDP, 53, 40000), quiet(SEC)),
        (key(3, proto::ICMP, 0, 7), quiet(SEC)),
    ];
    let mut ended_at = |at: u64| -> Vec<Protocol> {
        let ended = table.drain(live.clone(), at, &names, &FixedClock);
        let protocols: Vec<Protocol> = ended.iter().map(|f| f.record.protocol).collect();
        live.retain(|(key, _)| !ended.iter().any(|f| f.kernel_keys.contains(key)));
        protocols
    };
    assert_eq!(ended_at(2 * SEC), []);
    assert_eq!(ended_at(4 * SEC), [Protocol::Icmp]);
    assert_eq!(ended_at(7 * SEC), [Protocol::Udp]);
    assert_eq!(ended_at(20 * SEC), []);
    assert_eq!(ended_at(32 * SEC), [Protocol::Tcp]);
}

/// A view keeps no kernel key: the one derived from its conversation and
/// interface must be the kernel's, byte for byte, or the entry would never
/// be deleted.
#[test]
fn kernel_keys_are_derived_exactly() {
    let mut v6 = key(9, proto::TCP, 443, 40000);
    v6.ip_version = 6;
    v6.addr_a = "fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
    v6.addr_b = "fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
    let icmp = key(3, proto::ICMP, 0, 0x0800);
    let other = key(4, 132, 9, 9);
    for kernel in [key(7, proto::UDP, 53, 33000), v6, icmp, other] {
        assert_eq!(
            kernel_key(&conversation_of(&kernel), kernel.ifindex),
            kernel
        );
    }
}

/// The views of a same-node flow and a translated flow report the kernel
/// keys they were read from, to be deleted when the flow ends.
#[test]
fn ended_flows_name_the_kernel_keys_they_were_read_from() {
    let mut table = FlowTable::new(FlowTableConfig::default());
    let (client, server) = (key(7, proto::UDP, 40000, 53), key(8, proto::UDP, 40000, 53));
    let seen = stats(SEC, SEC, direction::A_TO_B, [(1, 60, FROM), (0, 0, 0)]);
    table.drain([(client, seen), (server, seen)], SEC, &names, &FixedClock);
    let ended = table.finish_all(&names, &FixedClock);
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].kernel_keys, vec![client, server]);
}
