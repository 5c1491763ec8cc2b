//! Orientation and records: which end of a flow initiated it, its TCP
//! state, and the record built from its interface views (the decisions
//! are listed in the parent module).

use std::time::Duration;

use netgov_common::{proto, seen_at, tcp_flags};

use super::super::record::{EndReason, FlowRecord, FlowState, Observation, Protocol, TcpFlags};
use super::{EndedFlow, Flow, FlowTableConfig, InterfaceNames, ViewStats, kernel_key};
use crate::model::clock::WallClock;

/// Start of the Linux default ephemeral port range
/// (`net.ipv4.ip_local_port_range`).
const EPHEMERAL_PORT_START: u16 = 32768;

/// Which canonical direction is initiator → responder.
pub(super) fn outbound_direction(flow: &Flow) -> usize {
    let Some(first) = flow
        .views
        .iter()
        .filter(|v| v.stats.first_seen_ns != 0)
        .min_by_key(|v| v.stats.first_seen_ns)
    else {
        return 0;
    };
    let first_direction = (first.stats.first_direction & 1) as usize;
    // Ports and protocol of the flow's own conversation: a view filed
    // under a translation has the Service's port in its key.
    let key = &flow.conversation;
    if key.protocol() != Protocol::Tcp {
        return first_direction;
    }
    let first_flags = u32::from(first.stats.first_tcp_flags);
    if first_flags & tcp_flags::SYN != 0 {
        // The opening SYN came from the initiator; a SYN-ACK seen first
        // (the capture missed the SYN) came from the responder.
        return if first_flags & tcp_flags::ACK == 0 {
            first_direction
        } else {
            1 - first_direction
        };
    }
    let any_syn = flow
        .views
        .iter()
        .any(|v| (v.stats.flags[0] | v.stats.flags[1]) & tcp_flags::SYN != 0);
    if any_syn {
        return first_direction;
    }
    // Mid-stream TCP: the server is the endpoint with the low port.
    let (port_a, port_b) = (key.a().1, key.b().1);
    if port_a < EPHEMERAL_PORT_START && port_b > port_a {
        1 // B → A: B is the client
    } else if port_b < EPHEMERAL_PORT_START && port_a > port_b {
        0
    } else {
        first_direction
    }
}

impl Flow {
    pub(super) fn last_seen_ns(&self) -> u64 {
        self.views
            .iter()
            .map(|v| v.stats.last_seen_ns)
            .max()
            .unwrap_or(0)
    }

    pub(super) fn flags(&self, dir: usize) -> u32 {
        self.views.iter().fold(0, |acc, v| acc | v.stats.flags[dir])
    }

    pub(super) fn tcp_ended(&self) -> bool {
        let (a, b) = (self.flags(0), self.flags(1));
        let (fin, rst) = (tcp_flags::FIN, tcp_flags::RST);
        (a | b) & rst != 0 || (a & fin != 0 && b & fin != 0)
    }

    pub(super) fn end_reason(&self, now_ns: u64, config: &FlowTableConfig) -> Option<EndReason> {
        let quiet = Duration::from_nanos(now_ns.saturating_sub(self.last_seen_ns()));
        if self.views.is_empty() {
            return None;
        }
        let protocol = self.conversation.protocol().number();
        if protocol == proto::TCP && self.tcp_ended() && quiet >= config.close_grace {
            return Some(EndReason::Closed);
        }
        (quiet >= config.idle_timeout_of(protocol)).then_some(EndReason::Idle)
    }

    pub(super) fn finish(
        mut self,
        reason: EndReason,
        names: &impl InterfaceNames,
        clock: &impl WallClock,
    ) -> EndedFlow {
        self.views.sort_by_key(|v| v.stats.first_seen_ns);
        EndedFlow {
            record: self.record(reason, names, clock),
            kernel_keys: self
                .views
                .iter()
                .map(|v| kernel_key(v.conversation(&self.conversation), v.ifindex))
                .collect(),
            flow: self,
        }
    }

    /// The flow's record as of now.
    pub(super) fn record(
        &self,
        reason: EndReason,
        names: &impl InterfaceNames,
        clock: &impl WallClock,
    ) -> FlowRecord {
        let out = outbound_direction(self);
        let back = 1 - out;
        let key = self.conversation;
        let (mut initiator, (dst, dst_port)) = if out == 0 {
            (key.a(), key.b())
        } else {
            (key.b(), key.a())
        };
        let mut translated_src = None;
        if let Some((translated, original)) = self.translated.as_ref().and_then(|t| t.source_nat)
            && initiator == translated
        {
            initiator = original;
            translated_src = Some(std::net::SocketAddr::new(translated.0, translated.1));
        }
        let (src, src_port) = initiator;
        let max = |f: &dyn Fn(&ViewStats) -> u64| {
            self.views.iter().map(|v| f(&v.stats)).max().unwrap_or(0)
        };
        let packets_out = max(&|s| s.packets[out]);
        let packets_in = max(&|s| s.packets[back]);
        let bytes_out = max(&|s| s.bytes[out]);
        let bytes_in = max(&|s| s.bytes[back]);
        let flags_out = u64::from(self.flags(out));
        let flags_in = u64::from(self.flags(back));
        let state = derive_state(key.protocol().number(), flags_out, flags_in, packets_in);
        let first_seen = self
            .views
            .iter()
            .map(|v| v.stats.first_seen_ns)
            .filter(|&t| t != 0)
            .min()
            .unwrap_or(0);
        let views = &self.views;
        let observations = views
            .iter()
            .map(|v| Observation {
                interface: names
                    .name(v.ifindex)
                    .unwrap_or_else(|| format!("if{}", v.ifindex).into()),
                ifindex: v.ifindex,
                role: role(v.stats.flags[out], v.stats.flags[back]),
                packets_out: v.stats.packets[out],
                bytes_out: v.stats.bytes[out],
                packets_in: v.stats.packets[back],
                bytes_in: v.stats.bytes[back],
            })
            .collect::<Vec<_>>();
        FlowRecord {
            src,
            src_port,
            dst,
            dst_port,
            original_dst: self
                .translated
                .as_ref()
                .map(|t| t.original_dst)
                .map(|(ip, port)| std::net::SocketAddr::new(ip, port)),
            translated_src,
            delivered_to_stack: None,
            protocol: key.protocol(),
            packets_out,
            bytes_out,
            packets_in,
            bytes_in,
            state,
            tcp_flags_out: TcpFlags::from_bits(flags_out, key.protocol().number()),
            tcp_flags_in: TcpFlags::from_bits(flags_in, key.protocol().number()),
            first_seen: clock.to_unix_nanos(first_seen),
            last_seen: clock.to_unix_nanos(
                views
                    .iter()
                    .map(|v| v.stats.last_seen_ns)
                    .max()
                    .unwrap_or(0),
            ),
            observations,
            end_reason: reason,
        }
    }
}

/// The part an interface played, from the hooks that saw each direction.
fn role(flags_out: u32, flags_in: u32) -> super::super::record::Role {
    use super::super::record::Role;
    let (from_pod, to_pod) = (seen_at::FROM_POD, seen_at::TO_POD);
    if flags_out & from_pod != 0 || flags_in & to_pod != 0 {
        Role::Initiator
    } else if flags_out & to_pod != 0 || flags_in & from_pod != 0 {
        Role::Responder
    } else {
        Role::Unknown
    }
}

/// The flow's state from the flags each direction showed (see module docs).
pub fn derive_state(protocol: u8, flags_out: u64, flags_in: u64, packets_in: u64) -> FlowState {
    if protocol != proto::TCP {
        return if packets_in > 0 {
            FlowState::Replied
        } else {
            FlowState::Attempted
        };
    }
    let has = |flags: u64, bit: u32| flags & u64::from(bit) != 0;
    let syn_out = has(flags_out, tcp_flags::SYN);
    let syn_in = has(flags_in, tcp_flags::SYN);
    if syn_out && !syn_in && has(flags_in, tcp_flags::RST) {
        return FlowState::Refused;
    }
    let handshake = syn_in && has(flags_in, tcp_flags::ACK) && has(flags_out, tcp_flags::ACK);
    let mid_stream = !syn_out && !syn_in && packets_in > 0;
    if handshake || mid_stream {
        let fin_or_rst = u64::from(tcp_flags::FIN | tcp_flags::RST);
        return if (flags_out | flags_in) & fin_or_rst != 0 {
            FlowState::Closed
        } else {
            FlowState::Established
        };
    }
    if packets_in > 0 {
        FlowState::Replied
    } else {
        FlowState::Attempted
    }
}
