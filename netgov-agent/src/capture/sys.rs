//! The raw `bpf(2)` calls aya 0.14 does not offer, in one place: reading
//! and deleting a map entry in one step, and batched map reads.

use std::os::fd::AsFd;

use aya::maps::{HashMap as BpfHashMap, MapData};
use netgov_common::{FlowKey, FlowStats};

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
