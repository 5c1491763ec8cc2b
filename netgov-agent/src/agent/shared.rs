//! What the agent's tasks share: the cluster state and its health (one
//! writer: the source), the metrics, the recent flows and readiness.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use super::recent::RecentFlows;
use crate::capture::DatapathInfo;
use crate::engine::ClusterState;
use crate::export::metrics::Metrics;
use crate::hubble::HubbleSink;
use crate::model::FlowId;
use crate::names::{NameCache, NameLimits};
use crate::sources::ClusterHealth;

/// Why the agent is not ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    /// The eBPF programs are not attached yet.
    #[error("programs not attached yet")]
    NotAttached,
    /// A resource's first list has not completed.
    #[error("cluster state not synced")]
    ClusterNotSynced,
    /// Our programs were removed from interfaces and could not be
    /// attached again: their traffic is not seen.
    #[error("programs missing from {0} interface(s)")]
    AttachmentsMissing(usize),
}

/// Shared between the tasks.
pub struct Shared {
    /// The cluster state.
    pub state: Arc<RwLock<ClusterState>>,
    /// The source's health.
    pub health: Arc<RwLock<ClusterHealth>>,
    /// The metrics.
    pub metrics: Metrics,
    /// The latest judged flows.
    pub recent: RecentFlows,
    /// Destination names learned from DNS answers and ClientHellos:
    /// written by the capture's sink, read by the judge.
    pub names: NameCache,
    datapath: OnceLock<DatapathInfo>,
    attachments_missing: AtomicUsize,
    /// Serve `/flows` to non-loopback clients too.
    pub flows_from_anywhere: bool,
    /// Where Hubble events go, when the Hubble server or export is on.
    pub hubble: Option<HubbleSink>,
    /// Live flows the judge asks the capture to report again.
    pub asked_again: AskedAgain,
}

/// Live flows the judge asks the capture to report again at its next drain
/// (`FlowSink::report_again`): the judge holds no record of a live flow.
/// One writer (the judge), one reader (the capture's sink).
#[derive(Debug, Default)]
pub struct AskedAgain(Mutex<Vec<FlowId>>);

impl AskedAgain {
    /// Every judged live flow: replaces what was asked before and not yet
    /// taken (those flows are among them, or ended).
    pub fn all(&self, ids: Vec<FlowId>) {
        *self.lock() = ids;
    }

    /// These flows too.
    pub fn these(&self, ids: impl IntoIterator<Item = FlowId>) {
        self.lock().extend(ids);
    }

    /// What was asked since the last call.
    pub fn take(&self) -> Vec<FlowId> {
        std::mem::take(&mut *self.lock())
    }

    /// A poisoned lock still holds whole ids.
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<FlowId>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Shared {
    /// Nothing attached yet.
    pub fn new(
        state: Arc<RwLock<ClusterState>>,
        health: Arc<RwLock<ClusterHealth>>,
        metrics: Metrics,
        flows_from_anywhere: bool,
        names: NameLimits,
    ) -> Self {
        Self {
            state,
            health,
            metrics,
            recent: RecentFlows::default(),
            names: NameCache::new(names),
            datapath: OnceLock::new(),
            attachments_missing: AtomicUsize::new(0),
            flows_from_anywhere,
            hubble: None,
            asked_again: AskedAgain::default(),
        }
    }

    /// The same, with judged flows also pushed as Hubble events to `sink`.
    #[must_use]
    pub fn with_hubble(mut self, sink: HubbleSink) -> Self {
        self.hubble = Some(sink);
        self
    }

    /// The programs are attached, with what the datapath found.
    pub fn set_attached(&self, info: DatapathInfo) {
        self.metrics.set_datapath_info(&info);
        let _ = self.datapath.set(info);
    }

    /// How many interfaces miss their programs (see
    /// [`NotReady::AttachmentsMissing`]).
    pub fn set_attachments_missing(&self, missing: usize) {
        self.attachments_missing.store(missing, Ordering::Relaxed);
    }

    /// What the datapath runs with, once attached.
    pub fn datapath(&self) -> Option<&DatapathInfo> {
        self.datapath.get()
    }

    /// Ready: programs attached and every resource synced.
    ///
    /// # Errors
    /// The first reason it is not.
    pub fn ready(&self) -> Result<(), NotReady> {
        if self.datapath.get().is_none() {
            return Err(NotReady::NotAttached);
        }
        match self.attachments_missing.load(Ordering::Relaxed) {
            0 => {}
            missing => return Err(NotReady::AttachmentsMissing(missing)),
        }
        if !self
            .health
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .ready()
        {
            return Err(NotReady::ClusterNotSynced);
        }
        Ok(())
    }

    /// A read lock on the cluster state (a poisoned lock still holds a
    /// consistent state: writers replace whole entries).
    pub fn state(&self) -> std::sync::RwLockReadGuard<'_, ClusterState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }
}
