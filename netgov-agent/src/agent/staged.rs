//! Staged policies (`netgov agent --staged PATH`): every flow is judged
//! against the policies in force and against them plus the staged ones
//! (a directory of manifests, e.g. a mounted ConfigMap, reloaded when it
//! changes), and what would change is counted
//! (`netgov_staged_changes_total`) and written with the flow (flow log,
//! `/flows`: `staged_verdict`). The verdict in force, and every other
//! metric, stay as they are.
//!
//! Decisions:
//! - The staged verdicts are judged on a copy of the cluster state with
//!   the staged policies added (a staged policy with the name of one in
//!   force replaces it). The copy is rebuilt when the staged files change,
//!   and when the cluster changed, at most every [`REBUILD_INTERVAL`]. A
//!   flow judged while the copy is behind the cluster gets no staged
//!   verdict then (a copy that lacks a new pod would make false changes);
//!   the pipeline judges live flows again once the copy is rebuilt, so
//!   only a flow that starts and ends within that second goes without.
//!   The copy costs a second copy of the cluster state's memory (about
//!   22 MiB per 10k pods) and a clone per rebuild (`cargo xtask bench
//!   cluster` prints how long one takes).
//! - Staged files that do not load keep the previous staged policies, and
//!   say why in the log (file and field), like `--cluster-state`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::engine::ClusterState;
use crate::engine::Object;
use crate::engine::{Decision, FlowQuery};
use crate::sources::file_source::{FileSourceError, Fingerprint, fingerprint};
use crate::sources::manifests::{self, Manifests};

/// How often the staged copy follows a changing cluster at most.
pub const REBUILD_INTERVAL: Duration = Duration::from_secs(1);
/// How often the staged files are looked at.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The staged policies and the state they are judged on.
pub struct Staged {
    paths: Vec<PathBuf>,
    /// The staged policy objects.
    policies: Manifests,
    fingerprint: Fingerprint,
    /// The state in force plus the staged policies.
    state: ClusterState,
    /// The generation of the state in force the copy was made from.
    built_from: Option<u64>,
    built_at: Instant,
    polled_at: Instant,
}

impl Staged {
    /// Loads the staged policies under `paths`.
    ///
    /// # Errors
    /// [`FileSourceError`] naming each file and field that does not load.
    pub fn open(paths: Vec<PathBuf>) -> Result<Self, FileSourceError> {
        let policies = load(&paths)?;
        Ok(Self {
            fingerprint: fingerprint(&paths),
            paths,
            policies,
            state: ClusterState::new(),
            built_from: None,
            built_at: Instant::now(),
            polled_at: Instant::now(),
        })
    }

    /// Follows the staged files and the state in force; says whether the
    /// copy was rebuilt (live flows are then judged again).
    pub fn refresh(&mut self, current: &ClusterState) -> bool {
        let mut changed = false;
        if self.polled_at.elapsed() >= POLL_INTERVAL {
            self.polled_at = Instant::now();
            let now = fingerprint(&self.paths);
            if now != self.fingerprint {
                self.fingerprint = now;
                match load(&self.paths) {
                    Ok(policies) => {
                        tracing::info!(
                            objects = policies.objects.len(),
                            "staged policies reloaded"
                        );
                        self.policies = policies;
                        changed = true;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "staged policies not reloaded; keeping the previous ones");
                    }
                }
            }
        }
        let stale = self.built_from != Some(current.generation())
            && self.built_at.elapsed() >= REBUILD_INTERVAL;
        if changed || self.built_from.is_none() || stale {
            self.rebuild(current);
            return true;
        }
        false
    }

    fn rebuild(&mut self, current: &ClusterState) {
        let mut state = current.clone();
        for (object, origin) in &self.policies.objects {
            let result = match object {
                Object::NetworkPolicy(_) | Object::ClusterPolicy(..) => state.apply(object),
                _ => Ok(()),
            };
            if let Err(error) = result {
                tracing::warn!(file = %origin.file.display(), %error, "staged policy not applied");
            }
        }
        self.state = state;
        self.built_from = Some(current.generation());
        self.built_at = Instant::now();
    }

    /// The verdict of `query` with the staged policies, its ends resolved
    /// as they were during `seen`; `None` while the copy is behind the
    /// state in force (at `generation`).
    pub fn verdict(
        &self,
        query: &FlowQuery,
        seen: (i128, i128),
        generation: u64,
    ) -> Option<Decision> {
        if self.built_from != Some(generation) {
            return None;
        }
        let at = |ip| self.state.resolve_at(ip, seen.0, seen.1);
        Some(
            crate::engine::evaluate::evaluate_resolved(
                &self.state,
                query,
                at(query.src),
                at(query.dst),
            )
            .verdict,
        )
    }
}

fn load(paths: &[PathBuf]) -> Result<Manifests, FileSourceError> {
    let mut loaded = manifests::load(paths).map_err(|errors| FileSourceError { errors })?;
    loaded.objects.retain(|(object, _)| {
        matches!(object, Object::NetworkPolicy(_) | Object::ClusterPolicy(..))
    });
    Ok(loaded)
}
