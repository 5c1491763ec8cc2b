//! Cluster state for the agent: who an IP is (pod, workload, node,
//! service) and the policies that apply, kept current.
//!
//! Two sources fill the same [`crate::engine::ClusterState`] and report the
//! same [`ClusterHealth`]: the Kubernetes API ([`kube_source`]) and
//! manifest files ([`file_source`]).

pub mod file_source;
pub mod kube_source;
pub mod list_stream;
pub mod manifests;
mod objects;
pub mod snapshot;
mod watch;

use std::collections::BTreeMap;
use std::time::Instant;

use crate::engine::ResourceKind;

/// Health of one resource of the state.
#[derive(Clone, Debug, Default)]
pub struct ResourceHealth {
    /// The first complete list has been applied.
    pub synced: bool,
    /// Errors so far: watch errors (each followed by a backoff and a
    /// resume), or failed reloads of the files.
    pub errors: u64,
    /// When the last event arrived.
    pub last_event: Option<Instant>,
    /// Objects currently known.
    pub objects: usize,
    /// Objects skipped because they do not fit their schema, or are invalid
    /// policies (the latest error of each is in `problems`).
    pub skipped_objects: u64,
    /// The latest error.
    pub last_error: Option<String>,
    /// The resource's CRD is not installed (counts as synced, with no
    /// objects; looked for again every minute).
    pub absent: bool,
    /// Objects skipped, by `Kind namespace/name`, with why.
    pub problems: BTreeMap<String, String>,
}

/// Health of the whole state, the same for both sources.
#[derive(Clone, Debug, Default)]
pub struct ClusterHealth {
    /// Per resource.
    pub resources: BTreeMap<ResourceKind, ResourceHealth>,
}

impl ClusterHealth {
    /// Ready once every resource completed its first list (or the files
    /// loaded).
    pub fn ready(&self) -> bool {
        ResourceKind::ALL
            .iter()
            .all(|kind| self.resources.get(kind).is_some_and(|r| r.synced))
    }
}

#[cfg(test)]
mod tests;
