//! Translated conversations: the views before and after a Service's DNAT
//! make one flow, named by the backend, carrying the address the client
//! used.

use std::cell::Cell;
use std::net::IpAddr;
use std::rc::Rc;

use netgov_common::{direction, proto, seen_at, tcp_flags};

use super::*;
use crate::capture::record::{FlowState, Role};

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

fn ep(ip: &str, port: u16) -> Endpoint {
    (ip.parse::<IpAddr>().expect("ip"), port)
}

/// The kernel key at `ifindex` for the conversation `x ↔ y`.
fn key(ifindex: u32, x: Endpoint, y: Endpoint) -> FlowKey {
    let conversation = FlowId::new(x, y, crate::model::Protocol::Tcp);
    let octets = |ip: IpAddr| {
        let mut bytes = [0u8; 16];
        match ip {
            IpAddr::V4(v4) => bytes[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => bytes = v6.octets(),
        }
        bytes
    };
    FlowKey {
        addr_a: octets(conversation.a().0),
        addr_b: octets(conversation.b().0),
        port_a: conversation.a().1,
        port_b: conversation.b().1,
        ifindex,
        protocol: proto::TCP,
        ip_version: 4,
        _pad: [0; 2],
    }
}

/// Kernel stats: `(packets, flags)` per direction [A→B, B→A].
fn stats(first_seen: u64, first_direction: u8, dirs: [(u64, u32); 2]) -> FlowStats {
    FlowStats {
        first_seen_ns: first_seen,
        last_seen_ns: first_seen + 10,
        packets: [dirs[0].0, dirs[1].0],
        bytes: [dirs[0].0 * 100, dirs[1].0 * 100],
        flags: [u64::from(dirs[0].1), u64::from(dirs[1].1)],
        first_direction,
        first_tcp_flags: tcp_flags::SYN as u8,
        _pad: [0; 6],
    }
}

/// Connection tracking with one translated connection, known once
/// `known` is set.
struct FakeNat {
    service: Endpoint,
    client: Endpoint,
    backend: Endpoint,
    known: Rc<Cell<bool>>,
    asked: Rc<Cell<u32>>,
    /// What the node masquerades the client to, if it does.
    masquerade: Option<Endpoint>,
}

impl NatLookup for FakeNat {
    fn is_candidate(&self, _: u8, destination: Endpoint) -> bool {
        destination == self.service
    }

    fn translated(
        &mut self,
        _: u8,
        source: Endpoint,
        destination: Endpoint,
    ) -> Option<(Endpoint, Endpoint)> {
        self.asked.set(self.asked.get() + 1);
        (self.known.get() && source == self.client && destination == self.service)
            .then_some((self.backend, self.masquerade.unwrap_or(self.client)))
    }
}

const SYN_ACK: u32 = tcp_flags::SYN | tcp_flags::ACK;
const FROM: u32 = seen_at::FROM_POD;
const TO: u32 = seen_at::TO_POD;

/// The table, the switch and counter of its lookups, and two views.
type Setup = (
    FlowTable,
    Rc<Cell<bool>>,
    Rc<Cell<u32>>,
    [(FlowKey, FlowStats); 2],
);

/// Table, client view before DNAT (interface 3) and backend view after it
/// (interface 4) of client 10.244.0.12:40000 → `service` → backend
/// 10.244.0.11:8080: 3 packets out, 2 back.
fn setup(service: Endpoint, known: bool) -> Setup {
    let (client, backend) = (ep("10.244.0.12", 40000), ep("10.244.0.11", 8080));
    let known = Rc::new(Cell::new(known));
    let asked = Rc::new(Cell::new(0));
    let table = FlowTable::with_nat(
        FlowTableConfig::default(),
        Box::new(FakeNat {
            service,
            client,
            backend,
            known: Rc::clone(&known),
            asked: Rc::clone(&asked),
            masquerade: None,
        }),
    );
    let pre = key(3, client, service);
    let client_is_a = conversation_of(&pre).a() == client;
    let (out, back) = if client_is_a { (0, 1) } else { (1, 0) };
    let mut dirs = [(0, 0); 2];
    dirs[out] = (3, SYN_ACK | FROM);
    dirs[back] = (2, SYN_ACK | TO);
    let pre_stats = stats(10, out as u8, dirs);
    // After DNAT: the backend (10.244.0.11) is A, the client B.
    let post = key(4, client, backend);
    let post_stats = stats(
        11,
        direction::B_TO_A,
        [(2, SYN_ACK | FROM), (3, SYN_ACK | TO)],
    );
    (table, known, asked, [(pre, pre_stats), (post, post_stats)])
}

fn assert_one_translated_flow(record: &FlowRecord, service: Endpoint) {
    assert_eq!(
        (record.src, record.src_port, record.dst, record.dst_port),
        (ep("10.244.0.12", 0).0, 40000, ep("10.244.0.11", 0).0, 8080)
    );
    assert_eq!(
        record.original_dst,
        Some(std::net::SocketAddr::new(service.0, service.1))
    );
    assert_eq!((record.packets_out, record.packets_in), (3, 2));
    assert_eq!(record.state, FlowState::Established);
    let roles: Vec<(u32, Role, u64, u64)> = record
        .observations
        .iter()
        .map(|o| (o.ifindex, o.role, o.packets_out, o.packets_in))
        .collect();
    assert_eq!(
        roles,
        [(3, Role::Initiator, 3, 2), (4, Role::Responder, 3, 2)]
    );
}

#[test]
fn both_sides_of_a_dnat_are_one_flow_whichever_way_the_keys_sort() {
    // 10.96.0.10 sorts before the client (the Service is A before DNAT,
    // as the backend is after); 10.250.0.10 after it (A and B swap).
    for service in [ep("10.96.0.10", 80), ep("10.250.0.10", 80)] {
        let (mut table, _, asked, views) = setup(service, true);
        table.drain(views, SEC, &names, &FixedClock);
        assert_eq!(table.len(), 1, "{service:?}");
        let live = table.live_records(&names, &FixedClock, usize::MAX);
        assert_eq!(live.len(), 1);
        assert_one_translated_flow(&live[0], service);
        assert_eq!(asked.get(), 1, "one lookup per new connection");
        let ended = table.finish_all(&names, &FixedClock);
        assert_eq!(ended.len(), 1);
        assert_eq!(
            ended[0].kernel_keys,
            [views[0].0, views[1].0],
            "both kernel entries are deleted with the flow"
        );
    }
}

#[test]
fn a_translation_learned_late_still_makes_one_flow() {
    let service = ep("10.96.0.10", 80);
    let (mut table, known, _, [pre, post]) = setup(service, false);
    table.drain([pre], SEC, &names, &FixedClock);
    assert!(
        table
            .live_records(&names, &FixedClock, usize::MAX)
            .is_empty(),
        "held back while the translation is unknown"
    );
    known.set(true);
    table.drain([pre, post], SEC + SEC / 2, &names, &FixedClock);
    assert_eq!(table.len(), 1);
    let live = table.live_records(&names, &FixedClock, usize::MAX);
    assert_eq!(live.len(), 1);
    assert_one_translated_flow(&live[0], service);
    let ended = table.finish_all(&names, &FixedClock);
    assert_eq!(
        ended[0].kernel_keys,
        [pre.0, post.0],
        "the view that waited keeps its own kernel key"
    );
}

#[test]
fn an_untracked_connection_is_reported_as_addressed_after_the_wait() {
    let service = ep("10.250.0.10", 80);
    let (mut table, _, asked, [pre, _]) = setup(service, false);
    table.drain([pre], SEC, &names, &FixedClock);
    assert!(
        table
            .live_records(&names, &FixedClock, usize::MAX)
            .is_empty()
    );
    table.drain([pre], 2 * SEC, &names, &FixedClock);
    assert!(
        table
            .live_records(&names, &FixedClock, usize::MAX)
            .is_empty()
    );
    table.drain([pre], SEC + NAT_RETRY_NS, &names, &FixedClock);
    let live = table.live_records(&names, &FixedClock, usize::MAX);
    assert_eq!(live.len(), 1);
    let record = &live[0];
    assert_eq!((record.dst, record.dst_port), service);
    assert_eq!(record.original_dst, None);
    assert_eq!((record.packets_out, record.packets_in), (3, 2));
    let before = asked.get();
    table.drain([pre], 4 * SEC, &names, &FixedClock);
    assert_eq!(asked.get(), before, "no more lookups once given up");
}

#[test]
fn a_masqueraded_node_port_flow_names_the_client_that_sent_it() {
    let (client, backend) = (ep("10.244.0.12", 40000), ep("10.244.0.11", 8080));
    let (node_port, masqueraded) = (ep("10.244.0.1", 30080), ep("10.244.0.1", 61000));
    let mut table = FlowTable::with_nat(
        FlowTableConfig::default(),
        Box::new(FakeNat {
            service: node_port,
            client,
            backend,
            known: Rc::new(Cell::new(true)),
            asked: Rc::new(Cell::new(0)),
            masquerade: Some(masqueraded),
        }),
    );
    // Before: client (B) → node (A). After: node (A) → backend (B)... the
    // backend 10.244.0.11 sorts after the node 10.244.0.1.
    let pre = key(3, client, node_port);
    let post = key(4, masqueraded, backend);
    table.drain(
        [
            (
                pre,
                stats(
                    10,
                    direction::B_TO_A,
                    [(2, SYN_ACK | TO), (3, SYN_ACK | FROM)],
                ),
            ),
            (
                post,
                stats(
                    11,
                    direction::A_TO_B,
                    [(3, SYN_ACK | TO), (2, SYN_ACK | FROM)],
                ),
            ),
        ],
        SEC,
        &names,
        &FixedClock,
    );
    let live = table.live_records(&names, &FixedClock, usize::MAX);
    assert_eq!(live.len(), 1);
    let record = &live[0];
    assert_eq!(
        ((record.src, record.src_port), (record.dst, record.dst_port)),
        (client, backend)
    );
    assert_eq!(
        record.original_dst,
        Some(std::net::SocketAddr::new(node_port.0, node_port.1))
    );
    assert_eq!(
        record.translated_src,
        Some(std::net::SocketAddr::new(masqueraded.0, masqueraded.1)),
        "the flow keeps the identity the backend's view gave it"
    );
    assert_eq!((record.packets_out, record.packets_in), (3, 2));
    // The judge asks for a flow again by its record's id.
    assert!(table.report_again(&record.flow_id()));
    assert_eq!(
        table.live_records(&names, &FixedClock, usize::MAX),
        live,
        "reported again, unchanged"
    );
}

/// Connection tracking answers a lookup of either direction's tuple: the
/// answer side of a masqueraded connection whose port looks like a node
/// port gets its own connection back. That is no translation.
#[test]
fn a_lookup_answered_with_the_same_connection_translates_nothing() {
    struct Mirror;
    impl NatLookup for Mirror {
        fn is_candidate(&self, _: u8, destination: Endpoint) -> bool {
            destination == ep("10.244.0.1", 30080)
        }
        fn translated(
            &mut self,
            _: u8,
            source: Endpoint,
            destination: Endpoint,
        ) -> Option<(Endpoint, Endpoint)> {
            Some((source, destination))
        }
    }
    let mut table = FlowTable::with_nat(FlowTableConfig::default(), Box::new(Mirror));
    let (node, backend) = (ep("10.244.0.1", 30080), ep("10.244.0.11", 8080));
    // node:30080 (A) → backend (B), first packet A→B.
    let view = key(4, node, backend);
    table.drain(
        [(
            view,
            stats(
                10,
                direction::A_TO_B,
                [(3, SYN_ACK | TO), (2, SYN_ACK | FROM)],
            ),
        )],
        SEC,
        &names,
        &FixedClock,
    );
    let live = table.live_records(&names, &FixedClock, usize::MAX);
    assert_eq!(live.len(), 1);
    let record = &live[0];
    assert_eq!(
        ((record.src, record.src_port), (record.dst, record.dst_port)),
        (node, backend)
    );
    assert_eq!(record.original_dst, None);
    assert_eq!((record.packets_out, record.packets_in), (3, 2));
}
