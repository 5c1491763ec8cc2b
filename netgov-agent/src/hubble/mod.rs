//! The Hubble API: netgov's judged flows served as Hubble flows, so that
//! Hubble's CLI, Relay and UI, and the tools that read Hubble's JSON, show
//! netgov's verdicts on any CNI.
//!
//! - [`convert`]: a judged flow as a Hubble `Flow` (verdicts, endpoints,
//!   the deciding policies: [`endpoint`], [`policies`]);
//! - [`ring`]: the last N events (`--hubble-event-buffer-capacity`);
//! - [`filter`]: Hubble's `FlowFilter`, one filter per file;
//! - [`observer`] and [`peer`]: the gRPC services Relay and the CLI call;
//! - [`export`]: the JSON export file;
//! - [`serve`]: the server, with gRPC health, reflection and optional
//!   mutual TLS.
//!
//! The judge stage pushes an event when a flow is first judged and each
//! time its verdict or enforcement changes; nothing here waits on a
//! client.

pub mod convert;
pub mod endpoint;
pub mod export;
pub mod filter;
pub mod observer;
pub mod peer;
pub mod policies;
pub mod proto;
pub mod ring;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::Server;

use self::observer::{ObserverService, ServedNode};
use self::peer::{PeerDiscovery, PeerService, tls_server_name};
use self::proto::observer::observer_server::ObserverServer;
use self::proto::peer::peer_server::PeerServer;
use self::ring::EventRing;
use crate::state::ClusterState;

/// The service name `hubble status` asks the gRPC health service about.
pub const HEALTH_SERVICE: &str = "hubble.server.Observer";

/// Cilium's Hubble port.
pub const DEFAULT_PORT: u16 = 4244;

/// The files of the server's (mutual) TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CAs whose client certificates are accepted (PEM); none: clients
    /// are not asked for a certificate.
    pub client_cas: Vec<PathBuf>,
}

/// What `netgov agent --hubble-*` asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubbleOptions {
    /// Where the gRPC server listens; no server when `None` (the export
    /// file alone).
    pub listen: Option<SocketAddr>,
    /// TLS, when given.
    pub tls: Option<TlsFiles>,
    /// Events the ring keeps.
    pub capacity: usize,
    /// The export file, when given.
    pub export: Option<export::ExportOptions>,
    /// The agent's own pod (`namespace`, `name`), to find its peers.
    pub pod: Option<(String, String)>,
}

/// Why the Hubble server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum HubbleError {
    /// The address cannot be bound.
    #[error("Hubble server: cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS files do not load.
    #[error("Hubble server")]
    Tls(#[from] tls::TlsError),
    /// The reflection service cannot read the descriptors (a build fault).
    #[error("Hubble server: reflection descriptors")]
    Reflection(#[source] tonic_reflection::server::Error),
    /// The export file cannot be opened.
    #[error(transparent)]
    Export(#[from] export::ExportError),
}

/// Who this server is.
#[derive(Clone, Debug)]
pub struct ServerIdentity {
    /// This node's name.
    pub node: String,
    /// The agent's own pod (`namespace`, `name`), to find its peers.
    pub pod: Option<(String, String)>,
}

/// A started server: where it listens and its task.
pub struct RunningServer {
    /// The bound address (the port chosen, for port 0).
    pub address: SocketAddr,
    /// The server; ends with an error only if serving fails.
    pub task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Binds and starts the Hubble server over `ring` until `shutdown`
/// completes: Observer, Peer, gRPC health (`SERVING` for
/// [`HEALTH_SERVICE`]) and server reflection (v1 and v1alpha, for
/// grpcurl).
///
/// # Errors
/// [`HubbleError`] when the address cannot be bound or TLS does not load.
pub async fn serve(
    listen: SocketAddr,
    tls: Option<&TlsFiles>,
    identity: ServerIdentity,
    ring: Arc<EventRing>,
    state: Arc<RwLock<ClusterState>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<RunningServer, HubbleError> {
    // TLS files that do not load stop the agent before it listens.
    let reloading = tls
        .map(|files| tls::ReloadingTls::new(files.clone()))
        .transpose()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| HubbleError::Listen {
            addr: listen,
            source,
        })?;
    let address = listener.local_addr().unwrap_or(listen);
    let tls = reloading.is_some();
    // A client that stops answering is dropped; one connection cannot
    // open streams without bound.
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION));
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(HEALTH_SERVICE, tonic_health::ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_alpha = reflection()
        .build_v1alpha()
        .map_err(HubbleError::Reflection)?;
    let reflection = reflection().build_v1().map_err(HubbleError::Reflection)?;
    let observer = ObserverService::new(
        Arc::clone(&ring),
        ServedNode {
            name: identity.node.clone(),
            address,
            tls_server_name: tls.then(|| tls_server_name(&identity.node)),
        },
        Arc::clone(&state),
    );
    let peer = PeerService::new(
        PeerDiscovery {
            node: identity.node,
            listen: address,
            pod: identity.pod,
            tls,
        },
        state,
    );
    let router = builder
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(ObserverServer::new(observer))
        .add_service(PeerServer::new(peer));
    let task = match reloading {
        None => tokio::spawn(
            router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown),
        ),
        Some(reloading) => {
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            tokio::spawn(accept_tls(listener, Arc::new(reloading), tx));
            tokio::spawn(router.serve_with_incoming_shutdown(ReceiverStream::new(rx), shutdown))
        }
    };
    Ok(RunningServer { address, task })
}

/// How often an idle HTTP/2 connection is pinged.
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a ping may go unanswered before the connection is closed.
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
/// Streams one connection may have open at once (Relay holds one per
/// client request).
const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// Accepts connections and completes their TLS handshakes, each in a task
/// of its own (a slow client holds up no other), handing finished ones to
/// the server until it stops.
async fn accept_tls(
    listener: tokio::net::TcpListener,
    tls: Arc<tls::ReloadingTls>,
    ready: tokio::sync::mpsc::Sender<
        std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>,
    >,
) {
    while !ready.is_closed() {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors, say: back off rather than spin.
                tracing::warn!(%error, "Hubble server: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let (tls, ready) = (Arc::clone(&tls), ready.clone());
        tokio::spawn(async move {
            let peer = stream.peer_addr().ok();
            match tls.accept(stream).await {
                Ok(stream) => {
                    let _ = ready.send(Ok(stream)).await;
                }
                Err(error) => tracing::debug!(%error, ?peer, "Hubble server: TLS handshake failed"),
            }
        });
    }
}

/// This machine's host name (for events when `NODE_NAME` is not set).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}
