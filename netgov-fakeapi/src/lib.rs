//! An in-process fake Kubernetes API server for tests and benchmarks. It
//! speaks the real list/watch wire protocol for the cluster-wide
//! collections netgov reads — Pods, Namespaces, Services, Nodes,
//! NetworkPolicies, EndpointSlices, ClusterNetworkPolicies:
//!
//! - `GET <collection>`: a list with `metadata.resourceVersion`, paginated
//!   by `limit` and `continue` — except with `resourceVersion=0` (served
//!   from the watch cache, which ignores `limit`, as API servers before
//!   1.33 do) or after [`FakeApiServer::set_ignore_limit`] (a proxy or
//!   server that ignores it). Lists are streamed an item at a time, so a
//!   huge list costs the server little memory beyond its objects;
//! - `GET <collection>?watch=1&resourceVersion=N`: a stream of
//!   `ADDED`/`MODIFIED`/`DELETED` events after N, `BOOKMARK`s when asked
//!   (`allowWatchBookmarks`), ending after `timeoutSeconds`; a version older
//!   than the last compaction gets an `ERROR` event with a `410 Expired`
//!   status, as the real server sends;
//! - collections cluster-wide or in one namespace
//!   (`/api/v1/namespaces/NS/pods`); lists honour equality `labelSelector`s
//!   and the common `fieldSelector`s (`spec.nodeName`, `metadata.name`, …);
//! - `pods/NAME/portforward` over WebSocket (`v4.channel.k8s.io`), dialing
//!   the port on loopback as a runtime does for a host-network pod;
//!
//! and lets a test change objects, compact history, drop every connection,
//! restart on the same port, slow responses down, or serve malformed
//! objects. Clients reach it through an ordinary kubeconfig
//! ([`FakeApiServer::write_kubeconfig`]). Plain HTTP on loopback only.
#![deny(missing_docs)]

mod portforward;
mod route;
mod serve;
pub mod synthetic;

use route::Route;
use serve::handle;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// A collection the server serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// `/api/v1/pods`.
    Pods,
    /// `/api/v1/namespaces`.
    Namespaces,
    /// `/api/v1/services`.
    Services,
    /// `/api/v1/nodes`.
    Nodes,
    /// `/apis/networking.k8s.io/v1/networkpolicies`.
    NetworkPolicies,
    /// `/apis/discovery.k8s.io/v1/endpointslices`.
    EndpointSlices,
    /// `/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies`
    /// (cluster-scoped; the v1alpha1 AdminNetworkPolicy and
    /// BaselineAdminNetworkPolicy are not served: their CRDs are absent).
    ClusterNetworkPolicies,
}

impl Resource {
    /// Every resource.
    pub const ALL: [Resource; 7] = [
        Resource::Pods,
        Resource::Namespaces,
        Resource::Services,
        Resource::Nodes,
        Resource::NetworkPolicies,
        Resource::EndpointSlices,
        Resource::ClusterNetworkPolicies,
    ];

    fn path(self) -> &'static str {
        match self {
            Resource::Pods => "/api/v1/pods",
            Resource::Namespaces => "/api/v1/namespaces",
            Resource::Services => "/api/v1/services",
            Resource::Nodes => "/api/v1/nodes",
            Resource::NetworkPolicies => "/apis/networking.k8s.io/v1/networkpolicies",
            Resource::EndpointSlices => "/apis/discovery.k8s.io/v1/endpointslices",
            Resource::ClusterNetworkPolicies => {
                "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies"
            }
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Resource::NetworkPolicies => "networking.k8s.io/v1",
            Resource::EndpointSlices => "discovery.k8s.io/v1",
            Resource::ClusterNetworkPolicies => "policy.networking.k8s.io/v1alpha2",
            _ => "v1",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Resource::Pods => "Pod",
            Resource::Namespaces => "Namespace",
            Resource::Services => "Service",
            Resource::Nodes => "Node",
            Resource::NetworkPolicies => "NetworkPolicy",
            Resource::EndpointSlices => "EndpointSlice",
            Resource::ClusterNetworkPolicies => "ClusterNetworkPolicy",
        }
    }
}

#[derive(Clone, Debug)]
struct WatchEvent {
    resource: Resource,
    resource_version: u64,
    kind: &'static str,
    object: Value,
}

/// What the server sent in list responses and watch streams: what an
/// agent costs the API server.
#[derive(Debug, Default)]
struct Served {
    /// Objects: list items and watch events (bookmarks excepted).
    objects: std::sync::atomic::AtomicU64,
    /// Bytes of response bodies.
    bytes: std::sync::atomic::AtomicU64,
}

impl Served {
    fn count(&self, objects: u64, bytes: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.objects.fetch_add(objects, Relaxed);
        self.bytes.fetch_add(bytes as u64, Relaxed);
    }
}

#[derive(Debug, Default)]
struct Store {
    resource_version: u64,
    objects: BTreeMap<(Resource, String, String), Arc<Value>>,
    history: Vec<WatchEvent>,
    /// Watches from before this version get 410 Gone.
    compacted: u64,
    delay: Duration,
    /// Every request answered with this status (a failing API server).
    failing: Option<u16>,
    /// Watches answered with headers and then nothing, never closed (a
    /// stalled watch).
    stall_watches: bool,
    /// Lists answered whole whatever their `limit`.
    ignore_limit: bool,
    /// The network namespace port-forwards dial in (`None`: ours).
    pod_network: Option<std::path::PathBuf>,
    /// The `resourceVersion` each list asked for (`""` when none), by
    /// resource, in order.
    list_versions: BTreeMap<Resource, Vec<String>>,
    served: Arc<Served>,
}

/// The server. Dropping it stops it.
pub struct FakeApiServer {
    address: SocketAddr,
    store: Arc<Mutex<Store>>,
    events: broadcast::Sender<WatchEvent>,
    shutdown: broadcast::Sender<()>,
    accept_loop: Option<JoinHandle<()>>,
    /// Requests served, by resource and kind (`list` or `watch`).
    requests: Arc<Mutex<BTreeMap<(Resource, &'static str), u64>>>,
}

impl FakeApiServer {
    /// Starts on an ephemeral loopback port (within a Tokio runtime).
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        Self::start_with(listener)
    }

    /// Starts on a listener bound beforehand (e.g. inside a test bed node's
    /// network namespace, where an agent under test can reach it), within a
    /// Tokio runtime.
    ///
    /// # Panics
    /// When the listener cannot be made non-blocking or registered.
    pub fn start_on(listener: std::net::TcpListener) -> Self {
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        Self::start_with(TcpListener::from_std(listener).expect("register the listener"))
    }

    fn start_with(listener: TcpListener) -> Self {
        let address = listener.local_addr().expect("local address");
        let (events, _) = broadcast::channel(65536);
        let (shutdown, _) = broadcast::channel(1);
        let mut server = Self {
            address,
            store: Arc::new(Mutex::new(Store {
                resource_version: 1000,
                ..Store::default()
            })),
            events,
            shutdown,
            accept_loop: None,
            requests: Arc::default(),
        };
        server.serve(listener);
        server
    }

    fn serve(&mut self, listener: TcpListener) {
        let store = Arc::clone(&self.store);
        let events = self.events.clone();
        let shutdown = self.shutdown.clone();
        let requests = Arc::clone(&self.requests);
        self.accept_loop = Some(tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (store, events, requests) =
                    (Arc::clone(&store), events.clone(), Arc::clone(&requests));
                let mut stop = shutdown.subscribe();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        handle(
                            Arc::clone(&store),
                            events.clone(),
                            Arc::clone(&requests),
                            request,
                        )
                    });
                    let connection = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades();
                    tokio::select! {
                        _ = connection => {}
                        _ = stop.recv() => {}
                    }
                });
            }
        }));
    }

    /// The server's address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Writes a kubeconfig for this server to `path`.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write_kubeconfig(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
                 users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
                 current-context: fake\n",
                self.address
            ),
        )
    }

    /// Creates or replaces an object (`metadata.name`, and
    /// `metadata.namespace` for namespaced kinds), as an event to watchers.
    pub fn apply(&self, resource: Resource, object: Value) {
        self.insert(resource, object, true);
    }

    /// Creates or replaces an object without an event: for filling a big
    /// cluster before any client watches, without keeping a copy of every
    /// object in the watch history.
    pub fn seed(&self, resource: Resource, object: Value) {
        self.insert(resource, object, false);
    }

    fn insert(&self, resource: Resource, mut object: Value, announce: bool) {
        let mut store = self.store.lock().expect("store");
        store.resource_version += 1;
        let version = store.resource_version;
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        if object["metadata"]["uid"].is_null() {
            object["metadata"]["uid"] = json!(format!("uid-{namespace}-{name}"));
        }
        object["apiVersion"] = json!(resource.api_version());
        object["kind"] = json!(resource.kind());
        if !announce {
            store
                .objects
                .insert((resource, namespace, name), Arc::new(object));
            store.compacted = version;
            return;
        }
        let kind = if store
            .objects
            .insert((resource, namespace, name), Arc::new(object.clone()))
            .is_some()
        {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let event = WatchEvent {
            resource,
            resource_version: version,
            kind,
            object,
        };
        store.history.push(event.clone());
        let _ = self.events.send(event);
    }

    /// Deletes an object, as an event to watchers.
    pub fn delete(&self, resource: Resource, namespace: &str, name: &str) {
        let mut store = self.store.lock().expect("store");
        let Some(object) = store
            .objects
            .remove(&(resource, namespace.to_owned(), name.to_owned()))
        else {
            return;
        };
        let mut object = Arc::unwrap_or_clone(object);
        store.resource_version += 1;
        let version = store.resource_version;
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        let event = WatchEvent {
            resource,
            resource_version: version,
            kind: "DELETED",
            object,
        };
        store.history.push(event.clone());
        let _ = self.events.send(event);
    }

    /// Forgets the event history: every watch from an older version gets
    /// `410 Gone` and must relist.
    pub fn compact(&self) {
        let mut store = self.store.lock().expect("store");
        store.compacted = store.resource_version;
        store.history.clear();
    }

    /// Closes every open connection (watches end abruptly).
    pub fn drop_connections(&self) {
        let _ = self.shutdown.send(());
    }

    /// Stops listening and closes every connection, then listens again on
    /// the same port after `down_for`, with the same objects — an API
    /// server restart.
    ///
    /// # Panics
    /// When the port cannot be bound again.
    pub async fn restart(&mut self, down_for: Duration) {
        if let Some(accept_loop) = self.accept_loop.take() {
            accept_loop.abort();
            let _ = accept_loop.await;
        }
        self.drop_connections();
        tokio::time::sleep(down_for).await;
        let listener = TcpListener::bind(self.address)
            .await
            .expect("rebind the same port");
        self.serve(listener);
    }

    /// Answers every request with `status` (e.g. 500), or normally again
    /// with `None`.
    pub fn set_failing(&self, status: Option<u16>) {
        self.store.lock().expect("store").failing = status;
    }

    /// Answers watches with headers and then nothing, never closing them
    /// (`true`), or normally again.
    pub fn set_stall_watches(&self, stall: bool) {
        self.store.lock().expect("store").stall_watches = stall;
    }

    /// Port-forwards dial pods' ports in the network namespace at `path`
    /// (e.g. `/run/netns/NAME`: a test bed node, where host-network pods
    /// listen), or in the server's own with `None`.
    pub fn set_pod_network(&self, path: Option<std::path::PathBuf>) {
        self.store.lock().expect("store").pod_network = path;
    }

    /// Answers lists whole, ignoring `limit` (`true`), like an API server
    /// or proxy that does not paginate; or paginated again.
    pub fn set_ignore_limit(&self, ignore: bool) {
        self.store.lock().expect("store").ignore_limit = ignore;
    }

    /// The `resourceVersion` each list of `resource` asked for, in order
    /// (`""` for a consistent read from etcd, `"0"` for any version, from
    /// the watch cache).
    pub fn list_versions(&self, resource: Resource) -> Vec<String> {
        let store = self.store.lock().expect("store");
        store
            .list_versions
            .get(&resource)
            .cloned()
            .unwrap_or_default()
    }

    /// Delays every response by `delay` (slow API server).
    pub fn set_delay(&self, delay: Duration) {
        self.store.lock().expect("store").delay = delay;
    }

    /// What lists and watches sent so far, to every client: `(objects,
    /// bytes)` of response bodies (watch bookmarks count as bytes, not
    /// objects).
    pub fn served(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let served = Arc::clone(&self.store.lock().expect("store").served);
        (served.objects.load(Relaxed), served.bytes.load(Relaxed))
    }

    /// Requests served so far for `resource`: `(lists, watches)`.
    pub fn requests(&self, resource: Resource) -> (u64, u64) {
        let requests = self.requests.lock().expect("requests");
        (
            requests.get(&(resource, "list")).copied().unwrap_or(0),
            requests.get(&(resource, "watch")).copied().unwrap_or(0),
        )
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(accept_loop) = self.accept_loop.take() {
            accept_loop.abort();
        }
        let _ = self.shutdown.send(());
    }
}
