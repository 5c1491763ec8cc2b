//! The latest judged flows, kept for `/flows` and filtered there, and the
//! live feed `/flows?follow=true` (`netgov observe`) reads. Records are
//! kept as judged and serialised only when asked for: most never are.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::capture::record::FlowRecord;
use crate::flowlog::{FlowEntry, FlowFilter};
use crate::judge::Judgement;

/// How many judged flows `/flows` keeps.
pub const RECENT_FLOWS: usize = 1000;

/// How many judged flows may wait for a slow live reader before it
/// misses some (it is told how many).
pub const LIVE_BACKLOG: usize = 4096;

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
