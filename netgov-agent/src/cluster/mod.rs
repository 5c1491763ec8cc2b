//! Cluster state for the agent: who an IP is (pod, workload, node,
//! service) and the policies that apply, kept current.
//!
//! Today the state comes from manifest files ([`file_source`]); the
//! Kubernetes API watchers, with the same state and health, follow.

pub mod file_source;
pub mod kube_source;
pub mod workload;

use std::time::Instant;

/// How current the cluster state is, for readiness and metrics.
#[derive(Clone, Debug, Default)]
pub struct ClusterHealth {
    /// Whether a complete state has been loaded at least once.
    pub synced: bool,
    /// When the state last changed.
    pub last_change: Option<Instant>,
    /// Loads that succeeded.
    pub loads: u64,
    /// Reloads that failed (the previous state was kept).
    pub failed_reloads: u64,
    /// Problems of the current state: invalid objects that were skipped, or
    /// why the last reload failed.
    pub problems: Vec<String>,
}

impl ClusterHealth {
    /// Records a successful (re)load with the objects it had to skip.
    pub fn record_load(&mut self, problems: Vec<String>) {
        self.synced = true;
        self.last_change = Some(Instant::now());
        self.loads += 1;
        self.problems = problems;
    }

    /// Records a reload that failed; the previous state stays.
    pub fn record_failed_reload(&mut self, problems: Vec<String>) {
        self.failed_reloads += 1;
        self.problems = problems;
    }
}

#[cfg(test)]
mod tests;
