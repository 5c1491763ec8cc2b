//! The user-space flow table: merges what the kernel reports about a flow at
//! each interface into one oriented flow, derives its state and decides when
//! it ends.
//!
//! Pure: no I/O and no clock of its own. The capture loop feeds it ring-buffer
//! events ([`FlowTable::on_event`]) and periodic snapshots of the kernel map
//! ([`FlowTable::drain`]), and it answers which flows ended and which kernel
//! entries may be deleted.
//!
//! # Decisions
//! - A same-node pod-to-pod flow is seen twice: leaving the client's
//!   interface and entering the server's. Both observations are kept; the
//!   flow's counts per direction are the largest seen at any observation
//!   point (normally the sender's own interface), and each observation keeps
//!   its own counts, so a drop between the two points stays visible.
//! - Orientation: the initiator is the sender of the first packet seen (the
//!   earliest observation's first packet). A TCP flow first seen without any
//!   SYN began before the capture: its initiator is guessed from the ports
//!   (the endpoint with the higher port, when the other port is below the
//!   Linux ephemeral range start, 32768).
//! - TCP state: `refused` when the responder answered the SYN with RST and
//!   never with SYN; `established` once the responder's SYN-ACK and the
//!   initiator's ACK are seen (or, for flows first seen mid-stream, once
//!   both directions carry packets); `closed` once an established flow shows
//!   FIN or RST; `replied` when the responder answered but no connection was
//!   established (e.g. SYN-ACK without the final ACK); `attempted` when
//!   nothing came back. Other protocols are `replied` once any packet came
//!   back, `attempted` otherwise.
//! - A TCP flow ends when it shows FIN from both sides or an RST, and then no
//!   packet for `close_grace` (so the last ACK is counted); any flow ends
//!   after its protocol's idle timeout without packets; every flow ends at
//!   exit.

use crate::churn_map::{ChurnMap, Keyed};
use crate::model::clock::WallClock;
use crate::model::{FlowId, Protocol};
use smallvec::SmallVec;
use std::net::IpAddr;
use std::time::Duration;

use netgov_common::{EventKind, FlowEvent, FlowKey, FlowStats, proto, seen_at};

use super::conntrack::Endpoint;
use super::record::{EndReason, FlowRecord};

mod nat;
mod orient;

pub use nat::{NAT_RETRY_NS, NatLookup, NoNat};
pub use orient::derive_state;

/// Timing rules of the table.
#[derive(Clone, Copy, Debug)]
pub struct FlowTableConfig {
    /// A TCP or SCTP flow with no packet for this long ends (`idle`).
    pub idle_timeout: Duration,
    /// The same for UDP flows (nothing closes them).
    pub udp_idle_timeout: Duration,
    /// The same for ICMP and ICMPv6 flows.
    pub icmp_idle_timeout: Duration,
    /// A TCP flow that closed (FIN both ways or RST) ends after this long
    /// without packets.
    pub close_grace: Duration,
}

impl Default for FlowTableConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(60),
            udp_idle_timeout: Duration::from_secs(60),
            icmp_idle_timeout: Duration::from_secs(60),
            close_grace: Duration::from_secs(2),
        }
    }
}

impl FlowTableConfig {
    /// The idle timeout of `protocol` (an IP protocol number).
    pub fn idle_timeout_of(&self, protocol: u8) -> Duration {
        match protocol {
            proto::UDP => self.udp_idle_timeout,
            proto::ICMP | proto::ICMPV6 => self.icmp_idle_timeout,
            _ => self.idle_timeout,
        }
    }
}

/// The flow a kernel key (one interface's view) belongs to.
pub fn conversation_of(key: &FlowKey) -> FlowId {
    FlowId::new(
        (to_ip(&key.addr_a, key.ip_version), key.port_a),
        (to_ip(&key.addr_b, key.ip_version), key.port_b),
        Protocol::from_number(key.protocol),
    )
}

/// Decodes an address field of a [`FlowKey`].
pub fn to_ip(addr: &[u8; 16], ip_version: u8) -> IpAddr {
    if ip_version == 4 {
        IpAddr::from([addr[0], addr[1], addr[2], addr[3]])
    } else {
        IpAddr::from(*addr)
    }
}

/// The kernel key of `conversation` at interface `ifindex`: the inverse
/// of [`conversation_of`], since the kernel orders a key's ends as
/// [`FlowId::new`] does (addresses bytewise, then ports).
pub fn kernel_key(conversation: &FlowId, ifindex: u32) -> FlowKey {
    let bytes = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => {
            let mut addr = [0; 16];
            addr[..4].copy_from_slice(&v4.octets());
            addr
        }
        IpAddr::V6(v6) => v6.octets(),
    };
    let ((a, port_a), (b, port_b)) = (conversation.a(), conversation.b());
    FlowKey {
        addr_a: bytes(a),
        addr_b: bytes(b),
        port_a,
        port_b,
        ifindex,
        protocol: conversation.protocol().number(),
        ip_version: if a.is_ipv4() { 4 } else { 6 },
        _pad: [0; 2],
    }
}

/// What one interface saw of a flow. Its kernel key is not kept: it is
/// derived from its conversation and its interface ([`kernel_key`]).
#[derive(Clone, Debug)]
struct InterfaceView {
    /// The interface.
    ifindex: u32,
    /// What the view saw in all: counts of earlier kernel entries plus the
    /// current one's.
    stats: ViewStats,
    /// The first packet of the kernel entry last read (identifies the
    /// entry).
    kernel_first_seen: u64,
    /// What few views have, boxed so the others do not pay for it.
    rare: Option<Box<Rare>>,
    /// Whether the latest drain found the entry in the kernel map.
    drained: bool,
    /// Whether the entry vanished from the kernel map without us deleting
    /// it (counted once; the view keeps what it had).
    evicted: bool,
    /// The view's key is the pre-translation conversation with A and B the
    /// other way round from its flow's: its directions are swapped as they
    /// are read, so `stats` is always in the flow's terms.
    swapped: bool,
}

/// What a view has only after a translation or an eviction.
#[derive(Clone, Debug, Default)]
struct Rare {
    /// The conversation of the view's kernel key when it is not its
    /// flow's: a pre-translation one.
    alias: Option<FlowId>,
    /// What earlier kernel entries for the key counted, when the LRU map
    /// evicted one and the flow went on in a new entry (the current
    /// entry's counts are `stats` less these).
    earlier: Option<Counts>,
}

impl InterfaceView {
    /// The conversation of the view's kernel key, in a flow of
    /// `conversation`.
    fn conversation<'a>(&'a self, conversation: &'a FlowId) -> &'a FlowId {
        self.rare
            .as_ref()
            .and_then(|rare| rare.alias.as_ref())
            .unwrap_or(conversation)
    }

    /// Whether the view is the one of kernel key `key`, whose conversation
    /// is `key_conversation`, in a flow of `conversation`.
    fn is_of(&self, conversation: &FlowId, key_conversation: &FlowId, key: &FlowKey) -> bool {
        self.ifindex == key.ifindex && self.conversation(conversation) == key_conversation
    }

    fn earlier(&self) -> Option<Counts> {
        self.rare.as_ref().and_then(|rare| rare.earlier)
    }

    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }
}

/// What a view counted, in its flow's directions: the kernel's
/// [`FlowStats`] in user space, with flags in the 32 bits they use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ViewStats {
    first_seen_ns: u64,
    last_seen_ns: u64,
    packets: [u64; 2],
    bytes: [u64; 2],
    /// Per direction: union of TCP flags (low byte) and [`seen_at`] bits.
    flags: [u32; 2],
    first_direction: u8,
    first_tcp_flags: u8,
}

impl From<&FlowStats> for ViewStats {
    fn from(kernel: &FlowStats) -> Self {
        // The kernel's flags use the low 18 bits: TCP flags and `seen_at`.
        let flags = |dir: usize| kernel.flags[dir] as u32;
        Self {
            first_seen_ns: kernel.first_seen_ns,
            last_seen_ns: kernel.last_seen_ns,
            packets: kernel.packets,
            bytes: kernel.bytes,
            flags: [flags(0), flags(1)],
            first_direction: kernel.first_direction,
            first_tcp_flags: kernel.first_tcp_flags,
        }
    }
}

impl ViewStats {
    /// The same counts with the two directions exchanged.
    fn swapped(mut self) -> Self {
        self.packets.swap(0, 1);
        self.bytes.swap(0, 1);
        self.flags.swap(0, 1);
        self.first_direction ^= 1;
        self
    }
}

/// A flow's views: one per interface that saw it. Two inline: a flow
/// between pods of one node is seen at both pods' interfaces, a flow
/// with another node at one; a third (a host interface too) spills.
type Views = SmallVec<[InterfaceView; 2]>;

#[derive(Clone, Debug, Default)]
struct Flow {
    /// The flow's conversation (after translation, for a Service flow).
    conversation: FlowId,
    views: Views,
    /// A view appeared or flags changed since the last live report.
    changed: bool,
    /// What the node translated, when a translated view joined. Boxed: most
    /// flows have none, and inline it would cost each flow 72 bytes.
    translated: Option<Box<Translated>>,
    /// A possibly translated conversation whose translation is not known
    /// yet (monotonic ns of the first attempt): held back from live
    /// reports while lookups are retried.
    /// Non-zero, so the option takes no room of its own.
    nat_pending_since: Option<std::num::NonZeroU64>,
}

impl Keyed for Flow {
    type Key = FlowId;
    fn key(&self) -> &FlowId {
        &self.conversation
    }
}

/// A pre-translation conversation, filed under its flow's.
#[derive(Clone, Copy, Debug)]
struct Alias {
    /// The pre-translation conversation.
    alias: FlowId,
    /// Its flow's conversation.
    target: FlowId,
    /// Whether the two have A and B the other way round.
    swapped: bool,
}

impl Keyed for Alias {
    type Key = FlowId;
    fn key(&self) -> &FlowId {
        &self.alias
    }
}

/// The translation of a flow whose views include pre-translation ones.
#[derive(Clone, Debug)]
struct Translated {
    /// The destination the initiator addressed before translation (a
    /// Service address).
    original_dst: Endpoint,
    /// Pre-translation conversations that belong to this flow.
    aliases: Vec<FlowId>,
    /// `(translated, original)` client, when the node masqueraded it.
    source_nat: Option<(Endpoint, Endpoint)>,
}

/// Packets and bytes per direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    packets: [u64; 2],
    bytes: [u64; 2],
}

/// Losses the table noticed itself (the kernel counts its own).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableLosses {
    /// Kernel entries that disappeared before the table ended their flow:
    /// the LRU map evicted them under pressure, and packets counted since
    /// the previous drain were lost.
    pub kernel_evictions: u64,
    /// Ring-buffer records too short or of an unknown kind.
    pub malformed_events: u64,
}

/// The flow table.
pub struct FlowTable {
    config: FlowTableConfig,
    /// By conversation.
    flows: ChurnMap<Flow>,
    losses: TableLosses,
    nat: Box<dyn NatLookup>,
    /// Pre-translation conversations, by themselves.
    aliases: ChurnMap<Alias>,
    /// Where the next live report starts looking (see
    /// [`FlowTable::live_records`]).
    live_cursor: usize,
}

impl std::fmt::Debug for FlowTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable")
            .field("flows", &self.flows.len())
            .field("aliases", &self.aliases.len())
            .field("losses", &self.losses)
            .finish_non_exhaustive()
    }
}

/// A flow that ended, with the kernel entries to delete.
#[derive(Debug)]
pub struct EndedFlow {
    /// The flow's final record.
    pub record: FlowRecord,
    /// Kernel map keys that belonged to it (one per interface).
    pub kernel_keys: Vec<FlowKey>,
    flow: Flow,
}

impl EndedFlow {
    /// Folds in the kernel's last word on each entry — the values read
    /// atomically as the entries were deleted — so packets counted between
    /// the drain and the deletion are not lost, and rebuilds the record.
    pub fn finalize(
        &mut self,
        finals: impl IntoIterator<Item = (FlowKey, FlowStats)>,
        names: &impl InterfaceNames,
        clock: &impl WallClock,
    ) {
        let flow = &mut self.flow;
        for (key, stats) in finals {
            let key_conversation = conversation_of(&key);
            if let Some(view) = flow
                .views
                .iter_mut()
                .find(|v| v.is_of(&flow.conversation, &key_conversation, &key))
            {
                merge_snapshot(view, &stats);
            }
        }
        self.record = self.flow.record(self.record.end_reason, names, clock);
    }
}

/// Resolves interface indexes to names for records.
pub trait InterfaceNames {
    /// The name of `ifindex`, if known.
    fn name(&self, ifindex: u32) -> Option<std::sync::Arc<str>>;
}

impl<F: Fn(u32) -> Option<std::sync::Arc<str>>> InterfaceNames for F {
    fn name(&self, ifindex: u32) -> Option<std::sync::Arc<str>> {
        self(ifindex)
    }
}

impl FlowTable {
    /// An empty table that translates nothing.
    pub fn new(config: FlowTableConfig) -> Self {
        Self::with_nat(config, Box::new(NoNat))
    }

    /// An empty table that files each translated conversation (a
    /// connection to a Service address) under the flow of its translation,
    /// as `nat` tells it.
    pub fn with_nat(config: FlowTableConfig, nat: Box<dyn NatLookup>) -> Self {
        Self {
            config,
            flows: ChurnMap::new(),
            losses: TableLosses::default(),
            nat,
            aliases: ChurnMap::new(),
            live_cursor: 0,
        }
    }

    /// Number of live flows.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether the table holds no flow.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Losses noticed so far.
    pub fn losses(&self) -> TableLosses {
        self.losses
    }

    /// Records that a ring-buffer record could not be decoded.
    pub fn count_malformed_event(&mut self) {
        self.losses.malformed_events += 1;
    }

    /// Applies a ring-buffer event. Counts come from drains; an event makes
    /// the flow known at once and carries the flags of its packet.
    pub fn on_event(&mut self, event: &FlowEvent) {
        let Some(kind) = EventKind::from_u8(event.header.kind) else {
            self.losses.malformed_events += 1;
            return;
        };
        // Only a flow start makes a flow known: a transition for a flow we
        // do not know is stale (its entry was just read and deleted) or its
        // start was lost, and then the next drain finds the entry anyway.
        let key_conversation = conversation_of(&event.key);
        let known = self.flows.get(&self.flow_of(&event.key)).is_some_and(|f| {
            f.views
                .iter()
                .any(|v| v.is_of(&f.conversation, &key_conversation, &event.key))
        });
        if kind == EventKind::TcpTransition && !known {
            return;
        }
        let seen_bit = if event.header.hook == netgov_common::Hook::ToPod as u8 {
            seen_at::TO_POD
        } else {
            seen_at::FROM_POD
        };
        let conversation = self.locate(&event.key, event.header.timestamp_ns);
        let swapped = self.swapped(&event.key);
        let flow = self.flows.get_mut(&conversation).expect("located");
        let view = flow_view_mut(flow, &event.key, swapped);
        let direction = event.direction ^ u8::from(view.swapped);
        let dir = (direction & 1) as usize;
        let stats = &mut view.stats;
        // A transition event whose flow start was lost sets a provisional
        // first packet; the next drain brings the kernel's true one.
        if kind == EventKind::FlowStart
            && (stats.first_seen_ns == 0 || event.header.timestamp_ns < stats.first_seen_ns)
        {
            stats.first_seen_ns = event.header.timestamp_ns;
            stats.first_direction = direction;
            stats.first_tcp_flags = event.tcp_flags;
        }
        stats.last_seen_ns = stats.last_seen_ns.max(event.header.timestamp_ns);
        let before = stats.flags[dir];
        stats.flags[dir] |= u32::from(event.tcp_flags) | seen_bit;
        let changed = stats.flags[dir] != before;
        flow.changed |= changed;
    }

    /// Records of at most `limit` live flows whose judgement may have
    /// changed since they were last reported — a new interface view or new
    /// flags, not mere counts (for judging flows while they last, not only
    /// when they end) — or that were asked for again
    /// ([`FlowTable::report_again`]). The others stay marked for the next
    /// call, which starts where this one stopped: flows far down the table
    /// are not kept waiting by the ones before them marked again.
    pub fn live_records(
        &mut self,
        names: &impl InterfaceNames,
        clock: &impl WallClock,
        limit: usize,
    ) -> Vec<FlowRecord> {
        let mut records = Vec::new();
        let start = self.live_cursor % self.flows.len().max(1);
        let mut looked_at = 0;
        for flow in self.flows.iter_mut_from(start) {
            if records.len() == limit {
                break;
            }
            looked_at += 1;
            if flow.changed && flow.nat_pending_since.is_none() {
                flow.changed = false;
                flow.views.sort_by_key(|v| v.stats.first_seen_ns);
                records.push(flow.record(EndReason::Active, names, clock));
            }
        }
        self.live_cursor = start + looked_at;
        records
    }

    /// Marks the live flow `id` (a record's [`FlowRecord::flow_id`] is its
    /// flow's conversation, masqueraded or not) to be reported by the next
    /// [`FlowTable::live_records`] though nothing changed; `false` when no
    /// live flow has that id (it ended).
    pub fn report_again(&mut self, id: &FlowId) -> bool {
        let Some(flow) = self.flows.get_mut(id) else {
            return false;
        };
        flow.changed = true;
        true
    }

    /// Applies one full snapshot of the kernel map, then ends the flows whose
    /// time has come (see the module docs) as of `now_ns` (kernel monotonic
    /// time).
    pub fn drain(
        &mut self,
        snapshot: impl IntoIterator<Item = (FlowKey, FlowStats)>,
        now_ns: u64,
        names: &impl InterfaceNames,
        clock: &impl WallClock,
    ) -> Vec<EndedFlow> {
        for flow in self.flows.iter_mut() {
            for view in &mut flow.views {
                view.drained = false;
            }
        }
        let mut evictions = 0;
        for (key, stats) in snapshot {
            let conversation = self.locate(&key, now_ns);
            let swapped = self.swapped(&key);
            let flow = self.flows.get_mut(&conversation).expect("located");
            let view = flow_view_mut(flow, &key, swapped);
            let before = view.stats;
            if merge_snapshot(view, &stats) {
                evictions += 1;
            }
            view.drained = true;
            // Live reports are for judging: a new view, or new flags (a
            // SYN-ACK, a FIN, a first packet back, a delivery) can change a
            // judgement; more packets of the same kind cannot.
            if before.first_seen_ns == 0 || view.stats.flags != before.flags {
                flow.changed = true;
            }
        }
        self.retry_translations(now_ns);
        let mut ended = Vec::new();
        let mut gone_aliases = Vec::new();
        let config = self.config;
        self.flows.retain(|flow| {
            // Entries end only through us, together with their flow; one the
            // kernel no longer holds was evicted by the LRU map under
            // pressure, and what it counted since the previous drain is lost.
            for view in flow.views.iter_mut().filter(|v| !v.drained && !v.evicted) {
                view.evicted = true;
                evictions += 1;
            }
            match flow.end_reason(now_ns, &config) {
                Some(reason) => {
                    if let Some(translated) = &mut flow.translated {
                        gone_aliases.append(&mut translated.aliases);
                    }
                    ended.push(std::mem::take(flow).finish(reason, names, clock));
                    false
                }
                None => true,
            }
        });
        for alias in gone_aliases {
            self.aliases.remove(&alias);
        }
        self.losses.kernel_evictions += evictions;
        ended
    }

    /// Ends every flow (at exit).
    pub fn finish_all(
        &mut self,
        names: &impl InterfaceNames,
        clock: &impl WallClock,
    ) -> Vec<EndedFlow> {
        self.aliases = ChurnMap::new();
        self.flows
            .drain()
            .map(|flow| flow.finish(EndReason::Exit, names, clock))
            .collect()
    }
}

/// The view of `flow` for kernel key `key`, created when missing
/// (`swapped`: see [`InterfaceView::swapped`]).
fn flow_view_mut<'a>(flow: &'a mut Flow, key: &FlowKey, swapped: bool) -> &'a mut InterfaceView {
    let key_conversation = conversation_of(key);
    let index = match flow
        .views
        .iter()
        .position(|v| v.is_of(&flow.conversation, &key_conversation, key))
    {
        Some(index) => index,
        None => {
            debug_assert_eq!(kernel_key(&key_conversation, key.ifindex), *key);
            let mut view = InterfaceView {
                ifindex: key.ifindex,
                stats: ViewStats::default(),
                kernel_first_seen: 0,
                rare: None,
                drained: false,
                evicted: false,
                swapped,
            };
            if key_conversation != flow.conversation {
                view.rare_mut().alias = Some(key_conversation);
            }
            flow.views.push(view);
            flow.views.len() - 1
        }
    };
    &mut flow.views[index]
}

/// Merges a kernel snapshot of the view's entry: counts are the kernel's
/// (absolute) plus those of earlier entries for the same key, flags the
/// union, the first packet the earliest seen. Returns whether it found the
/// entry evicted and re-created since the previous read without the drain
/// noticing it missing (a loss to count).
fn merge_snapshot(view: &mut InterfaceView, kernel: &FlowStats) -> bool {
    let kernel = ViewStats::from(kernel);
    let kernel = if view.swapped {
        kernel.swapped()
    } else {
        kernel
    };
    // A new kernel entry: all counted so far was counted by earlier ones.
    let new_entry = view.kernel_first_seen != 0 && kernel.first_seen_ns != view.kernel_first_seen;
    let silent_eviction = new_entry && !view.evicted;
    if new_entry {
        view.rare_mut().earlier = Some(Counts {
            packets: view.stats.packets,
            bytes: view.stats.bytes,
        });
    }
    let earlier = view.earlier().unwrap_or_default();
    view.evicted = false;
    view.kernel_first_seen = kernel.first_seen_ns;
    let known = &mut view.stats;
    if known.first_seen_ns == 0 || kernel.first_seen_ns < known.first_seen_ns {
        known.first_seen_ns = kernel.first_seen_ns;
        known.first_direction = kernel.first_direction;
        known.first_tcp_flags = kernel.first_tcp_flags;
    }
    known.last_seen_ns = known.last_seen_ns.max(kernel.last_seen_ns);
    for dir in 0..2 {
        known.packets[dir] = earlier.packets[dir] + kernel.packets[dir];
        known.bytes[dir] = earlier.bytes[dir] + kernel.bytes[dir];
        known.flags[dir] |= kernel.flags[dir];
    }
    silent_eviction
}

#[cfg(test)]
mod nat_tests;
#[cfg(test)]
mod tests;
