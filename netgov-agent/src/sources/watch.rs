//! One resource's list/watch loop, feeding the [`ClusterState`] one object
//! at a time.
//!
//! Decisions (compare client-go's reflector, which this follows):
//! - The first list asks for any version (`resourceVersion=0`), which the
//!   API server answers from its watch cache instead of a quorum read from
//!   etcd: a DaemonSet rollout is then N cache reads, not N etcd reads of
//!   every pod. Such a list is not paginated, so every list is read as it
//!   arrives ([`list_stream`](super::list_stream)) and costs memory for the
//!   objects in flight only.
//! - A watch whose version has expired (`410 Gone`) relists with a
//!   consistent read, paginated: the cache may be older than what was
//!   already seen.
//! - A relist applies every listed object as it comes and, once the list is
//!   complete, deletes the objects it no longer contains: nothing is lost or
//!   duplicated. Ready once the first list is complete.
//! - Failures back off exponentially with jitter (0.5 s doubling to 60 s),
//!   reset only by progress (a complete list or a watch event): a failing
//!   API server sees at most one request per resource per backoff step.
//!   Every failure is logged and counted in the resource's health.
//! - Watches ask the server to end them before the client's read timeout,
//!   so a quiet watch ends normally and is resumed from its version, while
//!   a stalled one meets the read timeout and counts as a failure.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, WatchEvent, WatchParams};
use serde_json::Value;

use super::kube_source::{Timeouts, api_resource};
use super::list_stream::{ListError, list_page};
use super::objects::{ObjectKey, apply, delete, object_key};
use super::{ClusterHealth, ResourceHealth, ResourceKind};
use crate::engine::ClusterState;
use crate::engine::ObjectError;

/// Items per page of a consistent (paginated) list.
const PAGE_SIZE: u32 = 500;

/// Where a resource's loop stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Nothing listed yet: list any version, from the watch cache.
    Start,
    /// The watched version expired: list again, consistently.
    Relist,
    /// Listed or watched up to this version: watch from it.
    Watch(String),
}

/// One resource kept in sync.
struct ResourceWatch {
    kind: ResourceKind,
    client: kube::Client,
    resource: ApiResource,
    state: Arc<RwLock<ClusterState>>,
    health: Arc<RwLock<ClusterHealth>>,
    timeouts: Timeouts,
    known: Known,
    /// Failures since the last progress.
    failures: u32,
}

/// The objects a loop has applied and not deleted since: what a relist
/// deletes when it no longer lists them.
enum Known {
    /// Kept by the loop.
    Here(HashSet<ObjectKey>),
    /// Those the cluster state holds one for one
    /// ([`ClusterState::holds`]), which the loop does not keep again: a
    /// large cluster's pods alone would cost an agent 17 MiB more. The
    /// loop keeps those the state does not: skipped as invalid. (Finished
    /// pods, which the state drops, are not counted as objects either.)
    InState { skipped: HashSet<ObjectKey> },
}

/// Keeps `kind` in sync until the task is aborted.
pub(super) async fn watch_kind(
    kind: ResourceKind,
    client: kube::Client,
    state: Arc<RwLock<ClusterState>>,
    health: Arc<RwLock<ClusterHealth>>,
    timeouts: Timeouts,
) {
    let resource = api_resource(kind);
    if kind.cluster_policy().is_some() {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        wait_for_crd(kind, &api, &health).await;
    }
    let mut watch = ResourceWatch {
        kind,
        client,
        resource,
        state,
        health,
        timeouts,
        known: if ClusterState::holds(kind) {
            Known::InState {
                skipped: HashSet::new(),
            }
        } else {
            Known::Here(HashSet::new())
        },
        failures: 0,
    };
    let mut phase = Phase::Start;
    loop {
        phase = match phase {
            Phase::Start | Phase::Relist => match watch.list(phase == Phase::Relist).await {
                Ok(version) => Phase::Watch(version),
                Err(error) => {
                    watch.fail(&error).await;
                    phase
                }
            },
            Phase::Watch(version) => watch.watch(version).await,
        };
    }
}

impl ResourceWatch {
    fn update_health(&self, f: impl FnOnce(&mut ResourceHealth)) {
        let mut health = self.health.write().unwrap_or_else(|e| e.into_inner());
        f(health.resources.entry(self.kind).or_default());
    }

    /// Counts and logs a failure, then waits out the backoff.
    async fn fail(&mut self, error: &(dyn std::error::Error + Send + Sync + 'static)) {
        self.failures += 1;
        let wait = backoff(self.failures);
        let text = crate::error_chain(error);
        tracing::warn!(kind = self.kind.name(), error = %text, failures = self.failures, retry_in = ?wait, "list/watch error; backing off");
        self.update_health(|h| {
            h.errors += 1;
            h.last_error = Some(text);
        });
        tokio::time::sleep(wait).await;
    }

    /// Progress: the next failure starts the backoff again.
    fn progressed(&mut self) {
        self.failures = 0;
        let objects = match &self.known {
            Known::Here(known) => known.len(),
            Known::InState { skipped } => {
                self.read_state().held_count(self.kind).unwrap_or(0) + skipped.len()
            }
        };
        self.update_health(|h| {
            h.last_event = Some(Instant::now());
            h.objects = objects;
        });
    }

    fn applied(&mut self, object: Value) -> ObjectKey {
        let key = object_key(&object);
        let result = apply(self.kind, &self.state, object);
        let kind = self.kind;
        self.update_health(|h| record(h, kind, &key, &result));
        // An invalid version of an object the state holds (an update
        // skipped) is known through the state already: not twice.
        let held = result.is_err() && self.read_state().is_held(kind, &key.0, &key.1);
        match &mut self.known {
            Known::Here(known) => {
                known.insert(key.clone());
            }
            Known::InState { skipped } if result.is_err() && !held => {
                skipped.insert(key.clone());
            }
            Known::InState { skipped } => {
                skipped.remove(&key);
            }
        }
        key
    }

    fn deleted(&mut self, key: &ObjectKey) {
        delete(self.kind, &self.state, key);
        match &mut self.known {
            Known::Here(known) => known.remove(key),
            Known::InState { skipped } => skipped.remove(key),
        };
        let name = format!("{} {}/{}", self.kind.name(), key.0, key.1);
        self.update_health(|h| {
            h.problems.remove(&name);
        });
    }

    /// Lists every object, applying each as it arrives, then deletes those
    /// no longer listed. Returns the list's version.
    async fn list(&mut self, consistent: bool) -> Result<String, ListError> {
        // kube-rs drops `resourceVersion=0` from a list with a limit (the
        // watch cache would ignore the limit anyway), so the cached list
        // goes without one; it is streamed either way.
        let mut params = if consistent {
            ListParams::default().limit(PAGE_SIZE)
        } else {
            ListParams::default().match_any()
        };
        // Nothing known, nothing to delete: the first list keeps no keys.
        let mut listed = (!self.knows_nothing()).then(HashSet::new);
        let end = loop {
            let (client, resource) = (self.client.clone(), self.resource.clone());
            let end = list_page(&client, &resource, &params, |object| {
                let key = self.applied(object);
                if let Some(listed) = &mut listed {
                    listed.insert(key);
                }
            })
            .await?;
            match end.continue_token {
                Some(token) => params = params.continue_token(&token),
                None => break end,
            }
        };
        let gone = listed
            .map(|listed| self.not_in(&listed))
            .unwrap_or_default();
        for key in &gone {
            self.deleted(key);
        }
        self.update_health(|h| h.synced = true);
        self.progressed();
        Ok(end.resource_version)
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, ClusterState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn knows_nothing(&self) -> bool {
        match &self.known {
            Known::Here(known) => known.is_empty(),
            Known::InState { skipped } => {
                skipped.is_empty() && self.read_state().held_count(self.kind) == Some(0)
            }
        }
    }

    /// The objects known and not in `listed`.
    fn not_in(&self, listed: &HashSet<ObjectKey>) -> Vec<ObjectKey> {
        match &self.known {
            Known::Here(known) => known.difference(listed).cloned().collect(),
            Known::InState { skipped } => {
                let held = self.read_state().held(self.kind).unwrap_or_default();
                held.into_iter()
                    .chain(skipped.iter().cloned())
                    .filter(|key| !listed.contains(key))
                    .collect()
            }
        }
    }

    /// Watches from `version` until the watch ends, and says what next.
    async fn watch(&mut self, mut version: String) -> Phase {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &self.resource);
        let params = WatchParams::default().timeout(self.timeouts.watch_seconds());
        let started = Instant::now();
        let mut events = match api.watch(&params, &version).await {
            Ok(events) => events.boxed(),
            // Expired, said as the response's status rather than an event.
            Err(kube::Error::Api(status)) if status.code == 410 => return Phase::Relist,
            Err(error) => {
                self.fail(&error).await;
                return Phase::Watch(version);
            }
        };
        let mut seen = 0usize;
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(kube::Error::Api(status)) if status.code == 410 => return Phase::Relist,
                Err(error) => {
                    self.fail(&error).await;
                    return Phase::Watch(version);
                }
            };
            seen += 1;
            match event {
                WatchEvent::Added(object) | WatchEvent::Modified(object) => {
                    version = object.metadata.resource_version.clone().unwrap_or(version);
                    match serde_json::to_value(object) {
                        Ok(object) => {
                            self.applied(object);
                        }
                        Err(error) => {
                            tracing::warn!(kind = self.kind.name(), %error, "watched object not representable")
                        }
                    }
                }
                WatchEvent::Deleted(object) => {
                    version = object.metadata.resource_version.clone().unwrap_or(version);
                    let key = (
                        object.metadata.namespace.unwrap_or_default(),
                        object.metadata.name.unwrap_or_default(),
                    );
                    self.deleted(&key);
                }
                WatchEvent::Bookmark(bookmark) => version = bookmark.metadata.resource_version,
                WatchEvent::Error(status) if status.code == 410 => {
                    tracing::info!(
                        kind = self.kind.name(),
                        "watched version expired; listing again"
                    );
                    return Phase::Relist;
                }
                WatchEvent::Error(status) => {
                    self.fail(&kube::Error::Api(status)).await;
                    return Phase::Watch(version);
                }
            }
            self.progressed();
        }
        // Ended by the server. One that ends at once, empty, again and
        // again would otherwise be a busy loop.
        if seen == 0 && started.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(backoff(1)).await;
        }
        Phase::Watch(version)
    }
}

/// How long to wait after the `failures`-th failure in a row: 0.5 s
/// doubling to 60 s, times a random factor in [0.5, 1) so agents that
/// failed together do not retry together.
fn backoff(failures: u32) -> Duration {
    let base = Duration::from_millis(500) * 2u32.saturating_pow(failures.saturating_sub(1).min(7));
    let base = base.min(Duration::from_secs(60));
    let mut bytes = [0u8; 2];
    // SAFETY: a valid buffer of the length given.
    let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), 2, 0) } == 2;
    let jitter = if filled {
        f64::from(u16::from_ne_bytes(bytes)) / f64::from(u16::MAX)
    } else {
        0.5
    };
    base.mul_f64(0.5 + jitter / 2.0)
}

/// Waits until the CRD of `kind` is installed. While it is not, the
/// resource counts as synced with no objects (a cluster without
/// cluster-wide policies is not an error), said once in the log, and
/// looked for again every minute.
async fn wait_for_crd(
    kind: ResourceKind,
    api: &Api<DynamicObject>,
    health: &RwLock<ClusterHealth>,
) {
    let mut said = false;
    let mut failures = 0;
    loop {
        match api
            .list_metadata(&kube::api::ListParams::default().limit(1))
            .await
        {
            Err(kube::Error::Api(status)) if status.code == 404 => {
                if !std::mem::replace(&mut said, true) {
                    tracing::info!(
                        kind = kind.name(),
                        "CRD not installed; looking again every minute"
                    );
                }
                let mut health = health.write().unwrap_or_else(|e| e.into_inner());
                let resource = health.resources.entry(kind).or_default();
                resource.absent = true;
                resource.synced = true;
            }
            // Not answered: whether it is installed is unknown yet.
            Err(error) => {
                failures += 1;
                let wait = backoff(failures);
                tracing::warn!(kind = kind.name(), error = %crate::error_chain(&error), retry_in = ?wait, "cannot tell whether the CRD is installed; backing off");
                {
                    let mut health = health.write().unwrap_or_else(|e| e.into_inner());
                    let resource = health.resources.entry(kind).or_default();
                    resource.errors += 1;
                    resource.last_error = Some(crate::error_chain(&error));
                }
                tokio::time::sleep(wait).await;
                continue;
            }
            Ok(_) => {
                let mut health = health.write().unwrap_or_else(|e| e.into_inner());
                let resource = health.resources.entry(kind).or_default();
                if resource.absent {
                    resource.absent = false;
                    resource.synced = false;
                }
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    }
}

fn record(
    health: &mut ResourceHealth,
    kind: ResourceKind,
    key: &ObjectKey,
    result: &Result<(), ObjectError>,
) {
    let name = format!("{} {}/{}", kind.name(), key.0, key.1);
    match result {
        Ok(()) => {
            health.problems.remove(&name);
        }
        Err(error) => {
            tracing::warn!(object = %name, %error, "object skipped");
            health.skipped_objects += 1;
            health.problems.insert(name, error.to_string());
        }
    }
}
