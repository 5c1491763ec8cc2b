//! What can go wrong loading and attaching the datapath.

use aya::maps::MapError;
use aya::programs::ProgramError;
use aya::programs::tc;
use netgov_common::Hook;

/// Errors of the datapath.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The kernel is older than [`MINIMUM_KERNEL`](super::MINIMUM_KERNEL).
    #[error(
        "Linux {found} is too old: netgov needs 5.14 or later (BPF_MAP_LOOKUP_AND_DELETE_ELEM on hash maps, 5.14; BPF ring buffer, 5.8)"
    )]
    KernelTooOld {
        /// The running kernel's version.
        found: String,
    },
    /// The eBPF object could not be parsed or its maps created.
    #[error("cannot load the eBPF object (are you root, with BPF and NET_ADMIN?)")]
    Load(#[from] aya::EbpfError),
    /// A program is missing from the object or is not of its type.
    #[error("eBPF program `{name}` is missing or not of its type")]
    MissingProgram {
        /// Program name.
        name: &'static str,
    },
    /// The kernel refused a program (verifier) or an attachment.
    #[error("eBPF program `{name}`: {source}")]
    Program {
        /// Program name.
        name: &'static str,
        /// What failed.
        #[source]
        source: ProgramError,
    },
    /// Attaching to an interface failed.
    #[error("cannot attach to interface `{interface}` ({hook:?}): {source}")]
    Attach {
        /// Interface name.
        interface: String,
        /// Which hook.
        hook: Hook,
        /// What failed.
        #[source]
        source: ProgramError,
    },
    /// Adding the clsact qdisc failed (netlink mode).
    #[error("cannot add the clsact qdisc to `{interface}`: {source}")]
    Qdisc {
        /// Interface name.
        interface: String,
        /// What failed.
        #[source]
        source: tc::TcError,
    },
    /// A map is missing from the object or of the wrong type.
    #[error("eBPF map `{name}`: {source}")]
    Map {
        /// Map name.
        name: &'static str,
        /// What failed.
        #[source]
        source: MapError,
    },
    /// The cgroup directory for the socket-delivery hook cannot be opened.
    #[error("cannot open cgroup `{}` for the socket-delivery hook: {source}", .path.display())]
    CgroupOpen {
        /// The cgroup (v2) directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused the socket-delivery program or its attachment.
    #[error("socket-delivery hook on cgroup `{}`: {source}", .path.display())]
    SocketHook {
        /// The cgroup (v2) directory.
        path: std::path::PathBuf,
        /// What failed.
        #[source]
        source: ProgramError,
    },
    /// The process lacks capabilities loading or attaching needs.
    #[error(
        "missing {}: netgov needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (or CAP_SYS_ADMIN); in Kubernetes, add them to the DaemonSet's spec.template.spec.containers[].securityContext.capabilities.add",
        .missing.join(", ")
    )]
    MissingCapabilities {
        /// The capabilities missing, as `CAP_...`.
        missing: Vec<&'static str>,
    },
    /// No filter handle could be claimed for this process (netlink mode).
    #[error("cannot claim a filter handle (abstract unix socket): {0}")]
    Ownership(#[source] std::io::Error),
    /// Listing or deleting filters through netlink failed.
    #[error("cannot list or delete the filters of interface {ifindex}: {source}")]
    Filters {
        /// Interface index.
        ifindex: u32,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// A map was already taken.
    #[error("eBPF map `{name}` is missing from the object or already taken")]
    MissingMap {
        /// Map name.
        name: &'static str,
    },
    /// The online CPUs, whose flow caches are flushed, could not be read.
    #[error("cannot list the online CPUs (/sys/devices/system/cpu/online): {source}")]
    OnlineCpus {
        /// The read or parse error.
        #[source]
        source: std::io::Error,
    },
    /// A CPU's flow cache could not be flushed: its counts stay cached.
    #[error("cannot flush the flow cache on CPU {cpu} (BPF_PROG_TEST_RUN): {source}")]
    Flush {
        /// The CPU.
        cpu: u32,
        /// The `bpf(2)` error.
        #[source]
        source: std::io::Error,
    },
}
