//! Giving freed memory back to the system. glibc keeps a heap per thread
//! that allocated (an arena), and memory freed after a burst stays with
//! the arena that held it. (The steps the churn soak first showed, 270 →
//! 297 → 333 MiB after 15 minutes, were the live-flow tables doubling late:
//! see `churn_map.rs`.) Three measures:
//! - at most two arenas (the agent has a few busy threads; contention on
//!   them is negligible next to judging);
//! - a fixed mmap threshold ([`MMAP_THRESHOLD`]): large blocks are mapped
//!   on their own and unmapped when freed, never carved out of an arena;
//! - every ten seconds, `malloc_trim` returns the free pages of every
//!   arena: a burst (a re-report of every live flow, tens of MiB of
//!   records for a moment) is returned soon after, not a minute later.
//!
//! All are glibc's (the agent's image links glibc statically); elsewhere
//! they do nothing. After each trim the heap in use is exported
//! (`netgov_heap_in_use_bytes`): resident memory that grows while it
//! stays flat is the allocator's, not a leak.

use std::time::Duration;

/// How often free memory is returned.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Limits glibc to two arenas, and keeps large blocks out of them. Call
/// before threads start allocating.
pub fn limit_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Blocks this large or larger are mapped on their own and unmapped when
/// freed. Setting it fixes glibc's threshold, which otherwise rises to the
/// size of each large block freed (up to 32 MiB): the snapshot of the
/// kernel's flow map and a drain's batch of records, freed every second,
/// would then be carved out of an arena, and live flows' small blocks
/// allocated around them keep those pages resident.
#[cfg(target_env = "gnu")]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Returns the free memory of every arena to the system, every
/// [`TRIM_INTERVAL`], forever, and hands `record` the heap in use.
pub async fn trim_forever(record: impl Fn(u64)) {
    let mut tick = tokio::time::interval(TRIM_INTERVAL);
    tick.tick().await;
    loop {
        if let Some(bytes) = heap_in_use() {
            record(bytes);
        }
        tick.tick().await;
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only releases memory no allocation holds.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// Bytes the process's allocations hold: in-use chunks of every arena
/// plus those mapped on their own (glibc only).
pub fn heap_in_use() -> Option<u64> {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let info = unsafe { libc::mallinfo2() };
        Some((info.uordblks + info.hblkhd) as u64)
    }
    #[cfg(not(target_env = "gnu"))]
    None
}
