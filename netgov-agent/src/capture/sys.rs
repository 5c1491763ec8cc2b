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

/// Every flow entry of the kernel map, read [`BATCH_ENTRIES`] per system
/// call (`BPF_MAP_LOOKUP_BATCH`, Linux ≥ 5.6) instead of two calls per
/// entry — the drain reads the whole map every interval, so this is most
/// of the capture's CPU on a busy node — and handed over batch by batch:
/// the drain never holds a copy of the whole map (116 bytes an entry, two
/// entries a same-node flow, every second). When a batched read fails the
/// rest is read entry by entry from the start of the map, so entries
/// already handed over come again: merging an entry's counts is
/// idempotent.
pub struct FlowEntries<'m> {
    flows: &'m BpfHashMap<MapData, FlowKey, FlowStats>,
    read: Reading<'m>,
}

/// Where [`FlowEntries`] stands.
enum Reading<'m> {
    /// Reading batches: the last one read, how much of it is handed over,
    /// and where the next starts (`None`: at the map's start).
    Batches {
        keys: Vec<FlowKey>,
        values: Vec<FlowStats>,
        filled: usize,
        next: usize,
        token: Option<u32>,
        /// The map's end was reached: no batch follows this one.
        last: bool,
    },
    /// A batched read failed: the map's entries one by one.
    OneByOne(Box<dyn Iterator<Item = (FlowKey, FlowStats)> + 'm>),
}

/// Reads every flow entry (see [`FlowEntries`]).
pub fn read_flows(flows: &BpfHashMap<MapData, FlowKey, FlowStats>) -> FlowEntries<'_> {
    // SAFETY: both are plain old data (`#[repr(C)]` integers), valid when
    // zeroed.
    let (keys, values) = unsafe {
        (
            vec![std::mem::zeroed(); BATCH_ENTRIES],
            vec![std::mem::zeroed(); BATCH_ENTRIES],
        )
    };
    FlowEntries {
        flows,
        read: Reading::Batches {
            keys,
            values,
            filled: 0,
            next: 0,
            token: None,
            last: false,
        },
    }
}

impl Iterator for FlowEntries<'_> {
    type Item = (FlowKey, FlowStats);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match &mut self.read {
                Reading::OneByOne(entries) => return entries.next(),
                Reading::Batches {
                    keys,
                    values,
                    filled,
                    next,
                    token,
                    last,
                } => {
                    if *next < *filled {
                        *next += 1;
                        return Some((keys[*next - 1], values[*next - 1]));
                    }
                    if *last {
                        return None;
                    }
                    match read_batch(self.flows, keys, values, token) {
                        Ok((count, end)) => (*filled, *next, *last) = (count, 0, end),
                        Err(error) => {
                            tracing::debug!(%error, "batched map read failed; reading entry by entry");
                            // An entry deleted by the kernel between key and
                            // value lookups is skipped: `iter` yields an error
                            // for it, which is not a loss of counts we could
                            // have read.
                            let entries = self.flows.iter().filter_map(Result::ok);
                            self.read = Reading::OneByOne(Box::new(entries));
                        }
                    }
                }
            }
        }
    }
}

/// Reads the batch from `token` (`None`: the map's start) into `keys` and
/// `values`; returns how many entries it read and whether the map's end
/// was reached, and moves `token` to the next batch.
fn read_batch(
    flows: &BpfHashMap<MapData, FlowKey, FlowStats>,
    keys: &mut [FlowKey],
    values: &mut [FlowStats],
    token: &mut Option<u32>,
) -> std::io::Result<(usize, bool)> {
    use aya::maps::IterableMap;
    use std::os::fd::AsRawFd;
    let map_fd = flows.map().fd().as_fd().as_raw_fd() as u32;
    // For hash maps the batch token is a bucket index.
    let in_batch = token.unwrap_or(0);
    let mut out_batch = 0u32;
    let mut attr = MapBatchAttr {
        in_batch: match token {
            None => 0,
            Some(_) => std::ptr::from_ref(&in_batch) as u64,
        },
        out_batch: std::ptr::from_mut(&mut out_batch) as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: keys.len().min(values.len()) as u32,
        map_fd,
        elem_flags: 0,
        flags: 0,
    };
    // SAFETY: the key and value buffers hold `count` entries of the map's
    // key and value sizes; the tokens are live u32s.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_BATCH,
            &mut attr as *mut MapBatchAttr,
            std::mem::size_of::<MapBatchAttr>(),
        )
    };
    let filled = (attr.count as usize).min(keys.len());
    if result < 0 {
        let error = std::io::Error::last_os_error();
        return match error.raw_os_error() {
            // The end of the map.
            Some(libc::ENOENT) => Ok((filled, true)),
            _ => Err(error),
        };
    }
    *token = Some(out_batch);
    Ok((filled, false))
}
