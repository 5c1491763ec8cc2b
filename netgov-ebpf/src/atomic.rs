//! Atomic updates of map values shared between CPUs.
//!
//! The BPF target's `core::sync::atomic` offers no read-modify-write
//! operations, so on BPF these go through the compiler intrinsics, which
//! lower to the BPF atomic instructions (`lock xadd`, `atomic_fetch_or`).
//! Host builds (clippy, docs) use the ordinary atomics with the same meaning.

#[cfg(target_arch = "bpf")]
mod imp {
    use core::intrinsics::{AtomicOrdering, atomic_or, atomic_xadd};

    #[inline(always)]
    pub unsafe fn add_u64(dst: *mut u64, value: u64) {
        // SAFETY: forwarded from the caller.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(dst, value) };
    }

    #[inline(always)]
    pub unsafe fn store_u64(dst: *mut u64, value: u64) {
        // An aligned 64-bit store is a single BPF instruction, hence atomic;
        // LLVM's BPF backend cannot select an `atomic store` node.
        // SAFETY: forwarded from the caller.
        unsafe { core::ptr::write_volatile(dst, value) }
    }

    #[inline(always)]
    pub unsafe fn or_u64(dst: *mut u64, bits: u64) -> u64 {
        // SAFETY: forwarded from the caller.
        unsafe { atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(dst, bits) }
    }
}

#[cfg(not(target_arch = "bpf"))]
mod imp {
    use core::sync::atomic::{AtomicU64, Ordering};

    #[inline(always)]
    pub unsafe fn add_u64(dst: *mut u64, value: u64) {
        // SAFETY: forwarded from the caller.
        unsafe { AtomicU64::from_ptr(dst) }.fetch_add(value, Ordering::Relaxed);
    }

    #[inline(always)]
    pub unsafe fn store_u64(dst: *mut u64, value: u64) {
        // SAFETY: forwarded from the caller.
        unsafe { AtomicU64::from_ptr(dst) }.store(value, Ordering::Relaxed);
    }

    #[inline(always)]
    pub unsafe fn or_u64(dst: *mut u64, bits: u64) -> u64 {
        // SAFETY: forwarded from the caller.
        unsafe { AtomicU64::from_ptr(dst) }.fetch_or(bits, Ordering::Relaxed)
    }
}

/// Adds `value` to `*dst` atomically.
///
/// # Safety
/// `dst` must be valid, aligned, and only accessed atomically by others.
#[inline(always)]
pub unsafe fn add_u64(dst: *mut u64, value: u64) {
    // SAFETY: forwarded from the caller.
    unsafe { imp::add_u64(dst, value) }
}

/// Stores `value` into `*dst` atomically.
///
/// # Safety
/// As for [`add_u64`].
#[inline(always)]
pub unsafe fn store_u64(dst: *mut u64, value: u64) {
    // SAFETY: forwarded from the caller.
    unsafe { imp::store_u64(dst, value) }
}

/// Sets `bits` in `*dst` atomically, returning the previous value.
///
/// # Safety
/// As for [`add_u64`].
#[inline(always)]
pub unsafe fn or_u64(dst: *mut u64, bits: u64) -> u64 {
    // SAFETY: forwarded from the caller.
    unsafe { imp::or_u64(dst, bits) }
}
