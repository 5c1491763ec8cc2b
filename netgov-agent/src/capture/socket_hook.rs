//! Evidence of delivery for unanswered UDP flows: whether the destination's
//! network stack received the datagrams. The socket hook runs where a
//! packet meets its socket, after every filter on the way (legacy TC
//! filters after ours, netfilter in the pod, a CNI delivering with
//! `bpf_redirect_peer` past the host-side hook); an ICMP port unreachable
//! the destination itself sends shows its stack received a datagram nobody
//! listened for. Either is delivery no filter can fake.

use std::ffi::CString;
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use aya::maps::{HashMap as BpfHashMap, MapData};
use netgov_common::{FlowKey, direction};

use super::record::{FlowRecord, Protocol};

/// Where the socket-delivery hook attaches: the root of the cgroup v2
/// hierarchy, which every socket on the node belongs to (or descends
/// from).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupRoot {
    /// `/sys/fs/cgroup` if it is cgroup v2 (the unified layout), else
    /// `/sys/fs/cgroup/unified` (the hybrid layout), else a cgroup2 mount
    /// of our own under `/run/netgov` (needs CAP_SYS_ADMIN; `ip netns
    /// exec` hides the host's `/sys/fs/cgroup`).
    Auto,
    /// This directory, which must be a cgroup v2 mount or hold one as
    /// `unified` (the host's `/sys/fs/cgroup` mounted into a container,
    /// either layout).
    Path(PathBuf),
    /// No socket hook.
    Off,
}

impl std::str::FromStr for CgroupRoot {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "auto" => Self::Auto,
            "none" => Self::Off,
            path => Self::Path(path.into()),
        })
    }
}

/// `statfs` magic of cgroup v2.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
/// Our own cgroup2 mount when the host's is not visible.
const OWN_MOUNT: &str = "/run/netgov/cgroup2";

fn is_cgroup2(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid C string and a zeroed out-parameter.
    let mut stats: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let found = unsafe { libc::statfs(c_path.as_ptr(), &mut stats) } == 0;
    found && stats.f_type as i64 == CGROUP2_SUPER_MAGIC
}

/// Why no cgroup v2 directory was found.
#[derive(Debug, thiserror::Error)]
pub enum CgroupRootError {
    /// The configured directory is not a cgroup v2 mount.
    #[error("--cgroup-root {}: neither it nor its `unified` is a cgroup v2 mount", .0.display())]
    NotCgroup2(PathBuf),
    /// None of the usual places is cgroup v2, and mounting one failed.
    #[error(
        "no cgroup v2 mount at /sys/fs/cgroup or /sys/fs/cgroup/unified, and mount(2) of {OWN_MOUNT} failed: {0}"
    )]
    Mount(#[source] std::io::Error),
}

impl CgroupRoot {
    /// The directory to attach to, `None` when the hook is off.
    ///
    /// # Errors
    /// [`CgroupRootError`] when no cgroup v2 directory is found.
    pub fn locate(&self) -> Result<Option<PathBuf>, CgroupRootError> {
        match self {
            Self::Off => Ok(None),
            Self::Path(path) => [path.clone(), path.join("unified")]
                .into_iter()
                .find(|p| is_cgroup2(p))
                .map(Some)
                .ok_or_else(|| CgroupRootError::NotCgroup2(path.clone())),
            Self::Auto => {
                let usual = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified", OWN_MOUNT];
                if let Some(found) = usual.iter().map(Path::new).find(|p| is_cgroup2(p)) {
                    return Ok(Some(found.to_owned()));
                }
                mount_own().map_err(CgroupRootError::Mount)?;
                Ok(Some(OWN_MOUNT.into()))
            }
        }
    }
}

fn mount_own() -> std::io::Result<()> {
    std::fs::create_dir_all(OWN_MOUNT)?;
    let target = CString::new(OWN_MOUNT).map_err(std::io::Error::other)?;
    // SAFETY: valid C strings; no data argument.
    let mounted = unsafe {
        libc::mount(
            c"none".as_ptr(),
            target.as_ptr(),
            c"cgroup2".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if mounted == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The delivery map: filled by the socket hook (when attached) and by
/// the TC programs from ICMP errors a destination sends about datagrams
/// it received.
pub struct SocketDelivery {
    map: BpfHashMap<MapData, FlowKey, u32>,
    hooked: bool,
}

impl SocketDelivery {
    /// Reads `map`; `hooked` when the socket hook is attached, so that a
    /// missing entry means "no socket received it".
    pub fn new(map: BpfHashMap<MapData, FlowKey, u32>, hooked: bool) -> Self {
        Self { map, hooked }
    }

    /// Sets `delivered_to_stack` on the unanswered UDP records: one map
    /// lookup each (answered flows and other protocols show delivery in
    /// their answers).
    pub fn annotate<'a>(&self, records: impl IntoIterator<Item = &'a mut FlowRecord>) {
        for record in records {
            if record.protocol != Protocol::Udp || record.packets_in > 0 {
                continue;
            }
            let (key, initiator_direction) = socket_key(record);
            // Absent (never delivered, or forgotten by the LRU) reads as not
            // delivered.
            let bits = self.map.get(&key, 0).unwrap_or(0);
            let delivered = bits & (1 << initiator_direction) != 0;
            record.delivered_to_stack = (delivered || self.hooked).then_some(delivered);
        }
    }
}

fn octets(ip: IpAddr) -> [u8; 16] {
    let mut bytes = [0; 16];
    match ip {
        IpAddr::V4(v4) => bytes[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => bytes = v6.octets(),
    }
    bytes
}

/// The hook's key for `record` (canonical order, interface 0, as
/// `Packet::canonical_key` in the eBPF programs) and the direction of the
/// initiator's packets in it.
fn socket_key(record: &FlowRecord) -> (FlowKey, u8) {
    let initiator = (octets(record.src), record.src_port);
    let responder = (octets(record.dst), record.dst_port);
    let (a, b, initiator_direction) = if initiator <= responder {
        (initiator, responder, direction::A_TO_B)
    } else {
        (responder, initiator, direction::B_TO_A)
    };
    let key = FlowKey {
        addr_a: a.0,
        addr_b: b.0,
        port_a: a.1,
        port_b: b.1,
        ifindex: 0,
        protocol: netgov_common::proto::UDP,
        ip_version: if record.src.is_ipv4() { 4 } else { 6 },
        _pad: [0; 2],
    };
    (key, initiator_direction)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::test_support::judged;
    use crate::model::Identity;

    #[test]
    fn cgroup_roots_parse_and_a_plain_directory_is_refused() {
        assert_eq!("auto".parse(), Ok(CgroupRoot::Auto));
        assert_eq!("none".parse(), Ok(CgroupRoot::Off));
        assert_eq!(CgroupRoot::Off.locate().ok(), Some(None));
        let plain = std::env::temp_dir();
        assert_eq!(
            CgroupRoot::Path(plain.clone())
                .locate()
                .map_err(|e| e.to_string()),
            Err(format!(
                "--cgroup-root {}: neither it nor its `unified` is a cgroup v2 mount",
                plain.display()
            ))
        );
    }

    #[test]
    fn keys_are_canonical_like_the_kernels() {
        let (mut record, _) = judged(Identity::world(), Identity::world());
        record.protocol = Protocol::Udp;
        (record.src, record.src_port) = ("10.0.0.9".parse().expect("ip"), 40000);
        (record.dst, record.dst_port) = ("10.0.0.2".parse().expect("ip"), 53);
        let (key, initiator) = socket_key(&record);
        assert_eq!(
            (
                key.addr_a[..4].to_vec(),
                key.port_a,
                key.addr_b[..4].to_vec(),
                key.port_b
            ),
            (vec![10, 0, 0, 2], 53, vec![10, 0, 0, 9], 40000)
        );
        assert_eq!(
            (initiator, key.ifindex, key.ip_version),
            (direction::B_TO_A, 0, 4)
        );
        // Same address: the lower port first.
        record.dst = record.src;
        let (key, initiator) = socket_key(&record);
        assert_eq!(
            (key.port_a, key.port_b, initiator),
            (53, 40000, direction::B_TO_A)
        );
    }
}
