//! Cluster state from the Kubernetes API: a kube-rs watcher per resource
//! (Pods, Namespaces, NetworkPolicies, Services, EndpointSlices, Nodes, all
//! namespaces) feeding the policy engine's [`ClusterState`] one object at a
//! time.
//!
//! Decisions:
//! - The [`ClusterState`] is the store: each object is reduced to the fields
//!   the engine uses as it arrives (no `managedFields`, no full copies in
//!   reflector stores), so memory stays flat on big clusters.
//! - Objects are watched untyped and converted one by one, so a malformed
//!   object is skipped with an error naming it and its field, and the rest
//!   of the list still applies.
//! - A relist (after `410 Gone` or a broken watch) applies every listed
//!   object as it comes and, once the list is complete, deletes the objects
//!   it no longer contains: nothing is lost or duplicated.
//! - Ready once every resource has completed its first list.
//! - Failures back off exponentially with jitter (0.5 s doubling to 60 s),
//!   reset only by progress (objects listed or events watched) — not by
//!   the watcher starting a relist, which made a failing API server see a
//!   LIST per resource every second. Every failure is logged and counted.
//! - Nothing waits forever: connecting times out, and so does a response
//!   that stops arriving ([`Timeouts`]); watches ask the server to end them
//!   before that, so a quiet watch is not mistaken for a hung one, while a
//!   stalled watch is noticed within the read timeout.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher;
use serde::de::DeserializeOwned;

use super::{ClusterHealth, ResourceHealth, ResourceKind};
use crate::policy::PolicyError;
use crate::policy::tiers::ClusterPolicyKind;
use crate::state::ClusterState;

/// Errors creating the client.
#[derive(Debug, thiserror::Error)]
pub enum KubeSourceError {
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Neither in-cluster configuration nor a default kubeconfig was found.
    #[error("no Kubernetes configuration (in-cluster or $KUBECONFIG/~/.kube/config): {0}")]
    Infer(#[source] kube::config::InferConfigError),
    /// The client could not be built.
    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// A client from `kubeconfig`, or inferred like every kube-rs tool
/// (in-cluster service account, then `$KUBECONFIG`, then
/// `~/.kube/config`).
///
/// # Errors
/// [`KubeSourceError`] naming what could not be used.
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, KubeSourceError> {
    client_with(kubeconfig, Timeouts::default()).await
}

/// How long the API server may take.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// To connect.
    pub connect: Duration,
    /// Between two reads of a response (a LIST that stops, a hung server).
    pub read: Duration,
}

impl Default for Timeouts {
    /// 10 s to connect, 60 s of silence.
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(60),
        }
    }
}

impl Timeouts {
    /// The server-side length of a watch: 3 s shorter than the read
    /// timeout, so the server ends a quiet watch before the client gives
    /// up on it — and a watch that stalls (nothing, not even its end)
    /// meets the read timeout, which is counted and logged, before
    /// kube-rs's own idle reconnect (length + 5 s), which is silent.
    fn watch_seconds(&self) -> u32 {
        (self.read.as_secs().saturating_sub(3)).clamp(1, 290) as u32
    }
}

/// [`client`] with `timeouts`.
///
/// # Errors
/// [`KubeSourceError`] naming what could not be used.
pub async fn client_with(
    kubeconfig: Option<&Path>,
    timeouts: Timeouts,
) -> Result<kube::Client, KubeSourceError> {
    let mut config = match kubeconfig {
        Some(path) => {
            let kubeconfig_error = |source| KubeSourceError::Kubeconfig {
                path: path.display().to_string(),
                source,
            };
            let file = kube::config::Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(kubeconfig_error)?
        }
        None => kube::Config::infer()
            .await
            .map_err(KubeSourceError::Infer)?,
    };
    config.connect_timeout = Some(timeouts.connect);
    config.read_timeout = Some(timeouts.read);
    // Count from the request, not from when a pooled connection went idle.
    config.reset_reader_on_write = true;
    kube::Client::try_from(config).map_err(KubeSourceError::Client)
}

/// Watches every resource into `state` until the returned tasks are
/// aborted (dropping the handles does not stop them).
pub fn start(
    client: kube::Client,
    state: Arc<RwLock<ClusterState>>,
    health: Arc<RwLock<ClusterHealth>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    start_with(client, state, health, Timeouts::default())
}

/// [`start`] for a client made with `timeouts`.
pub fn start_with(
    client: kube::Client,
    state: Arc<RwLock<ClusterState>>,
    health: Arc<RwLock<ClusterHealth>>,
    timeouts: Timeouts,
) -> Vec<tokio::task::JoinHandle<()>> {
    ResourceKind::ALL
        .iter()
        .map(|kind| {
            let (client, state, health) = (client.clone(), Arc::clone(&state), Arc::clone(&health));
            tokio::spawn(watch_kind(*kind, client, state, health, timeouts))
        })
        .collect()
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

type ObjectKey = (String, String);

fn object_key(object: &DynamicObject) -> ObjectKey {
    (
        object.metadata.namespace.clone().unwrap_or_default(),
        object.metadata.name.clone().unwrap_or_default(),
    )
}

async fn watch_kind(
    kind: ResourceKind,
    client: kube::Client,
    state: Arc<RwLock<ClusterState>>,
    health: Arc<RwLock<ClusterHealth>>,
    timeouts: Timeouts,
) {
    let api: Api<DynamicObject> = Api::all_with(client, &api_resource(kind));
    if kind.cluster_policy().is_some() {
        wait_for_crd(kind, &api, &health).await;
    }
    let config = watcher::Config::default().timeout(timeouts.watch_seconds());
    let mut events = watcher(api, config).boxed();
    let mut failures = 0;
    let mut known: HashSet<ObjectKey> = HashSet::new();
    let mut relisted: Option<HashSet<ObjectKey>> = None;
    let update_health = |f: &mut dyn FnMut(&mut ResourceHealth)| {
        let mut health = health.write().unwrap_or_else(|e| e.into_inner());
        f(health.resources.entry(kind).or_default());
    };
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                failures += 1;
                let wait = backoff(failures);
                tracing::warn!(kind = kind.name(), error = %crate::error_chain(&error), failures, retry_in = ?wait, "watch error; backing off");
                update_health(&mut |h| {
                    h.errors += 1;
                    h.last_error = Some(crate::error_chain(&error));
                });
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        // Progress resets the backoff; the start of a relist does not.
        if !matches!(event, watcher::Event::Init) {
            failures = 0;
        }
        match event {
            watcher::Event::Init => relisted = Some(HashSet::new()),
            watcher::Event::InitApply(object) | watcher::Event::Apply(object) => {
                let key = object_key(&object);
                let result = apply(kind, &state, object);
                update_health(&mut |h| record(h, kind, &key, &result));
                if let Some(relisted) = &mut relisted {
                    relisted.insert(key.clone());
                }
                known.insert(key);
            }
            watcher::Event::Delete(object) => {
                let key = object_key(&object);
                delete(kind, &state, &key);
                known.remove(&key);
                update_health(&mut |h| {
                    h.problems
                        .remove(&format!("{} {}/{}", kind.name(), key.0, key.1));
                });
            }
            watcher::Event::InitDone => {
                let listed = relisted.take().unwrap_or_default();
                for key in known.difference(&listed) {
                    delete(kind, &state, key);
                }
                known = listed;
                update_health(&mut |h| h.synced = true);
            }
        }
        let objects = known.len();
        update_health(&mut |h| {
            h.last_event = Some(Instant::now());
            h.objects = objects;
        });
    }
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

/// Why an object from the API is skipped.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// It does not fit its kind's schema.
    #[error("{field}: {reason}")]
    Schema {
        /// Path of the field that does not fit (`.` for the whole object).
        field: String,
        /// The decoder's message.
        reason: String,
    },
    /// It is an invalid NetworkPolicy.
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// Converts an untyped object, naming the field that does not fit.
fn typed<K: DeserializeOwned>(object: DynamicObject) -> Result<K, ObjectError> {
    let value = serde_json::to_value(object).map_err(|e| ObjectError::Schema {
        field: ".".into(),
        reason: e.to_string(),
    })?;
    serde_path_to_error::deserialize(value).map_err(|e| ObjectError::Schema {
        field: e.path().to_string(),
        reason: e.inner().to_string(),
    })
}

/// An object converted to its kind's type, ready to apply.
// One lives at a time, on the stack, between decoding and applying:
// boxing the large variants would only add an allocation per event.
#[allow(clippy::large_enum_variant)]
enum Typed {
    Namespace(Namespace),
    Node(Node),
    NetworkPolicy(NetworkPolicy),
    Pod(Pod),
    Service(Service),
    EndpointSlice(EndpointSlice),
    ClusterPolicy(ClusterPolicyKind, Box<serde_json::Value>),
}

fn convert(kind: ResourceKind, object: DynamicObject) -> Result<Typed, ObjectError> {
    Ok(match kind {
        ResourceKind::Namespace => Typed::Namespace(typed(object)?),
        ResourceKind::Node => Typed::Node(typed(object)?),
        ResourceKind::NetworkPolicy => Typed::NetworkPolicy(typed(object)?),
        ResourceKind::Pod => Typed::Pod(typed(object)?),
        ResourceKind::Service => Typed::Service(typed(object)?),
        ResourceKind::EndpointSlice => Typed::EndpointSlice(typed(object)?),
        ResourceKind::ClusterNetworkPolicy
        | ResourceKind::AdminNetworkPolicy
        | ResourceKind::BaselineAdminNetworkPolicy => {
            let value = serde_json::to_value(object).map_err(|e| ObjectError::Schema {
                field: ".".into(),
                reason: e.to_string(),
            })?;
            let policy_kind = kind.cluster_policy().expect("a cluster policy kind");
            Typed::ClusterPolicy(policy_kind, Box::new(value))
        }
    })
}

/// Converts the object first, then takes the write lock only to apply it:
/// judging never waits on JSON decoding.
fn apply(
    kind: ResourceKind,
    state: &RwLock<ClusterState>,
    object: DynamicObject,
) -> Result<(), ObjectError> {
    let object = convert(kind, object)?;
    let mut state = state.write().unwrap_or_else(|e| e.into_inner());
    match object {
        Typed::Namespace(o) => state.upsert_namespace(&o),
        Typed::Node(o) => state.upsert_node(&o),
        Typed::NetworkPolicy(o) => state.upsert_policy(&o)?,
        Typed::Pod(o) => state.upsert_pod(&o),
        Typed::Service(o) => state.upsert_service(&o),
        Typed::EndpointSlice(o) => state.upsert_endpoint_slice(&o),
        Typed::ClusterPolicy(kind, o) => {
            state.upsert_cluster_policy(kind, &o)?;
            for warning in state.cluster_policy_warnings() {
                tracing::warn!(%warning, "cluster-wide policy");
            }
        }
    }
    Ok(())
}

fn delete(kind: ResourceKind, state: &RwLock<ClusterState>, (namespace, name): &ObjectKey) {
    let mut state = state.write().unwrap_or_else(|e| e.into_inner());
    match kind {
        ResourceKind::Namespace => state.delete_namespace(name),
        ResourceKind::Node => state.delete_node(name),
        ResourceKind::NetworkPolicy => state.delete_policy(namespace, name),
        ResourceKind::Pod => state.delete_pod(namespace, name),
        ResourceKind::Service => state.delete_service(namespace, name),
        ResourceKind::EndpointSlice => state.delete_endpoint_slice(namespace, name),
        ResourceKind::ClusterNetworkPolicy
        | ResourceKind::AdminNetworkPolicy
        | ResourceKind::BaselineAdminNetworkPolicy => {
            if let Some(policy_kind) = kind.cluster_policy() {
                state.delete_cluster_policy(policy_kind, name);
            }
        }
    }
}

fn api_resource(kind: ResourceKind) -> ApiResource {
    match kind {
        ResourceKind::Namespace => ApiResource::erase::<Namespace>(&()),
        ResourceKind::Node => ApiResource::erase::<Node>(&()),
        ResourceKind::NetworkPolicy => ApiResource::erase::<NetworkPolicy>(&()),
        ResourceKind::Pod => ApiResource::erase::<Pod>(&()),
        ResourceKind::Service => ApiResource::erase::<Service>(&()),
        ResourceKind::EndpointSlice => ApiResource::erase::<EndpointSlice>(&()),
        ResourceKind::ClusterNetworkPolicy
        | ResourceKind::AdminNetworkPolicy
        | ResourceKind::BaselineAdminNetworkPolicy => {
            let (group, plural) = kind.api_resource();
            ApiResource {
                group: group.to_owned(),
                version: kind.api_version().to_owned(),
                api_version: format!("{group}/{}", kind.api_version()),
                kind: kind.name().to_owned(),
                plural: plural.to_owned(),
            }
        }
    }
}
