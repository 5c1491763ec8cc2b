//! Loading netgov's eBPF object and attaching its programs to interfaces.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd};

use aya::Ebpf;
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, ProgramArray, RingBuf};
use aya::programs::tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions};
use aya::programs::{
    CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, LinkOrder, SchedClassifier, TcAttachType,
};
use aya::util::KernelVersion;
use netgov_common::{Counter, FlowKey, FlowStats, Hook, ICMP_ERROR_SLOT, PAYLOAD_SLOT, names};

use super::tc_owner::{self, Ownership};

/// The eBPF object built by `build.rs` from `netgov-ebpf`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netgov-ebpf"));

/// The embedded eBPF object. Besides netgov's programs it holds the test
/// bed's (`netgov_testbed_*`: CNI-style filters the namespace tests attach
/// next to ours), which the agent never loads.
pub fn ebpf_object() -> &'static [u8] {
    EBPF_OBJECT
}

mod cache;
mod error;
mod verify;

pub use error::DatapathError;
pub use verify::Verified;

/// How programs are attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AttachMode {
    /// TCX links where the kernel has them (Linux ≥ 6.6), clsact filters
    /// through netlink otherwise.
    #[default]
    Auto,
    /// TCX links only.
    Tcx,
    /// clsact qdisc and direct-action filters through netlink (visible to
    /// `tc filter show`).
    Netlink,
}

impl AttachMode {
    /// The mode's name, as the flag spells it.
    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Auto => "auto",
            AttachMode::Tcx => "tcx",
            AttachMode::Netlink => "netlink",
        }
    }

    /// The concrete mode on this kernel.
    pub fn resolve(self) -> AttachMode {
        match self {
            AttachMode::Auto => match KernelVersion::current() {
                Ok(version) if version >= KernelVersion::new(6, 6, 0) => AttachMode::Tcx,
                _ => AttachMode::Netlink,
            },
            other => other,
        }
    }
}

/// The oldest kernel the datapath runs on: `BPF_MAP_LOOKUP_AND_DELETE_ELEM`
/// on hash maps (5.14) reads an ended flow's last counts and deletes its
/// entry in one step; the BPF ring buffer needs 5.8.
pub const MINIMUM_KERNEL: (u8, u8) = (5, 14);

struct Attachment {
    name: String,
    from_pod: SchedClassifierLinkId,
    to_pod: SchedClassifierLinkId,
}

/// The loaded programs and their attachments. Dropping it detaches every
/// program it attached.
pub struct Datapath {
    ebpf: Ebpf,
    mode: AttachMode,
    attached: BTreeMap<u32, Attachment>,
    /// The handle our filters carry (netlink mode), held while we live.
    owner: Option<Ownership>,
    /// Kernel ids of the from-pod and to-pod programs.
    program_ids: (u32, u32),
    /// Held while the flow caches are flushed: two flushes at once on one
    /// CPU would both add the same counts.
    flushing: std::sync::Mutex<()>,
}

/// The maps user space reads.
pub struct DatapathMaps {
    /// Per-flow, per-interface aggregates.
    pub flows: BpfHashMap<MapData, FlowKey, FlowStats>,
    /// Flow-start and TCP-transition events.
    pub events: RingBuf<MapData>,
    /// DNS answers and ClientHellos.
    pub payloads: RingBuf<MapData>,
    /// Per-CPU health counters.
    pub counters: PerCpuArray<MapData, u64>,
    /// UDP flows a socket received (filled once the socket hook is
    /// attached).
    pub delivered: BpfHashMap<MapData, FlowKey, u32>,
}

impl Datapath {
    /// Loads the eBPF object and both programs into the kernel, with a
    /// kernel flow map of `flow_map_entries`.
    ///
    /// # Errors
    /// [`DatapathError::KernelTooOld`] before Linux 5.14,
    /// [`DatapathError::Load`] without the needed privileges, and
    /// [`DatapathError::Program`] when the verifier rejects a program.
    pub fn load(mode: AttachMode, flow_map_entries: u32) -> Result<Self, DatapathError> {
        let missing = missing_capabilities();
        if !missing.is_empty() {
            return Err(DatapathError::MissingCapabilities { missing });
        }
        if let Ok(version) = KernelVersion::current() {
            let (major, minor) = MINIMUM_KERNEL;
            if version < KernelVersion::new(major, minor, 0) {
                return Err(DatapathError::KernelTooOld {
                    found: version.to_string(),
                });
            }
        }
        let mut ebpf = aya::EbpfLoader::new()
            .map_max_entries(names::FLOWS_MAP, flow_map_entries)
            .load(EBPF_OBJECT)?;
        for name in [
            names::FROM_POD_PROGRAM,
            names::TO_POD_PROGRAM,
            names::ICMP_ERROR_PROGRAM,
            names::PAYLOAD_PROGRAM,
        ] {
            classifier(&mut ebpf, name)?
                .load()
                .map_err(|source| DatapathError::Program { name, source })?;
        }
        cache::load_flush(&mut ebpf)?;
        link_tail_call(&mut ebpf, names::ICMP_ERROR_PROGRAM, ICMP_ERROR_SLOT)?;
        link_tail_call(&mut ebpf, names::PAYLOAD_PROGRAM, PAYLOAD_SLOT)?;
        let mode = mode.resolve();
        let owner = (mode == AttachMode::Netlink)
            .then(Ownership::claim)
            .transpose()
            .map_err(DatapathError::Ownership)?;
        let id = |ebpf: &Ebpf, name: &'static str| {
            ebpf.program(name)
                .and_then(|p| p.info().ok())
                .map_or(0, |info| info.id())
        };
        let program_ids = (
            id(&ebpf, names::FROM_POD_PROGRAM),
            id(&ebpf, names::TO_POD_PROGRAM),
        );
        Ok(Self {
            ebpf,
            mode,
            attached: BTreeMap::new(),
            owner,
            program_ids,
            flushing: std::sync::Mutex::new(()),
        })
    }

    /// The attach mode in use.
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// Takes the maps user space reads (once).
    ///
    /// # Errors
    /// [`DatapathError::MissingMap`] on a second call.
    pub fn take_maps(&mut self) -> Result<DatapathMaps, DatapathError> {
        let mut take = |name: &'static str| {
            self.ebpf
                .take_map(name)
                .ok_or(DatapathError::MissingMap { name })
        };
        let (flows, events, payloads, counters, delivered) = (
            take(names::FLOWS_MAP)?,
            take(names::EVENTS_MAP)?,
            take(names::PAYLOADS_MAP)?,
            take(names::COUNTERS_MAP)?,
            take(names::DELIVERED_MAP)?,
        );
        let map_error = |name| move |source| DatapathError::Map { name, source };
        Ok(DatapathMaps {
            flows: BpfHashMap::try_from(flows).map_err(map_error(names::FLOWS_MAP))?,
            events: RingBuf::try_from(events).map_err(map_error(names::EVENTS_MAP))?,
            payloads: RingBuf::try_from(payloads).map_err(map_error(names::PAYLOADS_MAP))?,
            counters: PerCpuArray::try_from(counters).map_err(map_error(names::COUNTERS_MAP))?,
            delivered: BpfHashMap::try_from(delivered).map_err(map_error(names::DELIVERED_MAP))?,
        })
    }

    /// Loads the socket-delivery program and attaches it to the cgroup v2
    /// directory `cgroup` (the root, to see every pod's sockets), next to
    /// any program already there. Detached when the datapath is dropped.
    ///
    /// # Errors
    /// [`DatapathError::SocketHook`] when the directory cannot be opened
    /// (not cgroup v2, not mounted in the container) or the kernel refuses
    /// the program or the attachment (Linux ≥ 4.10; links ≥ 5.7).
    pub fn attach_socket_hook(&mut self, cgroup: &std::path::Path) -> Result<(), DatapathError> {
        let directory =
            std::fs::File::open(cgroup).map_err(|source| DatapathError::CgroupOpen {
                path: cgroup.to_owned(),
                source,
            })?;
        let name = names::SOCKET_INGRESS_PROGRAM;
        let program: &mut CgroupSkb = self
            .ebpf
            .program_mut(name)
            .and_then(|p| p.try_into().ok())
            .ok_or(DatapathError::MissingProgram { name })?;
        let failed = |source| DatapathError::SocketHook {
            path: cgroup.to_owned(),
            source,
        };
        program.load().map_err(failed)?;
        // From 5.7 aya attaches with a BPF link, which always runs next to
        // other programs and takes no flags (ALLOW_MULTI is EINVAL there);
        // before, a plain attach must ask to coexist.
        let links = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(5, 7, 0));
        let mode = if links {
            CgroupAttachMode::Single
        } else {
            CgroupAttachMode::AllowMultiple
        };
        program
            .attach(directory, CgroupSkbAttachType::Ingress, mode)
            .map_err(failed)?;
        Ok(())
    }

    /// The file descriptor of the program at `hook` (for
    /// `BPF_PROG_TEST_RUN`).
    ///
    /// # Errors
    /// [`DatapathError::MissingProgram`] if the object lacks it.
    pub fn program_fd(&self, hook: Hook) -> Result<BorrowedFd<'_>, DatapathError> {
        self.loaded_fd(program_name(hook))
    }

    /// The file descriptor of the loaded program `name`.
    fn loaded_fd(&self, name: &'static str) -> Result<BorrowedFd<'_>, DatapathError> {
        let program = self
            .ebpf
            .program(name)
            .ok_or(DatapathError::MissingProgram { name })?;
        let fd = program
            .fd()
            .map_err(|source| DatapathError::Program { name, source })?;
        Ok(fd.as_fd())
    }

    /// Interfaces with programs attached, by index.
    pub fn attached(&self) -> impl Iterator<Item = (u32, &str)> {
        self.attached.iter().map(|(i, a)| (*i, a.name.as_str()))
    }

    /// Whether `ifindex` has programs attached.
    pub fn is_attached(&self, ifindex: u32) -> bool {
        self.attached.contains_key(&ifindex)
    }

    /// Attaches both programs to `interface`: the from-pod program first in
    /// TC ingress (it sees all a pod sends, even what a later program
    /// drops), the to-pod program last in TC egress (it sees only what
    /// earlier programs, such as a CNI's policy, let through to the pod).
    /// Attaching an interface already attached under the same index is a
    /// no-op.
    ///
    /// # Errors
    /// [`DatapathError::Attach`] or [`DatapathError::Qdisc`]; nothing stays
    /// attached to the interface on error.
    pub fn attach(&mut self, ifindex: u32, interface: &str) -> Result<(), DatapathError> {
        if let Some(existing) = self.attached.get_mut(&ifindex) {
            // Renamed or not: the kernel objects are tied to the index.
            if existing.name != interface {
                existing.name = interface.to_owned();
            }
            return Ok(());
        }
        if self.mode == AttachMode::Netlink {
            self.remove_stale_filters(ifindex, interface)?;
            match tc::qdisc_add_clsact(interface) {
                Ok(()) => {}
                Err(tc::TcError::IoError(e)) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(source) => {
                    return Err(DatapathError::Qdisc {
                        interface: interface.to_owned(),
                        source,
                    });
                }
            }
        }
        let from_pod = self.attach_one(interface, Hook::FromPod)?;
        let to_pod = match self.attach_one(interface, Hook::ToPod) {
            Ok(link) => link,
            Err(error) => {
                let _ = classifier(&mut self.ebpf, names::FROM_POD_PROGRAM).and_then(|p| {
                    p.detach(from_pod).map_err(|source| DatapathError::Program {
                        name: names::FROM_POD_PROGRAM,
                        source,
                    })
                });
                return Err(error);
            }
        };
        self.attached.insert(
            ifindex,
            Attachment {
                name: interface.to_owned(),
                from_pod,
                to_pod,
            },
        );
        Ok(())
    }

    fn attach_one(
        &mut self,
        interface: &str,
        hook: Hook,
    ) -> Result<SchedClassifierLinkId, DatapathError> {
        let (attach_type, order, priority) = match hook {
            Hook::FromPod => (TcAttachType::Ingress, LinkOrder::first(), 1),
            Hook::ToPod => (TcAttachType::Egress, LinkOrder::last(), u16::MAX),
        };
        let options = match self.mode {
            AttachMode::Netlink => TcAttachOptions::Netlink(NlOptions {
                priority,
                handle: self.owner.as_ref().map_or(0, Ownership::handle).into(),
                ..NlOptions::default()
            }),
            _ => TcAttachOptions::TcxOrder(order),
        };
        classifier(&mut self.ebpf, program_name(hook))?
            .attach_with_options(interface, attach_type, options)
            .map_err(|source| DatapathError::Attach {
                interface: interface.to_owned(),
                hook,
                source,
            })
    }

    /// Detaches both programs from `ifindex`. An interface that vanished
    /// took its attachments with it; that is not an error.
    ///
    /// # Errors
    /// [`DatapathError::Program`] when the kernel refuses a detach.
    pub fn detach(&mut self, ifindex: u32) -> Result<(), DatapathError> {
        let Some(attachment) = self.attached.remove(&ifindex) else {
            return Ok(());
        };
        let mut result = Ok(());
        for (name, link) in [
            (names::FROM_POD_PROGRAM, attachment.from_pod),
            (names::TO_POD_PROGRAM, attachment.to_pod),
        ] {
            let program = classifier(&mut self.ebpf, name)?;
            match program.detach(link) {
                Ok(()) => {}
                Err(_) if !interface_exists(ifindex) => {}
                Err(source) => result = Err(DatapathError::Program { name, source }),
            }
        }
        result
    }

    /// Detaches from every interface, returning the failures.
    pub fn detach_all(&mut self) -> Vec<DatapathError> {
        let indexes: Vec<u32> = self.attached.keys().copied().collect();
        indexes
            .into_iter()
            .filter_map(|ifindex| self.detach(ifindex).err())
            .collect()
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        for error in self.detach_all() {
            tracing::warn!(%error, "detach failed");
        }
    }
}

/// The capabilities loading and attaching needs that this process's
/// effective set lacks (CAP_SYS_ADMIN stands for CAP_BPF and
/// CAP_PERFMON, as on kernels before 5.8). Unknown (no
/// `/proc/self/status`) reads as nothing missing: the kernel will say.
fn missing_capabilities() -> Vec<&'static str> {
    const NET_ADMIN: u32 = 12;
    const SYS_ADMIN: u32 = 21;
    const PERFMON: u32 = 38;
    const BPF: u32 = 39;
    let Some(effective) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
    else {
        return Vec::new();
    };
    let has = |capability: u32| effective & (1 << capability) != 0;
    [
        ("CAP_BPF", has(BPF) || has(SYS_ADMIN)),
        ("CAP_PERFMON", has(PERFMON) || has(SYS_ADMIN)),
        ("CAP_NET_ADMIN", has(NET_ADMIN)),
    ]
    .into_iter()
    .filter(|(_, present)| !present)
    .map(|(name, _)| name)
    .collect()
}

/// Puts program `name` in the tail-call slot where the TC programs look
/// for it.
fn link_tail_call(ebpf: &mut Ebpf, name: &'static str, slot: u32) -> Result<(), DatapathError> {
    let fd = classifier(ebpf, name)?
        .fd()
        .map_err(|source| DatapathError::Program { name, source })?
        .try_clone()
        .map_err(|source| DatapathError::Program {
            name,
            source: source.into(),
        })?;
    let map = ebpf
        .map_mut(names::TAIL_CALLS_MAP)
        .ok_or(DatapathError::MissingMap {
            name: names::TAIL_CALLS_MAP,
        })?;
    let map_error = |source| DatapathError::Map {
        name: names::TAIL_CALLS_MAP,
        source,
    };
    ProgramArray::try_from(map)
        .map_err(map_error)?
        .set(slot, &fd, 0)
        .map_err(map_error)
}

fn program_name(hook: Hook) -> &'static str {
    match hook {
        Hook::FromPod => names::FROM_POD_PROGRAM,
        Hook::ToPod => names::TO_POD_PROGRAM,
    }
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, DatapathError> {
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or(DatapathError::MissingProgram { name })
}

/// Whether an interface with this index exists in our network namespace.
pub fn interface_exists(ifindex: u32) -> bool {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes, as the call requires.
    !unsafe { libc::if_indextoname(ifindex, name.as_mut_ptr()) }.is_null()
}

/// Sums a per-CPU counter.
///
/// # Errors
/// [`DatapathError::Map`] when the kernel refuses the read.
pub fn read_counter(
    counters: &PerCpuArray<MapData, u64>,
    counter: Counter,
) -> Result<u64, DatapathError> {
    counters
        .get(&(counter as u32), 0)
        .map(|values| values.iter().sum())
        .map_err(|source| DatapathError::Map {
            name: names::COUNTERS_MAP,
            source,
        })
}
