//! The latest judged flows, kept for `/flows` and filtered there. Records
//! are kept as judged and serialised only when asked for: most never are.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Deserialize;

use super::flow_log::FlowEntry;
use crate::capture::record::FlowRecord;
use crate::judge::{Enforcement, Judgement};
use crate::policy::Decision;

/// How many judged flows `/flows` keeps.
pub const RECENT_FLOWS: usize = 1000;

/// The filters `/flows` takes (query parameters; an unknown key or a bad
/// value is a 400). Namespace and pod match either end.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowFilter {
    /// Either end's namespace.
    pub namespace: Option<String>,
    /// Either end's pod name.
    pub pod: Option<String>,
    /// The verdict.
    pub verdict: Option<Decision>,
    /// The enforcement of a denied flow.
    pub enforcement: Option<Enforcement>,
}

impl FlowFilter {
    /// Whether `judgement` passes every filter given.
    pub fn matches(&self, judgement: &Judgement) -> bool {
        let ends = [&judgement.src, &judgement.dst];
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

/// The last [`RECENT_FLOWS`] judged flows.
#[derive(Default)]
pub struct RecentFlows {
    flows: Mutex<VecDeque<(FlowRecord, Judgement)>>,
}

impl RecentFlows {
    /// Keeps a judged flow, dropping the oldest past the limit.
    pub fn push(&self, record: FlowRecord, judgement: Judgement) {
        let mut flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        if flows.len() >= RECENT_FLOWS {
            flows.pop_front();
        }
        flows.push_back((record, judgement));
    }

    /// The JSON array of the flows that pass `filter`, oldest first.
    pub fn to_json(&self, filter: &FlowFilter) -> String {
        let flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        let entries: Vec<FlowEntry<'_>> = flows
            .iter()
            .filter(|(_, judgement)| filter.matches(judgement))
            .map(|(record, judgement)| FlowEntry::new(record, judgement))
            .collect();
        serde_json::to_string(&entries).unwrap_or_else(|_| "[]".into())
    }
}
