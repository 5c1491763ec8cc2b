//! The latest judged flows, kept for `/flows` and filtered there, and the
//! live feed `/flows?follow=true` (`netgov observe`) reads. Records are
//! kept as judged and serialised only when asked for: most never are.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use tokio::sync::broadcast;

use crate::capture::record::FlowRecord;
use crate::engine::Decision;
use crate::flowlog::FlowEntry;
use crate::judge::{Enforcement, Judgement};

/// How many judged flows `/flows` keeps.
pub const RECENT_FLOWS: usize = 1000;

/// How many judged flows may wait for a slow live reader before it
/// misses some (it is told how many).
pub const LIVE_BACKLOG: usize = 4096;

/// The filters `/flows` takes (query parameters; an unknown key or a bad
/// value is a 400). `namespace` and `pod` match either end; the `from_`
/// and `to_` ones the source or the destination.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowFilter {
    /// Either end's namespace.
    pub namespace: Option<String>,
    /// Either end's pod name.
    pub pod: Option<String>,
    /// The source's namespace.
    pub from_namespace: Option<String>,
    /// The source's pod name.
    pub from_pod: Option<String>,
    /// The destination's namespace.
    pub to_namespace: Option<String>,
    /// The destination's pod name.
    pub to_pod: Option<String>,
    /// The protocol (`TCP`, `UDP`, ...; any case).
    pub protocol: Option<String>,
    /// The destination port judged (a Service flow's backend port).
    pub port: Option<u16>,
    /// The verdict.
    pub verdict: Option<Decision>,
    /// The enforcement of a denied flow.
    pub enforcement: Option<Enforcement>,
    /// Keep the response open and send each flow as it is judged
    /// (newline-delimited JSON). Not a filter: how to answer.
    #[serde(default)]
    pub follow: bool,
    /// Only the last N kept flows that pass the filters (with `follow`:
    /// before the live ones; default all kept ones, or none when
    /// following).
    pub last: Option<usize>,
}

impl FlowFilter {
    /// Whether `judgement` passes every filter given.
    pub fn matches(&self, record: &FlowRecord, judgement: &Judgement) -> bool {
        let is = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|want| have == Some(want))
        };
        let (src, dst) = (&judgement.src, &judgement.dst);
        if !(is(&self.from_namespace, Some(&src.namespace))
            && is(&self.from_pod, src.pod.as_deref())
            && is(&self.to_namespace, Some(&dst.namespace))
            && is(&self.to_pod, dst.pod.as_deref())
            && self
                .protocol
                .as_deref()
                .is_none_or(|p| p.eq_ignore_ascii_case(&record.protocol.name()))
            && self.port.is_none_or(|port| judgement.dst_port == port))
        {
            return false;
        }
        let ends = [src, dst];
        self.namespace
            .as_deref()
            .is_none_or(|ns| ends.iter().any(|end| &*end.namespace == ns))
            && self
                .pod
                .as_deref()
                .is_none_or(|pod| ends.iter().any(|end| end.pod.as_deref() == Some(pod)))
            && self
                .verdict
                .is_none_or(|verdict| judgement.verdict.verdict == verdict)
            && self
                .enforcement
                .is_none_or(|enforcement| judgement.enforcement == Some(enforcement))
    }
}

/// A judged flow, shared between the kept ones and live readers.
pub type JudgedFlow = Arc<(FlowRecord, Judgement)>;

/// The last [`RECENT_FLOWS`] judged flows, and the live feed.
pub struct RecentFlows {
    flows: Mutex<VecDeque<JudgedFlow>>,
    live: broadcast::Sender<JudgedFlow>,
}

impl Default for RecentFlows {
    fn default() -> Self {
        Self {
            flows: Mutex::default(),
            live: broadcast::channel(LIVE_BACKLOG).0,
        }
    }
}

/// One flow as a JSON line (no newline).
pub fn json_line(flow: &JudgedFlow) -> String {
    serde_json::to_string(&FlowEntry::new(&flow.0, &flow.1)).unwrap_or_default()
}

impl RecentFlows {
    /// Keeps a judged flow, dropping the oldest past the limit, and hands
    /// it to live readers.
    pub fn push(&self, record: FlowRecord, judgement: Judgement) {
        let flow = Arc::new((record, judgement));
        // No live reader is not an error.
        let _ = self.live.send(Arc::clone(&flow));
        let mut flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        if flows.len() >= RECENT_FLOWS {
            flows.pop_front();
        }
        flows.push_back(flow);
    }

    /// The kept flows that pass `filter`, oldest first, at most the last
    /// `last`.
    pub fn matching(&self, filter: &FlowFilter, last: Option<usize>) -> Vec<JudgedFlow> {
        let flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        let mut matching: Vec<JudgedFlow> = flows
            .iter()
            .filter(|flow| filter.matches(&flow.0, &flow.1))
            .cloned()
            .collect();
        if let Some(last) = last {
            matching.drain(..matching.len().saturating_sub(last));
        }
        matching
    }

    /// The JSON array of the flows that pass `filter`, oldest first.
    pub fn to_json(&self, filter: &FlowFilter, last: Option<usize>) -> String {
        let flows = self.matching(filter, last);
        let entries: Vec<FlowEntry<'_>> = flows
            .iter()
            .map(|flow| FlowEntry::new(&flow.0, &flow.1))
            .collect();
        serde_json::to_string(&entries).unwrap_or_else(|_| "[]".into())
    }

    /// Every flow judged from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<JudgedFlow> {
        self.live.subscribe()
    }
}
