//! Loading netgov's eBPF object and attaching its programs to interfaces.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd};

use aya::Ebpf;
use aya::maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuArray, RingBuf};
use aya::programs::tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions};
use aya::programs::{LinkOrder, ProgramError, SchedClassifier, TcAttachType};
use aya::util::KernelVersion;
use netgov_common::{Counter, FlowKey, FlowStats, Hook, names};

/// The eBPF object built by `build.rs` from `netgov-ebpf`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netgov-ebpf"));

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

/// Errors of the datapath.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The eBPF object could not be parsed or its maps created.
    #[error("cannot load the eBPF object (are you root, with BPF and NET_ADMIN?)")]
    Load(#[from] aya::EbpfError),
    /// A program is missing from the object or is not a TC classifier.
    #[error("eBPF program `{name}` is missing or not a TC classifier")]
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
    /// A map was already taken.
    #[error("eBPF map `{name}` is missing from the object or already taken")]
    MissingMap {
        /// Map name.
        name: &'static str,
    },
}

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
}

/// The maps user space reads.
pub struct DatapathMaps {
    /// Per-flow, per-interface aggregates.
    pub flows: BpfHashMap<MapData, FlowKey, FlowStats>,
    /// Flow-start and TCP-transition events.
    pub events: RingBuf<MapData>,
    /// Per-CPU health counters.
    pub counters: PerCpuArray<MapData, u64>,
}

impl Datapath {
    /// Loads the eBPF object and both programs into the kernel, with a
    /// kernel flow map of `flow_map_entries`.
    ///
    /// # Errors
    /// [`DatapathError::Load`] without the needed privileges, and
    /// [`DatapathError::Program`] when the verifier rejects a program.
    pub fn load(mode: AttachMode, flow_map_entries: u32) -> Result<Self, DatapathError> {
        let mut ebpf = aya::EbpfLoader::new()
            .map_max_entries(names::FLOWS_MAP, flow_map_entries)
            .load(EBPF_OBJECT)?;
        for name in [names::FROM_POD_PROGRAM, names::TO_POD_PROGRAM] {
            classifier(&mut ebpf, name)?
                .load()
                .map_err(|source| DatapathError::Program { name, source })?;
        }
        Ok(Self {
            ebpf,
            mode: mode.resolve(),
            attached: BTreeMap::new(),
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
        let (flows, events, counters) = (
            take(names::FLOWS_MAP)?,
            take(names::EVENTS_MAP)?,
            take(names::COUNTERS_MAP)?,
        );
        let map_error = |name| move |source| DatapathError::Map { name, source };
        Ok(DatapathMaps {
            flows: BpfHashMap::try_from(flows).map_err(map_error(names::FLOWS_MAP))?,
            events: RingBuf::try_from(events).map_err(map_error(names::EVENTS_MAP))?,
            counters: PerCpuArray::try_from(counters).map_err(map_error(names::COUNTERS_MAP))?,
        })
    }

    /// The file descriptor of the program at `hook` (for
    /// `BPF_PROG_TEST_RUN`).
    ///
    /// # Errors
    /// [`DatapathError::MissingProgram`] if the object lacks it.
    pub fn program_fd(&self, hook: Hook) -> Result<BorrowedFd<'_>, DatapathError> {
        let name = program_name(hook);
        let program: &SchedClassifier = self
            .ebpf
            .program(name)
            .and_then(|p| p.try_into().ok())
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
        if let Some(existing) = self.attached.get(&ifindex) {
            if existing.name == interface {
                return Ok(());
            }
            // Renamed: the kernel objects are tied to the index, keep them.
            let mut existing = self.attached.remove(&ifindex).expect("present");
            existing.name = interface.to_owned();
            self.attached.insert(ifindex, existing);
            return Ok(());
        }
        if self.mode == AttachMode::Netlink {
            // Filters outlive their process (unlike TCX links): remove any
            // a killed predecessor left, so they neither run twice nor pin
            // its maps.
            for (attach_type, name) in [
                (TcAttachType::Ingress, names::FROM_POD_PROGRAM),
                (TcAttachType::Egress, names::TO_POD_PROGRAM),
            ] {
                match tc::qdisc_detach_program(interface, attach_type, name) {
                    Ok(()) => tracing::info!(interface, name, "removed a stale filter"),
                    Err(error) => tracing::debug!(interface, name, %error, "no stale filter"),
                }
            }
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

/// `BPF_MAP_LOOKUP_AND_DELETE_ELEM` command number of `bpf(2)`.
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;

/// The `map element` member of `union bpf_attr`.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Reads and deletes a flow entry in one step (Linux ≥ 5.14 for hash
/// maps), so no packet counted between a read and a delete is lost.
/// Returns `None` when the entry is already gone (evicted).
///
/// # Errors
/// The `bpf(2)` error other than "no such entry".
pub fn take_flow(
    flows: &BpfHashMap<MapData, FlowKey, FlowStats>,
    key: &FlowKey,
) -> std::io::Result<Option<FlowStats>> {
    use aya::maps::IterableMap;
    use std::os::fd::AsRawFd;
    let mut value = std::mem::MaybeUninit::<FlowStats>::zeroed();
    let attr = MapElemAttr {
        map_fd: flows.map().fd().as_fd().as_raw_fd() as u32,
        _pad: 0,
        key: std::ptr::from_ref(key) as u64,
        value: value.as_mut_ptr() as u64,
        flags: 0,
    };
    // SAFETY: `attr` points at a valid key and a value buffer of the map's
    // value size, both alive across the call.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_AND_DELETE_ELEM,
            &attr as *const MapElemAttr,
            std::mem::size_of::<MapElemAttr>(),
        )
    };
    if result < 0 {
        let error = std::io::Error::last_os_error();
        return match error.raw_os_error() {
            Some(libc::ENOENT) => Ok(None),
            _ => Err(error),
        };
    }
    // SAFETY: the kernel filled the value on success.
    Ok(Some(unsafe { value.assume_init() }))
}

/// `BPF_MAP_LOOKUP_BATCH` command number of `bpf(2)`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Entries read per `BPF_MAP_LOOKUP_BATCH` call.
const BATCH_ENTRIES: usize = 8192;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
struct MapBatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Reads every flow entry, [`BATCH_ENTRIES`] per system call
/// (`BPF_MAP_LOOKUP_BATCH`, Linux ≥ 5.6) instead of two calls per entry:
/// the drain reads the whole map every interval, so this is most of the
/// capture's CPU on a busy node.
///
/// # Errors
/// The `bpf(2)` error; the caller can fall back to iterating.
pub fn read_flows(
    flows: &BpfHashMap<MapData, FlowKey, FlowStats>,
) -> std::io::Result<Vec<(FlowKey, FlowStats)>> {
    use aya::maps::IterableMap;
    use std::os::fd::AsRawFd;
    // SAFETY: both are plain old data (`#[repr(C)]` integers), valid when
    // zeroed.
    let (mut keys, mut values): (Vec<FlowKey>, Vec<FlowStats>) = unsafe {
        (
            vec![std::mem::zeroed(); BATCH_ENTRIES],
            vec![std::mem::zeroed(); BATCH_ENTRIES],
        )
    };
    let map_fd = flows.map().fd().as_fd().as_raw_fd() as u32;
    // For hash maps the batch token is a bucket index.
    let (mut in_batch, mut out_batch) = (0u32, 0u32);
    let mut first = true;
    let mut all = Vec::new();
    loop {
        let mut attr = MapBatchAttr {
            in_batch: if first {
                0
            } else {
                std::ptr::from_ref(&in_batch) as u64
            },
            out_batch: std::ptr::from_mut(&mut out_batch) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: BATCH_ENTRIES as u32,
            map_fd,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: the key and value buffers hold `count` entries of the
        // map's key and value sizes; the tokens are live u32s.
        let result = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut MapBatchAttr,
                std::mem::size_of::<MapBatchAttr>(),
            )
        };
        let filled = (attr.count as usize).min(BATCH_ENTRIES);
        all.extend(
            keys[..filled]
                .iter()
                .copied()
                .zip(values[..filled].iter().copied()),
        );
        if result < 0 {
            let error = std::io::Error::last_os_error();
            return match error.raw_os_error() {
                // The end of the map.
                Some(libc::ENOENT) => Ok(all),
                _ => Err(error),
            };
        }
        in_batch = out_batch;
        first = false;
    }
}
