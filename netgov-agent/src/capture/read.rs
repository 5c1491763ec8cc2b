//! Reading what the kernel programs left: the two rings (flow events,
//! payloads) and the flow map, and ending flows with their final counts.

use std::collections::BTreeMap;
use std::sync::Arc;

use aya::maps::{MapData, RingBuf};
use netgov_common::{FlowEvent, FlowKey, FlowStats};

use super::flow_table::{EndedFlow, FlowTable};
use super::sys::{read_flows, take_flow};
use super::{CaptureError, CaptureSummary, FlowSink, Payload};
use crate::model::clock::{MonotonicClock, monotonic_now_ns};

pub(super) fn read_events(ring: &mut RingBuf<MapData>, table: &mut FlowTable) {
    while let Some(item) = ring.next() {
        if item.len() < std::mem::size_of::<FlowEvent>() {
            table.count_malformed_event();
            continue;
        }
        // SAFETY: the length was checked; FlowEvent is plain old data and the
        // read is unaligned-safe.
        let event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<FlowEvent>()) };
        table.on_event(&event);
    }
}

/// Hands the sink each DNS answer and ClientHello; a record too short to
/// be one is counted as a malformed event.
pub(super) fn read_payloads(
    ring: &mut RingBuf<MapData>,
    sink: &mut impl FlowSink,
    table: &mut FlowTable,
    clock: &MonotonicClock,
) {
    while let Some(item) = ring.next() {
        match Payload::decode(&item, clock) {
            Some(payload) => sink.payload(&payload),
            None => table.count_malformed_event(),
        }
    }
}

pub(super) fn drain(
    flows: &aya::maps::HashMap<MapData, FlowKey, FlowStats>,
    table: &mut FlowTable,
    names: &BTreeMap<u32, Arc<str>>,
    clock: &MonotonicClock,
) -> Vec<EndedFlow> {
    let now = monotonic_now_ns();
    table.drain(
        read_flows(flows),
        now,
        &|i: u32| names.get(&i).cloned(),
        clock,
    )
}

pub(super) fn emit(
    sink: &mut impl FlowSink,
    ended: Vec<EndedFlow>,
    summary: &mut CaptureSummary,
) -> Result<(), CaptureError> {
    if ended.is_empty() {
        return Ok(());
    }
    summary.flows += ended.len() as u64;
    sink.ended(ended.into_iter().map(|flow| flow.record).collect())
}

/// Deletes the kernel entries of ended flows, reading each one's final
/// counts in the same step and folding them into the record.
pub(super) fn take_kernel_entries(
    flows: &aya::maps::HashMap<MapData, FlowKey, FlowStats>,
    ended: &mut [EndedFlow],
    names: &BTreeMap<u32, Arc<str>>,
    clock: &MonotonicClock,
) {
    for flow in ended {
        let finals: Vec<(FlowKey, FlowStats)> = flow
            .kernel_keys
            .iter()
            .filter_map(|key| match take_flow(flows, key) {
                Ok(stats) => stats.map(|stats| (*key, stats)),
                Err(error) => {
                    tracing::warn!(%error, "cannot delete an ended flow's kernel entry");
                    None
                }
            })
            .collect();
        flow.finalize(finals, &|i: u32| names.get(&i).cloned(), clock);
    }
}
