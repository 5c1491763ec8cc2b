//! The per-CPU flow cache: an established flow's packets counted in a slot
//! of this CPU's array, without looking up its entry in `NETGOV_FLOWS`.
//!
//! Why: that hash lookup (a 44-byte key hashed, a bucket walked) is the
//! largest part of a packet's cost, and a flow whose two directions run on
//! two CPUs moves its entry's cache line between them on every packet. A
//! direct-mapped slot costs a few loads and one compare, and no atomic
//! instruction.
//!
//! What keeps the counts exact:
//! - The cache counts only what the entry would merely add up. A packet
//!   whose flag bits (TCP flags, the hook that saw it) are not all in its
//!   slot's `hit_flags` for its direction goes to the entry, so every first
//!   sighting is recorded there at once. SYN, FIN and RST always go there
//!   (they make events), and a flow that has sent FIN or RST is not cached:
//!   it is about to end, and user space reads and deletes ended entries.
//! - A direction is cached only past its first packets, where a
//!   ClientHello is looked for; flows on port 53 never are (a DNS answer is
//!   checked against the entry).
//! - User space runs [`netgov_flush_cache`] on every CPU before each read
//!   of the flow map. The flush and the TC programs interrupt each other on
//!   a CPU (the flush runs in an IPI, or in process context with softirqs
//!   on), so every count has one writer: the TC programs' totals only grow,
//!   and the flush adds to the entry what they grew by since it last did.
//!   A packet counted while a flush runs is added by the next one.
//! - Another flow takes a slot only while it holds nothing unflushed, and
//!   the flush reads a slot's key only while it does: the key a flush adds
//!   counts to is the key they were counted for. A slot that counted
//!   nothing between two flushes may be taken; a busy one is kept.
//! - Each slot has a tag (a hash of its flow's key; 0: the slot counts
//!   nothing and may be taken) in a small array of its own, which a packet
//!   reads first: with many flows most packets meet another flow's slot,
//!   and then they do not load the slot at all. The tag only filters: a
//!   packet is counted in a slot only if the slot's key is its own.
//! - A slot whose entry is gone (evicted, or ended by user space) counts
//!   its packets in `cached_packets_lost` and stops counting, so the next
//!   packet makes a new entry.

use aya_ebpf::{
    helpers::bpf_ktime_get_coarse_ns,
    macros::{map, raw_tracepoint},
    maps::PerCpuArray,
    programs::RawTracePointContext,
};
use netgov_common::{
    CachedFlow, Counter, FLOW_CACHE_SLOTS, FLUSH_BATCH, FlowKey, FlowStats, cache::ESTABLISHED,
    tcp_flags,
};

use crate::parse::Packet;
use crate::payload::{DNS_PORT, MAX_BEFORE_HELLO};
use crate::{NETGOV_COUNTERS, NETGOV_FLOWS, atomic};

#[map]
static NETGOV_FLOW_CACHE: PerCpuArray<CachedFlow> =
    PerCpuArray::with_max_entries(FLOW_CACHE_SLOTS, 0);

/// Each slot's tag, in one value per CPU (4 KiB: it stays in the CPU's
/// caches where the slots would not).
#[map]
static NETGOV_FLOW_CACHE_TAGS: PerCpuArray<Tags> = PerCpuArray::with_max_entries(1, 0);

type Tags = [u32; FLOW_CACHE_SLOTS as usize];

/// TCP flags that end a flow: a flow that has sent one is not cached.
const ENDING: u64 = (tcp_flags::FIN | tcp_flags::RST) as u64;
/// Words of a [`FlowKey`].
const KEY_WORDS: usize = core::mem::size_of::<FlowKey>() / 4;
/// Bits of a tag that pick the slot (its highest).
const INDEX_SHIFT: u32 = 32 - FLOW_CACHE_SLOTS.trailing_zeros();

/// Where a flow's packets are cached on this CPU: its tag, whose highest
/// bits pick its slot. Only the tag, so that little is kept on a stack near
/// its 512-byte limit while the entry's path runs.
#[derive(Clone, Copy)]
pub(crate) struct Place {
    tag: u32,
}

impl Place {
    /// `key`'s place.
    #[inline(always)]
    pub(crate) fn of(key: &FlowKey) -> Self {
        Self { tag: tag_of(key) }
    }

    #[inline(always)]
    fn index(self) -> u32 {
        self.tag >> INDEX_SHIFT
    }

    /// The tag of the flow the slot holds on this CPU.
    #[inline(always)]
    fn current_tag(self) -> u32 {
        match NETGOV_FLOW_CACHE_TAGS.get_ptr(0) {
            // SAFETY: this CPU's tags; the index is below the slot count
            // (the highest bits of a 32-bit tag).
            Some(tags) => unsafe {
                core::ptr::read_volatile(&raw const (*tags)[self.index() as usize])
            },
            None => 0,
        }
    }

    #[inline(always)]
    fn set_tag(self, tag: u32) {
        set_tag(self.index(), tag);
    }

    #[inline(always)]
    fn slot(self) -> Option<*mut CachedFlow> {
        NETGOV_FLOW_CACHE.get_ptr_mut(self.index())
    }
}

#[inline(always)]
fn set_tag(index: u32, tag: u32) {
    if let Some(tags) = NETGOV_FLOW_CACHE_TAGS.get_ptr_mut(0) {
        // SAFETY: this CPU's tags; callers pass an index below the slot
        // count, masked again here for the verifier.
        unsafe {
            core::ptr::write_volatile(
                &raw mut (*tags)[(index & (FLOW_CACHE_SLOTS - 1)) as usize],
                tag,
            )
        }
    }
}

/// Stops slot `index` counting: its flow's next packet goes to the entry
/// (the key and anything unflushed stay, for the flush).
///
/// # Safety
/// `slot` is this CPU's slot `index`.
#[inline(always)]
unsafe fn stop_counting(slot: *mut CachedFlow, index: u32) {
    // SAFETY: forwarded from the caller.
    unsafe { core::ptr::write_volatile(&raw mut (*slot).hit_flags, [0, 0]) };
    set_tag(index, 0);
}

/// Counts the packet in its slot when the slot holds the flow and the
/// packet brings no flag bit the slot does not allow; `false` sends the
/// packet to the flow's entry.
#[inline(always)]
pub(crate) fn count_cached(
    place: Place,
    key: &FlowKey,
    dir: usize,
    bits: u64,
    packet: &Packet,
) -> bool {
    if place.current_tag() != place.tag {
        return false;
    }
    let Some(slot) = place.slot() else {
        return false;
    };
    let required = bits | ESTABLISHED;
    // SAFETY: this CPU's slot. The TC programs are the only writers of
    // what they write here, and do not interrupt each other; a flush that
    // interrupts them reads a total before or after an addition, and the
    // next flush adds the rest.
    unsafe {
        if (*slot).hit_flags[dir] & required != required || !same_key(&raw const (*slot).key, key) {
            return false;
        }
        // The bits and the time before the counts: a flush that reads the
        // counts in between reads these after them.
        let flags = &raw mut (*slot).flags[dir];
        if *flags & bits != bits {
            core::ptr::write_volatile(flags, *flags | bits);
        }
        core::ptr::write_volatile(&raw mut (*slot).last_seen_ns, bpf_ktime_get_coarse_ns());
        core::ptr::write_volatile(
            &raw mut (*slot).packets[dir],
            (*slot).packets[dir] + packet.segments as u64,
        );
        core::ptr::write_volatile(
            &raw mut (*slot).bytes[dir],
            (*slot).bytes[dir] + packet.ip_bytes as u64,
        );
    }
    true
}

/// After a packet was added to the flow's entry `stats`: lets the flow's
/// slot count its next packets, when the flow may be cached and the slot
/// holds it already, or holds nothing unflushed and no busy flow. A slot
/// that holds the flow learns the entry's bits again (or stops counting,
/// once the flow ends).
#[inline(always)]
pub(crate) fn offer(place: Place, key: &FlowKey, dir: usize, stats: *const FlowStats) {
    let current = place.current_tag();
    if current != 0 && current != place.tag {
        // A busy slot of another flow.
        return;
    }
    let Some(slot) = place.slot() else {
        return;
    };
    // SAFETY: `stats` is a live map value (a racing update only makes a bit
    // or a count appear a packet later); the slot is this CPU's.
    unsafe {
        let packets = [
            core::ptr::read_volatile(&raw const (*stats).packets[0]),
            core::ptr::read_volatile(&raw const (*stats).packets[1]),
        ];
        let holds_flow = same_key(&raw const (*slot).key, key);
        // A slot that holds the flow learns its bits whatever the packet
        // (an RST from the other end must stop it counting).
        if !holds_flow
            && (packets[dir] <= MAX_BEFORE_HELLO
                || key.port_a == DNS_PORT
                || key.port_b == DNS_PORT)
        {
            return;
        }
        let flags = [
            core::ptr::read_volatile(&raw const (*stats).flags[0]),
            core::ptr::read_volatile(&raw const (*stats).flags[1]),
        ];
        let ended = (flags[0] | flags[1]) & ENDING != 0;
        let hit_flags = |d: usize| match (ended, packets[d] > MAX_BEFORE_HELLO) {
            (true, _) => 0,
            (false, established) => {
                let bits = flags[d] & !(tcp_flags::TRANSITIONS as u64);
                if established {
                    bits | ESTABLISHED
                } else {
                    bits
                }
            }
        };
        let entry_first_seen = core::ptr::read_volatile(&raw const (*stats).first_seen_ns);
        // The slot may hold the key for an entry that ended since: then it
        // is taken anew, and the earlier flow's bits stay out of this one.
        let earlier_flow = holds_flow
            && core::ptr::read_volatile(&raw const (*slot).entry_first_seen_ns) != entry_first_seen;
        if !holds_flow || earlier_flow {
            if ended || holds_unflushed(slot) {
                if earlier_flow {
                    stop_counting(slot, place.index());
                }
                return;
            }
            core::ptr::write_volatile(&raw mut (*slot).hit_flags, [0, 0]);
            core::ptr::write_volatile(&raw mut (*slot).key, *key);
            core::ptr::write_volatile(&raw mut (*slot).flags, [0, 0]);
        }
        core::ptr::write_volatile(&raw mut (*slot).entry_first_seen_ns, entry_first_seen);
        core::ptr::write_volatile(&raw mut (*slot).hit_flags, [hit_flags(0), hit_flags(1)]);
        place.set_tag(if ended { 0 } else { place.tag });
    }
}

/// A new entry for `key` was made: a slot that still holds the key (its
/// earlier entry ended or was evicted, and no flush has seen that yet)
/// stops counting, so that the new flow's first packets reach its entry.
#[inline(always)]
pub(crate) fn forget(place: Place, key: &FlowKey) {
    let Some(slot) = place.slot() else {
        return;
    };
    // SAFETY: this CPU's slot.
    unsafe {
        if same_key(&raw const (*slot).key, key) {
            stop_counting(slot, place.index());
        }
    }
}

/// Never attached: user space runs it on each CPU (`BPF_PROG_TEST_RUN`
/// with `BPF_F_TEST_RUN_ON_CPU`) before it reads the flow map, to add the
/// counts of [`FLUSH_BATCH`] slots from the first argument's on (a batch
/// keeps the verifier's work small) to the flows' entries.
#[raw_tracepoint(tracepoint = "netgov_flush_cache")]
pub fn netgov_flush_cache(ctx: RawTracePointContext) -> i32 {
    let first: u64 = ctx.arg(0);
    let first = (first as u32) & (FLOW_CACHE_SLOTS - 1) & !(FLUSH_BATCH - 1);
    for offset in 0..FLUSH_BATCH {
        flush(first + offset);
    }
    0
}

#[inline(always)]
fn flush(index: u32) {
    let Some(slot) = NETGOV_FLOW_CACHE.get_ptr_mut(index) else {
        return;
    };
    // SAFETY: this CPU's slot (the program runs on the CPU whose slots it
    // flushes). A TC program interrupting it only grows the totals, or
    // writes a new key into a slot with nothing unflushed.
    unsafe {
        let packets = [
            core::ptr::read_volatile(&raw const (*slot).packets[0]),
            core::ptr::read_volatile(&raw const (*slot).packets[1]),
        ];
        let bytes = [
            core::ptr::read_volatile(&raw const (*slot).bytes[0]),
            core::ptr::read_volatile(&raw const (*slot).bytes[1]),
        ];
        let new_packets = [
            packets[0].wrapping_sub((*slot).flushed_packets[0]),
            packets[1].wrapping_sub((*slot).flushed_packets[1]),
        ];
        let new_bytes = [
            bytes[0].wrapping_sub((*slot).flushed_bytes[0]),
            bytes[1].wrapping_sub((*slot).flushed_bytes[1]),
        ];
        if new_packets == [0, 0] && new_bytes == [0, 0] {
            // Nothing counted since the last flush: the slot is free for
            // another flow, and counts nothing until a packet's `offer`
            // takes it (its own flow's next one, if no other's comes
            // first), which checks the flow's entry again.
            set_tag(index, 0);
            return;
        }
        // Something to add: the key cannot change until the flushed totals
        // below catch up. The bits after the counts (see `count_cached`).
        let key = core::ptr::read_volatile(&raw const (*slot).key);
        let flags = core::ptr::read_volatile(&raw const (*slot).flags);
        let last_seen_ns = core::ptr::read_volatile(&raw const (*slot).last_seen_ns);
        let first_seen = core::ptr::read_volatile(&raw const (*slot).entry_first_seen_ns);
        let Some(stats) = NETGOV_FLOWS.get_ptr_mut(key) else {
            stop_counting(slot, index);
            if let Some(lost) = NETGOV_COUNTERS.get_ptr_mut(Counter::CachedPacketsLost as u32) {
                // Only the flush counts this one, and flushes on a CPU
                // do not interrupt each other.
                *lost += new_packets[0] + new_packets[1];
            }
            core::ptr::write_volatile(&raw mut (*slot).flushed_packets, packets);
            core::ptr::write_volatile(&raw mut (*slot).flushed_bytes, bytes);
            return;
        };
        // Packets of this key all the same, but an entry made anew since
        // the slot was taken: its flow's first packets must reach it.
        if (*stats).first_seen_ns != first_seen {
            stop_counting(slot, index);
        }
        // Unconditional (adding 0, setting no bit): fewer paths for the
        // verifier, and the flush is not on any packet's path.
        atomic::add_u64(&raw mut (*stats).packets[0], new_packets[0]);
        atomic::add_u64(&raw mut (*stats).packets[1], new_packets[1]);
        atomic::add_u64(&raw mut (*stats).bytes[0], new_bytes[0]);
        atomic::add_u64(&raw mut (*stats).bytes[1], new_bytes[1]);
        atomic::or_u64(&raw mut (*stats).flags[0], flags[0]);
        atomic::or_u64(&raw mut (*stats).flags[1], flags[1]);
        // Later than the entry's own: the entry's path may have counted a
        // later packet on another CPU meanwhile.
        let entry_last = &raw mut (*stats).last_seen_ns;
        if core::ptr::read_volatile(entry_last) < last_seen_ns {
            atomic::store_u64(entry_last, last_seen_ns);
        }
        core::ptr::write_volatile(&raw mut (*slot).flushed_packets, packets);
        core::ptr::write_volatile(&raw mut (*slot).flushed_bytes, bytes);
    }
}

/// Whether the slot has counted what the flush has not added yet.
#[inline(always)]
unsafe fn holds_unflushed(slot: *const CachedFlow) -> bool {
    // SAFETY: forwarded from the caller.
    unsafe { (*slot).packets != (*slot).flushed_packets || (*slot).bytes != (*slot).flushed_bytes }
}

/// The tag of `key`: a multiplicative hash of the words that tell flows
/// apart (an IPv6 address's last word; both ports; the interface), never
/// 0. Its highest bits pick the slot.
#[inline(always)]
fn tag_of(key: &FlowKey) -> u32 {
    let word = |bytes: &[u8; 16], at: usize| {
        u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
    };
    let mixed = word(&key.addr_a, 0)
        ^ word(&key.addr_a, 12)
        ^ word(&key.addr_b, 0).rotate_left(16)
        ^ word(&key.addr_b, 12).rotate_left(16)
        ^ (u32::from(key.port_a) << 16 | u32::from(key.port_b))
        ^ key.ifindex.rotate_left(8);
    mixed.wrapping_mul(0x9E37_79B1) | 1
}

/// Whether the slot's key is `key`, word by word.
#[inline(always)]
unsafe fn same_key(slot: *const FlowKey, key: &FlowKey) -> bool {
    let (ours, theirs) = (slot.cast::<u32>(), (key as *const FlowKey).cast::<u32>());
    for i in 0..KEY_WORDS {
        // SAFETY: both point at a whole key; the slot's is in a map value.
        if unsafe { core::ptr::read_volatile(ours.add(i)) != theirs.add(i).read_unaligned() } {
            return false;
        }
    }
    true
}
