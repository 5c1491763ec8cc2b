//! `netgov_staged_changes_total`: what staged policies would change.

use super::labels::{StagedChange, StagedLabels};
use super::{Metrics, count_series, port_label};
use crate::model::{Identity, Protocol};

impl Metrics {
    /// Counts a flow whose verdict the staged policies would change.
    pub fn count_staged_change(
        &self,
        (src, dst): (&Identity, &Identity),
        (protocol, dst_port): (Protocol, u16),
        change: StagedChange,
    ) {
        let mut labels = StagedLabels {
            src_namespace: src.namespace.to_string(),
            src_workload: src.workload.to_string(),
            dst_namespace: dst.namespace.to_string(),
            dst_workload: dst.workload.to_string(),
            protocol,
            dst_port: port_label(protocol, dst_port),
            change,
        };
        let mut index = self.index();
        index.cap_workloads(self.max_workloads, &mut labels);
        count_series(&self.staged_changes, &mut index.staged, labels);
    }
}
