//! The payloads that name destinations: which packets carry one (a DNS
//! answer to a pod's own question, a ClientHello opening a pod's
//! connection), and the tail-called program that copies them into the
//! payload ring.

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC, helpers::bpf_ktime_get_ns, macros::classifier, programs::TcContext,
};
use netgov_common::{
    Counter, EventHeader, FlowKey, Hook, PAYLOAD_CAPTURE_BYTES, PayloadEvent, PayloadKind, seen_at,
};

use crate::parse::{self, Packet};
use crate::{Before, Follow, NETGOV_PAYLOAD_CONTEXT, NETGOV_PAYLOADS, count};

/// Where DNS answers come from.
pub(crate) const DNS_PORT: u16 = 53;
/// Packets a pod may have sent on a connection before its ClientHello
/// (SYN and ACK, and room for a retransmission): it is among the first
/// four. The flow cache counts a direction only past these.
pub(crate) const MAX_BEFORE_HELLO: u64 = 3;
/// Wire segments a ClientHello spans at most (about 4 KB).
const MAX_HELLO_SEGMENTS: u16 = 3;

/// Tail-called by both TC programs for a DNS answer delivered into a pod
/// or a ClientHello a pod sent, described in `NETGOV_PAYLOAD_CONTEXT`:
/// copies the start of the payload into the payload ring, where user
/// space learns destination names from it.
#[classifier]
pub fn netgov_payload(ctx: TcContext) -> i32 {
    let Some(context) = NETGOV_PAYLOAD_CONTEXT.get_ptr(0) else {
        return TC_ACT_UNSPEC;
    };
    // SAFETY: this CPU's slot, written by the program that tail-called
    // this one on this CPU, just before the call.
    let context = unsafe { &*context };
    // The skb's length, not the IP header's: the packet was parsed
    // already, and a short frame's padding only adds a few bytes to what
    // user space reads as a malformed answer.
    // SAFETY: `skb` is the context pointer the kernel passed to the program.
    let length = unsafe { (*ctx.skb.skb).len }.saturating_sub(context.offset as u32);
    let length = length.min(u16::MAX as u32) as u16;
    if length == 0 {
        // A bare ACK of a DNS-over-TCP connection.
        return TC_ACT_UNSPEC;
    }
    let mut captured = length as usize;
    if captured > PAYLOAD_CAPTURE_BYTES {
        captured = PAYLOAD_CAPTURE_BYTES;
    }
    let Some(mut entry) = NETGOV_PAYLOADS.reserve::<PayloadEvent>(0) else {
        count(Counter::PayloadRingbufDrops);
        return TC_ACT_UNSPEC;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at the reserved ring entry, written field by
    // field (it is too large for the stack).
    unsafe {
        (*event).header = EventHeader {
            timestamp_ns: bpf_ktime_get_ns(),
            kind: context.kind,
            hook: 0,
            _pad: [0; 6],
        };
        (*event).key = context.key;
        (*event).direction = context.direction;
        (*event)._pad = 0;
        (*event).length = length;
        (*event)._pad2 = [0; 6];
        // 1 ≤ captured ≤ the buffer: the mask changes nothing but shows
        // the verifier the bounds the comparisons above already ensure.
        let captured = ((captured - 1) & (PAYLOAD_CAPTURE_BYTES - 1)) + 1;
        let loaded = aya_ebpf::helpers::bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            context.offset as u32,
            (*event).data.as_mut_ptr() as *mut _,
            captured as u32,
        ) == 0;
        (*event).captured = if loaded { captured as u16 } else { 0 };
    }
    entry.submit(0);
    TC_ACT_UNSPEC
}

/// Whether the packet carries what names destinations — a DNS answer
/// delivered into the pod (from port 53, UDP or TCP) on a flow the pod
/// asked on, or a ClientHello among the first packets the pod sent on a
/// connection — and if so, hands the payload program where it is.
/// `before` is what the flow's entry here held before this packet: the
/// entry was looked up to account the packet, and is not looked up again.
#[inline(always)]
pub(crate) fn payload_to_copy(
    ctx: &TcContext,
    hook: Hook,
    packet: &Packet,
    key: &FlowKey,
    direction: u8,
    before: Before,
) -> Follow {
    let kind = match hook {
        Hook::ToPod
            if packet.src_port == DNS_PORT
                && (packet.protocol == netgov_common::proto::UDP
                    || packet.protocol == netgov_common::proto::TCP) =>
        {
            PayloadKind::DnsAnswer
        }
        // A ClientHello is a packet with a payload of a few segments at
        // most (one with post-quantum key shares is about 2 KB: two
        // segments, handed over as one GSO packet): a bare ACK or bulk
        // data is not looked into — reading past a packet's end, or beyond
        // its linear part, costs a helper call.
        // A ClientHello opens a connection (SYN, ACK, then it): later
        // packets that look like one are data, copied for nothing — and
        // not even read, as most of a connection is later packets.
        Hook::FromPod
            if packet.protocol == netgov_common::proto::TCP
                && before.sent <= MAX_BEFORE_HELLO
                && packet.segments <= MAX_HELLO_SEGMENTS
                && has_payload(ctx, packet.payload_offset, 6)
                && parse::starts_client_hello(&ctx.skb, packet.payload_offset as usize) =>
        {
            PayloadKind::TlsClientHello
        }
        _ => return Follow::Nothing,
    };
    // Only an answer to the pod's own question is read: the pod sent on
    // this flow (same addresses and ports) before. Anyone else's packets
    // from port 53 would plant names.
    if kind == PayloadKind::DnsAnswer && before.other_flags & seen_at::FROM_POD as u64 == 0 {
        count(Counter::DnsUnsolicited);
        return Follow::Nothing;
    }
    let Some(context) = NETGOV_PAYLOAD_CONTEXT.get_ptr_mut(0) else {
        return Follow::Nothing;
    };
    // SAFETY: this CPU's slot; read by the tail-called program on this CPU
    // before any other program here can run. Written field by field: a
    // whole value would be built on the stack first.
    unsafe {
        (*context).key = *key;
        (*context).direction = direction;
        (*context).kind = kind as u8;
        (*context).offset = packet.payload_offset;
    }
    Follow::Payload
}

/// Whether the packet holds at least `bytes` after `offset` (the skb's
/// length: a frame's padding can only make this say yes to a packet
/// whose bytes then do not match).
#[inline(always)]
fn has_payload(ctx: &TcContext, offset: u16, bytes: u32) -> bool {
    // SAFETY: `skb` is the context pointer the kernel passed to the program.
    let length = unsafe { (*ctx.skb.skb).len };
    length >= u32::from(offset) + bytes
}
