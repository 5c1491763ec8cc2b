//! Programs for the test bed only — never loaded by the agent: what CNIs
//! do at the hooks netgov shares, so tests can check that no such hook
//! fools netgov's evidence.
//!
//! - `netgov_testbed_drop`: a legacy (or TCX) filter that drops TCP and
//!   UDP packets to one destination port, as a CNI's policy filter would.
//! - `netgov_testbed_redirect_peer`: delivers packets for one address
//!   straight into the peer of one veth with `bpf_redirect_peer`, skipping
//!   the host-side egress hook (Cilium's BPF host routing).
//!
//! Both are configured through globals the test sets at load time.

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    helpers::bpf_redirect_peer,
    macros::classifier,
    programs::TcContext,
};

use crate::parse::{self, Outcome};

/// The destination port whose packets `netgov_testbed_drop` drops (0:
/// none).
#[unsafe(no_mangle)]
static TESTBED_DROP_PORT: u32 = 0;

/// The IPv4 destination `netgov_testbed_redirect_peer` redirects.
#[unsafe(no_mangle)]
static TESTBED_REDIRECT_DST: [u8; 4] = [0; 4];

/// The veth whose peer receives the redirected packets.
#[unsafe(no_mangle)]
static TESTBED_REDIRECT_IFINDEX: u32 = 0;

#[classifier]
pub fn netgov_testbed_drop(ctx: TcContext) -> i32 {
    // SAFETY: a constant the loader may have patched; read it as memory.
    let port = unsafe { core::ptr::read_volatile(&TESTBED_DROP_PORT) };
    match parse::parse(&ctx.skb) {
        Outcome::Flow(packet) | Outcome::FirstFragment(packet, _)
            if port != 0 && u32::from(packet.dst_port) == port =>
        {
            TC_ACT_SHOT
        }
        _ => TC_ACT_UNSPEC,
    }
}

#[classifier]
pub fn netgov_testbed_redirect_peer(ctx: TcContext) -> i32 {
    // SAFETY: constants the loader may have patched; read them as memory.
    let (dst, ifindex) = unsafe {
        (
            core::ptr::read_volatile(&TESTBED_REDIRECT_DST),
            core::ptr::read_volatile(&TESTBED_REDIRECT_IFINDEX),
        )
    };
    match parse::parse(&ctx.skb) {
        Outcome::Flow(packet) | Outcome::FirstFragment(packet, _)
            if ifindex != 0 && packet.ip_version == 4 && packet.dst[..4] == dst =>
        {
            // SAFETY: plain helper call; the kernel checks the index.
            unsafe { bpf_redirect_peer(ifindex, 0) as i32 }
        }
        _ => TC_ACT_UNSPEC,
    }
}
