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
mod parse;

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    helpers::bpf_ktime_get_ns,
    macros::{classifier, map},
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::TcContext,
};
use netgov_common::{
    Counter, EVENTS_RING_BYTES, EventHeader, EventKind, FLOWS_MAX_ENTRIES,
    FRAGMENT_MEMO_TIMEOUT_NS, FRAGMENTS_MAX_ENTRIES, FlowEvent, FlowKey, FlowStats, FragmentKey,
    FragmentPorts, Hook, tcp_flags,
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
static NETGOV_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// Packets leaving a pod (TC ingress of the host-side interface).
#[classifier]
pub fn netgov_from_pod(ctx: TcContext) -> i32 {
    observe(&ctx, Hook::FromPod);
    TC_ACT_UNSPEC
}

/// Packets delivered into a pod (TC egress of the host-side interface).
#[classifier]
pub fn netgov_to_pod(ctx: TcContext) -> i32 {
    observe(&ctx, Hook::ToPod);
    TC_ACT_UNSPEC
}

#[inline(always)]
fn observe(ctx: &TcContext, hook: Hook) {
    count(Counter::Packets);
    match parse::parse(ctx) {
        Outcome::Flow(packet) => account(ctx, hook, &packet),
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
}

/// Adds the packet to its flow entry at this interface, creating the entry
/// (and a flow-start event) when it is the flow's first packet here.
#[inline(always)]
fn account(ctx: &TcContext, hook: Hook, packet: &Packet) {
    // SAFETY: `skb` is the context pointer the kernel passed to the program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let (key, direction) = packet.canonical_key(ifindex);
    let dir = (direction & 1) as usize;
    // SAFETY: plain helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let bits = packet.tcp_flags as u64 | hook.seen_bit() as u64;

    if let Some(stats) = NETGOV_FLOWS.get_ptr_mut(key) {
        update(stats, dir, now, packet, bits, &key, hook);
        return;
    }

    let mut stats = FlowStats {
        first_seen_ns: now,
        last_seen_ns: now,
        first_direction: direction,
        ..FlowStats::default()
    };
    stats.packets[dir] = packet.segments as u64;
    stats.bytes[dir] = packet.ip_bytes as u64;
    stats.flags[dir] = bits;
    stats.first_tcp_flags = packet.tcp_flags;
    match NETGOV_FLOWS.insert(key, stats, BPF_NOEXIST) {
        Ok(()) => emit(
            EventKind::FlowStart,
            hook,
            now,
            &key,
            direction,
            packet.tcp_flags,
        ),
        // Another CPU created the entry between our lookup and insert.
        Err(EEXIST) => match NETGOV_FLOWS.get_ptr_mut(key) {
            Some(stats) => update(stats, dir, now, packet, bits, &key, hook),
            None => count(Counter::FlowMapUpdateFailures),
        },
        Err(_) => count(Counter::FlowMapUpdateFailures),
    }
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
        atomic::add_u64(&raw mut (*stats).packets[dir], packet.segments as u64);
        atomic::add_u64(&raw mut (*stats).bytes[dir], packet.ip_bytes as u64);
        // Last writer wins: every writer stores "now", so the value is at
        // most a few nanoseconds behind the true latest packet.
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
