//! Runs loaded programs with `BPF_PROG_TEST_RUN`: a TC program on a crafted
//! frame, so the parser can be tested on packets no real stack would send,
//! and the flow cache's flush on a chosen CPU.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `BPF_PROG_TEST_RUN` command number of the `bpf(2)` syscall.
const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// `BPF_F_TEST_RUN_ON_CPU`: run on `cpu`, not the caller's CPU (raw
/// tracepoint programs, Linux 5.10).
const BPF_F_TEST_RUN_ON_CPU: u32 = 1;

/// The `test` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// `struct __sk_buff` as 32-bit words; only the fields the kernel lets a
/// test set are written.
const SK_BUFF_WORDS: usize = 48;
/// Word index of `__sk_buff.ifindex`.
const SK_BUFF_IFINDEX: usize = 10;
/// Word index of `__sk_buff.gso_segs`.
const SK_BUFF_GSO_SEGS: usize = 41;
/// Word index of `__sk_buff.gso_size`.
const SK_BUFF_GSO_SIZE: usize = 44;

/// Options of one test run.
#[derive(Clone, Copy, Debug)]
pub struct TestPacket<'a> {
    /// The frame, from the Ethernet header on (at least 14 bytes).
    pub frame: &'a [u8],
    /// Interface index the skb appears on (1, loopback, unless another
    /// existing interface is wanted).
    pub ifindex: u32,
    /// GSO segments the skb claims (0 or 1 for a plain packet).
    pub gso_segs: u32,
    /// GSO segment size (with `gso_segs > 1`).
    pub gso_size: u32,
}

/// Runs `program` once on `packet`, returning the program's return value.
///
/// # Errors
/// The `bpf(2)` error, e.g. `EINVAL` for a frame shorter than Ethernet.
pub fn run(program: BorrowedFd<'_>, packet: TestPacket<'_>) -> io::Result<i32> {
    let mut ctx = [0u32; SK_BUFF_WORDS];
    ctx[SK_BUFF_IFINDEX] = packet.ifindex;
    ctx[SK_BUFF_GSO_SEGS] = packet.gso_segs;
    ctx[SK_BUFF_GSO_SIZE] = packet.gso_size;
    let mut attr = TestRunAttr {
        prog_fd: program.as_raw_fd() as u32,
        data_size_in: packet.frame.len() as u32,
        data_in: packet.frame.as_ptr() as u64,
        repeat: 1,
        ctx_size_in: std::mem::size_of_val(&ctx) as u32,
        ctx_in: ctx.as_ptr() as u64,
        ..TestRunAttr::default()
    };
    test_run(&mut attr)
}

/// Runs the raw tracepoint `program` once on `cpu` with arguments `args`,
/// returning its return value.
///
/// # Errors
/// The `bpf(2)` error, e.g. `ENXIO` for a CPU that is not online.
pub fn run_on_cpu(program: BorrowedFd<'_>, cpu: u32, args: &[u64]) -> io::Result<i32> {
    let mut attr = TestRunAttr {
        prog_fd: program.as_raw_fd() as u32,
        ctx_size_in: std::mem::size_of_val(args) as u32,
        ctx_in: args.as_ptr() as u64,
        flags: BPF_F_TEST_RUN_ON_CPU,
        cpu,
        ..TestRunAttr::default()
    };
    test_run(&mut attr)
}

fn test_run(attr: &mut TestRunAttr) -> io::Result<i32> {
    // SAFETY: `attr` is a properly initialised `bpf_attr.test` that lives
    // across the call; the kernel only reads the input buffers it points to.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>(),
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(attr.retval as i32)
}
