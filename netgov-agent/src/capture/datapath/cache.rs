//! The per-CPU flow cache's flush: before user space reads the flow map,
//! every CPU's cached counts are added to the flows' entries (see
//! `netgov-ebpf/src/cache.rs` for the cache's rules).

use aya::Ebpf;
use aya::maps::{MapData, PerCpuArray};
use aya::programs::RawTracePoint;
use netgov_common::{CachedFlow, FLOW_CACHE_SLOTS, FLUSH_BATCH, names};

use super::{Datapath, DatapathError};
use crate::capture::test_run;

/// Loads the flush program (never attached: it is run on demand).
pub(super) fn load_flush(ebpf: &mut Ebpf) -> Result<(), DatapathError> {
    let name = names::FLUSH_PROGRAM;
    let program: &mut RawTracePoint = ebpf
        .program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or(DatapathError::MissingProgram { name })?;
    program
        .load()
        .map_err(|source| DatapathError::Program { name, source })
}

impl Datapath {
    /// Adds the counts every CPU's flow cache holds to the flows' entries
    /// in the flow map: call it before reading the map, or its counts lag
    /// by what the cache holds.
    ///
    /// # Errors
    /// [`DatapathError::Flush`] naming the CPU the flush could not run on
    /// (its counts stay cached, for the next flush: nothing is lost).
    /// The other CPUs are flushed all the same.
    pub fn flush_cache(&self) -> Result<(), DatapathError> {
        let fd = self.loaded_fd(names::FLUSH_PROGRAM)?;
        // A poisoned lock guards nothing broken: the flush holds no state.
        let _one_at_a_time = self.flushing.lock().unwrap_or_else(|e| e.into_inner());
        let cpus =
            aya::util::online_cpus().map_err(|(_, source)| DatapathError::OnlineCpus { source })?;
        let mut first_error = None;
        for cpu in cpus {
            for first in (0..FLOW_CACHE_SLOTS).step_by(FLUSH_BATCH as usize) {
                if let Err(source) = test_run::run_on_cpu(fd, cpu, &[u64::from(first)]) {
                    first_error.get_or_insert(DatapathError::Flush { cpu, source });
                    break;
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Packets the flow caches of offline CPUs hold unflushed. No flush
    /// runs on a CPU while it is offline: its counts reach their flows'
    /// entries when it is back, or are counted in `cached_packets_lost` if
    /// the entries are gone by then. 0, without reading the cache, while
    /// every possible CPU is online.
    ///
    /// # Errors
    /// [`DatapathError::OnlineCpus`] when the CPU lists cannot be read,
    /// [`DatapathError::Map`] when the cache cannot.
    pub fn stranded_packets(&self) -> Result<u64, DatapathError> {
        let online =
            aya::util::online_cpus().map_err(|(_, source)| DatapathError::OnlineCpus { source })?;
        let possible =
            aya::util::nr_cpus().map_err(|(_, source)| DatapathError::OnlineCpus { source })?;
        let offline: Vec<u32> = (0..possible as u32)
            .filter(|cpu| !online.contains(cpu))
            .collect();
        if offline.is_empty() {
            return Ok(0);
        }
        let name = names::FLOW_CACHE_MAP;
        let map_error = |source| DatapathError::Map { name, source };
        let map = self
            .ebpf
            .map(name)
            .ok_or(DatapathError::MissingMap { name })?;
        let cache: PerCpuArray<&MapData, CachedFlow> =
            PerCpuArray::try_from(map).map_err(map_error)?;
        let mut stranded = 0u64;
        for slot in 0..FLOW_CACHE_SLOTS {
            let values = cache.get(&slot, 0).map_err(map_error)?;
            for &cpu in &offline {
                if let Some(flow) = values.get(cpu as usize) {
                    for direction in 0..2 {
                        stranded +=
                            flow.packets[direction].wrapping_sub(flow.flushed_packets[direction]);
                    }
                }
            }
        }
        Ok(stranded)
    }
}
