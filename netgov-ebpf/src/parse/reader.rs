//! How the parser reads a packet's bytes: straight from its linear part,
//! or through `bpf_skb_load_bytes` when a read falls outside it.

use aya_ebpf::programs::sk_buff::SkBuff;

/// Offsets past this are read through the helper: the verifier needs a
/// bound on a variable offset into the packet, and headers end well before.
const MAX_DIRECT_OFFSET: usize = 512;

/// How the parser reads the packet's bytes. It is run with [`Direct`]
/// first, and again with [`Helper`] only when a read missed the linear
/// part: one pass per packet in practice, and no branch per read for the
/// verifier to multiply.
pub(super) trait Reader {
    /// The packet.
    fn skb(&self) -> &SkBuff;
    /// A `T` at `offset`.
    fn read<T>(&self, offset: usize) -> Result<T, ()>;
}

/// Reads through `bpf_skb_load_bytes`: any byte of the packet, in its
/// linear part or not — tens of nanoseconds a call.
pub(super) struct Helper<'a>(pub(super) &'a SkBuff);

impl Reader for Helper<'_> {
    #[inline(always)]
    fn skb(&self) -> &SkBuff {
        self.0
    }

    #[inline(always)]
    fn read<T>(&self, offset: usize) -> Result<T, ()> {
        self.0.load::<T>(offset).map_err(|_| ())
    }
}

/// Reads straight from the packet's linear part (where the stack keeps
/// the headers): a few instructions a read. A read past it fails and is
/// remembered, so that the caller parses again with [`Helper`] rather
/// than calling a truncated packet malformed.
pub(super) struct Direct<'a> {
    skb: &'a SkBuff,
    missed: core::cell::Cell<bool>,
}

impl<'a> Direct<'a> {
    #[inline(always)]
    pub(super) fn new(skb: &'a SkBuff) -> Self {
        Self {
            skb,
            missed: core::cell::Cell::new(false),
        }
    }

    /// Whether a read fell outside the linear part.
    #[inline(always)]
    pub(super) fn missed(&self) -> bool {
        self.missed.get()
    }
}

impl Reader for Direct<'_> {
    #[inline(always)]
    fn skb(&self) -> &SkBuff {
        self.skb
    }

    #[inline(always)]
    fn read<T>(&self, offset: usize) -> Result<T, ()> {
        // SAFETY: `skb` is the context pointer the kernel passed to the
        // program.
        let (data, end) = unsafe {
            (
                (*self.skb.skb).data as usize,
                (*self.skb.skb).data_end as usize,
            )
        };
        if offset < MAX_DIRECT_OFFSET && data + offset + core::mem::size_of::<T>() <= end {
            // SAFETY: within [data, data_end), checked just above (and by
            // the verifier); unaligned, as headers are.
            Ok(unsafe { core::ptr::read_unaligned((data + offset) as *const T) })
        } else {
            self.missed.set(true);
            Err(())
        }
    }
}
