//! Cluster state from manifest files (`--cluster-state PATH...`, the
//! format of `netgov check --manifests`), reloaded when the files change:
//! for the demo, tests, and users without a cluster.
//!
//! Changes are found by polling each file's size and modification time
//! (portable, and cheap for the handful of files this is meant for). A
//! reload that fails to parse keeps the previous state and reports why; an
//! invalid policy is reported and every other object still applies.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use crate::engine::ClusterState;
use crate::sources::manifests::{self, ManifestError};

use super::{ClusterHealth, ResourceKind};

/// The cluster-state files do not load at all (unreadable or not YAML);
/// every error is kept, each naming its file.
#[derive(Debug, thiserror::Error)]
#[error("{}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct FileSourceError {
    /// What went wrong, file by file.
    pub errors: Vec<ManifestError>,
}

/// Size and modification time of every manifest file, to notice changes.
pub(crate) type Fingerprint = BTreeMap<PathBuf, (u64, Option<SystemTime>)>;

/// The [`Fingerprint`] of the manifests under `paths`.
pub(crate) fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    let (files, errors) = crate::input::manifest_files(paths);
    let mut fingerprint: Fingerprint = files
        .into_iter()
        .map(|file| {
            let metadata = std::fs::metadata(&file).ok();
            let stamp = metadata.map_or((u64::MAX, None), |m| (m.len(), m.modified().ok()));
            (file, stamp)
        })
        .collect();
    // A missing or unreadable path is part of the state too: it shows up
    // as gone, and as back when it is.
    for error in errors {
        let crate::input::WalkError::Read { path, .. } = error else {
            continue;
        };
        fingerprint.insert(path, (u64::MAX, None));
    }
    fingerprint
}

/// What a load produced: the state, objects per kind, and the objects it
/// had to skip (`Kind namespace/name` → why).
struct Loaded {
    state: ClusterState,
    counts: BTreeMap<ResourceKind, usize>,
    problems: BTreeMap<String, String>,
}

/// Loads the state once: every valid object, and the problems found.
///
/// # Errors
/// When a file cannot be read or parsed (then nothing is returned: a
/// half-read file would silently drop objects).
fn load(paths: &[PathBuf]) -> Result<Loaded, Vec<ManifestError>> {
    let manifests = manifests::load(paths)?;
    let mut counts = BTreeMap::new();
    for (object, _) in &manifests.objects {
        *counts.entry(object.kind()).or_default() += 1;
    }
    let (state, errors) = manifests.into_cluster();
    let problems = errors
        .iter()
        .map(|error| match error {
            ManifestError::Policy {
                error: crate::engine::PolicyError::Invalid { object, .. },
                ..
            } => (object.clone(), error.to_string()),
            other => (String::new(), other.to_string()),
        })
        .collect();
    Ok(Loaded {
        state,
        counts,
        problems,
    })
}

fn record_load(health: &mut ClusterHealth, loaded: &Loaded) {
    for warning in loaded.state.cluster_policy_warnings() {
        tracing::warn!(%warning, "cluster-wide policy");
    }
    for (object, why) in &loaded.problems {
        tracing::warn!(object = %object, reason = %why, "object skipped");
    }
    for kind in ResourceKind::ALL {
        let resource = health.resources.entry(kind).or_default();
        resource.synced = true;
        resource.last_event = Some(std::time::Instant::now());
        resource.objects = loaded.counts.get(&kind).copied().unwrap_or(0);
        let prefix = format!("{} ", kind.name());
        resource.problems = loaded
            .problems
            .iter()
            .filter(|(object, _)| object.starts_with(&prefix))
            .map(|(object, why)| (object.clone(), why.clone()))
            .collect();
        resource.skipped_objects = resource.problems.len() as u64;
    }
}

fn record_failed_reload(health: &mut ClusterHealth, errors: &[ManifestError]) {
    let message = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    for kind in ResourceKind::ALL {
        let resource = health.resources.entry(kind).or_default();
        resource.errors += 1;
        resource.last_error = Some(message.clone());
    }
}

/// A file-backed cluster state that follows its files.
#[derive(Debug)]
pub struct FileSource {
    paths: Vec<PathBuf>,
    state: Arc<RwLock<ClusterState>>,
    health: Arc<RwLock<ClusterHealth>>,
    fingerprint: Fingerprint,
}

impl FileSource {
    /// Loads `paths` for the first time.
    ///
    /// # Errors
    /// When the files cannot be read or parsed at all; invalid objects in
    /// readable files are reported in the health, not here.
    pub fn open(paths: Vec<PathBuf>) -> Result<Self, FileSourceError> {
        let fingerprint = fingerprint(&paths);
        let mut loaded = load(&paths).map_err(|errors| FileSourceError { errors })?;
        let mut health = ClusterHealth::default();
        record_load(&mut health, &loaded);
        let state = std::mem::take(&mut loaded.state);
        Ok(Self {
            paths,
            state: Arc::new(RwLock::new(state)),
            health: Arc::new(RwLock::new(health)),
            fingerprint,
        })
    }

    /// The shared state (readers take the read lock per use).
    pub fn state(&self) -> Arc<RwLock<ClusterState>> {
        Arc::clone(&self.state)
    }

    /// The shared health.
    pub fn health(&self) -> Arc<RwLock<ClusterHealth>> {
        Arc::clone(&self.health)
    }

    /// Reloads if any file changed since the last look; returns whether the
    /// state was replaced.
    pub fn reload_if_changed(&mut self) -> bool {
        let now = fingerprint(&self.paths);
        if now == self.fingerprint {
            return false;
        }
        self.fingerprint = now;
        match load(&self.paths) {
            Ok(mut loaded) => {
                record_load(
                    &mut self.health.write().unwrap_or_else(|e| e.into_inner()),
                    &loaded,
                );
                // A reload replaces the state, but pods that left keep
                // their place in the IPs' ownership history.
                self.state
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .succeed(std::mem::take(&mut loaded.state));
                true
            }
            Err(errors) => {
                tracing::warn!(
                    errors = ?errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "cluster-state files did not load; keeping the previous state"
                );
                record_failed_reload(
                    &mut self.health.write().unwrap_or_else(|e| e.into_inner()),
                    &errors,
                );
                false
            }
        }
    }

    /// Polls the files every `interval` until the task is dropped.
    pub async fn follow(mut self, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            if self.reload_if_changed() {
                tracing::info!(paths = ?self.paths, "cluster state reloaded");
            }
        }
    }
}
