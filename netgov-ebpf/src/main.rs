//! netgov's TC programs: observe every packet on the host side of pod
//! interfaces and aggregate it into per-flow counters.
//!
//! Two entry points share one parser: `netgov_from_pod` (TC ingress of the
//! host-side interface: the pod sent the packet) and `netgov_to_pod` (TC
//! egress: the host delivers the packet into the pod). Both only observe:
//! they never drop or modify a packet and always return `TC_ACT_UNSPEC`
//! (`TCX_NEXT`), so the next program or the default action decides — a
//! return of `TC_ACT_OK` would skip programs attached after ours (such as a
//! CNI's policy enforcement).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

mod atomic;
mod cache;
mod parse;
mod payload;
mod testbed;

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    macros::{cgroup_skb, classifier, map},
    maps::{LruHashMap, PerCpuArray, ProgramArray, RingBuf},
    programs::{SkBuffContext, TcContext},
};
use netgov_common::{
    Counter, DELIVERED_MAX_ENTRIES, EVENTS_RING_BYTES, EventHeader, EventKind, FLOWS_MAX_ENTRIES,
    FRAGMENT_MEMO_TIMEOUT_NS, FRAGMENTS_MAX_ENTRIES, FlowEvent, FlowKey, FlowStats, FragmentKey,
    FragmentPorts, Hook, ICMP_ERROR_SLOT, PAYLOAD_SLOT, PAYLOADS_RING_BYTES, PayloadContext,
    tcp_flags,
};
use parse::{Outcome, Packet};

/// `BPF_NOEXIST`: insert only if the key is absent.
const BPF_NOEXIST: u64 = 1;
/// `-EEXIST`, returned by a `BPF_NOEXIST` insert that lost a race.
const EEXIST: i32 = -17;

#[map]
static NETGOV_FLOWS: LruHashMap<FlowKey, FlowStats> =
    LruHashMap::with_max_entries(FLOWS_MAX_ENTRIES, 0);

#[map]
static NETGOV_FRAGMENTS: LruHashMap<FragmentKey, FragmentPorts> =
    LruHashMap::with_max_entries(FRAGMENTS_MAX_ENTRIES, 0);

#[map]
static NETGOV_EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

#[map]
static NETGOV_PAYLOADS: RingBuf = RingBuf::with_byte_size(PAYLOADS_RING_BYTES, 0);

/// Where a TC program tells `netgov_payload` what to copy.
#[map]
static NETGOV_PAYLOAD_CONTEXT: PerCpuArray<PayloadContext> = PerCpuArray::with_max_entries(1, 0);

#[map]
static NETGOV_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// A per-CPU slot where a new flow entry is assembled before insertion.
#[map]
static NETGOV_SCRATCH: PerCpuArray<FlowStats> = PerCpuArray::with_max_entries(1, 0);

/// Programs the TC programs tail-call, inserted by user space: slot
/// [`ICMP_ERROR_SLOT`] holds `netgov_icmp_error`, [`PAYLOAD_SLOT`]
/// `netgov_payload`.
#[map]
static NETGOV_TAIL_CALLS: ProgramArray = ProgramArray::with_max_entries(2, 0);

/// Flows whose datagrams a socket received, keyed like `NETGOV_FLOWS` with
/// interface index 0; the value has bit `1 << direction` per direction.
#[map]
static NETGOV_DELIVERED: LruHashMap<FlowKey, u32> =
    LruHashMap::with_max_entries(DELIVERED_MAX_ENTRIES, 0);

/// Packets leaving a pod (TC ingress of the host-side interface).
#[classifier]
pub fn netgov_from_pod(ctx: TcContext) -> i32 {
    observe_then_follow(&ctx, Hook::FromPod)
}

/// Packets delivered into a pod (TC egress of the host-side interface).
#[classifier]
pub fn netgov_to_pod(ctx: TcContext) -> i32 {
    observe_then_follow(&ctx, Hook::ToPod)
}

/// What runs after a packet is accounted, as a tail call: a program of its
/// own gets a fresh stack (the callers' frame is near the 512-byte limit).
enum Follow {
    Nothing,
    /// `netgov_icmp_error` looks at the packet an ICMP error quotes.
    IcmpError,
    /// `netgov_payload` copies a DNS answer or ClientHello.
    Payload,
}

/// Observes the packet, then follows with the program that looks further
/// into it, if any.
#[inline(always)]
fn observe_then_follow(ctx: &TcContext, hook: Hook) -> i32 {
    let slot = match observe(ctx, hook) {
        Follow::Nothing => return TC_ACT_UNSPEC,
        Follow::IcmpError => ICMP_ERROR_SLOT,
        Follow::Payload => PAYLOAD_SLOT,
    };
    // SAFETY: `ctx` is this program's context; nothing follows, so
    // returning from the tail call is returning from this program (and an
    // empty slot returns here, and so do we).
    unsafe { NETGOV_TAIL_CALLS.tail_call(ctx, slot) };
    TC_ACT_UNSPEC
}

/// Packets a socket receives, in any network namespace (attached to the
/// root cgroup): evidence that a datagram was delivered, which no filter
/// before the socket can fake. Only UDP is recorded: TCP and SCTP
/// deliveries show in their answers. Always lets the packet pass.
#[cgroup_skb(ingress)]
pub fn netgov_socket_ingress(ctx: SkBuffContext) -> i32 {
    // Every packet any socket on the node receives comes here: leave at
    // once unless the IP header says UDP (an IPv6 datagram behind extension
    // headers is skipped; reassembled fragments have none left).
    // SAFETY: `skb` is the context pointer the kernel passed to the program.
    let family = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16);
    let protocol_offset = match family {
        0x0800 => 9,
        0x86DD => 6,
        _ => return 1,
    };
    if parse::byte_at(&ctx.skb, protocol_offset) != Some(netgov_common::proto::UDP) {
        return 1;
    }
    if let parse::Outcome::Flow(packet) | parse::Outcome::FirstFragment(packet, _) =
        parse::parse_ip(&ctx.skb)
    {
        mark_delivered(&packet);
    }
    1
}

/// Tail-called by both TC programs for an ICMP or ICMPv6 error (already
/// counted as a flow of its own): marks the UDP datagram it quotes
/// delivered when the error comes from that datagram's destination — a
/// port unreachable shows the datagram reached its stack, though nothing
/// listened. One from anyone else (a router, a rejecting filter) shows
/// nothing of the kind. A program of its own for a fresh stack: the
/// callers' frame is near the 512-byte limit.
#[classifier]
pub fn netgov_icmp_error(ctx: TcContext) -> i32 {
    if let Some(reported) = parse::reported(&ctx.skb)
        && reported.destination == reported.reporter
        && reported.key.protocol == netgov_common::proto::UDP
    {
        mark_key_delivered(reported.key, reported.direction);
    }
    TC_ACT_UNSPEC
}

/// Records in `NETGOV_DELIVERED` that `packet` (UDP) reached its
/// destination's network stack.
#[inline(always)]
fn mark_delivered(packet: &Packet) {
    if packet.protocol == netgov_common::proto::UDP {
        let (key, direction) = packet.canonical_key(0);
        mark_key_delivered(key, direction);
    }
}

#[inline(always)]
fn mark_key_delivered(key: FlowKey, direction: u8) {
    let bit = 1u32 << (direction & 1);
    match NETGOV_DELIVERED.get_ptr_mut(key) {
        // SAFETY: points into a live map value; a lost race between two
        // CPUs setting bits only delays the bit to the next packet.
        Some(seen) => unsafe {
            if *seen & bit == 0 {
                *seen |= bit;
            }
        },
        None => {
            if NETGOV_DELIVERED.insert(key, bit, 0).is_err() {
                count(Counter::DeliveryMapUpdateFailures);
            }
        }
    }
}

/// Accounts the packet to its flow; says what the caller follows with
/// once this frame is gone.
#[inline(always)]
fn observe(ctx: &TcContext, hook: Hook) -> Follow {
    count(Counter::Packets);
    match parse::parse(&ctx.skb) {
        Outcome::Flow(packet) => {
            // SAFETY: `skb` is the context pointer the kernel passed to the
            // program.
            let ifindex = unsafe { (*ctx.skb.skb).ifindex };
            let (key, direction) = packet.canonical_key(ifindex);
            if packet.is_icmp_error() {
                account_keyed(hook, &packet, key, direction);
                return Follow::IcmpError;
            }
            // Counted in the flow cache: an established flow, whose
            // payloads are past the ones looked into.
            let Some(before) = account_keyed(hook, &packet, key, direction) else {
                return Follow::Nothing;
            };
            return payload::payload_to_copy(ctx, hook, &packet, &key, direction, before);
        }
        Outcome::FirstFragment(packet, fragment) => {
            let ports = FragmentPorts {
                // SAFETY: plain helper call without arguments.
                seen_ns: unsafe { bpf_ktime_get_ns() },
                src_port: packet.src_port,
                dst_port: packet.dst_port,
                _pad: [0; 4],
            };
            if NETGOV_FRAGMENTS.insert(fragment, ports, 0).is_err() {
                count(Counter::FragmentMapUpdateFailures);
            }
            account(ctx, hook, &packet);
        }
        Outcome::LaterFragment(mut packet, fragment, last) => {
            // SAFETY: plain helper call without arguments.
            let now = unsafe { bpf_ktime_get_ns() };
            // SAFETY: the value is copied out at once; a concurrent delete
            // cannot free it while this program runs (RCU).
            let memo = unsafe { NETGOV_FRAGMENTS.get(fragment) }.copied();
            match memo {
                Some(ports) if now.wrapping_sub(ports.seen_ns) < FRAGMENT_MEMO_TIMEOUT_NS => {
                    packet.src_port = ports.src_port;
                    packet.dst_port = ports.dst_port;
                    count(Counter::FragmentsMatched);
                    account(ctx, hook, &packet);
                    if last {
                        // The datagram is complete: a later reuse of its
                        // IP ID must not inherit these ports.
                        let _ = NETGOV_FRAGMENTS.remove(fragment);
                    }
                }
                _ => count(Counter::FragmentsUnmatched),
            }
        }
        Outcome::NonIp => count(Counter::NonIpPackets),
        Outcome::OtherProtocol => count(Counter::OtherProtocolPackets),
        Outcome::Malformed => count(Counter::ParseErrors),
    }
    Follow::Nothing
}

/// Adds the packet to its flow entry at this interface, creating the entry
/// (and a flow-start event) when it is the flow's first packet here.
#[inline(always)]
fn account(ctx: &TcContext, hook: Hook, packet: &Packet) {
    // SAFETY: `skb` is the context pointer the kernel passed to the program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let (key, direction) = packet.canonical_key(ifindex);
    account_keyed(hook, packet, key, direction);
}

/// What a flow's entry at this interface held before a packet was added.
#[derive(Clone, Copy, Default)]
pub(crate) struct Before {
    /// Packets sent in the packet's direction.
    pub sent: u64,
    /// Flag bits of the other direction (what the other end sent, and
    /// which hooks saw it).
    pub other_flags: u64,
}

impl Before {
    /// What `stats` holds for direction `dir` and the other way.
    #[inline(always)]
    fn of(stats: *const FlowStats, dir: usize) -> Self {
        // SAFETY: a live map value; a racing update only shifts the count
        // or makes a bit appear a packet later.
        unsafe {
            Self {
                sent: core::ptr::read_volatile(&raw const (*stats).packets[dir]),
                other_flags: core::ptr::read_volatile(&raw const (*stats).flags[dir ^ 1]),
            }
        }
    }
}

/// [`account`] for a packet whose key is known; returns what the entry
/// held before (nothing, for a new flow), or `None` when the packet was
/// counted in this CPU's flow cache instead.
#[inline(always)]
fn account_keyed(hook: Hook, packet: &Packet, key: FlowKey, direction: u8) -> Option<Before> {
    let dir = (direction & 1) as usize;
    let bits = packet.tcp_flags as u64 | hook.seen_bit() as u64;

    let place = cache::Place::of(&key);
    if cache::count_cached(place, &key, dir, bits, packet) {
        return None;
    }
    if let Some(stats) = NETGOV_FLOWS.get_ptr_mut(key) {
        let before = Before::of(stats, dir);
        // A known flow only moves its last packet's time, for idle
        // timeouts: the coarse clock (one tick behind at most) is enough
        // and costs a memory read where the precise one reads the clock
        // source.
        // SAFETY: plain helper call without arguments.
        let now = unsafe { bpf_ktime_get_coarse_ns() };
        update(stats, dir, now, packet, bits, &key, hook);
        cache::offer(place, &key, dir, stats);
        return Some(before);
    }
    // A new flow's first packet orders it against its other views and
    // orients it: the precise clock.
    // SAFETY: plain helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };

    // The new entry is built in a per-CPU scratch slot, not on the stack:
    // the programs' frame is near the 512-byte limit.
    let Some(stats) = NETGOV_SCRATCH.get_ptr_mut(0) else {
        count(Counter::FlowMapUpdateFailures);
        return Some(Before::default());
    };
    // SAFETY: this CPU's slot; TC programs do not preempt each other on a
    // CPU, so nothing else uses it until this program returns.
    let stats = unsafe { &mut *stats };
    *stats = FlowStats {
        first_seen_ns: now,
        last_seen_ns: now,
        first_direction: direction,
        ..FlowStats::default()
    };
    stats.packets[dir] = packet.segments as u64;
    stats.bytes[dir] = packet.ip_bytes as u64;
    stats.flags[dir] = bits;
    stats.first_tcp_flags = packet.tcp_flags;
    // By reference: a copy would land on the stack.
    let new_entry: &FlowStats = stats;
    match NETGOV_FLOWS.insert(key, new_entry, BPF_NOEXIST) {
        Ok(()) => {
            cache::forget(place, &key);
            emit(
                EventKind::FlowStart,
                hook,
                now,
                &key,
                direction,
                packet.tcp_flags,
            );
        }
        // Another CPU created the entry between our lookup and insert.
        Err(EEXIST) => match NETGOV_FLOWS.get_ptr_mut(key) {
            Some(stats) => {
                cache::forget(place, &key);
                let before = Before::of(stats, dir);
                update(stats, dir, now, packet, bits, &key, hook);
                return Some(before);
            }
            None => count(Counter::FlowMapUpdateFailures),
        },
        Err(_) => count(Counter::FlowMapUpdateFailures),
    }
    Some(Before::default())
}

#[inline(always)]
fn update(
    stats: *mut FlowStats,
    dir: usize,
    now: u64,
    packet: &Packet,
    bits: u64,
    key: &FlowKey,
    hook: Hook,
) {
    // SAFETY: `stats` points into a map value that stays valid for the rest
    // of this program run; every shared counter is updated atomically.
    unsafe {
        // Never before the first packet (from the precise clock), which a
        // coarse `now` can be within a tick of it.
        let now = now.max(core::ptr::read_volatile(&raw const (*stats).first_seen_ns));
        atomic::add_u64(&raw mut (*stats).packets[dir], packet.segments as u64);
        atomic::add_u64(&raw mut (*stats).bytes[dir], packet.ip_bytes as u64);
        // Last writer wins: every writer stores "now", so the value is at
        // most a clock tick behind the true latest packet.
        atomic::store_u64(&raw mut (*stats).last_seen_ns, now);
        let flags = &raw mut (*stats).flags[dir];
        // Skip the atomic read-modify-write on the common path where every
        // bit is already known.
        if core::ptr::read_volatile(flags) & bits != bits {
            let before = atomic::or_u64(flags, bits);
            if bits & !before & tcp_flags::TRANSITIONS as u64 != 0 {
                let direction = dir as u8;
                emit(
                    EventKind::TcpTransition,
                    hook,
                    now,
                    key,
                    direction,
                    packet.tcp_flags,
                );
            }
        }
    }
}

#[inline(always)]
fn emit(kind: EventKind, hook: Hook, now: u64, key: &FlowKey, direction: u8, tcp_flags: u8) {
    match NETGOV_EVENTS.reserve::<FlowEvent>(0) {
        Some(mut entry) => {
            entry.write(FlowEvent {
                header: EventHeader {
                    timestamp_ns: now,
                    kind: kind as u8,
                    hook: hook as u8,
                    _pad: [0; 6],
                },
                key: *key,
                direction,
                tcp_flags,
                _pad: [0; 2],
            });
            entry.submit(0);
        }
        None => count(Counter::RingbufDrops),
    }
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(value) = NETGOV_COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, and TC programs do not preempt each other on
        // one CPU, so a plain increment cannot race.
        unsafe { *value += 1 };
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// Host builds (for `cargo clippy --workspace`) need an entry point; the real
/// programs only exist for the BPF target.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
